"""Figure stage: every figure and HTML table from small hand-made results, with the plotted numbers checked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from dpmra.cli import main
from dpmra.evaluation.figures.images import plot_error_maps, plot_samples, plot_segmentation
from dpmra.evaluation.figures.pages import write_audit_html, write_quality_html, write_summary_html, write_table1_html
from dpmra.evaluation.figures.quality import fd_label, plot_audit, plot_fid, plot_ssim, plot_tsne
from dpmra.evaluation.figures.style import NONPRIVATE_COLOUR, REAL_COLOUR, epsilon_axis, sigma_palette, spaced_ticks
from dpmra.evaluation.figures.training import plot_gan_curves
from dpmra.evaluation.figures.utility import (
    placebo_points,
    plot_accounting,
    plot_utility,
    selected_scores,
    utility_runs,
)
from dpmra.evaluation.tables import read_privacy, write_privacy_table
from dpmra.shared.html_tables import mean_sd
from dpmra.shared.pictures import mip_extent, new_figure

# Two private sigmas with two seeds each, one non-private run with one seed: SD defined and undefined.
RUNS = [  # sigma, seed, epsilon_rdp, epsilon_prv, test DSC, val DSC
    ("2", 0, 1.3, 0.9, 0.30, 0.35),
    ("2", 1, 1.3, 0.9, 0.40, 0.30),
    ("0.65", 0, 10.2, 6.8, 0.70, 0.72),
    ("0.65", 1, 10.2, 6.8, 0.60, 0.75),
    ("inf", 0, math.inf, math.inf, 0.84, 0.85),
]
SETTINGS = ["lr-0.001_dropout-0_augment-off", "lr-0.001_dropout-0.1_augment-off"]
DELTA = 1 / 41000


def source(sigma: str, seed: int) -> str:
    """The study's name of a synthetic source."""
    return f"sigma~{sigma}/seed~{seed}"


def write_card(root: Path, sigma: str, seed: int, rdp: float, prv: float, paper: float | None = None) -> Path:
    """A privacy card as the release stage writes it (inf as the string 'inf')."""
    epsilon = {"rdp": "inf" if math.isinf(rdp) else rdp, "prv": "inf" if math.isinf(prv) else prv}
    if paper is not None:
        epsilon["rdp_paper"] = paper
    card = {
        "sigma": "inf" if sigma == "inf" else float(sigma),
        "seed": seed,
        "mode": "paper" if paper is not None else "fresh",
        "epsilon": epsilon,
        "delta": DELTA,
        "epochs": 50,
        "critic_steps": 320250,
    }
    path = root / "synth" / source(sigma, seed) / "privacy_card.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card))
    return path


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """privacy.tsv, selection.tsv and summary.tsv of the RUNS plus a real source, under tmp/results."""
    root = tmp_path / "results"
    cards = [write_card(root, s, seed, rdp, prv) for s, seed, rdp, prv, _, _ in RUNS]
    write_privacy_table(cards, root / "tables/privacy.tsv", root / "tables/privacy.html")
    selection, summary = [], []
    for name, test_dsc, val_dsc in [("real", 0.89, 0.9)] + [(source(r[0], r[1]), r[4], r[5]) for r in RUNS]:
        selection.append({"source": name, "setting": SETTINGS[1], "val_dsc_mean": val_dsc})
        for setting in SETTINGS:
            shift = 0.0 if setting == SETTINGS[1] else -0.2  # the unselected setting is worse everywhere
            for split, dsc in (("val", val_dsc), ("test", test_dsc), ("external", test_dsc - 0.05)):
                for metric, mean in (("dsc", dsc + shift), ("bahd_mm", 10 * (1 - dsc - shift))):
                    summary.append(
                        {
                            "source": name,
                            "setting": setting,
                            "split": split,
                            "metric": metric,
                            "mean": mean,
                            "sd": 0.02,
                            "n": 2,
                            "n_inf": 0,
                        }
                    )
    pd.DataFrame(selection).to_csv(root / "tables/selection.tsv", sep="\t", index=False)
    pd.DataFrame(summary).to_csv(root / "tables/summary.tsv", sep="\t", index=False)
    return root


