"""Whole-volume prediction: tiling, batched inference on the model's device, NIfTI outputs, native orientation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from dpmra import predict
from dpmra.predict import (
    FN,
    FP,
    TN,
    TP,
    Segmenter,
    axis_starts,
    error_map,
    predict_patients,
    predict_probability,
    predict_volume,
    slice_tiles,
    tile_indices,
    volume_tiles,
    write_native,
)
from dpmra.unet import UNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
def stub() -> ClampStub:
    """A model whose probability is image / 255 (with mean 0 and std 255)."""
    return ClampStub()


@pytest.mark.parametrize("shape", [(40, 36, 4), (12, 20, 3)])
def test_predict_volume_with_a_predictable_model(stub, tmp_path, shape) -> None:
    image, label, mask = toy_volume(shape)
    files = [write_volume(a, tmp_path / f"{n}.nii.gz") for n, a in [("image", image), ("mask", mask), ("label", label)]]
    paths = predict_volume(Segmenter(stub, 0.0, 255.0), *files, tmp_path / "out", patch_size=16, batch_size=5)
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
        Segmenter(stub, 0.0, 255.0),
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
        predict_volume(Segmenter(stub, 0.0, 255.0), *files, None, tmp_path / "out", patch_size=20)
    with pytest.raises(ValueError, match="threshold"):
        predict_volume(Segmenter(stub, 0.0, 255.0), *files, None, tmp_path / "out", patch_size=16, threshold=0)
    empty = write_volume(np.zeros_like(mask), tmp_path / "empty.nii.gz")
    with pytest.raises(ValueError, match="empty"):
        predict_volume(Segmenter(stub, 0.0, 255.0), files[0], empty, None, tmp_path / "out", patch_size=16)


def test_predict_volume_with_a_unet(tmp_path) -> None:
    torch.manual_seed(0)
    image, label, mask = toy_volume((40, 36, 3))
    files = [write_volume(a, tmp_path / f"{n}.nii.gz") for n, a in [("image", image), ("mask", mask), ("label", label)]]
    segmenter = Segmenter(UNet(base_width=4).eval(), 127.0, 70.0)
    paths = predict_volume(segmenter, files[0], files[1], files[2], tmp_path / "out", patch_size=16)
    prob = np.asarray(nib.load(str(paths["probability"])).dataobj)
    assert prob.shape == image.shape and np.all((prob >= 0) & (prob <= 1))
    assert np.all(prob[mask == 0] == 0) and prob[mask > 0].max() > 0


def test_batch_size_does_not_change_the_output() -> None:
    """One patch per call (the original implementation's way) and batches give the same probabilities."""
    torch.manual_seed(0)
    image, _, mask = toy_volume((40, 36, 3))
    segmenter = Segmenter(UNet(base_width=4).eval(), 127.0, 70.0)
    single = predict_probability(segmenter, image, mask, 16, batch_size=1)
    batched = predict_probability(segmenter, image, mask, 16, batch_size=64)
    np.testing.assert_allclose(batched, single, atol=1e-6)


def test_tile_indices_address_the_tiles_voxels() -> None:
    volume = np.arange(5 * 6 * 3).reshape(5, 6, 3)
    origins = torch.tensor([[0, 0, 0], [1, 2, 2]])
    index = tile_indices(origins, volume.shape, 4).numpy()
    flat = volume.reshape(-1)
    assert np.array_equal(flat[index[0]], volume[0:4, 0:4, 0])
    assert np.array_equal(flat[index[1]], volume[1:5, 2:6, 2])


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


# --- several patients with one model --------------------------------------------------------------


def prepared_patient(data: Path, patient: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A patient folder as `dpmra prepare` leaves it (RAS grid, so the native affine is the same)."""
    image, label, mask = toy_volume((40, 36, 3), seed)
    folder = data / patient
    folder.mkdir(parents=True)
    for name, array in (("image", image), ("label", label), ("brain_mask", mask)):
        write_volume(array, folder / f"{name}.nii.gz")
    (folder / "volume.json").write_text(json.dumps({"original_affine": AFFINE.tolist()}))
    return image, label, mask


def test_predict_patients_writes_four_volumes_per_patient(stub, monkeypatch, tmp_path) -> None:
    loads = []
    monkeypatch.setattr(predict, "load_model", lambda path, device=None: loads.append(path) or (stub, 0.0, 255.0))
    volumes = {p: prepared_patient(tmp_path / "data", p, seed) for seed, p in enumerate(["p1", "p2"])}
    predict_patients(tmp_path / "model.pt", tmp_path / "data", list(volumes), tmp_path / "out", patch_size=16)
    assert loads == [tmp_path / "model.pt"]
    for patient, (image, label, mask) in volumes.items():
        folder = tmp_path / "out" / patient
        names = {"probability", "segmentation", "segmentation_native", "error_map"}
        assert {p.name for p in folder.iterdir()} == {f"{n}.nii.gz" for n in names}
        loaded = {n: nib.load(str(folder / f"{n}.nii.gz")) for n in names}
        for img in loaded.values():
            np.testing.assert_allclose(img.affine, AFFINE)
        prob = np.asarray(loaded["probability"].dataobj)
        np.testing.assert_allclose(prob, np.where(mask > 0, image / 255, 0), rtol=1e-6, atol=1e-7)
        segmentation = np.asarray(loaded["segmentation"].dataobj)
        assert np.array_equal(np.asarray(loaded["segmentation_native"].dataobj), segmentation)
        assert np.array_equal(np.asarray(loaded["error_map"].dataobj), error_map(segmentation, label))


def test_predict_patients_names_unprepared_patients(tmp_path) -> None:
    prepared_patient(tmp_path / "data", "p1", 0)
    with pytest.raises(FileNotFoundError, match="p2"):
        predict_patients(tmp_path / "model.pt", tmp_path / "data", ["p1", "p2"], tmp_path / "out", patch_size=16)
    assert not (tmp_path / "out").exists()
