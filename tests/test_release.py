"""The release bundle: exactly what may be shared, checksummed, deterministic, and free of private data.

A fake run (synthetic dataset, stacks, gallery, privacy card, quality JSON and the U-Net tables) is built in a
temporary folder beside fake training patches, patient ids and a fake secret key; the checks search every file
of the bundle, decompressed and unzipped, for those private strings. The negative cases plant them and expect the
checker to find them, so a passing check means something.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import ENV

from dpmra.cli import main
from dpmra.release import bundle
from dpmra.release.bundle import BUNDLE_FILES, MANIFEST, build_bundle
from dpmra.release.leaks import find_leaks
from dpmra.shared.pictures import save_patch_gallery

P, N_SYNTH, PER_PATIENT = 16, 12, 8
SOURCE = "sigma~1/seed~0"
TRAIN_IDS, HELD_OUT_IDS = ["A000", "A001", "A002"], ["A003", "A004", "B000"]
SECRET = bytes(range(101, 133))
SETTINGS = ["lr-0.0001_dropout-0_augment-on", "lr-0.0001_dropout-0_augment-off"]
FD_TRAIN = 123.456789


def real_patches(seed: int) -> np.ndarray:
    """One patient's patch images as in results/patches/*.npz: float32 (n, P, P) on 0..255."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(100, 40, (PER_PATIENT, P, P)), 0, 255).astype(np.float32)


def write_stack(volume: np.ndarray, path: Path) -> None:
    """Patches (n, P, P) as a P x P x n uint8 NIfTI, as `dpmra synth` writes them."""
    stack = np.clip(np.rint(np.moveaxis(volume, 0, -1)), 0, 255).astype(np.uint8)
    nib.save(nib.Nifti1Image(stack, np.eye(4)), str(path))


def card(epsilon: float | str = 2.5, statement: str | None = "STATEMENT: 2.5-DP per patch.") -> dict:
    """A privacy card in the new shape (privacy unit, guarantee, secret), without a training seed."""
    guarantee = {"unit": "patch", "per_patch": {"epsilon": epsilon}, "per_patient": {"epsilon": 20.0}}
    if statement:
        guarantee["statement"] = statement
    return {
        "dataset": SOURCE,
        "sigma": 1.0,
        "mode": "fresh",
        "epsilon": {"rdp": epsilon, "prv": "inf" if epsilon == "inf" else 2.1},
        "delta": 0.001,
        "privacy_unit": "patch",
        "guarantee": guarantee,
        "secret": {"note": "the key seeding the DP noise is kept private"},
    }


def write_synth(folder: Path, image: np.ndarray, label: np.ndarray, privacy_card: dict) -> Path:
    """A run's results/synth folder: dataset.npz, image and label stacks, gallery and privacy card."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "dataset.npz", image=image, label=label)
    write_stack(image, folder / "images.nii.gz")
    write_stack(label * 255, folder / "labels.nii.gz")
    save_patch_gallery(image[:4], label[:4], folder / "gallery.png", title=f"{SOURCE}: epsilon 2.5")
    (folder / "privacy_card.json").write_text(json.dumps(privacy_card, indent=2) + "\n")
    return folder


def synthetic_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Generated-looking pairs: images min-max scaled to 0..255 per patch, binary labels."""
    rng = np.random.default_rng(99)
    image = rng.uniform(0, 1, (N_SYNTH, P, P))
    image = (image - image.min(axis=(1, 2), keepdims=True)) / np.ptp(image, axis=(1, 2), keepdims=True) * 255
    label = (rng.uniform(0, 1, (N_SYNTH, P, P)) > 0.9).astype(np.uint8)
    return image.astype(np.float32), label


