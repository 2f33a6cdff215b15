"""The Snakemake workflow: dry runs, failures at start and in a rule, and an end-to-end run of the tiny config."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ENV, ROOT, TEST_PE_SIGMA, save, snakemake, toy_subject

from dpmra.generators.interface import sample_generator
from dpmra.privacy.accountants import epsilon
from dpmra.privacy.gdp import gdp_epsilon, gdp_mu


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    lines = output.split("Job stats:")[1].splitlines()[3:]
    counts = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_dry_run_default_config(tmp_path):
    result = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "config/config.yaml"))
    assert result.returncode == 0, result.stdout
    counts = job_counts(result.stdout)
    # 12 private-cohort patients, 3 public (the warm start), 6 public stand-ins for the placebos of epsilon 10 and 2;
    # no PE (config/test.yaml runs it)
    assert counts == {
        "phantom": 21, "prepare": 21, "patches": 21, "training_set": 1, "placebo_set": 1, "secret_key": 1,
        "public_set": 1, "gan_pretrain": 1, "synth_public": 1, "gan": 6, "synth": 6, "quality": 4,
        "audit": 4, "dp_audit": 1, "dp_audit_table": 1, "dp_audit_figure": 1, "ssim_real": 1, "tsne": 1,
        "quality_tables": 1, "unet": 8, "predict": 24, "score": 24, "tables": 1, "all": 1, "privacy_table": 1, "fig2_samples": 1,
        "fig3_test_utility": 1, "fig4_error_maps": 1, "fig5_external_utility": 1, "fig6_fid": 1,
        "fig7_segmentation": 1, "fig8_ssim": 1, "fig9_tsne": 1, "privacy_utility_figure": 1, "audit_figure": 1,
        "gan_curves_figure": 1, "table1_html": 1, "summary_html": 1, "quality_html": 1, "audit_html": 1,
    }
    assert {"sigma~inf/seed~0", "sigma~0.6794/seed~0", "sigma~0.8954/seed~0", "sigma~1.47/seed~0",
            "placebo~0.6794/seed~0", "placebo~1.47/seed~0"} <= {
        line.split("results/gan/")[1].rsplit("/", 1)[0] for line in result.stdout.split() if "results/gan/" in line
    }
    # audit.dp.runs: strongest audits the largest sigma (epsilon 2) only
    assert {p.split("/")[2] for p in re.findall(r"results/dp_audit/sigma~[^/]+/seed~0", result.stdout)} == {
        "sigma~1.47"
    }


def test_bad_config_is_rejected_at_start(tmp_path):
    config = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    config["patches"]["size"] = 4
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "--configfile", "bad.yaml")
    assert result.returncode != 0
    assert "4 is less than the minimum of 8" in result.stdout


def test_fid_without_inception_weights_stops_before_any_job(tmp_path, monkeypatch):
    monkeypatch.setitem(ENV, "TORCH_HOME", str(tmp_path / "torch"))
    config = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    config["quality"]["backbone"] = "inception-v3"
    (tmp_path / "fid.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "--configfile", "fid.yaml")
    assert result.returncode != 0
    assert "quality.backbone is inception-v3 (the paper's FID) but it cannot run" in result.stdout
    assert "pt_inception-2015-12-05-6726825d.pth" in result.stdout
    assert f"{tmp_path / 'torch' / 'hub' / 'checkpoints'}" in result.stdout
    assert "Job stats" not in result.stdout and not (tmp_path / "results").exists()


def test_paper_config_asks_for_fid():
    assert yaml.safe_load((ROOT / "config/paper.yaml").read_text())["quality"]["backbone"] == "inception-v3"


def write_manifest(tmp_path: Path, label_values: dict[str, np.ndarray] | None = None) -> Path:
    """Toy subjects P1-P3 (train, val, external) on disk and a manifest listing them; P3 has no mask."""
    rows = ["patient\tsite\tsplit\timage\tlabel\tbrain_mask"]
    for i, (patient, split) in enumerate([("P1", "train"), ("P2", "val"), ("P3", "external")]):
        image, label, mask = toy_subject(seed=i)
        if label_values and patient in label_values:
            label = label_values[patient]
        d = tmp_path / "data" / patient
        d.mkdir(parents=True)
        save(image, d / "tof.nii.gz")
        save(label, d / "vessels.nii.gz")
        mask_path = "" if patient == "P3" else str(save(mask, d / "mask.nii.gz").relative_to(tmp_path))
        rows.append(f"{patient}\tS\t{split}\tdata/{patient}/tof.nii.gz\tdata/{patient}/vessels.nii.gz\t{mask_path}")
    (tmp_path / "samples.tsv").write_text("\n".join(rows) + "\n")
    config = {
        "data": {"source": "manifest", "manifest": "samples.tsv"},
        "patches": {"per_patient": 20, "size": 16, "seed": 0},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "config.yaml"


def test_duplicate_patient_is_rejected_at_start(tmp_path):
    write_manifest(tmp_path)
    with open(tmp_path / "samples.tsv", "a") as f:
        f.write("P1\tS\ttest\tdata/P1/tof.nii.gz\tdata/P1/vessels.nii.gz\t\n")
    result = snakemake(tmp_path, "-n", "--configfile", "config.yaml")
    assert result.returncode != 0
    assert "samples.tsv: patient P1 is in two splits (train, test)" in result.stdout


def test_manifest_run_and_bad_volume_fails_in_its_own_rule(tmp_path):
    label = toy_subject(seed=1)[1].astype(np.int16)
    label[0, 0, 0] = 7
    write_manifest(tmp_path, {"P2": label})
    targets = [f"results/data/{p}/volume.json" for p in ("P1", "P2", "P3")] + ["results/patches/train_set.npz"]
    result = snakemake(tmp_path, "--configfile", "config.yaml", "--keep-going", *targets)
    assert result.returncode != 0
    log = (tmp_path / "results/logs/prepare/P2.log").read_text()
    assert "data/P2/vessels.nii.gz: vessel label is not binary; values {0, 1, 7}" in log
    assert not (tmp_path / "results/data/P2").exists() or not any((tmp_path / "results/data/P2").iterdir())
    assert (tmp_path / "results/patches/train_set.npz").exists()
    info = json.loads((tmp_path / "results/data/P3/volume.json").read_text())
    assert info["mask_method"].startswith("derived")
    assert "no brain mask given" in (tmp_path / "results/logs/prepare/P3.log").read_text()


@pytest.mark.workflow
def test_tiny_run_patients(tiny_run):
    config = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    for patient, site in [("A000", "A"), ("A004", "A"), ("B000", "B")]:
        info = json.loads((tiny_run / "data" / patient / "volume.json").read_text())
        assert info["shape"] == config["data"]["phantom"]["shape"]
        assert 0.005 < info["vessel_fraction"] < 0.05
        image = nib.load(tiny_run / "data" / patient / "image.nii.gz")
        assert image.get_fdata().max() == pytest.approx(255, abs=1e-3)
        assert (tiny_run / "data" / patient / "mip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    spacing = [json.loads((tiny_run / "data" / p / "volume.json").read_text())["spacing_mm"][0] for p in ("A000", "B000")]
    assert spacing[0] != spacing[1]


@pytest.mark.workflow
def test_tiny_run_patches_and_training_set(tiny_run):
    with np.load(tiny_run / "patches/A001.npz") as p:
        assert p["image"].shape == (40, 16, 16)
        assert (p["kind"] == 1).sum() == 20
        assert (p["label"][p["kind"] == 1, 8, 8] == 1).all()
    x = np.load(tiny_run / "patches/train_set.npz")["x"]
    assert x.shape == (3 * 40, 2, 16, 16)
    assert x[:, 0].min() == -1 and x[:, 0].max() == 1
    assert set(np.unique(x[:, 1]).tolist()) == {-1.0, 1.0}
    assert (tiny_run / "patches/gallery.png").stat().st_size > 1000
    assert (tiny_run / "logs/training_set.log").read_text().count("training set: 120 pairs") == 1


@pytest.mark.workflow
def test_tiny_run_gans(tiny_run):
    n, q, steps = 120, 32 / 120, 2 * 5 * 4
    delta = 8e-4  # 1 / (10 * 120) = 8.3e-4, rounded down
    for sigma, expected in (("inf", math.inf), ("1", epsilon(1.0, q, steps, delta))):
        run = tiny_run / f"gan/sigma~{sigma}/seed~0"
        table = pd.read_csv(run / "epochs.tsv", sep="\t")
        assert table.columns[:9].tolist() == [
            "epoch", "critic_steps", "loss_d", "loss_g", "wasserstein", "epsilon_rdp", "epsilon_prv", "unit", "seconds"
        ]
        assert (table["unit"] == "patch").all()
        assert table["epoch"].tolist() == [1, 2] and table["critic_steps"].tolist() == [steps // 2, steps]
        assert table["epsilon_rdp"].iloc[-1] == pytest.approx(expected)
        assert table["epsilon_prv"].iloc[-1] <= table["epsilon_rdp"].iloc[-1]
        samples = sample_generator(run / "generator.pt", n=5, seed=0)
        assert samples.shape == (5, 2, 16, 16) and np.abs(samples).max() <= 1
        assert len(list((run / "checkpoints").glob("epoch_*.pt"))) == 2
        for name in ("loss.png", "epsilon.png", "samples/epoch_002.png"):
            assert (run / name).stat().st_size > 1000


@pytest.mark.workflow
def test_tiny_run_releases(tiny_run):
    for sigma, n_critic_steps in (("inf", 40), ("1", 40)):
        release = tiny_run / f"synth/sigma~{sigma}/seed~0"
        card = json.loads((release / "privacy_card.json").read_text())
        last = pd.read_csv(tiny_run / f"gan/sigma~{sigma}/seed~0/epochs.tsv", sep="\t").iloc[-1]
        assert card["dataset"] == f"sigma~{sigma}/seed~0" and card["critic_steps"] == n_critic_steps
        assert card["training_set_size"] == 120 and card["release"]["n"] == 120
        if sigma == "inf":
            assert card["sigma"] == "inf" and card["epsilon"] == {"rdp": "inf", "prv": "inf"}
        else:
            assert card["epsilon"]["rdp"] == pytest.approx(last["epsilon_rdp"])
            assert card["delta"] == 8e-4 < 1 / 120 and card["warnings"] == []
            assert card["guarantee"]["per_patient"]["group_size"] == 40
        assert "seed" not in card and card["privacy_unit"] == "patch"
        with np.load(release / "dataset.npz") as npz:
            assert npz["image"].shape == npz["label"].shape == (120, 16, 16)
        assert nib.load(release / "labels.nii.gz").shape == (16, 16, 120)


@pytest.mark.workflow
def test_tiny_run_quality_and_audit(tiny_run):
    quality = pd.read_csv(tiny_run / "tables/quality.tsv", sep="\t")
    assert quality.columns.tolist() == [
        "source", "sigma", "seed", "epsilon", "fd_backbone", "fd_train", "fd_test", "fd_gap", "ssim_mean"
    ]
    pe = f"pe~{TEST_PE_SIGMA}/seed~0"
    assert quality["source"].tolist() == ["sigma~inf/seed~0", "sigma~1/seed~0", pe, "real"]
    gans = quality.iloc[:2]
    assert (gans["fd_backbone"] == "random-cnn-s0-d256").all() and (gans["fd_train"] > 0).all()
    np.testing.assert_allclose(gans["fd_gap"], gans["fd_test"] - gans["fd_train"], rtol=1e-4)
    assert quality["ssim_mean"].between(-1, 1).all()
    card = json.loads((tiny_run / "synth/sigma~1/seed~0/privacy_card.json").read_text())
    assert quality["epsilon"].iloc[1] == pytest.approx(card["epsilon"]["rdp"], rel=1e-5)
    audit = pd.read_csv(tiny_run / "tables/audit.tsv", sep="\t")
    assert audit.columns.tolist() == [
        "source", "sigma", "seed", "epsilon", "dcr_train_median", "dcr_holdout_median", "near_copy_share",
        "mia_auc", "mia_tpr_at_1fpr",
    ]
    assert audit["mia_auc"].between(0, 1).all() and audit["near_copy_share"].between(0, 1).all()
    dcr = pd.read_csv(tiny_run / "audit/sigma~1/seed~0/dcr.tsv", sep="\t")
    assert len(dcr) == 120 and dcr["near_copy"].mean() == pytest.approx(audit["near_copy_share"].iloc[1])
    tsne = pd.read_csv(tiny_run / "quality/tsne.tsv", sep="\t")
    assert tsne.groupby("source").size().to_dict() == {
        "real": 20, "sigma~1/seed~0": 20, "sigma~inf/seed~0": 20, pe: 20
    }


@pytest.mark.workflow
def test_tiny_run_segmentation(tiny_run):
    settings = ["lr-0.0001_dropout-0_augment-off"]
    for setting in settings:
        table = pd.read_csv(tiny_run / f"metrics/real/{setting}/test.tsv", sep="\t")
        assert table.columns.tolist() == [
            "patient", "dsc", "bahd_mm", "hd95_mm", "sensitivity", "precision", "avd", "assd_mm", "hd95_voxels_mm"
        ]
        assert table["patient"].tolist() == ["A004"] and 0 <= table["dsc"].item() <= 1
        prediction = tiny_run / f"predictions/real/{setting}/test/A004"
        segmentation = nib.load(prediction / "segmentation.nii.gz").get_fdata()
        errors = nib.load(prediction / "error_map.nii.gz").get_fdata()
        label = nib.load(tiny_run / "data/A004/label.nii.gz").get_fdata()
        np.testing.assert_array_equal(errors == 1, (segmentation == 1) & (label == 1))
        np.testing.assert_array_equal(nib.load(prediction / "segmentation_native.nii.gz").get_fdata(), segmentation)
    selection = pd.read_csv(tiny_run / "tables/selection.tsv", sep="\t")
    sources = [
        "real", "sigma~inf/seed~0", "sigma~1/seed~0", "placebo~1/seed~0", f"pe~{TEST_PE_SIGMA}/seed~0",
        f"pe-placebo~{TEST_PE_SIGMA}/seed~0", "public",
    ]
    assert selection["source"].tolist() == sources and set(selection["setting"]) == set(settings)
    for source in sources[1:]:
        assert len(pd.read_csv(tiny_run / f"metrics/{source}/{settings[0]}/external.tsv", sep="\t")) == 1
    table1 = pd.read_csv(tiny_run / "tables/table1.tsv", sep="\t")
    assert table1[["source", "split"]].values.tolist() == [[s, split] for s in sources for split in ("test", "external")]
    best = pd.read_csv(tiny_run / f"metrics/real/{selection['setting'].iloc[0]}/external.tsv", sep="\t")
    assert table1["dsc_mean"].iloc[1] == pytest.approx(best["dsc"].mean(), rel=1e-5)
    card = json.loads((tiny_run / "synth/sigma~1/seed~0/privacy_card.json").read_text())
    private = table1.set_index(["source", "split"]).loc[("sigma~1/seed~0", "external"), "epsilon"]
    assert private == pytest.approx(card["epsilon"]["rdp"], abs=5e-5)  # table: 4 decimals
    assert (table1.loc[table1["source"] == "public", "epsilon"] == 0).all()  # the warm start alone saw no private data
    assert card["public_pretraining"]["training_set_size"] == 40 and card["public_pretraining"]["epochs"] == 1
    public = json.loads((tiny_run / "synth/public/privacy_card.json").read_text())
    assert "PUBLIC DATA ONLY" in public["guarantee"]["statement"] and public["epsilon"]["rdp"] == 0


@pytest.mark.workflow
def test_tiny_run_private_gain_is_private_minus_placebo(tiny_run):
    """Table 1's private_gain and private_gain.tsv, recomputed from the per-patient metrics of the selected U-Nets."""
    selection = pd.read_csv(tiny_run / "tables/selection.tsv", sep="\t").set_index("source")["setting"]
    table1 = pd.read_csv(tiny_run / "tables/table1.tsv", sep="\t").set_index(["source", "split"])
    gains = pd.read_csv(tiny_run / "tables/private_gain.tsv", sep="\t", dtype={"sigma": str})
    gains = gains.set_index(["family", "sigma", "split"])
    for split in ("test", "external"):
        dsc = {
            source: pd.read_csv(tiny_run / f"metrics/{source}/{selection[source]}/{split}.tsv", sep="\t")["dsc"].mean()
            for source in ("sigma~1/seed~0", "placebo~1/seed~0")
        }
        expected = dsc["sigma~1/seed~0"] - dsc["placebo~1/seed~0"]
        assert table1.loc[("sigma~1/seed~0", split), "private_gain"] == pytest.approx(expected, abs=1e-6)
        assert gains.loc[("dp-wgan", "1", split), "private_gain_mean"] == pytest.approx(expected, abs=1e-6)
        assert gains.loc[("dp-wgan", "1", split), "seeds"] == 1
        assert np.isnan(gains.loc[("dp-wgan", "1", split), "private_gain_sd"])
        assert np.isnan(table1.loc[("sigma~inf/seed~0", split), "private_gain"]), "no placebo for inf in test.yaml"
    placebo = json.loads((tiny_run / "synth/placebo~1/seed~0/privacy_card.json").read_text())
    private = json.loads((tiny_run / "synth/sigma~1/seed~0/privacy_card.json").read_text())
    assert placebo["epsilon"] == private["epsilon"], "same recipe, sigma, seed and number of pairs: same accounting"


