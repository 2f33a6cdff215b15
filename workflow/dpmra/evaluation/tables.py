"""The study's tables: per-patient metrics, the best U-Net setting per source, the summary, Table 1, and
privacy.tsv (every GAN run's accounting, gathered from the privacy cards; the figures read epsilon from it)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from dpmra.privacy.plan import placebo_source
from dpmra.release.cards import card_epsilon, read_card
from dpmra.segmentation.metrics import METRICS, score_files
from dpmra.shared.atomic import write_tsv
from dpmra.shared.html_tables import Section, write_page

log = logging.getLogger(__name__)

TABLE1_SPLITS = ("test", "external")
SOURCE = re.compile(r"sigma~(?P<sigma>inf|[0-9]+(?:\.[0-9]+)?)/seed~(?P<seed>[0-9]+)")
FAMILIES = {"sigma": "dp-wgan", "pe": "pe"}
"""Source prefix of each DP family's released runs (their placebos: `placebo~`, `pe-placebo~`)."""
RUN = re.compile(r"(?<![\w-])(?P<prefix>sigma|pe)~(?P<sigma>inf|[0-9]+(?:\.[0-9]+)?)/seed~(?P<seed>[0-9]+)")
PRIVACY_COLUMNS = [
    "source",
    "sigma",
    "seed",
    "mode",
    "epochs",
    "critic_steps",
    "delta",
    "epsilon_rdp",
    "epsilon_prv",
    "epsilon_rdp_paper",
]


def score_split(patients: list[str], data_dir: Path, prediction_dir: Path, out: Path) -> pd.DataFrame:
    """Metrics of every patient's segmentation against its label, inside its brain mask (one row each)."""
    rows = []
    for patient in patients:
        truth = Path(data_dir) / patient
        scores = score_files(
            truth / "label.nii.gz", Path(prediction_dir) / patient / "segmentation.nii.gz", truth / "brain_mask.nii.gz"
        )
        rows.append({"patient": patient, **scores})
        log.info("%s: dsc %.3f, bahd %.3f mm", patient, scores["dsc"], scores["bahd_mm"])
    table = pd.DataFrame(rows, columns=["patient", *METRICS])
    write_tsv(table, out)
    return table


def read_metrics(metrics_root: Path, source: str, setting: str, split: str) -> pd.DataFrame:
    """One per-patient metric table."""
    return pd.read_csv(Path(metrics_root) / source / setting / f"{split}.tsv", sep="\t")


def select_settings(metrics_root: Path, sources: list[str], settings: list[str]) -> pd.DataFrame:
    """Per source, the setting with the highest mean validation DSC (the first listed wins a tie)."""
    rows = []
    for source in sources:
        means = [read_metrics(metrics_root, source, s, "val")["dsc"].mean() for s in settings]
        best = max(range(len(settings)), key=lambda i: (means[i], -i))
        rows.append({"source": source, "setting": settings[best], "val_dsc_mean": means[best]})
    return pd.DataFrame(rows)


def describe(values: pd.Series) -> dict[str, float]:
    """Mean, SD and count n of the finite values, and n_inf, the infinite ones, which would make the mean inf.

    A distance is inf when a prediction (or truth) is empty inside the brain mask; NaN values (undefined
    ratios) are in neither count.
    """
    finite = values[np.isfinite(values)]
    return {"mean": finite.mean(), "sd": finite.std(ddof=1), "n": len(finite), "n_inf": int(np.isinf(values).sum())}


def summarise(metrics_root: Path, sources: list[str], settings: list[str], splits: list[str]) -> pd.DataFrame:
    """Mean and SD over patients (finite values), n and n_inf of every metric, per (source, setting, split)."""
    rows = []
    for source in sources:
        for setting in settings:
            for split in splits:
                table = read_metrics(metrics_root, source, setting, split)
                for metric in METRICS:
                    key = {"source": source, "setting": setting, "split": split, "metric": metric}
                    rows.append({**key, **describe(table[metric].astype(float))})
    return pd.DataFrame(rows, columns=["source", "setting", "split", "metric", "mean", "sd", "n", "n_inf"])


