"""Whole-volume prediction with a trained U-Net: sliding-window inference, NIfTI outputs, error maps.

Each axial slice's brain bounding box (grown to at least P x P where smaller) is covered by P x P
windows that overlap by `overlap` (default 0.5), placed as MONAI's `sliding_window_inference`
places them: every int(P (1 - overlap)) voxels, the last shifted back to end at the box edge. The
windows' probabilities are blended with MONAI's Gaussian weights (sigma P / 8, floored at 1e-3),
so a window's borders, where a U-Net sees the least context, barely count and tile borders leave
no seam. Slices narrower than P are zero-padded at the far edge (0 = the volumes' darkest
intensity) and cropped back. Windows from all slices go through the network in batches on the
model's device: the volume is uploaded once, windows are gathered and weighted probabilities
accumulated there by flat voxel indices, so a GPU is not left waiting for host-side copies.

One call predicts a list of prepared patients with one loaded model (one job per U-Net and
split in the workflow), writing per patient the probability map, the binary segmentation,
the segmentation in the input's own orientation and, with a label, an error map.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from torch import Tensor
from tqdm import tqdm

from dpmra.data.volumes import (
    AFFINE_ATOL_MM,
    VolumeError,
    binary_values,
    check_same_grid,
    load_nifti,
    save_nifti,
)
from dpmra.segmentation.params import OVERLAP, PREDICT_BATCH, THRESHOLD
from dpmra.segmentation.unet import MULTIPLE, UNet
from dpmra.shared import checkpoint
from dpmra.shared.devices import default_device

logger = logging.getLogger(__name__)

TN, TP, FP, FN = 0, 1, 2, 3
"""Error-map codes: true negative, true positive, false positive (predicted, not labelled), false negative."""


class Segmenter(NamedTuple):
    """A trained U-Net in eval mode with the training mean and standard deviation its inputs need."""

    model: torch.nn.Module
    mean: float
    std: float


def load_model(path: Path, device: torch.device | None = None) -> tuple[UNet, float, float]:
    """The U-Net stored in a model.pt by `dpmra train-unet` (eval mode), with its training mean and standard deviation."""
    stored = checkpoint.load(path)
    model = UNet(**stored["config"])
    model.load_state_dict(stored["state_dict"])
    return model.to(device or default_device()).eval(), float(stored["mean"]), float(stored["std"])


SIGMA_SCALE = 0.125
"""Standard deviation of the Gaussian blending weights as a share of the window side (MONAI's default)."""
MIN_WEIGHT = 1e-3
"""Floor of the blending weights (MONAI's), so every voxel a window covers has a positive weight."""


def scan_interval(size: int, overlap: float) -> int:
    """Voxels between neighbouring window starts: int(size (1 - overlap)), at least 1, as MONAI computes it."""
    return max(int(size * (1 - overlap)), 1)


def axis_windows(start: int, stop: int, size: int, interval: int) -> list[int]:
    """Window starts covering [start, stop) (at least `size` long): every `interval`, the last ending at `stop`."""
    count = math.ceil((stop - start - size) / interval) + 1
    return [start + min(k * interval, stop - start - size) for k in range(count)]


def axis_region(low: int, high: int, size: int, length: int) -> tuple[int, int]:
    """[low, high) grown about its centre to at least `size` voxels, kept inside [0, length) (length >= size)."""
    if high - low >= size:
        return low, high
    start = min(max(low - (size - (high - low)) // 2, 0), length - size)
    return start, start + size


def slice_region(mask_slice: np.ndarray, size: int) -> tuple[int, int, int, int] | None:
    """(x0, x1, y0, y1) of a 2D slice's brain bounding box grown to at least size x size; None if no brain."""
    xs, ys = np.nonzero(mask_slice)
    if xs.size == 0:
        return None
    x0, x1 = axis_region(int(xs.min()), int(xs.max()) + 1, size, mask_slice.shape[0])
    y0, y1 = axis_region(int(ys.min()), int(ys.max()) + 1, size, mask_slice.shape[1])
    return x0, x1, y0, y1


def slice_windows(mask_slice: np.ndarray, size: int, overlap: float) -> list[tuple[int, int]]:
    """(x, y) origins of the overlapping size x size windows covering a slice's brain region (none if no brain)."""
    region = slice_region(mask_slice, size)
    if region is None:
        return []
    x0, x1, y0, y1 = region
    interval = scan_interval(size, overlap)
    return [(x, y) for x in axis_windows(x0, x1, size, interval) for y in axis_windows(y0, y1, size, interval)]


def volume_windows(mask: np.ndarray, size: int, overlap: float) -> np.ndarray:
    """(n, 3) int array of window origins (x, y, z), slice by slice along the third (axial) axis."""
    windows = [(x, y, z) for z in range(mask.shape[2]) for x, y in slice_windows(mask[:, :, z], size, overlap)]
    return np.array(windows, dtype=np.int64).reshape(-1, 3)


def gaussian_weights(size: int, device: torch.device) -> Tensor:
    """(size, size) blending weights equal to MONAI's compute_importance_map(mode="gaussian", sigma_scale=0.125).

    Written here because MONAI is not a dependency of the workflow; the tests compare the two.
    """
    offsets = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    profile = torch.exp(offsets**2 / (-2 * (SIGMA_SCALE * size) ** 2))
    weights = profile[:, None] * profile[None, :]
    return weights.clamp(min=max(float(weights.min()), MIN_WEIGHT))


def pad_slices(volume: np.ndarray, size: int) -> np.ndarray:
    """The volume zero-padded at the far end of axes 0 and 1 to at least `size` (unchanged if already)."""
    pad = [(0, max(0, size - volume.shape[0])), (0, max(0, size - volume.shape[1])), (0, 0)]
    return np.pad(volume, pad) if any(after for _, after in pad) else volume


def tile_indices(origins: Tensor, shape: tuple[int, int, int], size: int) -> Tensor:
    """(n, size, size) flat C-order indices into a volume of `shape` of the windows at `origins` (n, 3).

    Written by hand because torch's unfold works on one regular grid only, and windows here follow
    each slice's own brain box.
    """
    _, ny, nz = shape
    offsets = torch.arange(size, device=origins.device)
    within = (offsets[:, None] * ny + offsets[None, :]) * nz
    corners = (origins[:, 0] * ny + origins[:, 1]) * nz + origins[:, 2]
    return corners[:, None, None] + within


@torch.inference_mode()
def predict_probability(
    segmenter: Segmenter,
    image: np.ndarray,
    brain_mask: np.ndarray,
    patch_size: int,
    batch_size: int,
    overlap: float = OVERLAP,
) -> np.ndarray:
    """Vessel probability per voxel: overlapping windows through the model in batches, Gaussian-blended, 0 off-brain."""
    device = next(segmenter.model.parameters(), torch.empty(0)).device
    padded = pad_slices(image, patch_size)
    origins = volume_windows(pad_slices(brain_mask, patch_size), patch_size, overlap)
    origins = torch.from_numpy(origins).to(device)
    voxels = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32)).to(device).reshape(-1)
    voxels = (voxels - segmenter.mean) / segmenter.std
    weights = gaussian_weights(patch_size, device)
    total = torch.zeros_like(voxels)
    weight_sum = torch.zeros_like(voxels)
    for start in tqdm(range(0, len(origins), batch_size), desc="predicting", leave=False):
        index = tile_indices(origins[start : start + batch_size], padded.shape, patch_size)
        probs = segmenter.model(voxels[index].unsqueeze(1))[:, 0]
        total.index_add_(0, index.reshape(-1), (probs * weights).reshape(-1))
        weight_sum.index_add_(0, index.reshape(-1), weights.expand_as(probs).reshape(-1))
    # Every covered voxel has a weight sum of at least MIN_WEIGHT; the clamp only guards uncovered ones.
    blended = torch.where(weight_sum > 0, total / weight_sum.clamp(min=MIN_WEIGHT), 0)
    probability = blended.reshape(padded.shape).cpu().numpy()
    nx, ny, _ = image.shape
    return np.where(brain_mask > 0, probability[:nx, :ny], 0).astype(np.float32)


def error_map(segmentation: np.ndarray, label: np.ndarray, brain_mask: np.ndarray) -> np.ndarray:
    """uint8 codes per voxel: 0 true negative, 1 true positive, 2 false positive, 3 false negative.

    Voxels outside the brain mask are background in both volumes (code 0), as the metrics score them.
    """
    inside = brain_mask > 0
    predicted, truth = (segmentation > 0) & inside, (label > 0) & inside
    codes = np.full(segmentation.shape, TN, dtype=np.uint8)
    codes[predicted & truth] = TP
    codes[predicted & ~truth] = FP
    codes[~predicted & truth] = FN
    return codes


def check_arguments(patch_size: int, threshold: float, batch_size: int, overlap: float) -> None:
    """ValueError naming the first prediction argument out of range."""
    if patch_size < 1 or patch_size % MULTIPLE:
        raise ValueError(f"patch_size must be a positive multiple of {MULTIPLE}, got {patch_size}")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")


def predict_volume(
    segmenter: Segmenter,
    image: Path,
    brain_mask: Path,
    label: Path | None,
    out_dir: Path,
    patch_size: int,
    threshold: float = THRESHOLD,
    batch_size: int = PREDICT_BATCH,
    original_affine: np.ndarray | None = None,
    overlap: float = OVERLAP,
) -> dict[str, Path]:
    """Segment a prepared (RAS, 0..255) volume; write probability, segmentation and (with a label) error map.

    All outputs carry the image's affine; the error map is scored inside the brain mask, as the metrics.
    With the input's `original_affine` (volume.json), also the segmentation in that orientation.
    """
    check_arguments(patch_size, threshold, batch_size, overlap)
    image_img = load_nifti(image)
    mask_img = load_nifti(brain_mask)
    check_same_grid(image_img, image, mask_img, brain_mask)
    mask = binary_values(np.asarray(mask_img.dataobj), brain_mask, "brain mask")
    if not mask.any():
        raise VolumeError(f"{brain_mask}: the brain mask is empty")
    volume = np.asarray(image_img.dataobj, dtype=np.float32)
    probability = predict_probability(segmenter, volume, mask, patch_size, batch_size, overlap)
    segmentation = (probability >= threshold).astype(np.uint8)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    affine = image_img.affine
    paths = {"probability": out_dir / "probability.nii.gz", "segmentation": out_dir / "segmentation.nii.gz"}
    save_nifti(probability, affine, paths["probability"])
    save_nifti(segmentation, affine, paths["segmentation"])
    if original_affine is not None:
        paths["segmentation_native"] = out_dir / "segmentation_native.nii.gz"
        write_native(segmentation, affine, original_affine, paths["segmentation_native"])
    if label is not None:
        label_img = load_nifti(label)
        check_same_grid(image_img, image, label_img, label)
        truth = binary_values(np.asarray(label_img.dataobj), label, "vessel label")
        paths["error_map"] = out_dir / "error_map.nii.gz"
        save_nifti(error_map(segmentation, truth, mask), affine, paths["error_map"])
    logger.info(
        "%s: %d of %d brain voxels segmented (threshold %g) -> %s",
        image, int(segmentation.sum()), int(mask.sum()), threshold, out_dir,
    )
    return paths


def write_native(data: np.ndarray, canonical_affine: np.ndarray, original_affine: np.ndarray, path: Path) -> None:
    """Write a volume computed in canonical (RAS) space in the input's original orientation and affine.

    The result overlays the raw input in any viewer; `canonical_affine` must be the closest-canonical
    form of `original_affine` (as ``nib.as_closest_canonical`` makes it), else ValueError.
    """
    original_affine = np.asarray(original_affine, dtype=np.float64)
    transform = ornt_transform(io_orientation(canonical_affine), io_orientation(original_affine))
    restored = np.asarray(canonical_affine) @ inv_ornt_aff(transform, data.shape)
    if not np.allclose(restored, original_affine, atol=AFFINE_ATOL_MM):
        raise ValueError(
            f"{path}: the canonical affine is not a reorientation of the original one "
            f"(max difference {np.abs(restored - original_affine).max():.4g} mm)"
        )
    save_nifti(np.ascontiguousarray(apply_orientation(data, transform)), original_affine, path)


def predict_patients(
    model_path: Path,
    data_dir: Path,
    patients: list[str],
    out_dir: Path,
    patch_size: int,
    threshold: float = THRESHOLD,
    batch_size: int = PREDICT_BATCH,
    overlap: float = OVERLAP,
) -> None:
    """Segment prepared patients (`data_dir/<patient>/`, as `dpmra prepare` writes them) with one loaded model.

    Writes `out_dir/<patient>/` with probability, segmentation,
    segmentation_native and error_map (.nii.gz); the native segmentation uses the
    original affine stored in the patient's volume.json.
    """
    check_arguments(patch_size, threshold, batch_size, overlap)
    missing = [p for p in patients if not (Path(data_dir) / p / "volume.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{data_dir}: no prepared volume (volume.json) for patients {', '.join(missing)}")
    segmenter = Segmenter(*load_model(model_path, default_device()))
    for patient in tqdm(patients, desc="patients"):
        folder = Path(data_dir) / patient
        predict_volume(
            segmenter,
            folder / "image.nii.gz",
            folder / "brain_mask.nii.gz",
            folder / "label.nii.gz",
            Path(out_dir) / patient,
            patch_size,
            threshold,
            batch_size,
            np.array(json.loads((folder / "volume.json").read_text())["original_affine"]),
            overlap,
        )
