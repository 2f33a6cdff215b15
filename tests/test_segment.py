"""U-Net stage: training data, augmentation, training and resume, tiling, whole-volume prediction, native output."""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dpmra import checkpoint, segment
from dpmra.segment import (
    FN,
    FP,
    TN,
    TP,
    UnetParams,
    UnetTrainer,
    augment,
    augmentation_matrices,
    axis_starts,
    error_map,
    load_model,
    load_sources,
    predict_volume,
    slice_tiles,
    train_unet,
    volume_tiles,
    write_native,
)
from dpmra.unet import UNet

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
    for bad in ({"lr": 0}, {"dropout": 1.0}, {"batch_size": 0}, {"epochs": 0}, {"base_width": 0}):
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
    [("lr", "different parameters"), ("epochs", "beyond the requested"), ("data", "other training data")],
)
def test_checkpoint_of_another_run_is_discarded(trained, sources, tmp_path, caplog, change, reason) -> None:
    """After a change Snakemake reruns the job: the kept checkpoint is deleted and training starts afresh."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    params = {"lr": replace(TINY, lr=1e-3), "epochs": replace(TINY, epochs=1), "data": TINY}[change]
    data = sources[:1] if change == "data" else sources
    caplog.set_level(logging.INFO, logger="dpmra.segment")
    train_unet(data, run, params)
    assert reason in caplog.text
    train_unet(data, tmp_path / "straight", params)
    assert same_weights(tmp_path / "straight" / "model.pt", run / "model.pt")


# --- tiling --------------------------------------------------------------------------


@pytest.mark.parametrize("length", [16, 17, 40, 96])
def test_axis_starts_cover_every_box_with_tiles_inside_the_axis(length: int) -> None:
    size = 16
    for start in range(length):
        for stop in range(start + 1, length + 1):
            starts = axis_starts(start, stop, size)
            assert len(starts) == math.ceil((stop - start) / size)
            covered = np.zeros(length, bool)
            for s in starts:
                assert 0 <= s and s + size <= length
                covered[s : s + size] = True
            assert covered[start:stop].all()


def check_cover(mask_slice: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Assert the tiles lie inside the slice and cover its brain bounding box; return them."""
    tiles = slice_tiles(mask_slice, size)
    covered = np.zeros(mask_slice.shape, bool)
    for x, y in tiles:
        assert 0 <= x and x + size <= mask_slice.shape[0] and 0 <= y and y + size <= mask_slice.shape[1]
        covered[x : x + size, y : y + size] = True
    xs, ys = np.nonzero(mask_slice)
    assert covered[xs.min() : xs.max() + 1, ys.min() : ys.max() + 1].all()
    return tiles


def test_slice_tiles_cover_the_brain_box_in_the_middle_at_edges_and_when_small() -> None:
    mask = np.zeros((40, 36), np.uint8)
    mask[5:35, 3:30] = 1
    assert len(check_cover(mask, 16)) == 2 * 2
    edge = np.zeros((40, 36), np.uint8)
    edge[30:40, 0:36] = 1
    assert check_cover(edge, 16) == [(24, 0), (24, 16), (24, 20)]
    small = np.zeros((40, 36), np.uint8)
    small[38, 34] = 1
    assert check_cover(small, 16) == [(23, 19)]
    corner = np.zeros((40, 36), np.uint8)
    corner[0:3, 0:2] = 1
    assert check_cover(corner, 16) == [(0, 0)]


def test_slice_tiles_cover_random_masks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(rng.integers(16, 60, 2))
        mask = (rng.random(shape) < rng.uniform(0.001, 0.05)).astype(np.uint8)
        if mask.any():
            check_cover(mask, 16)


def test_volume_tiles_skip_slices_without_brain() -> None:
    mask = np.zeros((20, 20, 3), np.uint8)
    mask[2:19, 2:19, 1] = 1
    tiles = volume_tiles(mask, 16)
    assert tiles.shape == (4, 3) and set(tiles[:, 2]) == {1}
    assert slice_tiles(mask[:, :, 0], 16) == []


# --- whole-volume prediction ----------------------------------------------------------