def final_epsilon(epochs_tsv: Path) -> float:
    """The epsilon a run reports after its last epoch: the exact GDP value where it has one (Private Evolution),
    else the RDP bound (DP-WGAN)."""
    table = pd.read_csv(epochs_tsv, sep="\t")
    return float(table["epsilon_gdp" if "epsilon_gdp" in table else "epsilon_rdp"].iloc[-1])


TABLE1_COLUMNS = [
    "source", "split", "epsilon", "dsc_mean", "dsc_sd", "bahd_mean", "bahd_sd", "bahd_n", "bahd_n_inf", "private_gain"
]
GAIN_COLUMNS = [
    "family", "sigma", "split", "epsilon", "seeds", "private_dsc_mean", "placebo_dsc_mean", "private_gain_mean", "private_gain_sd"
]


def table1(summary: pd.DataFrame, selection: pd.DataFrame, epsilons: dict[str, float]) -> pd.DataFrame:
    """DSC and bAHD (mean, SD; bAHD over the finite values, with their count and the infinite ones') of each
    source's selected U-Net on the test and external splits."""
    chosen = summary.merge(selection[["source", "setting"]], on=["source", "setting"])
    rows = []
    for source in selection["source"]:
        for split in TABLE1_SPLITS:
            part = chosen[(chosen["source"] == source) & (chosen["split"] == split)].set_index("metric")
            if part.empty:
                continue
            rows.append(
                {
                    "source": source,
                    "split": split,
                    "epsilon": epsilons.get(source, math.nan),
                    "dsc_mean": part.loc["dsc", "mean"],
                    "dsc_sd": part.loc["dsc", "sd"],
                    "bahd_mean": part.loc["bahd_mm", "mean"],
                    "bahd_sd": part.loc["bahd_mm", "sd"],
                    "bahd_n": part.loc["bahd_mm", "n"],
                    "bahd_n_inf": part.loc["bahd_mm", "n_inf"],
                }
            )
    return with_private_gain(pd.DataFrame(rows, columns=TABLE1_COLUMNS))


