"""Whole-volume prediction: sliding windows as MONAI's, Gaussian blending without seams, batched inference on the
model's device, NIfTI outputs, error maps inside the brain mask, native orientation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dpmra.segmentation import predict
from dpmra.segmentation.predict import (
    FN,
    FP,
    TN,
    TP,
    Segmenter,
    axis_region,
    axis_windows,
    error_map,
    gaussian_weights,
    pad_slices,
    predict_patients,
    predict_probability,
    predict_volume,
    scan_interval,
    slice_region,
    slice_windows,
    tile_indices,
    volume_windows,
    write_native,
)
from dpmra.segmentation.unet import UNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- windows ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75, 0.9])
def test_axis_windows_cover_the_range_every_interval(overlap: float) -> None:
    """Windows lie inside the range, cover it, start every interval, and only the last is shifted back."""
    size = 16
    interval = scan_interval(size, overlap)
    for start in range(0, 5):
        for length in range(size, 4 * size + 3):
            starts = axis_windows(start, start + length, size, interval)
            covered = np.zeros(start + length, bool)
            for s in starts:
                assert start <= s and s + size <= start + length
                covered[s : s + size] = True
            assert covered[start:].all()
            assert all(b - a == interval for a, b in zip(starts[:-2], starts[1:-1]))
            assert len(starts) == 1 or 0 < starts[-1] - starts[-2] <= interval


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75, 0.9])
def test_window_starts_are_monais(overlap: float) -> None:
    """The same starts as MONAI's sliding_window_inference lays over an image of the region's size."""
    monai_data = pytest.importorskip("monai.data.utils")
    monai_inferers = pytest.importorskip("monai.inferers.utils")
    size = 16
    for length in range(size, 5 * size):
        (interval,) = monai_inferers._get_scan_interval((length,), (size,), 1, (overlap,))
        expected = [window[0].start for window in monai_data.dense_patch_slices((length,), (size,), (interval,))]
        assert axis_windows(0, length, size, scan_interval(size, overlap)) == expected, length


def test_axis_region_grows_short_boxes_inside_the_axis() -> None:
    assert axis_region(5, 30, 16, 40) == (5, 30)
    assert axis_region(10, 14, 16, 40) == (4, 20)
    assert axis_region(0, 3, 16, 40) == (0, 16)
    assert axis_region(38, 40, 16, 40) == (24, 40)


def test_slice_windows_cover_the_brain_box_and_stay_inside_the_slice() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(int(n) for n in rng.integers(16, 60, 2))
        mask = (rng.random(shape) < rng.uniform(0.001, 0.05)).astype(np.uint8)
        if not mask.any():
            continue
        overlap = float(rng.choice([0.0, 0.5, 0.75]))
        covered = np.zeros(shape, bool)
        for x, y in slice_windows(mask, 16, overlap):
            assert 0 <= x and x + 16 <= shape[0] and 0 <= y and y + 16 <= shape[1]
            covered[x : x + 16, y : y + 16] = True
        xs, ys = np.nonzero(mask)
        assert covered[xs.min() : xs.max() + 1, ys.min() : ys.max() + 1].all()


def test_volume_windows_skip_slices_without_brain() -> None:
    mask = np.zeros((40, 20, 3), np.uint8)
    mask[2:39, 2:19, 1] = 1
    windows = volume_windows(mask, 16, 0.5)
    assert set(windows[:, 2]) == {1}
    assert sorted(set(windows[:, 0])) == [2, 10, 18, 23] and sorted(set(windows[:, 1])) == [2, 3]
    assert slice_windows(mask[:, :, 0], 16, 0.5) == []


def test_gaussian_weights_are_monais() -> None:
    monai_data = pytest.importorskip("monai.data.utils")
    for size in (16, 32, 96):
        expected = monai_data.compute_importance_map((size, size), mode="gaussian", sigma_scale=0.125)
        assert torch.equal(gaussian_weights(size, torch.device("cpu")), expected)


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
    truth = label * mask
    expected = np.select(
        [(seg == 1) & (truth == 1), (seg == 1) & (truth == 0), (seg == 0) & (truth == 1)], [TP, FP, FN], TN
    )
    assert np.array_equal(errors, expected)
    assert {TN, TP, FP, FN} <= set(np.unique(errors).tolist())
    assert (label * (1 - mask)).any() and np.all(errors[mask == 0] == TN)  # labels off-brain are not scored
    n_windows = len(volume_windows(pad_slices(mask, 16), 16, 0.5))
    assert stub.patches == n_windows
    assert stub.calls == math.ceil(n_windows / 5) < n_windows


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
    with pytest.raises(ValueError, match="overlap"):
        predict_volume(Segmenter(stub, 0.0, 255.0), *files, None, tmp_path / "out", patch_size=16, overlap=1.0)
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
    batched = predict_probability(segmenter, image, mask, 16, batch_size=7)
    assert len(volume_windows(mask, 16, 0.5)) % 7 > 0  # several batches, the last one partial
    np.testing.assert_allclose(batched, single, atol=1e-6)


def test_tile_indices_address_the_windows_voxels() -> None:
    volume = np.arange(5 * 6 * 3).reshape(5, 6, 3)
    origins = torch.tensor([[0, 0, 0], [1, 2, 2]])
    index = tile_indices(origins, volume.shape, 4).numpy()
    flat = volume.reshape(-1)
    assert np.array_equal(flat[index[0]], volume[0:4, 0:4, 0])
    assert np.array_equal(flat[index[1]], volume[1:5, 2:6, 2])


def test_error_map_codes_inside_the_brain_mask() -> None:
    """Codes as the metrics count: a label (or prediction) voxel outside the brain mask is background."""
    seg = np.array([0, 1, 1, 0, 0, 1], np.uint8)
    label = np.array([0, 1, 0, 1, 1, 1], np.uint8)
    mask = np.array([1, 1, 1, 1, 0, 0], np.uint8)
    assert error_map(seg, label, mask).tolist() == [TN, TP, FP, FN, TN, TN]


class BlurStub(nn.Module):
    """A 5 x 5 mean filter with zero padding: translation-equivariant, but darker within 2 voxels of a window's
    border, where it lacks context as a U-Net does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 5, stride=1, padding=2)