def outputs(root: Path, name: str) -> list[Path]:
    """PNG and PDF paths of a figure."""
    return [root / "figures" / f"{name}.png", root / "figures" / f"{name}.pdf"]


def assert_figures(paths: list[Path]) -> None:
    """Each output exists and starts with its format's magic bytes."""
    for path in paths:
        magic = {".png": b"\x89PNG", ".pdf": b"%PDF"}[path.suffix]
        assert path.read_bytes()[:4] == magic, path


def test_privacy_table_reads_cards_and_sorts_by_epsilon(results: Path):
    table = read_privacy(results / "tables/privacy.tsv")
    assert table["source"].tolist() == [
        source("2", 0),
        source("2", 1),
        source("0.65", 0),
        source("0.65", 1),
        source("inf", 0),
    ]
    assert table["sigma"].tolist() == ["2", "2", "0.65", "0.65", "inf"]
    assert math.isinf(table["epsilon_rdp"].iloc[-1]) and table["epsilon_prv"].iloc[0] == 0.9
    assert table["epsilon_rdp_paper"].isna().all()
    page = (results / "tables/privacy.html").read_text()
    assert "<table>" in page and "sigma~0.65/seed~1" in page and "rdp_paper" not in page


def test_palette_one_colour_per_sigma_ordered_by_noise():
    palette = sigma_palette(["0.65", "inf", "2", "0.65", "1.2"])
    assert set(palette) == {"0.65", "1.2", "2", "inf"}
    assert palette["inf"] == NONPRIVATE_COLOUR
    assert len(set(palette.values())) == 4
    # the same sigma gets the same colour whatever order or repetition the runs come in
    assert sigma_palette(["2", "1.2", "0.65", "inf"]) == palette


def test_utility_figure_means_sds_and_best_run(results: Path):
    paths = outputs(results, "fig3_test_utility")
    tables = results / "tables"
    by_sigma = plot_utility(
        tables / "summary.tsv", tables / "selection.tsv", tables / "privacy.tsv", "test", paths
    ).set_index("sigma")
    assert_figures(paths)
    assert by_sigma.loc["2", "dsc_mean"] == pytest.approx(0.35)
    assert by_sigma.loc["2", "dsc_sd"] == pytest.approx(np.std([0.3, 0.4], ddof=1))
    assert by_sigma.loc["0.65", "epsilon"] == 10.2 and by_sigma.loc["0.65", "n_runs"] == 2
    # best run = highest validation DSC, not highest test DSC
    assert by_sigma.loc["0.65", "best_source"] == source("0.65", 1)
    assert by_sigma.loc["0.65", "best_dsc"] == pytest.approx(0.60)
    assert by_sigma.loc["2", "best_source"] == source("2", 0)
    assert math.isnan(by_sigma.loc["inf", "dsc_sd"])  # one seed: no SD
    assert by_sigma.loc["inf", "bahd_mean"] == pytest.approx(10 * (1 - 0.84))
    assert list(by_sigma.index) == ["2", "0.65", "inf"]  # by epsilon


def test_utility_figure_on_external_split(results: Path):
    tables = results / "tables"
    by_sigma = plot_utility(
        tables / "summary.tsv",
        tables / "selection.tsv",
        tables / "privacy.tsv",
        "external",
        outputs(results, "fig5_external_utility"),
    ).set_index("sigma")
    assert by_sigma.loc["inf", "dsc_mean"] == pytest.approx(0.79)


