"""NIfTI volumes: read, check, orient canonically, derive a brain mask, normalise intensities.

Every check raises `VolumeError` whose message starts with the offending file, so a user
reading a failed Snakemake log knows which input to fix and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from dpmra.shared.atomic import write_atomic

AFFINE_ATOL_MM = 1e-3
NORMALISATION_PERCENTILES = (0.5, 99.5)
NORMALISATION_RANGE = (0.0, 255.0)
MASK_METHOD = (
    "derived: Otsu threshold of the image smoothed with a Gaussian (sigma 1 voxel); scalp removal, per axial slice: "
    "the background reaching the slice's border is outside the head, and where foreground components touching no "
    "such background (inside a dark skull ring) hold at least 20 % of the slice's foreground, the components "
    "touching it (subcutaneous fat) are dropped, then the Otsu threshold is recomputed without them and the removal "
    "repeated; then binary closing (3 iterations, edge-padded), holes filled, largest connected component; the "
    "vessel label is not read"
)
INSIDE_RING_MIN_FRACTION = 0.2  # of a slice's foreground: components this large inside a dark ring are the brain


class VolumeError(ValueError):
    """A volume that cannot be used; the message names the file and the problem."""


@dataclass
class Subject:
    """One patient's image, vessel label and brain mask on a common grid."""

    image: np.ndarray
    label: np.ndarray
    brain_mask: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes."""
        return tuple(float(s) for s in nib.affines.voxel_sizes(self.affine))


def load_nifti(path: Path) -> nib.Nifti1Image:
    """Read a 3D NIfTI image with its data loaded, or raise VolumeError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise VolumeError(f"{path}: not a NIfTI file (read as {type(img).__name__})")
        data = np.asanyarray(img.dataobj)
    except VolumeError:
        raise
    except Exception as err:  # nibabel raises many types for corrupt or foreign files
        raise VolumeError(f"{path}: unreadable or not a NIfTI file ({err})") from err
    if data.ndim != 3:
        raise VolumeError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return nib.Nifti1Image(data, img.affine, img.header)


def check_same_grid(reference: nib.Nifti1Image, ref_path: Path, other: nib.Nifti1Image, path: Path) -> None:
    """Require `other` to have the shape and affine of `reference`."""
    if other.shape != reference.shape:
        raise VolumeError(f"{path}: shape {other.shape} differs from {ref_path} shape {reference.shape}")
    if not np.allclose(other.affine, reference.affine, atol=AFFINE_ATOL_MM):
        raise VolumeError(
            f"{path}: affine differs from {ref_path} (max difference "
            f"{np.abs(other.affine - reference.affine).max():.4g} mm); resample it onto the image grid"
        )


def binary_values(data: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Return a {0,1} uint8 copy of a label or mask stored as {0,1} or {0,255}; reject anything else."""
    values = np.unique(data)
    if values.size > 3 or not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise VolumeError(f"{path}: {what} is not binary; values {{{shown}}} (accepted: {{0,1}} or {{0,255}})")
    binary = (data > 0).astype(np.uint8)
    if not binary.any():
        raise VolumeError(f"{path}: {what} is empty (no non-zero voxel)")
    return binary


def _close_and_fill(mask: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Binary closing then hole filling; edge padding keeps the closing from eroding a brain cut by the slab."""
    pad = iterations
    closed = ndimage.binary_closing(np.pad(mask, pad, mode="edge"), iterations=iterations)
    return ndimage.binary_fill_holes(closed[pad:-pad, pad:-pad, pad:-pad])


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean volume (the volume itself if it has at most one)."""
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == sizes.argmax()


def _inside_skull_ring(foreground: np.ndarray) -> np.ndarray | None:
    """An axial slice's foreground components that touch no outside air, if they are sizeable; else None.

    Outside air is the background connected to the slice's border. In TOF-MRA the bright subcutaneous fat touches
    it, the brain lies inside the dark skull ring and does not; without a ring (no scalp, skull-stripped input, a
    gap in the ring) every sizeable component touches the air. Slice by slice, because a TOF slab cuts the head at
    its top and bottom (those faces are not outside) and a gap in one slice's ring then spoils only that slice.
    """
    components, count = ndimage.label(foreground)
    if count == 0:
        return None
    near_outside = ndimage.binary_dilation(~ndimage.binary_fill_holes(foreground))
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    sizes[np.unique(components[near_outside & foreground])] = 0
    if sizes.sum() < INSIDE_RING_MIN_FRACTION * foreground.sum():
        return None
    return sizes[components] > 0


def _drop_scalp(foreground: np.ndarray) -> np.ndarray:
    """The foreground without, in each axial slice with a skull ring, the components outside the ring."""
    kept = foreground.copy()
    for z in range(foreground.shape[2]):
        inner = _inside_skull_ring(foreground[:, :, z])
        if inner is not None:
            kept[:, :, z] = inner
    return kept


def derive_brain_mask_and_scalp(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brain mask by the rule in MASK_METHOD, and the foreground it dropped as scalp (empty: no skull ring found).

    Image only: the label must not shape the scored region.
    """
    smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma=1.0)
    foreground = smooth > threshold_otsu(smooth)
    kept = _drop_scalp(foreground)
    if (foreground & ~kept).any():
        # Bright fat raises the Otsu threshold above dim brain edges; without it the threshold parts brain from air.
        foreground = smooth > threshold_otsu(smooth[kept | ~foreground])
        kept = _drop_scalp(foreground)
    mask = _largest_component(_close_and_fill(kept))
    return mask.astype(np.uint8), foreground & ~kept


