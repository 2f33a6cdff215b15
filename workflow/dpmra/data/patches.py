"""Patch stage: axial patches per patient (half vessel-centred, half brain-centred) and the GAN training set."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dpmra.data.intensity import rescale_patches
from dpmra.data.volumes import load_nifti, patch_fits
from dpmra.shared.atomic import write_atomic
from dpmra.shared.pictures import save_patch_gallery

log = logging.getLogger(__name__)

KIND_RANDOM, KIND_VESSEL = 0, 1


@dataclass
class Patches:
    """Patches of one patient: image (n,P,P) float32, label (n,P,P) uint8, centres (n,3) voxel indices, kind (n,)."""

    image: np.ndarray
    label: np.ndarray
    centres: np.ndarray
    kind: np.ndarray


def patient_rng(seed: int, patient: str) -> np.random.Generator:
    """A generator that depends on the config seed and the patient name only, so patients are independent."""
    return np.random.default_rng([seed, zlib.crc32(patient.encode())])


def fortran_flatnonzero(mask: np.ndarray) -> np.ndarray:
    """Flat indices (Fortran order, NIfTI's memory layout) of a mask's non-zero voxels.

    One fixed order keeps sampling independent of the array's layout; Fortran order avoids a copy
    of volumes read from NIfTI.
    """
    return np.flatnonzero(np.asfortranarray(mask).ravel(order="F"))


def choose_centres(
    label: np.ndarray, brain_mask: np.ndarray, n_patches: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n_patches // 2 centres on vessel voxels, the rest on other brain voxels; all distinct, all fitting.

    Returns (centres (n,3) int64, kind (n,) uint8).
    """
    fits = patch_fits(label.shape, size)
    n_vessel = n_patches // 2
    vessel_candidates = fortran_flatnonzero(fits & (label > 0))
    if vessel_candidates.size < n_vessel:
        raise ValueError(f"only {vessel_candidates.size} vessel centres fit, {n_vessel} asked for")
    vessel = rng.choice(vessel_candidates, size=n_vessel, replace=False)

    brain_candidates = np.setdiff1d(fortran_flatnonzero(fits & (brain_mask > 0)), vessel, assume_unique=True)
    n_random = n_patches - n_vessel
    if brain_candidates.size < n_random:
        raise ValueError(f"only {brain_candidates.size} further brain centres fit, {n_random} asked for")
    random = rng.choice(brain_candidates, size=n_random, replace=False)

    flat = np.concatenate([vessel, random])
    centres = np.stack(np.unravel_index(flat, label.shape, order="F"), axis=1)
    kind = np.concatenate([np.full(n_vessel, KIND_VESSEL), np.full(n_random, KIND_RANDOM)]).astype(np.uint8)
    return centres, kind


def cut(volume: np.ndarray, centres: np.ndarray, size: int) -> np.ndarray:
    """The axial size x size windows of `volume` at `centres`, as one (n, size, size) array."""
    windows = sliding_window_view(volume, (size, size), axis=(0, 1))
    half = size // 2
    return windows[centres[:, 0] - half, centres[:, 1] - half, centres[:, 2]]


def extract_patches(
    image: np.ndarray, label: np.ndarray, brain_mask: np.ndarray, n_patches: int, size: int, rng: np.random.Generator
) -> Patches:
    """The paper's patch sampling on one patient's volume (axes x, y, z with z axial)."""
    centres, kind = choose_centres(label, brain_mask, n_patches, size, rng)
    return Patches(
        image=cut(image, centres, size).astype(np.float32),
        label=cut(label, centres, size).astype(np.uint8),
        centres=centres.astype(np.int32),
        kind=kind,
    )


def save_patches(patches: Patches, path: Path) -> None:
    """Write one patient's patches as an .npz, uncompressed: float patches barely compress and zlib costs 30x the cut."""
    write_atomic(
        path,
        lambda tmp: np.savez(
            tmp, image=patches.image, label=patches.label, centres=patches.centres, kind=patches.kind
        ),
    )


def load_patches(path: Path) -> Patches:
    """Read patches written by save_patches."""
    with np.load(path) as data:
        return Patches(**{key: data[key] for key in ("image", "label", "centres", "kind")})


def patient_patches(
    patient: str, image: Path, label: Path, brain_mask: Path, n_patches: int, size: int, seed: int, out: Path
) -> Patches:
    """Cut and save one prepared patient's patches."""
    volumes = [np.asarray(load_nifti(p).dataobj) for p in (image, label, brain_mask)]
    patches = extract_patches(*volumes, n_patches=n_patches, size=size, rng=patient_rng(seed, patient))
    save_patches(patches, out)
    log.info("%s: %d patches of %d x %d written to %s", patient, n_patches, size, size, out)
    return patches


def scale_to_unit_range(images: np.ndarray) -> np.ndarray:
    """Min-max scale each patch to [-1, 1] on its own (as the paper's code); a constant patch becomes 0."""
    return rescale_patches(images, -1.0, 1.0)


def scale_volume_to_unit_range(images: np.ndarray) -> np.ndarray:
    """The volume's 0..255 scale mapped linearly to [-1, 1] (image / 127.5 - 1): one scale for every patch."""
    return (np.asarray(images, dtype=np.float32) / 127.5 - 1.0).clip(-1.0, 1.0)


INTENSITY_RULES = {"volume": scale_volume_to_unit_range, "per_patch": scale_to_unit_range}


def training_set(
    patch_files: list[Path], out: Path, gallery: Path, gallery_size: int = 8, intensity: str = "volume"
) -> np.ndarray:
    """GAN training pairs (N, 2, P, P): channel 0 image in [-1, 1], channel 1 label in {-1, 1} (tanh range).

    ``patient`` (N,) holds each pair's patient as its index in ``patch_files`` (for the patient privacy unit).

    Also writes a gallery of the first vessel-centred and random patches for the report.
    """
    parts = [load_patches(p) for p in patch_files]
    if intensity not in INTENSITY_RULES:
        raise ValueError(f"intensity must be one of {', '.join(INTENSITY_RULES)}, got {intensity!r}")
    images = np.concatenate([INTENSITY_RULES[intensity](p.image) for p in parts])
    labels = np.concatenate([p.label for p in parts]).astype(np.float32) * 2 - 1
    x = np.stack([images, labels], axis=1)
    patient = np.concatenate([np.full(len(p.image), k, dtype=np.int32) for k, p in enumerate(parts)])
    write_atomic(out, lambda tmp: np.savez(tmp, x=x, patient=patient, intensity=np.array(intensity)))

    kind = np.concatenate([p.kind for p in parts])
    half = gallery_size // 2
    shown = np.concatenate([np.flatnonzero(kind == KIND_VESSEL)[:half], np.flatnonzero(kind == KIND_RANDOM)[:half]])
    save_patch_gallery(
        x[shown, 0], x[shown, 1], gallery, title=f"training patches ({len(x)} pairs): vessel-centred, then random"
    )
    log.info("training set: %d pairs of %d x %d from %d patients -> %s", len(x), *x.shape[2:], len(parts), out)
    return x