def test_utility_figure_puts_each_placebo_at_its_private_runs_epsilon(results: Path):
    tables = results / "tables"
    selection = pd.read_csv(tables / "selection.tsv", sep="\t")
    summary = pd.read_csv(tables / "summary.tsv", sep="\t")
    placebo = "placebo~0.65/seed~1"
    selected = summary[(summary["source"] == source("0.65", 1)) & (summary["setting"] == SETTINGS[1])]
    summary = pd.concat([summary, selected.assign(source=placebo, mean=selected["mean"] - 0.1)])
    selection = pd.concat([selection, pd.DataFrame([{"source": placebo, "setting": SETTINGS[1], "val_dsc_mean": 0.7}])])
    summary.to_csv(tables / "summary.tsv", sep="\t", index=False)
    selection.to_csv(tables / "selection.tsv", sep="\t", index=False)
    privacy = read_privacy(tables / "privacy.tsv")
    runs = utility_runs(summary, selection, privacy, "test")
    points = placebo_points(runs, selected_scores(summary, selection, "test").set_index("source"))
    assert points[["sigma", "epsilon_rdp"]].values.tolist() == [["0.65", 10.2]]
    assert points["dsc"].item() == pytest.approx(0.60 - 0.1) and points["bahd_mm"].item() == pytest.approx(4 - 0.1)
    assert placebo not in set(runs["source"]), "a placebo is a control, not a run of its own on the curve"
    paths = outputs(results, "fig3_test_utility")
    plot_utility(tables / "summary.tsv", tables / "selection.tsv", tables / "privacy.tsv", "test", paths)
    assert_figures(paths)


def test_accounting_figure_plots_each_accountant(tmp_path: Path, results: Path):
    cards = [
        write_card(tmp_path, s, seed, rdp, prv, paper=None if math.isinf(rdp) else 2 * rdp)
        for s, seed, rdp, prv, _, _ in RUNS
    ]
    write_privacy_table(cards, tmp_path / "privacy.tsv", tmp_path / "privacy.html")
    tables = results / "tables"
    paths = outputs(tmp_path, "accounting")
    points = plot_accounting(tables / "summary.tsv", tables / "selection.tsv", tmp_path / "privacy.tsv", paths)
    assert_figures(paths)
    run = points[(points["source"] == source("0.65", 1)) & (points["split"] == "test")].set_index("accountant")
    assert run["epsilon"].to_dict() == {"epsilon_rdp": 10.2, "epsilon_prv": 6.8, "epsilon_rdp_paper": 20.4}
    assert (run["dsc"] == 0.60).all()
    nonprivate = points[points["sigma"] == "inf"]
    assert set(nonprivate["accountant"]) == {"epsilon_rdp", "epsilon_prv"}  # no paper epsilon for sigma = inf
    assert "epsilon RDP (paper&#x27;s accounting)" in (tmp_path / "privacy.html").read_text()


def test_utility_figures_cope_with_one_gan_run(tmp_path: Path):
    root = tmp_path / "results"
    card = write_card(root, "1", 0, 30.0, 20.0)
    write_privacy_table([card], root / "privacy.tsv", root / "privacy.html")
    summary = pd.DataFrame(
        [
            {
                "source": s, "setting": SETTINGS[0], "split": "test", "metric": m, "mean": 0.5, "sd": math.nan, "n": 1,
                "n_inf": 0,
            }
            for s in ("real", source("1", 0))
            for m in ("dsc", "bahd_mm")
        ]
    )
    selection = pd.DataFrame({"source": ["real", source("1", 0)], "setting": SETTINGS[0], "val_dsc_mean": 0.5})
    summary.to_csv(root / "summary.tsv", sep="\t", index=False)
    selection.to_csv(root / "selection.tsv", sep="\t", index=False)
    by_sigma = plot_utility(
        root / "summary.tsv", root / "selection.tsv", root / "privacy.tsv", "test", outputs(root, "fig3")
    )
    assert by_sigma["n_runs"].tolist() == [1] and math.isnan(by_sigma["dsc_sd"].iloc[0])
    assert_figures(outputs(root, "fig3"))


def test_epsilon_axis_puts_nonprivate_at_infinity_tick():
    fig = new_figure()
    ax = fig.subplots()
    x = epsilon_axis(ax, [1.3, 10.2, math.inf, math.nan], "epsilon")
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["1.3", "10.2", "∞"]
    assert x(math.inf) > 10.2 and x(1.3) == 1.3


def synth_dataset(root: Path, sigma: str, seed: int, value: float) -> None:
    """A constant synthetic dataset, so each figure column is identifiable by its value."""
    path = root / "synth" / source(sigma, seed) / "dataset.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, image=np.full((3, 8, 8), value, np.float32), label=np.ones((3, 8, 8), np.uint8))