def derive_brain_mask(image: np.ndarray) -> np.ndarray:
    """Brain mask from the image alone, by the rule in MASK_METHOD: the label must not shape the scored region."""
    return derive_brain_mask_and_scalp(image)[0]


def describe_scalp(scalp: np.ndarray) -> str:
    """The outcome of the scalp removal, for the mask method recorded in volume.json and the log."""
    slices = int(scalp.any(axis=(0, 1)).sum())
    if slices == 0:
        return "no skull ring found, nothing removed as scalp"
    return (
        f"skull ring found in {slices} of {scalp.shape[2]} axial slices, "
        f"{int(scalp.sum())} foreground voxels outside it removed as scalp"
    )


def read_subject(image_path: Path, label_path: Path, mask_path: Path | None) -> tuple[Subject, dict]:
    """Read and check one patient's volumes, brought to the closest canonical (RAS) orientation.

    Returns the subject and a provenance dict (orientation, mask method) for the log and outputs.
    """
    image_img = load_nifti(image_path)
    label_img = load_nifti(label_path)
    check_same_grid(image_img, image_path, label_img, label_path)
    mask_img = None
    if mask_path is not None:
        mask_img = load_nifti(mask_path)
        check_same_grid(image_img, image_path, mask_img, mask_path)

    original_affine = image_img.affine.tolist()
    original_axcodes = "".join(nib.aff2axcodes(image_img.affine))
    image_img = nib.as_closest_canonical(image_img)
    image = np.asarray(image_img.dataobj, dtype=np.float32)
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise VolumeError(f"{image_path}: {bad} non-finite image values (NaN or inf)")
    label = binary_values(np.asarray(nib.as_closest_canonical(label_img).dataobj), label_path, "vessel label")
    if mask_img is not None:
        mask = binary_values(np.asarray(nib.as_closest_canonical(mask_img).dataobj), mask_path, "brain mask")
        mask_method = f"given: {mask_path}"
        scalp_removed = None
    else:
        mask, scalp = derive_brain_mask_and_scalp(image)
        mask_method = f"{MASK_METHOD}; {describe_scalp(scalp)}"
        scalp_removed = int(scalp.sum())
        if not mask.any():
            raise VolumeError(f"{image_path}: the brain mask derived from the image is empty; give a brain mask")
    outside = int((label & (1 - mask)).sum())
    provenance = {
        "image": str(image_path),
        "label": str(label_path),
        "brain_mask": str(mask_path) if mask_path else None,
        "original_affine": original_affine,
        "original_orientation": original_axcodes,
        "mask_method": mask_method,
        "scalp_voxels_removed": scalp_removed,
        "label_voxels_outside_mask": outside,
    }
    return Subject(image=image, label=label, brain_mask=mask, affine=image_img.affine), provenance


def patch_fits(shape: tuple[int, ...], size: int) -> np.ndarray:
    """Boolean volume: True where an axial size x size patch centred on the voxel lies inside the volume.

    A patch centred at (x, y) covers x - size//2 .. x - size//2 + size - 1 (and likewise in y).
    """
    fits = np.zeros(shape, dtype=bool, order="F")
    half = size // 2
    if shape[0] >= size and shape[1] >= size:
        fits[half : shape[0] - size + half + 1, half : shape[1] - size + half + 1, :] = True
    return fits


def check_patch_capacity(subject: Subject, n_patches: int, size: int, path: Path) -> None:
    """Require room for n_patches // 2 vessel-centred and the rest brain-centred distinct patch centres."""
    nx, ny, _ = subject.image.shape
    if nx < size or ny < size:
        raise VolumeError(f"{path}: axial slices are {nx} x {ny} voxels, narrower than the {size} x {size} patch")
    fits = patch_fits(subject.image.shape, size)
    n_vessel = n_patches // 2
    vessel = int((fits & (subject.label > 0)).sum())
    brain = int((fits & (subject.brain_mask > 0)).sum())
    if vessel < n_vessel:
        raise VolumeError(
            f"{path}: only {vessel} vessel voxels can centre a {size} x {size} patch, "
            f"fewer than the {n_vessel} vessel-centred patches asked for"
        )
    if brain < n_patches:
        raise VolumeError(
            f"{path}: only {brain} brain voxels can centre a {size} x {size} patch, "
            f"fewer than the {n_patches} distinct patch centres asked for"
        )


def normalise_intensity(image: np.ndarray, brain_mask: np.ndarray) -> tuple[np.ndarray, dict]:
    """Map the brain's 0.5th-99.5th intensity percentiles to 0..255, clipped; return the rule applied.

    Raw TOF-MRA comes in arbitrary units; the paper's volumes were 0..255.
    """
    low, high = np.percentile(image[brain_mask > 0], NORMALISATION_PERCENTILES)
    if high <= low:
        raise ValueError("image is constant inside the brain mask")
    lo_out, hi_out = NORMALISATION_RANGE
    scaled = (image - low) / (high - low) * (hi_out - lo_out) + lo_out
    rule = {
        "rule": "brain percentiles mapped linearly to a range, then clipped",
        "percentiles": list(NORMALISATION_PERCENTILES),
        "percentile_values": [float(low), float(high)],
        "range": list(NORMALISATION_RANGE),
    }
    return np.clip(scaled, lo_out, hi_out).astype(np.float32), rule


def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write a NIfTI volume atomically, in the array's dtype, with the affine as scanner qform and sform, in mm."""
    img = nib.Nifti1Image(data, affine)
    img.set_data_dtype(data.dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    write_atomic(path, lambda tmp: nib.save(img, str(tmp)))


def save_json(obj: dict, path: Path) -> None:
    """Write a JSON document atomically."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))