@pytest.mark.workflow
def test_tiny_run_private_evolution(tiny_run):
    """test.yaml's PE run at epsilon 10 (2 rounds of 4 candidates) and its placebo: the exact GDP epsilon in
    epochs.tsv, on the card and in Table 1, a labelled release, and a private gain against the placebo."""
    sigma = TEST_PE_SIGMA
    source, placebo = f"pe~{sigma}/seed~0", f"pe-placebo~{sigma}/seed~0"
    epochs = pd.read_csv(tiny_run / f"gan/{source}/epochs.tsv", sep="\t")
    expected = gdp_epsilon(gdp_mu(float(sigma), 2), 8e-4)
    assert epochs["epoch"].tolist() == [1, 2] and epochs["epsilon_gdp"].iloc[-1] == pytest.approx(expected)
    assert 9.9 < expected <= 10.0
    card = json.loads((tiny_run / f"synth/{source}/privacy_card.json").read_text())
    assert card["family"] == "pe" and card["mechanism"]["iterations"] == 2 and card["mechanism"]["candidates"] == 4
    assert card["epsilon"]["gdp"] == pytest.approx(expected) and expected < card["epsilon"]["rdp"]
    assert "critic_steps" not in card and "seed" not in card
    with np.load(tiny_run / f"synth/{source}/dataset.npz") as npz:
        assert npz["image"].shape == (120, 16, 16) and set(np.unique(npz["label"])) == {0, 1}
    table1 = pd.read_csv(tiny_run / "tables/table1.tsv", sep="\t").set_index(["source", "split"])
    gains = pd.read_csv(tiny_run / "tables/private_gain.tsv", sep="\t", dtype={"sigma": str})
    for split in ("test", "external"):
        row = table1.loc[(source, split)]
        assert row["epsilon"] == pytest.approx(expected)
        assert row["private_gain"] == pytest.approx(row["dsc_mean"] - table1.loc[(placebo, split), "dsc_mean"])
        pe_gain = gains[(gains["family"] == "pe") & (gains["split"] == split)]
        assert pe_gain["private_gain_mean"].item() == pytest.approx(row["private_gain"])