def test_samples_figure_real_first_then_lowest_seed_per_sigma(results: Path):
    x = np.zeros((4, 2, 8, 8), np.float32)
    x[:, 1] = -1
    np.savez(results / "train_set.npz", x=x)
    for s, seed, *_ in RUNS:
        synth_dataset(results, s, seed, 100 * seed + 1)
    paths = outputs(results, "fig2_samples")
    columns = plot_samples(results / "train_set.npz", results / "synth", results / "tables/privacy.tsv", paths)
    assert_figures(paths)
    assert columns[0]["title"] == "real" and (columns[0]["label"] == 0).all()
    assert [c.get("source") for c in columns[1:]] == [source("inf", 0), source("0.65", 0), source("2", 0)]
    assert all((c["image"] == 1).all() for c in columns[1:])  # seed 0 datasets hold value 1
    assert columns[2]["title"].startswith("epsilon = 10.2")


def write_volume(path: Path, data: np.ndarray) -> Path:
    """A NIfTI volume with 0.5 mm voxels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.5, 0.7, 1.0])), str(path))
    return path


def test_error_maps_and_segmentation_show_selected_best_runs(results: Path):
    shape = (12, 10, 4)
    patient = "p1"
    write_volume(results / "data" / patient / "image.nii.gz", np.random.default_rng(0).random(shape).astype(np.float32))
    truth = np.zeros(shape, np.uint8)
    truth[3:6, 2:8, :] = 1
    write_volume(results / "data" / patient / "label.nii.gz", truth)
    for k, name in enumerate(["real"] + [source(r[0], r[1]) for r in RUNS]):
        error = np.zeros(shape, np.uint8)
        error[0, 0, : k % 4] = 2  # k false positives (mod 4) identify the source
        error[3:6, 2:8, :] = 1
        for setting in SETTINGS:
            folder = results / "predictions" / name / setting / "test" / patient
            write_volume(folder / "error_map.nii.gz", error)
            write_volume(folder / "segmentation.nii.gz", ((error == 1) | (error == 2)).astype(np.uint8))
            metrics = results / "metrics" / name / setting
            metrics.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"patient": [patient], "dsc": [0.5 + k / 100]}).to_csv(metrics / "test.tsv", sep="\t")
    tables = results / "tables"
    paths = outputs(results, "fig4_error_maps")
    counts = plot_error_maps(
        tables / "selection.tsv",
        tables / "privacy.tsv",
        results / "predictions",
        results / "data" / patient / "image.nii.gz",
        patient,
        paths,
    )
    assert_figures(paths)
    assert counts["source"].tolist() == ["real", source("inf", 0), source("0.65", 1), source("2", 0)]
    assert (counts["setting"] == SETTINGS[1]).all()
    assert counts["tp"].tolist() == [72] * 4 and counts["fp"].tolist() == [0, 1, 0, 1]
    paths = outputs(results, "fig7_segmentation")
    chosen = plot_segmentation(
        tables / "selection.tsv",
        tables / "privacy.tsv",
        results / "predictions",
        results / "data",
        results / "metrics",
        patient,
        paths,
    )
    assert_figures(paths)
    assert chosen["source"].tolist() == ["real", source("inf", 0), source("0.65", 1)]
    assert chosen["dsc"].tolist() == pytest.approx([0.50, 0.55, 0.54])


def quality_table(root: Path) -> Path:
    """quality.tsv with FD falling and SSIM falling as epsilon grows, and the real SSIM row."""
    rows = []
    for s, seed, rdp, *_ in RUNS:
        fd_train = {"2": 300, "0.65": 200, "inf": 60}[s] + 10 * seed
        rows.append(
            {
                "source": source(s, seed),
                "sigma": float(s),
                "seed": seed,
                "epsilon": rdp,
                "fd_backbone": "inception-v3",
                "fd_train": fd_train,
                "fd_test": 250.0,
                "fd_gap": 250.0 - fd_train,
                "ssim_mean": {"2": 0.98, "0.65": 0.5, "inf": 0.3}[s],
            }
        )
    rows.append({"source": "real", "ssim_mean": 0.2})
    path = root / "tables/quality.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_fid_and_ssim_figures(results: Path):
    quality = quality_table(results)
    privacy = results / "tables/privacy.tsv"
    means = plot_fid(quality, privacy, outputs(results, "fig6_fid")).set_index("sigma")
    assert_figures(outputs(results, "fig6_fid"))
    assert means.loc["2", "fd_train_mean"] == 305 and means.loc["2", "fd_train_sd"] == pytest.approx(math.sqrt(50))
    assert means.loc["inf", "fd_gap_mean"] == 190 and math.isnan(means.loc["inf", "fd_gap_sd"])
    ssim = plot_ssim(quality, privacy, outputs(results, "fig8_ssim")).set_index("sigma")
    assert_figures(outputs(results, "fig8_ssim"))
    assert ssim.loc["2", "ssim_mean_mean"] == pytest.approx(0.98) and (ssim["real_ssim"] == 0.2).all()
    page = results / "tables/quality.html"
    write_quality_html(quality, page)
    assert "FID to train" in page.read_text()


def test_fd_label_says_fid_only_for_inception():
    assert fd_label(["inception-v3"]) == "FID"
    assert fd_label(["resnet18-imagenet"]) == "Fréchet distance (resnet18-imagenet)"


def test_tsne_colours_by_sigma(results: Path):
    path = results / "quality/tsne.tsv"
    path.parent.mkdir(parents=True)
    pd.DataFrame(
        {"x": [0, 1, 2, 3], "y": [1, 0, 1, 0], "source": ["real", "real", source("inf", 0), source("2", 1)]}
    ).to_csv(path, sep="\t", index=False)
    table = plot_tsne(path, results / "tables/privacy.tsv", outputs(results, "fig9_tsne"))
    assert_figures(outputs(results, "fig9_tsne"))
    palette = sigma_palette([r[0] for r in RUNS])
    assert table["colour"].tolist() == [REAL_COLOUR] * 2 + [palette["inf"], palette["2"]]


def test_audit_figure_and_page(results: Path):
    rows = [
        {
            "source": source(s, seed),
            "sigma": s,
            "seed": seed,
            "epsilon": rdp,
            "dcr_train_median": 5.0 + seed,
            "dcr_holdout_median": 6.0,
            "near_copy_share": 0.01 * seed,
            "mia_auc": 0.5 + 0.1 * (s == "inf"),
            "mia_tpr_at_1fpr": 0.01,
        }
        for s, seed, rdp, *_ in RUNS
    ]
    path = results / "tables/audit.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    means = plot_audit(path, results / "tables/privacy.tsv", outputs(results, "audit")).set_index("sigma")
    assert_figures(outputs(results, "audit"))
    assert means.loc["inf", "mia_auc_mean"] == pytest.approx(0.6)
    assert means.loc["2", "near_copy_pct_mean"] == pytest.approx(0.5)
    write_audit_html(path, results / "tables/audit.html")
    assert "MIA AUC" in (results / "tables/audit.html").read_text()


def test_gan_curves_read_every_run(tmp_path: Path):
    paths = []
    for s, seed, rdp, prv, *_ in RUNS:
        path = tmp_path / "gan" / source(s, seed) / "epochs.tsv"
        path.parent.mkdir(parents=True)
        pd.DataFrame(
            {
                "epoch": [1, 2],
                "critic_steps": [5, 10],
                "loss_d": [-1, -2],
                "loss_g": [1, 2],
                "wasserstein": [1, 2],
                "epsilon_rdp": [rdp / 2, rdp],
                "epsilon_prv": [prv / 2, prv],
                "seconds": [1, 1],
            }
        ).to_csv(path, sep="\t", index=False)
        paths.append(path)
    epochs = plot_gan_curves(paths, outputs(tmp_path, "gan_curves"))
    assert_figures(outputs(tmp_path, "gan_curves"))
    assert len(epochs) == 10 and set(epochs["sigma"]) == {"2", "0.65", "inf"}


def test_table1_html_picks_real_nonprivate_and_best_private(results: Path):
    rows = []
    for name, eps, dsc in [
        ("real", math.nan, 0.89),
        (source("inf", 0), math.inf, 0.84),
        (source("0.65", 0), 10.2, 0.7),
        (source("0.65", 1), 10.2, 0.6),
        (source("2", 0), 1.3, 0.3),
    ]:
        for split in ("test", "external"):
            rows.append(
                {
                    "source": name,
                    "split": split,
                    "epsilon": eps,
                    "dsc_mean": dsc,
                    "dsc_sd": 0.02,
                    "bahd_mean": 1 - dsc,
                    "bahd_sd": 0.1,
                    "bahd_n": 2,
                    "bahd_n_inf": 0,
                }
            )
    pd.DataFrame(rows).to_csv(results / "tables/table1.tsv", sep="\t", index=False)
    out = results / "tables/table1.html"
    shown = write_table1_html(results / "tables/table1.tsv", results / "tables/selection.tsv", out)
    # best private by validation DSC: sigma 0.65 seed 1 (val 0.75), though seed 0 tests better
    assert shown["U-Net trained on"].tolist() == [
        "real patches",
        "synthetic, sigma = inf, seed 0",
        "synthetic, sigma = 0.65, seed 1",
    ]
    assert shown["test DSC"].tolist() == ["0.89 (0.02)", "0.84 (0.02)", "0.60 (0.02)"]
    assert shown["epsilon"].tolist() == ["–", "∞", "10.2"]
    page = out.read_text()
    assert "<b>0.89 (0.02)</b>" in page and page.count("<table>") == 2


def test_summary_html_marks_selected_settings(results: Path):
    out = results / "tables/summary.html"
    wide = write_summary_html(results / "tables/summary.tsv", results / "tables/selection.tsv", out)
    assert len(wide) == 6 * 2 * 3
    page = out.read_text()
    assert page.count('<tr class="mark">') == 6 * 3


def test_cli_figure_command(results: Path):
    tables = results / "tables"
    out = results / "figures/cli.png"
    assert (
        main(
            [
                "figure",
                "utility",
                "--summary",
                str(tables / "summary.tsv"),
                "--selection",
                str(tables / "selection.tsv"),
                "--privacy",
                str(tables / "privacy.tsv"),
                "--split",
                "test",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert_figures([out])


def test_cli_privacy_table_and_table_html(results: Path, tmp_path: Path):
    cards = sorted((results / "synth").glob("*/*/privacy_card.json"))
    assert (
        main(["privacy-table", *map(str, cards), "--out", str(tmp_path / "p.tsv"), "--html", str(tmp_path / "p.html")])
        == 0
    )
    assert len(read_privacy(tmp_path / "p.tsv")) == len(RUNS)
    tables = results / "tables"
    out = tmp_path / "summary.html"
    argv = [
        "table-html",
        "summary",
        "--summary",
        str(tables / "summary.tsv"),
        "--selection",
        str(tables / "selection.tsv"),
    ]
    assert main([*argv, "--out", str(out)]) == 0
    assert out.read_text().startswith("<!doctype html>")


def with_infinite_bahd(summary_path: Path, source_name: str, n_inf: int) -> None:
    """Rewrite summary.tsv so that a source's selected test bAHD left out n_inf infinite values."""
    summary = pd.read_csv(summary_path, sep="\t", dtype={"source": str})
    rows = (summary["source"] == source_name) & (summary["metric"] == "bahd_mm") & (summary["split"] == "test")
    summary.loc[rows, "n_inf"] = n_inf
    summary.to_csv(summary_path, sep="\t", index=False)