class ClampStub(nn.Module):
    """Returns its (normalised) input clipped to [0, 1]; counts its calls and the patches seen."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.patches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.patches += x.shape[0]
        return x.clamp(0, 1)


AFFINE = np.array([[0.5, 0, 0, -10], [0, 0.6, 0, 4], [0, 0, 0.7, 2], [0, 0, 0, 1]])


def write_volume(data: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def toy_volume(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image 0..255, a brain mask inset from the borders, a label disagreeing with image >= 127.5 in places."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 255, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[1:-1, 2:-1, 1:] = 1
    label = (image >= 127.5).astype(np.uint8) * mask
    flip = rng.random(shape) < 0.2
    label[flip] = 1 - label[flip]
    return image, label, mask


@pytest.fixture
def stub(monkeypatch) -> ClampStub:
    """Make predict_volume use the clamp stub, with mean 0 and std 255, so probability = image / 255."""
    model = ClampStub()
    monkeypatch.setattr(segment, "load_model", lambda path, device=None: (model, 0.0, 255.0))
    return model


@pytest.mark.parametrize("shape", [(40, 36, 4), (12, 20, 3)])
def test_predict_volume_with_a_predictable_model(stub, tmp_path, shape) -> None:
    image, label, mask = toy_volume(shape)
    files = [write_volume(a, tmp_path / f"{n}.nii.gz") for n, a in [("image", image), ("mask", mask), ("label", label)]]
    paths = predict_volume(tmp_path / "model.pt", *files, tmp_path / "out", patch_size=16, batch_size=5)
    assert set(paths) == {"probability", "segmentation", "error_map"}
    loaded = {name: nib.load(str(path)) for name, path in paths.items()}
    for img in loaded.values():
        np.testing.assert_allclose(img.affine, AFFINE)
        assert img.shape == shape
    prob = np.asarray(loaded["probability"].dataobj)
    seg = np.asarray(loaded["segmentation"].dataobj)
    errors = np.asarray(loaded["error_map"].dataobj)
    assert prob.dtype == np.float32 and seg.dtype == np.uint8 and errors.dtype == np.uint8
    np.testing.assert_allclose(prob, np.where(mask > 0, image / 255, 0), rtol=1e-6, atol=1e-7)
    assert np.all(prob[mask == 0] == 0) and np.all(seg[mask == 0] == 0)
    assert np.array_equal(seg, (prob >= 0.5).astype(np.uint8))
    expected = np.select(
        [(seg == 1) & (label == 1), (seg == 1) & (label == 0), (seg == 0) & (label == 1)], [TP, FP, FN], TN
    )
    assert np.array_equal(errors, expected)
    assert {TN, TP, FP, FN} <= set(np.unique(errors).tolist())
    n_tiles = len(volume_tiles(np.pad(mask, [(0, max(0, 16 - shape[0])), (0, max(0, 16 - shape[1])), (0, 0)]), 16))
    assert stub.patches == n_tiles
    assert stub.calls == math.ceil(n_tiles / 5) < n_tiles


def test_predict_volume_without_label_writes_two_files(stub, tmp_path) -> None:
    image, _, mask = toy_volume((40, 36, 2))
    paths = predict_volume(
        tmp_path / "model.pt",
        write_volume(image, tmp_path / "image.nii.gz"),
        write_volume(mask, tmp_path / "mask.nii.gz"),
        None,
        tmp_path / "out",
        patch_size=16,
    )
    assert set(paths) == {"probability", "segmentation"}
    assert not (tmp_path / "out" / "error_map.nii.gz").exists()
    assert stub.calls == 1


def test_predict_volume_rejects_bad_arguments(stub, tmp_path) -> None:
    image, _, mask = toy_volume((40, 36, 2))
    files = [write_volume(image, tmp_path / "image.nii.gz"), write_volume(mask, tmp_path / "mask.nii.gz")]
    with pytest.raises(ValueError, match="multiple of 16"):
        predict_volume(tmp_path / "model.pt", *files, None, tmp_path / "out", patch_size=20)
    with pytest.raises(ValueError, match="threshold"):
        predict_volume(tmp_path / "model.pt", *files, None, tmp_path / "out", patch_size=16, threshold=0)
    empty = write_volume(np.zeros_like(mask), tmp_path / "empty.nii.gz")
    with pytest.raises(ValueError, match="empty"):
        predict_volume(tmp_path / "model.pt", files[0], empty, None, tmp_path / "out", patch_size=16)


def test_predict_volume_with_a_trained_model(trained, tmp_path) -> None:
    image, label, mask = toy_volume((40, 36, 3))
    files = [write_volume(a, tmp_path / f"{n}.nii.gz") for n, a in [("image", image), ("mask", mask), ("label", label)]]
    paths = predict_volume(trained / "model.pt", files[0], files[1], files[2], tmp_path / "out", patch_size=16)
    prob = np.asarray(nib.load(str(paths["probability"])).dataobj)
    assert prob.shape == image.shape and np.all((prob >= 0) & (prob <= 1))
    assert np.all(prob[mask == 0] == 0) and prob[mask > 0].max() > 0


def test_error_map_codes() -> None:
    seg = np.array([0, 1, 1, 0], np.uint8)
    label = np.array([0, 1, 0, 1], np.uint8)
    assert error_map(seg, label).tolist() == [0, 1, 2, 3]


# --- native orientation ----------------------------------------------------------------


@pytest.mark.parametrize(
    "affine",
    [
        np.array([[-0.5, 0, 0, 40], [0, -0.6, 0, 30], [0, 0, 0.7, -20], [0, 0, 0, 1]]),  # LPS
        np.array([[0, 0, -0.7, 10], [-0.5, 0, 0, 40], [0, 0.6, 0, -5], [0, 0, 0, 1]]),  # axial axis first
    ],
)
def test_write_native_round_trips_a_reoriented_volume(tmp_path, affine) -> None:
    data = np.random.default_rng(0).integers(0, 1000, (7, 6, 5)).astype(np.float32)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    assert "".join(nib.aff2axcodes(canonical.affine)) == "RAS"
    write_native(np.asarray(canonical.dataobj), canonical.affine, affine, tmp_path / "native.nii.gz")
    native = nib.load(str(tmp_path / "native.nii.gz"))
    assert np.array_equal(np.asarray(native.dataobj), data)
    np.testing.assert_allclose(native.affine, affine, atol=1e-6)
    assert native.get_data_dtype() == np.float32


def test_write_native_rejects_mismatched_affines(tmp_path) -> None:
    affine = np.diag([-0.5, -0.5, 0.7, 1.0])
    with pytest.raises(ValueError, match="not a reorientation"):
        write_native(np.zeros((4, 4, 4), np.float32), np.diag([0.5, 0.5, 0.7, 1.0]), affine, tmp_path / "x.nii.gz")