@pytest.mark.workflow
def test_tiny_run_is_complete(tiny_run):
    result = snakemake(tiny_run.parent, "-n", "--configfile", str(ROOT / "config/test.yaml"))
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout


@pytest.mark.workflow
def test_tiny_run_keeps_the_secret_key_out_of_every_output(tiny_run):
    """The key exists once, private; no output outside results/private holds its bytes or hex."""
    key_path = tiny_run / "private" / "secret.key"
    key = key_path.read_bytes()
    assert len(key) == 32 and key_path.stat().st_mode & 0o077 == 0
    files = [p for p in tiny_run.rglob("*") if p.is_file() and "private" not in p.parts and "checkpoints" not in p.parts]
    assert len(files) > 50
    for path in files:
        content = path.read_bytes()
        assert key not in content and key.hex().encode() not in content, path


@pytest.mark.workflow
def test_tiny_run_release_bundles_hold_no_private_data(tiny_run):
    """`snakemake release` after the main run: every bundle matches its manifest, its zip rebuilds byte for byte,
    and neither holds a real patch (any patient's), a patient id, the secret key or fd_train."""
    from test_release import check_manifest

    from dpmra.release.leaks import find_leaks

    config = ["--configfile", str(ROOT / "config/test.yaml")]
    result = snakemake(tiny_run.parent, "release", *config)
    assert result.returncode == 0, result.stdout[-3000:]
    patients = sorted(p.stem for p in (tiny_run / "patches").glob("*.npz") if not p.stem.endswith("_set"))
    assert len(patients) == 10  # 6 of the cohort, the public one and the placebo's 3 stand-ins
    assert not list((tiny_run / "release").glob("placebo*")), "a placebo is a control, never released"
    patches = [np.load(tiny_run / f"patches/{p}.npz")["image"] for p in patients]
    secret = (tiny_run / "private" / "secret.key").read_bytes()
    sources = ["sigma~inf/seed~0", "sigma~1/seed~0"]
    zips = {s: (tiny_run / "release" / f"{s}.zip").read_bytes() for s in sources}
    for source in sources:
        folder, archive = tiny_run / "release" / source, tiny_run / "release" / f"{source}.zip"
        check_manifest(folder, archive)
        assert find_leaks(folder, patches, patients, [secret]) == []
        assert find_leaks(archive, patches, patients, [secret]) == []
        card = (tiny_run / "synth" / source / "privacy_card.json").read_bytes()
        assert (folder / "privacy_card.json").read_bytes() == card
        quality = (folder / "quality.json").read_text()
        assert "fd_train" not in quality and "fd_gap" not in quality
        assert ("NOT PRIVATE" in (folder / "README.md").read_text()) == source.startswith("sigma~inf")
    result = snakemake(tiny_run.parent, "release", "--forcerun", "release_bundle", *config)
    assert result.returncode == 0, result.stdout[-3000:]
    assert {s: (tiny_run / "release" / f"{s}.zip").read_bytes() for s in sources} == zips


@pytest.mark.workflow
def test_rerun_resumes_gan_from_checkpoints_snakemake_kept(tiny_run, tmp_path):
    """A GAN job Snakemake reruns (here: forced, with more epochs) continues from its checkpoints."""
    run = tiny_run / "gan/sigma~1/seed~0"
    config = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    config["gan"]["epochs"] = 3
    (tmp_path / "longer.yaml").write_text(yaml.safe_dump(config))
    target = f"{run.relative_to(tiny_run.parent)}/generator.pt"
    result = snakemake(tiny_run.parent, target, "--forcerun", "gan", "--configfile", str(tmp_path / "longer.yaml"))
    assert result.returncode == 0, result.stdout[-3000:]
    log = (tiny_run / "logs/gan/sigma~1/seed~0.log").read_text()
    assert "resuming from" in log and "epoch_002.pt (epoch 2)" in log
    table = pd.read_csv(run / "epochs.tsv", sep="\t")
    assert table["epoch"].tolist() == [1, 2, 3] and table["critic_steps"].tolist() == [20, 40, 60]
    assert table["epsilon_rdp"].iloc[-1] == pytest.approx(epsilon(1.0, 32 / 120, 60, 8e-4))