def test_utility_figure_and_summary_page_mark_sources_with_infinite_bahd(results: Path):
    """A source whose test bAHD left out infinite values carries n_inf to the figure and `[k ∞]` to summary.html."""
    tables = results / "tables"
    with_infinite_bahd(tables / "summary.tsv", source("2", 1), 2)
    summary = pd.read_csv(tables / "summary.tsv", sep="\t", dtype={"source": str})
    scores = selected_scores(summary, pd.read_csv(tables / "selection.tsv", sep="\t"), "test")
    assert scores.set_index("source")["bahd_n_inf"].to_dict() == {
        "real": 0, **{source(r[0], r[1]): 2 * (r[:2] == ("2", 1)) for r in RUNS}
    }
    paths = outputs(results, "fig3_infinite")
    plot_utility(tables / "summary.tsv", tables / "selection.tsv", tables / "privacy.tsv", "test", paths)
    assert_figures(paths)
    wide = write_summary_html(tables / "summary.tsv", tables / "selection.tsv", results / "summary.html")
    cells = wide[(wide["source"] == source("2", 1)) & (wide["split"] == "test")]["bAHD mm"]
    assert cells.str.endswith(" [2 ∞]").all() and not wide.loc[wide["source"] == "real", "bAHD mm"].str.contains("∞").any()
    assert "the mean and SD are over the other patients" in (results / "summary.html").read_text()