def write_tables(folder: Path) -> tuple[Path, Path]:
    """summary.tsv and selection.tsv shaped as `dpmra tables` writes them (with real and val rows to leave out)."""
    rows = []
    for source in ("real", SOURCE):
        for k, setting in enumerate(SETTINGS):
            for split, n in (("val", 1), ("test", 2), ("external", 3)):
                for metric, mean in (("dsc", 0.61 + 0.1 * k), ("bahd_mm", 1.5)):
                    rows.append({"source": source, "setting": setting, "split": split, "metric": metric,
                                 "mean": mean + (split == "external") * 0.01, "sd": 0.05, "n": n})
    pd.DataFrame(rows).to_csv(folder / "summary.tsv", sep="\t", index=False)
    selection = pd.DataFrame(
        {"source": ["real", SOURCE], "setting": [SETTINGS[0], SETTINGS[1]], "val_dsc_mean": [0.8, 0.71]}
    )
    selection.to_csv(folder / "selection.tsv", sep="\t", index=False)
    return folder / "summary.tsv", folder / "selection.tsv"


def write_quality(path: Path) -> Path:
    """quality.json as `dpmra quality` writes it, fd_train and fd_gap included."""
    quality = {
        "synthetic": "results/synth/sigma~1/seed~0/dataset.npz",
        "fd_backbone": "random-cnn-s0-d256",
        "fd_train": FD_TRAIN,
        "fd_test": 150.25,
        "fd_gap": 150.25 - FD_TRAIN,
        "n_fd": 40,
        "n_fd_requested": 40,
        "ssim_mean": 0.125,
        "n_ssim": 12,
        "ssim_data_range": 255.0,
        "seed": 0,
        "image_scale": "per-patch min-max to 0..255, real and synthetic",
    }
    path.write_text(json.dumps(quality, indent=2) + "\n")
    return path


@pytest.fixture
def run(tmp_path: Path) -> dict:
    """Every input of one bundle, the private data it must not contain, and where the bundle goes."""
    image, label = synthetic_pairs()
    summary, selection = write_tables(tmp_path)
    return {
        "synth": write_synth(tmp_path / "synth", image, label, card()),
        "quality": write_quality(tmp_path / "quality.json"),
        "summary": summary,
        "selection": selection,
        "out": tmp_path / "release" / SOURCE,
        "zip": tmp_path / "release" / f"{SOURCE}.zip",
        "patches": [real_patches(i) for i in range(len(TRAIN_IDS + HELD_OUT_IDS))],
        "patients": TRAIN_IDS + HELD_OUT_IDS,
    }


def build(run: dict, out: Path | None = None, zip_path: Path | None = None) -> dict:
    """Build the run's bundle (optionally elsewhere); return its quality summary."""
    return build_bundle(
        run["synth"], run["quality"], run["summary"], run["selection"], out or run["out"], zip_path or run["zip"]
    )


def leaks(run: dict) -> list[str]:
    """Private data found in the run's bundle folder and zip."""
    private = (run["patches"], run["patients"], [SECRET])
    return find_leaks(run["out"], *private) + find_leaks(run["zip"], *private)


def manifest(folder: Path) -> dict[str, tuple[int, str]]:
    """MANIFEST.tsv as {file: (bytes, sha256)}."""
    table = pd.read_csv(folder / MANIFEST, sep="\t", dtype={"file": str, "sha256": str})
    assert table.columns.tolist() == ["file", "bytes", "sha256"]
    return {row.file: (row.bytes, row.sha256) for row in table.itertuples()}


def check_manifest(folder: Path, archive: Path) -> None:
    """Every file of the folder and the zip is the manifest's (the manifest itself apart) with its size and hash."""
    listed = manifest(folder)
    assert set(listed) == set(BUNDLE_FILES) - {MANIFEST}
    assert sorted(p.name for p in folder.iterdir()) == sorted(BUNDLE_FILES)
    for name, (size, digest) in listed.items():
        data = (folder / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest), name
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        prefix = names[0].split("/")[0]
        assert names == sorted(f"{prefix}/{n}" for n in BUNDLE_FILES)
        for member in names:
            name, data = member.split("/", 1)[1], z.read(member)
            if name == MANIFEST:
                assert data == (folder / MANIFEST).read_bytes()
            else:
                assert (len(data), hashlib.sha256(data).hexdigest()) == listed[name], member


