"""The brain mask derived from a TOF image alone leaves out the scalp (bright fat outside a dark skull ring), keeps
the vessels, and without a scalp is the mask of before."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu

from dpmra.data.phantom import FAT, SKULL, Subject, make_subject
from dpmra.data.volumes import derive_brain_mask_and_scalp, describe_scalp
from dpmra.shared.pictures import save_mip

SHAPE = (64, 64, 24)


def rule_before_scalp_removal(image: np.ndarray) -> np.ndarray:
    """The derived mask before this change: Otsu of the smoothed image, closing, holes filled, largest component."""
    smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma=1.0)
    padded = np.pad(smooth > threshold_otsu(smooth), 3, mode="edge")
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(padded, iterations=3)[3:-3, 3:-3, 3:-3])
    components, _ = ndimage.label(mask)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == sizes.argmax()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean volumes."""
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def scores(subject: Subject, mask: np.ndarray) -> tuple[float, float, float]:
    """Fraction of the fat rim inside the mask, fraction of the vessel voxels inside it, Dice with the true brain."""
    mask, fat, label = mask.astype(bool), subject.scalp == FAT, subject.label.astype(bool)
    rim = (mask & fat).sum() / max(fat.sum(), 1)
    return float(rim), float((mask & label).sum() / label.sum()), dice(mask, subject.brain_mask.astype(bool))


def yellow_pixels(path) -> int:
    """Pixels of a PNG drawn in the mask outline's yellow (no grey or red-on-grey pixel is)."""
    rgb = matplotlib.image.imread(path)[..., :3]
    return int(((rgb[..., 0] > 0.8) & (rgb[..., 1] > 0.8) & (rgb[..., 2] < 0.3)).sum())


@pytest.mark.parametrize("site, seed", [("B", 0), ("B", 1), ("B", 2), ("A", 3), ("C", 3)])
def test_derived_mask_excludes_the_fat_rim_and_keeps_the_vessels(site, seed):
    subject = make_subject(site, seed, SHAPE, scalp=True)
    mask, scalp = derive_brain_mask_and_scalp(subject.image)
    rim, vessels, overlap = scores(subject, mask)
    assert rim < 0.01
    assert vessels >= 0.99
    assert overlap >= 0.95
    fat = subject.scalp == FAT
    assert (scalp & fat).sum() > 0.5 * fat.sum(), "what was removed as scalp is mostly the fat rim"
    assert describe_scalp(scalp).startswith(f"skull ring found in {SHAPE[2]} of {SHAPE[2]} axial slices")


def test_the_rule_before_scalp_removal_kept_the_rim():
    subject = make_subject("B", 0, SHAPE)
    rim, vessels, overlap = scores(subject, rule_before_scalp_removal(subject.image))
    assert rim > 0.9 and vessels == 1.0 and overlap < 0.7


@pytest.mark.parametrize("site, scalp", [("A", None), ("C", None), ("B", False)])
def test_without_a_scalp_the_mask_is_the_one_of_before(site, scalp):
    subject = make_subject(site, 3, SHAPE, scalp)
    mask, removed = derive_brain_mask_and_scalp(subject.image)
    assert not removed.any() and describe_scalp(removed) == "no skull ring found, nothing removed as scalp"
    np.testing.assert_array_equal(mask, rule_before_scalp_removal(subject.image))
    _, vessels, overlap = scores(subject, mask)
    assert vessels >= 0.99 and overlap >= 0.97


def test_a_gap_in_the_skull_ring_spoils_only_the_slices_around_it():
    subject = make_subject("B", 0, SHAPE)
    image, z = subject.image.copy(), SHAPE[2] // 2
    tissue = image[(subject.brain_mask > 0) & (subject.label == 0)].mean()
    # Brain-bright tissue across the skull, 5 voxels wide and 3 slices thick, left and right of the brain.
    band = (slice(None), slice(SHAPE[1] // 2 - 2, SHAPE[1] // 2 + 3), slice(z - 1, z + 2))
    image[band] = np.where(subject.scalp[band] == SKULL, tissue, image[band])
    mask, scalp = derive_brain_mask_and_scalp(image)
    spoiled = ~scalp.any(axis=(0, 1))
    assert spoiled[z] and 3 <= spoiled.sum() <= 5
    fat = (subject.scalp == FAT) & ~spoiled[None, None, :]
    assert (mask.astype(bool) & fat).sum() < 0.01 * fat.sum()


def test_mip_outlines_the_mask(tmp_path):
    subject = make_subject("B", 0, SHAPE)
    save_mip(subject.image, subject.label, subject.affine, tmp_path / "with.png", "B", subject.brain_mask)
    save_mip(subject.image, subject.label, subject.affine, tmp_path / "without.png", "B")
    assert yellow_pixels(tmp_path / "with.png") > 300
    assert yellow_pixels(tmp_path / "without.png") == 0