def test_mean_sd_says_how_many_values_were_infinite():
    assert mean_sd(1.234, 0.1, ".2f") == "1.23 (0.10)"
    assert mean_sd(1.234, math.nan, ".2f", n_inf=3) == "1.23 (–) [3 ∞]"
    assert mean_sd(math.nan, math.nan, n_inf=2) == "– [2 ∞]"


def test_table1_html_marks_infinite_bahd_and_bolds_a_finite_best(results: Path):
    rows = [
        {"source": name, "split": "test", "epsilon": eps, "dsc_mean": dsc, "dsc_sd": 0.02, "bahd_mean": bahd,
         "bahd_sd": 0.1, "bahd_n": n, "bahd_n_inf": 3 - n}
        for name, eps, dsc, bahd, n in [
            ("real", math.nan, 0.89, 0.5, 3),
            (source("inf", 0), math.inf, 0.84, 0.4, 2),
            (source("0.65", 1), 10.2, 0.0, math.nan, 0),
        ]
    ]
    pd.DataFrame(rows).to_csv(results / "tables/table1.tsv", sep="\t", index=False)
    out = results / "tables/table1.html"
    shown = write_table1_html(results / "tables/table1.tsv", results / "tables/selection.tsv", out)
    assert shown["test bAHD (mm)"].tolist() == ["0.50 (0.10)", "0.40 (0.10) [1 ∞]", "– [3 ∞]"]
    page = out.read_text()
    assert "<b>0.40 (0.10) [1 ∞]</b>" in page and "[k ∞]: k patients had an infinite distance" in page


