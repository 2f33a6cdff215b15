"""Shared fixtures: small hand-built NIfTI subjects whose every voxel is known."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from dpmra.privacy.plan import pe_sigmas

SHAPE = (40, 36, 8)
AFFINE = np.diag([0.5, 0.5, 0.7, 1.0])


def toy_subject(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy brain-like block with bright straight vessels along x and y; returns image, label, mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE, np.uint8)
    mask[4:36, 4:32, :] = 1
    label = np.zeros(SHAPE, np.uint8)
    label[6:34, 17:19, :] = 1
    label[20, 6:30, :] = 1
    image = 10 + rng.normal(0, 1, SHAPE) + 90 * mask + 100 * label
    return image.astype(np.float32), label, mask


def save(data: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    """Write an array as NIfTI and return the path."""
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.fixture
def subject_files(tmp_path: Path) -> dict[str, Path]:
    """A valid toy subject written as image/label/brain_mask NIfTI files."""
    image, label, mask = toy_subject()
    return {
        "image": save(image, tmp_path / "image.nii.gz"),
        "label": save(label, tmp_path / "label.nii.gz"),
        "brain_mask": save(mask, tmp_path / "brain_mask.nii.gz"),
    }


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks run fastest single-threaded; extra threads only contend on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ROOT = Path(__file__).resolve().parents[1]
# Sigma label of config/test.yaml's PE run and its placebo (epsilon 10, 2 rounds, delta 8e-4): pe~{this}/seed~0.
TEST_PE_SIGMA = pe_sigmas({"epsilons": [10], "iterations": 2}, 8e-4)[10.0]
BIN = Path(sys.executable).parent
# Every workflow run in the tests starts as a user's `.venv/bin/snakemake` in a new shell: the venv is NOT on PATH
# (`make test` puts it there; it is taken out), so jobs find `dpmra` only through the workflow itself.
ENV = {
    **os.environ,
    "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() != BIN.resolve()),
}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the repository's workflow in `workdir`; stdout holds both streams (Snakemake reports errors on either)."""
    return subprocess.run(
        [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--cores", "2", *args],
        cwd=workdir,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny config run end to end once per session, shared by the content checks of every stage."""
    workdir = tmp_path_factory.mktemp("tiny")
    result = snakemake(workdir, "--configfile", str(ROOT / "config/test.yaml"))
    assert result.returncode == 0, result.stdout[-5000:]
    return workdir / "results"