def all_keys(value) -> set[str]:
    """Every key of a nested JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in all_keys(v)}
    return set()


def test_bundle_holds_exactly_the_manifest(run):
    build(run)
    check_manifest(run["out"], run["zip"])
    for name in ("dataset.npz", "images.nii.gz", "labels.nii.gz", "gallery.png", "privacy_card.json"):
        assert (run["out"] / name).read_bytes() == (run["synth"] / name).read_bytes(), name


def test_bundle_holds_no_training_patch_patient_id_or_key(run):
    build(run)
    assert leaks(run) == []


@pytest.mark.parametrize("plant", ["float32 patch in dataset.npz", "uint8 patch in images.nii.gz",
                                   "min-max patch in dataset.npz", "patient id in card", "key hex in card"])
def test_leak_check_finds_planted_private_data(run, plant):
    """The checker is not vacuous: each kind of leak, planted into the inputs, is found in folder and zip."""
    image, label = synthetic_pairs()
    privacy_card = card()
    patch = run["patches"][1][3]
    if plant == "float32 patch in dataset.npz":
        image[5] = patch
    elif plant == "min-max patch in dataset.npz":
        image[5] = (patch - patch.min()) * (255 / (patch.max() - patch.min()))
    elif plant == "patient id in card":
        privacy_card["notes"] = f"trained on {TRAIN_IDS[2]} and others"
    elif plant == "key hex in card":
        privacy_card["secret"]["key"] = SECRET.hex()
    write_synth(run["synth"], image, label, privacy_card)
    if plant == "uint8 patch in images.nii.gz":
        stack = image.copy()
        stack[5] = patch
        write_stack(stack, run["synth"] / "images.nii.gz")
    build(run)
    found = leaks(run)
    expected = {
        "float32 patch in dataset.npz": ("dataset.npz!image.npy", "training patch 3 of array 1 (float32)"),
        "min-max patch in dataset.npz": ("dataset.npz!image.npy", "training patch 3 of array 1 (min-max float32)"),
        "uint8 patch in images.nii.gz": ("images.nii.gz!gunzip", "training patch 3 of array 1 (uint8, transposed)"),
        "patient id in card": ("privacy_card.json", f"patient id {TRAIN_IDS[2]}"),
        "key hex in card": ("privacy_card.json", "secret 0 (hex)"),
    }[plant]
    hits = [f for f in found if expected[0] in f and f.endswith(expected[1])]
    assert any(str(run["out"]) in f for f in hits) and any(str(run["zip"]) in f for f in hits), found


def test_zip_is_byte_identical_across_builds(run, tmp_path):
    build(run)
    build(run, tmp_path / "again" / "bundle", tmp_path / "again" / "bundle.zip")
    assert run["zip"].read_bytes() == (tmp_path / "again" / "bundle.zip").read_bytes()
    build(run)  # a rebuild in place gives the same zip
    assert run["zip"].read_bytes() == (tmp_path / "again" / "bundle.zip").read_bytes()
    with zipfile.ZipFile(run["zip"]) as z:
        assert {(i.date_time, i.external_attr >> 16) for i in z.infolist()} == {((1980, 1, 1, 0, 0, 0), 0o100644)}


def test_quality_keeps_only_synthetic_and_held_out_aggregates(run):
    summary = build(run)
    quality = json.loads((run["out"] / "quality.json").read_text())
    assert quality == json.loads(json.dumps(summary))
    keys = all_keys(quality)
    assert not keys & {"fd_train", "fd_gap", "patient", "synthetic", "seed"}
    text = "\n".join((run["out"] / n).read_text() for n in ("quality.json", "README.md"))
    assert "123.4" not in text and "-26.7" not in text  # neither fd_train nor fd_gap, under any name
    fd = quality["frechet_distance_test"]
    assert (fd["value"], fd["backbone"], fd["n_patches"]) == (150.25, "random-cnn-s0-d256", 40)
    assert fd["note"] == "computed on held-out patients, not covered by epsilon; an aggregate over 40 patches"
    data = quality["synthetic_dataset"]
    image, label = synthetic_pairs()
    assert (data["n_pairs"], data["patch_size"]) == (N_SYNTH, P)
    assert data["vessel_share"] == pytest.approx(label.mean())
    assert data["image_mean"] == pytest.approx(image.mean(), rel=1e-6)
    assert data["image_sd"] == pytest.approx(image.std(), rel=1e-5)
    assert quality["diversity"]["ssim_mean"] == 0.125
    segmentation = quality["segmentation"]
    assert segmentation["unet_setting"] == SETTINGS[1]  # the setting selected on validation for this source
    assert list(segmentation["splits"]) == ["test", "external"]
    assert segmentation["splits"]["test"]["dsc_mean"] == pytest.approx(0.71)
    assert segmentation["splits"]["external"]["n_patients"] == 3
    assert "an aggregate over 2 patients" in segmentation["splits"]["test"]["note"]


def readme_code(readme: str, language: str) -> list[str]:
    """The code blocks of a README in one language."""
    return re.findall(rf"```{language}\n(.*?)```", readme, flags=re.S)


def test_readme_tells_the_recipient_what_they_hold(run):
    build(run)
    readme = (run["out"] / "README.md").read_text()
    assert "STATEMENT: 2.5-DP per patch." in readme and "NOT PRIVATE" not in readme
    assert f"{N_SYNTH} labelled synthetic 2D axial" in readme and f"{P} x {P} pixels" in readme
    assert "0..255" in readme and "150.2" in readme and "not covered by epsilon" in readme
    assert all(f"`{name}`" in readme for name in BUNDLE_FILES)
    for code in readme_code(readme, "python"):  # the loading code runs as written, in the bundle folder
        result = subprocess.run([sys.executable, "-c", code + "\nprint('ok')"], cwd=run["out"], env=ENV,
                                capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == "ok", result.stderr
    (check,) = readme_code(readme, "sh")  # and so does the checksum check
    result = subprocess.run(["sh", "-c", check], cwd=run["out"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.count(": OK") == len(BUNDLE_FILES) - 1, result.stdout


def test_readme_without_a_card_statement_names_epsilon_delta_and_unit(run):
    write_synth(run["synth"], *synthetic_pairs(), card(statement=None))
    build(run)
    readme = (run["out"] / "README.md").read_text()
    assert "(2.5, 0.001)-differential privacy" in readme and "one training patch" in readme


def test_non_private_dataset_is_labelled_not_private(run):
    write_synth(run["synth"], *synthetic_pairs(), card(epsilon="inf", statement=None))
    build(run)
    readme = (run["out"] / "README.md").read_text()
    assert readme.splitlines()[2].startswith("> **NOT PRIVATE.**")
    assert "trained WITHOUT differential privacy" in readme and "keeps this guarantee" not in readme


@pytest.mark.parametrize("damage", ["missing stack", "card without epsilon", "no selected setting", "stray file"])
def test_bad_input_names_the_file_and_writes_nothing(run, damage):
    named = {
        "missing stack": run["synth"] / "labels.nii.gz",
        "card without epsilon": run["synth"] / "privacy_card.json",
        "no selected setting": run["selection"],
        "stray file": run["out"],
    }[damage]
    if damage == "missing stack":
        named.unlink()
    elif damage == "card without epsilon":
        named.write_text(json.dumps({k: v for k, v in card().items() if k != "epsilon"}))
    elif damage == "no selected setting":
        pd.read_csv(named, sep="\t").iloc[:1].to_csv(named, sep="\t", index=False)
    else:
        named.mkdir(parents=True)
        (named / "notes.txt").write_text("A000\n")
    with pytest.raises(ValueError, match=re.escape(str(named))):
        build(run)
    assert not run["zip"].exists()
    assert not run["out"].exists() or sorted(p.name for p in run["out"].iterdir()) in ([], ["notes.txt"])


def test_failure_while_writing_leaves_no_bundle_file(run, monkeypatch):
    def broken_zip(*args):
        raise OSError("disk full")

    monkeypatch.setattr(bundle, "write_zip", broken_zip)
    with pytest.raises(OSError, match="disk full"):
        build(run)
    assert list(run["out"].iterdir()) == [] and list(run["zip"].parent.glob("*.zip*")) == []


def test_release_command(run, capsys):
    options = {name: run[name] for name in ("synth", "quality", "summary", "selection", "out", "zip")}
    args = ["release", *(part for name, path in options.items() for part in (f"--{name}", str(path)))]
    assert main(args) == 0
    check_manifest(run["out"], run["zip"])
    (run["synth"] / "privacy_card.json").write_text("{")
    assert main(args) == 1
    assert f"{run['synth'] / 'privacy_card.json'}: not JSON" in capsys.readouterr().err


def test_pixel_bytes_that_spell_an_id_are_not_an_id_leak(tmp_path):
    """A uint8 stack may hold the bytes of 'A006' by chance (as the default run's did); only text counts as an id."""
    stack = np.zeros((8, 8, 4), np.uint8)
    stack[0, :4, 0] = list(b"A006")
    nib.save(nib.Nifti1Image(stack, np.eye(4)), str(tmp_path / "images.nii.gz"))
    (tmp_path / "README.md").write_text("synthetic patches\n")
    assert find_leaks(tmp_path, [], ["A006"], []) == []
    (tmp_path / "README.md").write_text("made from A006\n")
    assert find_leaks(tmp_path, [], ["A006"], []) == [f"{tmp_path / 'README.md'}: patient id A006"]


def test_readme_gives_the_private_gain_over_the_placebo_and_the_warm_start(run):
    """With the run's placebo in the tables: each split's placebo DSC and private gain (0.71 - 0.65 on test)."""
    placebo = "placebo~" + SOURCE[len("sigma~"):]
    summary = pd.read_csv(run["summary"], sep="\t")
    rows = summary[summary["source"] == SOURCE].assign(source=placebo)
    rows.loc[rows["metric"] == "dsc", "mean"] -= 0.06
    pd.concat([summary, rows]).to_csv(run["summary"], sep="\t", index=False)
    selection = pd.read_csv(run["selection"], sep="\t")
    extra = pd.DataFrame({"source": [placebo], "setting": [SETTINGS[1]], "val_dsc_mean": [0.6]})
    pd.concat([selection, extra]).to_csv(run["selection"], sep="\t", index=False)
    private_card = card()
    private_card["public_pretraining"] = {"epochs": 24, "statement": "started from a public warm start (site C)"}
    write_synth(run["synth"], *synthetic_pairs(), private_card)
    quality = build(run)
    test = quality["segmentation"]["splits"]["test"]
    assert test["placebo_dsc_mean"] == pytest.approx(0.65) and test["private_gain"] == pytest.approx(0.06)
    readme = (run["out"] / "README.md").read_text()
    assert "reached 0.65: a private gain of 0.06." in readme and "No placebo" not in readme
    assert "Where the generator began: started from a public warm start (site C)." in readme


def test_readme_without_a_placebo_says_the_dsc_is_no_measure_of_private_learning(run):
    build(run)
    quality = json.loads((run["out"] / "quality.json").read_text())
    assert quality["segmentation"]["placebo"] is None
    assert "No placebo was run for this dataset" in (run["out"] / "README.md").read_text()