def blur_case(width: int, overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of the blur model on a smooth 80 x width image by 32 x 32 windows, and on each whole slice."""
    x, y = np.meshgrid(np.arange(80), np.arange(width), indexing="ij")
    image = np.stack([120 + 60 * np.sin(x / 6 + z) * np.cos(y / 9) for z in range(2)], axis=-1).astype(np.float32)
    segmenter = Segmenter(BlurStub(), 0.0, 255.0)
    probability = predict_probability(segmenter, image, np.ones(image.shape, np.uint8), 32, 7, overlap)
    whole = BlurStub()(torch.from_numpy(image / 255).permute(2, 0, 1)[:, None])[:, 0].permute(1, 2, 0).numpy()
    return probability, whole


def largest_step(volume: np.ndarray, inner: tuple[slice, slice]) -> float:
    """The largest difference between neighbouring voxels of a slice, along x or y, inside `inner`."""
    return max(float(np.abs(np.diff(volume, axis=axis))[inner].max()) for axis in (0, 1))


@pytest.mark.parametrize(
    ("width", "deviation", "step_ratio"), [(64, 0.005, 1.05), (72, 0.02, 1.2)], ids=["regular", "last-shifted"]
)
def test_overlapping_windows_leave_no_seam(width: int, deviation: float, step_ratio: float) -> None:
    """A translation-equivariant model through windows overlapping by half, Gaussian-blended, gives its whole-slice
    result: no seam at the tile borders, where edge-to-edge tiles (overlap 0) dip by 67 % and jump 3-6x more
    than the image does. Measured: 0.32 % (regular grid) and 1.7 % (72 wide: the last window shifted back, so a
    border lies 7.5 voxels off a centre). Checked P/4 = 8 voxels inside the region's edge: nearer, a voxel is at
    the border of every window along one axis and MONAI's weight floor (1e-3) lets window corners count alike."""
    inner = (slice(8, -8), slice(8, -8))
    probability, whole = blur_case(width, 0.5)
    assert (np.abs(probability - whole) / whole)[inner].max() < deviation
    assert largest_step(probability, inner) < step_ratio * largest_step(whole, inner)
    tiles, _ = blur_case(width, 0.0)
    assert (np.abs(tiles - whole) / whole)[inner].max() > 0.6
    assert largest_step(tiles, inner) > 3 * largest_step(whole, inner)


@pytest.mark.parametrize("overlap", [0.25, 0.5])
def test_probability_equals_monais_sliding_window_inference(overlap: float) -> None:
    """Per slice, MONAI's sliding_window_inference (Gaussian mode) over the slice's brain region gives the same
    probabilities as the batched windows of all slices."""
    monai_inferers = pytest.importorskip("monai.inferers")
    torch.manual_seed(0)
    image, _, mask = toy_volume((40, 36, 3))
    mask[:, :, 2] = 0
    mask[5:12, 20:30, 2] = 1  # a small brain section: its region grows to one window
    segmenter = Segmenter(UNet(base_width=4).eval(), 127.0, 70.0)
    ours = predict_probability(segmenter, image, mask, 16, batch_size=5, overlap=overlap)
    normalised = torch.from_numpy((image - 127.0) / 70.0)
    assert slice_region(mask[:, :, 0], 16) is None and not ours[:, :, 0].any()  # toy_volume's slice 0 has no brain
    for z in range(1, image.shape[2]):
        x0, x1, y0, y1 = slice_region(mask[:, :, z], 16)
        crop = normalised[x0:x1, y0:y1, z][None, None]
        with torch.inference_mode():
            reference = monai_inferers.sliding_window_inference(
                crop, (16, 16), 4, segmenter.model, overlap=overlap, mode="gaussian", sigma_scale=0.125
            )[0, 0].numpy()
        inside = mask[x0:x1, y0:y1, z] > 0
        np.testing.assert_allclose(ours[x0:x1, y0:y1, z][inside], reference[inside], atol=2e-6)


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
        assert np.array_equal(np.asarray(loaded["error_map"].dataobj), error_map(segmentation, label, mask))


def test_predict_patients_names_unprepared_patients(tmp_path) -> None:
    prepared_patient(tmp_path / "data", "p1", 0)
    with pytest.raises(FileNotFoundError, match="p2"):
        predict_patients(tmp_path / "model.pt", tmp_path / "data", ["p1", "p2"], tmp_path / "out", patch_size=16)
    assert not (tmp_path / "out").exists()