@pytest.mark.parametrize("degrees", [0.0, 30.0, -75.0])
def test_mip_extent_is_true_size_and_position_for_any_affine(degrees: float):
    """Displayed pixel centres are as far apart as the voxels' world positions, rotated or not (no diagonal read)."""
    spacing = np.array([0.4, 0.7, 1.3])
    angle = math.radians(degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = [-30.0, 12.0, 5.0]
    nx, ny = 9, 6
    left, right, bottom, top = mip_extent(affine, (ny, nx))
    assert (right - left, top - bottom) == pytest.approx((nx * 0.4, ny * 0.7))

    def shown(i: int, j: int) -> np.ndarray:
        """Where imshow draws the centre of MIP pixel (row j, column i)."""
        return np.array([left + (i + 0.5) * (right - left) / nx, bottom + (j + 0.5) * (top - bottom) / ny])

    def world(i: int, j: int) -> np.ndarray:
        return (affine @ [i, j, 2, 1])[:3]

    corners = [(0, 0), (nx - 1, 0), (0, ny - 1), (nx - 1, ny - 1)]
    for a in corners:
        for b in corners:
            assert np.linalg.norm(shown(*a) - shown(*b)) == pytest.approx(np.linalg.norm(world(*a) - world(*b)))
    if degrees == 0:  # unrotated: the frame is world x and y, voxel (0, 0) drawn at its world position
        assert shown(0, 0) == pytest.approx(affine[:2, 3])
    u = rotation[:, 0]  # the first voxel's position along the rotated x axis
    assert shown(0, 0)[0] == pytest.approx(u @ affine[:3, 3])


def test_epsilon_ticks_are_thinned_so_labels_never_overlap():
    """RDP and PRV epsilons of one run sit close together: only ticks at least 1.25x apart are labelled."""
    ticks = spaced_ticks(np.array([9.99, 1.79, 5.0, 1.99, 8.68, 4.39]))
    assert ticks == [1.79, 4.39, 8.68]