def with_private_gain(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 with private_gain = DSC(private run) - DSC(its placebo: same sigma, seed, split) where one exists."""
    dsc = table.set_index(["source", "split"])["dsc_mean"]
    gains = [row.dsc_mean - dsc.get((placebo_source(row.source), row.split), math.nan) for row in table.itertuples()]
    return table.assign(private_gain=gains)


def private_gain(table: pd.DataFrame) -> pd.DataFrame:
    """Per family, sigma and split: mean DSC of the private runs and their placebos, and the gain's mean and SD
    over seeds."""
    paired = table.dropna(subset=["private_gain"]).copy()
    runs = [parse_run(s) for s in paired["source"]]
    paired["family"] = [run[0] for run in runs]
    paired["sigma"] = [run[1] for run in runs]
    paired["placebo_dsc"] = paired["dsc_mean"] - paired["private_gain"]
    rows = [
        {
            "family": family,
            "sigma": sigma,
            "split": split,
            "epsilon": runs["epsilon"].mean(),
            "seeds": len(runs),
            "private_dsc_mean": runs["dsc_mean"].mean(),
            "placebo_dsc_mean": runs["placebo_dsc"].mean(),
            "private_gain_mean": runs["private_gain"].mean(),
            "private_gain_sd": runs["private_gain"].std(ddof=1),
        }
        for (family, sigma, split), runs in paired.groupby(["family", "sigma", "split"], sort=False)
    ]
    table = pd.DataFrame(rows, columns=GAIN_COLUMNS)
    return table.sort_values(["split", "family", "epsilon"], ascending=[True, True, False])


def write_tables(
    metrics_root: Path, gan_root: Path, sources: list[str], settings: list[str], splits: list[str], out_dir: Path
) -> None:
    """selection.tsv, summary.tsv, table1.tsv and private_gain.tsv from the per-patient metric tables."""
    out_dir = Path(out_dir)
    selection = select_settings(metrics_root, sources, settings)
    summary = summarise(metrics_root, sources, settings, splits)
    epsilons = {s: final_epsilon(Path(gan_root) / s / "epochs.tsv") for s in sources if s != "real"}
    write_tsv(selection, out_dir / "selection.tsv")
    write_tsv(summary, out_dir / "summary.tsv")
    table = table1(summary, selection, epsilons)
    write_tsv(table, out_dir / "table1.tsv")
    write_tsv(private_gain(table), out_dir / "private_gain.tsv")


# --- privacy.tsv: every GAN run's accounting ---------------------------------------------------------------


def parse_source(source: str) -> tuple[str, int] | None:
    """(sigma label, seed) of a synthetic source `sigma~S/seed~N` (anywhere in a path); None for others."""
    match = SOURCE.search(str(source))
    return (match["sigma"], int(match["seed"])) if match else None


def parse_run(source: str) -> tuple[str, str, int] | None:
    """(family, sigma label, seed) of a released DP run, `sigma~S/seed~N` (dp-wgan) or `pe~S/seed~N` (pe); None
    for others (real, public, the placebos)."""
    match = RUN.search(str(source))
    return (FAMILIES[match["prefix"]], match["sigma"], int(match["seed"])) if match else None


def sigma_value(label: str) -> float:
    """The noise multiplier of a sigma label (`inf` for the non-private run)."""
    return float(label)


def privacy_row(card_path: Path) -> dict:
    """One GAN run's privacy accounting, from its privacy card; sigma and seed from the card's directory."""
    card_path = Path(card_path)
    parsed = parse_source(card_path.parent.as_posix())
    if parsed is None:
        raise ValueError(f"{card_path}: not under sigma~{{sigma}}/seed~{{seed}}/")
    card = read_card(card_path)
    try:
        epsilon = card["epsilon"]
        return {
            "source": f"sigma~{parsed[0]}/seed~{parsed[1]}",
            "sigma": parsed[0],
            "seed": parsed[1],
            "mode": card["mode"],
            "epochs": card["epochs"],
            "critic_steps": card["critic_steps"],
            "delta": card["delta"],
            "epsilon_rdp": card_epsilon(epsilon["rdp"]),
            "epsilon_prv": card_epsilon(epsilon["prv"]),
            "epsilon_rdp_paper": card_epsilon(epsilon["rdp_paper"]) if "rdp_paper" in epsilon else math.nan,
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{card_path}: not a privacy card with mode, epochs, delta and epsilon ({err!r})") from err


def privacy_table(cards: Iterable[Path]) -> pd.DataFrame:
    """privacy.tsv: one row per GAN run, most private first (ascending RDP epsilon, then seed)."""
    table = pd.DataFrame([privacy_row(c) for c in cards], columns=PRIVACY_COLUMNS)
    return table.sort_values(["epsilon_rdp", "seed"], kind="stable", ignore_index=True)


def read_privacy(path: Path) -> pd.DataFrame:
    """privacy.tsv with sigma kept as its label (`inf`, `0.65`) and epsilon as floats (inf allowed)."""
    return pd.read_csv(path, sep="\t", dtype={"sigma": str, "source": str, "mode": str})


def write_privacy_table(cards: list[Path], out: Path, html: Path) -> pd.DataFrame:
    """privacy.tsv and its HTML rendering from the privacy cards of every GAN run."""
    table = privacy_table(cards)
    write_tsv(table, out)
    shown = table.rename(columns={"epsilon_rdp": "epsilon RDP", "epsilon_prv": "epsilon PRV"})
    if shown["epsilon_rdp_paper"].isna().all():
        shown = shown.drop(columns="epsilon_rdp_paper")
    else:
        shown = shown.rename(columns={"epsilon_rdp_paper": "epsilon RDP (paper's accounting)"})
    note = (
        "epsilon at the run's delta after its last epoch, from the privacy card of the released dataset. "
        "RDP is the bound the project reports; PRV a tighter numerical estimate of the same mechanism; in "
        "paper mode the paper's own accounting of the published loop is shown beside its valid bound."
    )
    write_page("GAN runs: privacy accounting", [Section("Privacy per GAN run", shown, note)], html)
    return table
