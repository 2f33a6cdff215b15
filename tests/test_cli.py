"""The `dpmra` command line: interfaces users script against, and errors that name the file."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from dpmra.cli import main


def dpmra(*args: str) -> subprocess.CompletedProcess:
    """Run `python -m dpmra` as a user would."""
    return subprocess.run([sys.executable, "-m", "dpmra", *args], capture_output=True, text=True, timeout=300)


def test_phantom_command_writes_the_subject(tmp_path):
    result = dpmra("phantom", "--site", "B", "--seed", "3", "--shape", "48", "48", "20", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    image = nib.load(tmp_path / "image.nii.gz")
    assert image.shape == (48, 48, 20)
    np.testing.assert_allclose(image.header.get_zooms(), (0.6, 0.6, 0.7), rtol=1e-6)
    assert nib.load(tmp_path / "label.nii.gz").get_data_dtype() == np.uint8
    assert (tmp_path / "brain_mask.nii.gz").exists() and (tmp_path / "mip.png").exists()


def test_bad_input_exits_1_naming_the_file_and_writes_nothing(subject_files, tmp_path):
    subject_files["label"].write_text("not a volume")
    out = tmp_path / "out"
    result = dpmra(
        "prepare", "--patient", "P1", "--image", str(subject_files["image"]), "--label", str(subject_files["label"]),
        "--patches-per-patient", "10", "--patch-size", "16", "--out", str(out),
    )
    assert result.returncode == 1
    assert f"dpmra prepare: error: {subject_files['label']}: unreadable or not a NIfTI file" in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_unknown_phantom_site_is_an_error(tmp_path, capsys):
    assert main(["phantom", "--site", "D", "--seed", "0", "--out", str(tmp_path)]) == 1
    assert "unknown site 'D'" in capsys.readouterr().err


def test_epsilon_reproduces_the_paper(capsys):
    # sigma 0.65, 50 epochs, charged 10 times per batch as the paper did: paper eps 10.2 (docs/design.md §2.2: 10.18)
    args = ["epsilon", "--sigma", "0.65", "--sample-rate", str(32 / 41000), "--steps", str(1281 * 10 * 50)]
    assert main([*args, "--delta", str(1 / 41000), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epsilon"] == pytest.approx(10.18, abs=0.05)
    assert {k: result[k] for k in ("accountant", "sigma", "steps")} == {"accountant": "rdp", "sigma": 0.65, "steps": 640500}


def test_epsilon_solves_sigma_from_epochs(capsys):
    base = ["epsilon", "--sample-rate", str(32 / 1200), "--delta", str(1 / 1200), "--json"]
    assert main([*base, "--epsilon", "5", "--epochs", "5", "--accountant", "prv"]) == 0
    solved = json.loads(capsys.readouterr().out)
    assert solved["steps"] == 5 * 5 * round(1200 / 32)
    assert 4.9 <= solved["epsilon"] <= 5.0 and solved["target_epsilon"] == 5
    assert main([*base, "--sigma", str(solved["sigma"]), "--steps", str(solved["steps"]), "--accountant", "prv"]) == 0
    assert json.loads(capsys.readouterr().out)["epsilon"] == pytest.approx(solved["epsilon"], rel=1e-6)


def test_metrics_command(tmp_path, capsys):
    truth = np.zeros((8, 8, 4), np.uint8)
    truth[2:4, 2:4, 1] = 1
    prediction = truth.copy()
    prediction[2, 2, 1] = 0
    affine = np.diag([0.5, 0.5, 0.7, 1.0])
    nib.save(nib.Nifti1Image(truth, affine), tmp_path / "t.nii.gz")
    nib.save(nib.Nifti1Image(prediction * 255, affine), tmp_path / "p.nii.gz")
    assert main(["metrics", str(tmp_path / "t.nii.gz"), str(tmp_path / "p.nii.gz"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert list(scores) == ["dsc", "bahd_mm", "hd95_mm", "sensitivity", "precision", "avd", "assd_mm", "hd95_voxels_mm"]
    assert scores["dsc"] == pytest.approx(6 / 7) and scores["sensitivity"] == pytest.approx(0.75)
    assert scores["bahd_mm"] == pytest.approx(0.5 / 8)
    assert main(["metrics", str(tmp_path / "t.nii.gz"), str(tmp_path / "missing.nii.gz")]) == 1
    assert "missing.nii.gz: file not found" in capsys.readouterr().err
