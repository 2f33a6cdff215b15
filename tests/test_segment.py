"""U-Net stage: training data, augmentation, training and resume, tiling, whole-volume prediction, native output."""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dpmra.segmentation import training as segment
from dpmra.segmentation.params import UnetParams
from dpmra.segmentation.predict import load_model
from dpmra.segmentation.training import UnetTrainer, augment, augmentation_matrices, load_sources, train_unet
from dpmra.segmentation.unet import UNet
from dpmra.shared import checkpoint

PATCH = 16
TINY = UnetParams(lr=3e-3, dropout=0.1, augment=True, batch_size=16, epochs=2, base_width=4, seed=5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def line_patches(n: int, p: int = PATCH, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy patches with one bright straight line each (the 'vessel', labelled 1)."""
    rng = np.random.default_rng(seed)
    label = np.zeros((n, p, p), np.uint8)
    for i in range(n):
        where = rng.integers(2, p - 2)
        if rng.random() < 0.5:
            label[i, where, :] = 1
        else:
            label[i, :, where] = 1
    image = rng.normal(60, 10, (n, p, p)) + 120 * label
    return np.clip(image, 0, 255).astype(np.float32), label


def save_patch_file(path: Path, n: int, seed: int, p: int = PATCH) -> Path:
    image, label = line_patches(n, p, seed)
    np.savez(path, image=image, label=label)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    """Two per-patient patch files, 150 patches each."""
    folder = tmp_path_factory.mktemp("patches")
    return [save_patch_file(folder / f"p{k}.npz", 150, seed=k) for k in range(2)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sources) -> Path:
    """A tiny U-Net trained for 2 epochs; returns its output folder."""
    out = tmp_path_factory.mktemp("unet")
    train_unet(sources, out, TINY)
    return out


def weights(model_path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(model_path)["state_dict"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# --- training data -------------------------------------------------------------------


def test_load_sources_concatenates_files(sources) -> None:
    images, labels = load_sources(sources)
    assert images.shape == labels.shape == (300, PATCH, PATCH)
    assert images.dtype == np.float32 and labels.dtype == np.uint8


def test_load_sources_rejects_mixed_patch_sizes(tmp_path) -> None:
    files = [save_patch_file(tmp_path / "a.npz", 4, 0), save_patch_file(tmp_path / "b.npz", 4, 0, p=32)]
    with pytest.raises(ValueError, match="differ in patch size"):
        load_sources(files)


def test_load_sources_rejects_bad_files(tmp_path) -> None:
    image, label = line_patches(4, 16)
    np.savez(tmp_path / "no_label.npz", image=image)
    np.savez(tmp_path / "p20.npz", image=np.zeros((2, 20, 20), np.float32), label=np.zeros((2, 20, 20), np.uint8))
    np.savez(tmp_path / "label255.npz", image=image, label=label * 255)
    for name, message in [("no_label", "label"), ("p20", "multiple of 16"), ("label255", "only 0 and 1")]:
        with pytest.raises(ValueError, match=message) as err:
            load_sources([tmp_path / f"{name}.npz"])
        assert name in str(err.value)


def test_params_are_validated() -> None:
    for bad in ({"lr": 0}, {"dropout": 1.0}, {"batch_size": 0}, {"epochs": 0}, {"base_width": 0}, {"loss": "focal"}):
        with pytest.raises(ValueError):
            UnetParams(**bad)


# --- augmentation --------------------------------------------------------------------


def blobs(n: int, p: int = 32, seed: int = 0) -> torch.Tensor:
    """(n,1,p,p) random binary shapes: thresholded smoothed noise."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 1, p // 4, p // 4, generator=g)
    smooth = torch.nn.functional.interpolate(noise, size=(p, p), mode="bilinear", align_corners=False)
    return (smooth > 0.55).float()


def test_augment_applies_the_same_map_to_image_and_label() -> None:
    label = blobs(32)
    image = 2 * label
    aug_image, aug_label = augment(image, label, torch.Generator().manual_seed(1))
    assert torch.equal((aug_image >= 1.0).float(), aug_label)
    assert set(aug_label.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(aug_label, label)


def test_augment_is_reproducible_from_the_generator() -> None:
    label = blobs(8)
    first = augment(label * 3, label, torch.Generator().manual_seed(7))
    again = augment(label * 3, label, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_augmentation_matrices_stay_in_the_papers_ranges() -> None:
    theta = augmentation_matrices(2000, torch.Generator().manual_seed(0)).double()
    assert torch.all(theta[:, :, 2] == 0)
    det = torch.linalg.det(theta[:, :, :2])
    # rotation and flip have |det| 1; a shear by s has det cos(s) >= cos(20 deg)
    assert torch.all(det.abs() <= 1 + 1e-6) and torch.all(det.abs() >= math.cos(math.radians(20)) - 1e-6)
    assert 0.4 < (det < 0).double().mean() < 0.6
    # the image of the x axis: rotated by the angle only (shear and row flip leave it alone)
    angle = torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 0, 0]))
    assert angle.abs().max() <= 30 + 1e-4 and angle.abs().max() > 29


def test_batch_is_normalised_and_unaugmented_when_augmentation_is_off(sources) -> None:
    images, labels = load_sources(sources)
    trainer = UnetTrainer(images, labels, replace(TINY, augment=False), torch.device("cpu"))
    index = torch.tensor([3, 0, 299])
    x, y = trainer.batch(index)
    expected = (images[index.numpy()] - images.mean(dtype=np.float64)) / images.std(dtype=np.float64)
    np.testing.assert_allclose(x[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(y[:, 0], torch.from_numpy(labels[index.numpy()]).float())


def test_batch_is_augmented_when_asked(sources) -> None:
    images, labels = load_sources(sources)
    plain = UnetTrainer(images, labels, replace(TINY, augment=False), torch.device("cpu")).batch(torch.arange(16))
    augmented = UnetTrainer(images, labels, TINY, torch.device("cpu")).batch(torch.arange(16))
    assert not torch.equal(plain[1], augmented[1])


# --- training ------------------------------------------------------------------------


def test_training_writes_model_table_and_normalisation(trained, sources) -> None:
    images, _ = load_sources(sources)
    stored = checkpoint.load(trained / "model.pt")
    assert stored["mean"] == pytest.approx(float(images.mean(dtype=np.float64)), rel=1e-12)
    assert stored["std"] == pytest.approx(float(images.std(dtype=np.float64)), rel=1e-12)
    assert stored["config"] == {"base_width": 4, "dropout": 0.1}
    assert stored["params"]["lr"] == TINY.lr and stored["epochs"] == 2
    model, mean, std = load_model(trained / "model.pt", torch.device("cpu"))
    assert isinstance(model, UNet) and not model.training
    assert (mean, std) == (stored["mean"], stored["std"])
    table = pd.read_csv(trained / "training.tsv", sep="\t")
    assert list(table.columns) == ["epoch", "loss", "seconds"]
    assert table["epoch"].tolist() == [1, 2]
    assert [p.name for p in (trained / "checkpoints").iterdir()] == ["epoch_002.pt"]


@pytest.fixture
def cpu_only(monkeypatch) -> None:
    """Train on the CPU: bit-identical repeats are promised there (CUDA kernels use atomics)."""
    monkeypatch.setattr(segment, "default_device", lambda: torch.device("cpu"))


def test_training_lowers_the_loss(trained) -> None:
    table = pd.read_csv(trained / "training.tsv", sep="\t")
    assert table["loss"].iloc[1] < table["loss"].iloc[0] - 0.05


def test_dice_bce_training_lowers_its_loss_and_is_recorded(cpu_only, sources, tmp_path) -> None:
    train_unet(sources, tmp_path / "bce", replace(TINY, loss="dice_bce"))
    table = pd.read_csv(tmp_path / "bce" / "training.tsv", sep="\t")
    assert table["loss"].iloc[1] < table["loss"].iloc[0]
    assert table["loss"].iloc[0] > 1  # Dice (<= 1) plus a cross-entropy that starts near log 2
    assert checkpoint.load(tmp_path / "bce" / "model.pt")["params"]["loss"] == "dice_bce"


def test_training_is_deterministic_from_the_seed(cpu_only, sources, tmp_path) -> None:
    for name, params in [("first", TINY), ("again", TINY), ("other_seed", replace(TINY, seed=6))]:
        train_unet(sources, tmp_path / name, params)
    assert same_weights(tmp_path / "first" / "model.pt", tmp_path / "again" / "model.pt")
    first, again = (pd.read_csv(tmp_path / name / "training.tsv", sep="\t") for name in ("first", "again"))
    assert again["loss"].tolist() == first["loss"].tolist()
    assert not same_weights(tmp_path / "first" / "model.pt", tmp_path / "other_seed" / "model.pt")


def test_kill_and_resume_equals_an_uninterrupted_run(cpu_only, sources, tmp_path) -> None:
    train_unet(sources, tmp_path / "straight", TINY)
    out = tmp_path / "resumed"
    train_unet(sources, out, replace(TINY, epochs=1))
    assert pd.read_csv(out / "training.tsv", sep="\t")["epoch"].tolist() == [1]
    (out / "model.pt").unlink()  # as if killed before the end of the longer run
    train_unet(sources, out, TINY)
    assert same_weights(tmp_path / "straight" / "model.pt", out / "model.pt")
    resumed = pd.read_csv(out / "training.tsv", sep="\t")
    straight = pd.read_csv(tmp_path / "straight" / "training.tsv", sep="\t")
    assert resumed["loss"].tolist() == straight["loss"].tolist()


@pytest.mark.parametrize(
    "change, reason",
    [("lr", "different parameters"), ("loss", "different parameters"), ("epochs", "beyond the requested"),
     ("data", "other training data")],
)
def test_checkpoint_of_another_run_is_discarded(trained, sources, tmp_path, caplog, change, reason) -> None:
    """After a change Snakemake reruns the job: the kept checkpoint is deleted and training starts afresh."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    params = {"lr": replace(TINY, lr=1e-3), "loss": replace(TINY, loss="dice_bce"), "epochs": replace(TINY, epochs=1),
              "data": TINY}[change]
    data = sources[:1] if change == "data" else sources
    caplog.set_level(logging.INFO, logger="dpmra.segmentation.training")
    train_unet(data, run, params)
    assert reason in caplog.text
    train_unet(data, tmp_path / "straight", params)
    assert same_weights(tmp_path / "straight" / "model.pt", run / "model.pt")
