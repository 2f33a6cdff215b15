"""Phantom subjects: determinism, realism, the exact label rule, the two sites and the written files."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine
from scipy import ndimage
from test_brain_mask import yellow_pixels

from dpmra.cli import main
from dpmra.data import phantom
from dpmra.data.phantom import SITES, Site, Subject, make_subject, vessel_tree, write_subject

SMALL = (48, 48, 20)
MODERATE = {"A": (96, 96, 32), "B": (80, 80, 32)}
# Seed 0 at (48, 48, 24), rendered by the phantom before the scalp existed: image sum, sum of squares (float64),
# vessel and brain voxels. A subject without a scalp must still render exactly so.
BEFORE_SCALP = {
    "A": (3625478.2181818746, 427413964.6268833, 414, 28409),
    "B": (4961435.338153882, 747819339.2067261, 662, 28794),
    "C": (2936784.804876864, 274595371.9024466, 824, 28892),
}


@lru_cache(maxsize=None)
def cached_subject(site: str, seed: int, shape: tuple[int, int, int] | None = None) -> Subject:
    """make_subject, computed once per session for the arguments."""
    return make_subject(site, seed, shape)


def vessel_fraction(subject: Subject) -> float:
    """Vessel voxels as a fraction of brain mask voxels."""
    return float(subject.label.sum() / subject.brain_mask.sum())


def background_sigma(subject: Subject) -> float:
    """Gaussian noise sigma from pure-noise background (air outside the head), where Rician magnitude has E[I^2] =
    2 sigma^2."""
    head = subject.brain_mask.astype(bool) | (subject.scalp > 0)
    far = ~ndimage.binary_dilation(head, iterations=3)
    return float(np.sqrt(np.mean(subject.image[far].astype(np.float64) ** 2) / 2.0))


def vessel_to_brain_ratio(subject: Subject) -> float:
    """Mean image over vessel voxels divided by the mean over the other brain voxels."""
    label, mask = subject.label.astype(bool), subject.brain_mask.astype(bool)
    return float(subject.image[label].mean() / subject.image[mask & ~label].mean())


def brute_force_label(
    segments: np.ndarray, shape: tuple[int, int, int], affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The two clauses of the documented label rule, on every voxel and every segment: d <= r; the segment
    crosses the voxel.

    Voxels farther from the segment's midpoint than half its length plus max(r, half voxel diagonal)
    can satisfy neither clause; skipping them only saves time.
    """
    index = np.indices(shape).reshape(3, -1).T
    centres = apply_affine(affine, index)
    half = np.abs(np.diag(affine)[:3]) / 2.0
    within_radius = np.zeros(len(centres), dtype=bool)
    crossed = np.zeros(len(centres), dtype=bool)
    for seg in segments:
        p0, p1, radius = seg[:3], seg[3:6], seg[6]
        v = p1 - p0
        reach = np.linalg.norm(v) / 2.0 + max(radius, np.linalg.norm(half)) + 1e-6
        near = np.flatnonzero(np.linalg.norm(centres - (p0 + p1) / 2.0, axis=1) <= reach)
        rel = centres[near] - p0
        t = np.clip(rel @ v / (v @ v), 0.0, 1.0)
        distance = np.linalg.norm(rel - t[:, None] * v, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = (rel - half) / v, (rel + half) / v
        low, high = np.minimum(a, b), np.maximum(a, b)
        parallel = v == 0.0
        within = (np.abs(rel) <= half)[:, parallel]
        low[:, parallel] = np.where(within, -np.inf, np.inf)
        high[:, parallel] = np.where(within, np.inf, -np.inf)
        crosses = np.maximum(low.max(axis=1), 0.0) <= np.minimum(high.min(axis=1), 1.0)
        within_radius[near] |= distance <= radius
        crossed[near] |= crosses
    return within_radius.reshape(shape), crossed.reshape(shape)


def test_same_site_and_seed_give_identical_subjects():
    first, second = make_subject("A", 7, SMALL), make_subject("A", 7, SMALL)
    for name in ("image", "label", "brain_mask", "affine", "segments"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert first.image.dtype == np.float32
    assert first.label.dtype == np.uint8 and first.brain_mask.dtype == np.uint8


def test_different_seed_or_site_gives_different_subjects():
    base = make_subject("A", 7, SMALL)
    other_seed = make_subject("A", 8, SMALL)
    other_site = make_subject("B", 7, SMALL)
    assert not np.array_equal(base.image, other_seed.image)
    assert not np.array_equal(base.label, other_seed.label)
    assert not np.array_equal(base.segments, other_site.segments)


@pytest.mark.parametrize(
    "site, seed, shape",
    [("A", 0, None), ("B", 0, None)]
    + [(site, seed, MODERATE[site]) for site in "AB" for seed in (1, 2, 3)]
    + [("A", 4, (64, 64, 24)), ("B", 4, (64, 64, 24))],
)
def test_vessel_fraction_label_in_mask_and_vessels_bright(site, seed, shape):
    subject = cached_subject(site, seed, shape)
    assert 0.01 <= vessel_fraction(subject) <= 0.03
    assert set(np.unique(subject.label)) == {0, 1}
    assert set(np.unique(subject.brain_mask)) == {0, 1}
    assert not np.any(subject.label.astype(bool) & ~subject.brain_mask.astype(bool))
    assert vessel_to_brain_ratio(subject) > 1.3  # slow flow dims the thin branches of A and B


def thin_to_thick_contrast(subject: Subject) -> float:
    """Mean vessel contrast (image over the brain's mean, minus 1) at the midpoints of the thinnest quarter of the
    segments divided by that of the thick ones (at least half the root radius): slow-flow loss, read off the image."""
    inside = subject.brain_mask.astype(bool) & ~subject.label.astype(bool)
    brain = subject.image[inside].mean()
    spacing = np.array(subject.spacing)
    shape = np.array(subject.image.shape)
    radius = subject.segments[:, 6]
    contrast = {}
    for name, chosen in (("thin", radius <= np.quantile(radius, 0.25)), ("thick", radius >= radius.max() / 2.0)):
        points = []
        for x0, y0, z0, x1, y1, z1, _ in subject.segments[chosen]:
            mid = np.array([(x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2])
            points.append(np.round(mid / spacing + (shape - 1) / 2).astype(int))
        index = np.clip(np.array(points), 0, shape - 1)
        contrast[name] = subject.image[tuple(index.T)].mean() / brain - 1.0
    return contrast["thin"] / contrast["thick"]


def test_slow_flow_dims_thin_branches_of_the_private_sites_only():
    """Sites A and B (the private cohort and the external site) lose thin-branch contrast; site C (public) does not."""
    shape = (96, 96, 32)
    for site in "ABC":
        ratios = [thin_to_thick_contrast(make_subject(site, seed, shape)) for seed in (0, 1, 2)]
        full = [thin_to_thick_contrast(make_subject(site, seed, shape, slow_flow_signal=1.0)) for seed in (0, 1, 2)]
        if site == "C":
            assert ratios == full, "site C has no slow flow"
        else:
            assert np.mean(ratios) < 0.75 * np.mean(full), (site, ratios, full)


@pytest.mark.parametrize("site, seed, shape", [("A", 3, (64, 64, 24)), ("B", 5, SMALL)])
def test_label_matches_brute_force_rendering_of_the_tree(site, seed, shape):
    subject = make_subject(site, seed, shape)
    assert np.array_equal(subject.segments, vessel_tree(site, seed, shape))
    within_radius, crossed = brute_force_label(subject.segments, subject.label.shape, subject.affine)
    assert np.any(crossed & ~within_radius), "the sub-voxel clause must be exercised"
    assert np.array_equal(subject.label.astype(bool), within_radius | crossed)


def test_sub_voxel_vessels_are_labelled_where_their_centreline_runs():
    subject = cached_subject("A", 4, (64, 64, 24))
    thin = subject.segments[subject.segments[:, 6] < min(subject.spacing) / 2.0]
    assert len(thin) > 0
    midpoints = (thin[:, :3] + thin[:, 3:6]) / 2.0
    voxels = np.rint(apply_affine(np.linalg.inv(subject.affine), midpoints)).astype(int)
    assert np.all(subject.label[tuple(voxels.T)] == 1)


def test_partial_volume_gives_sub_voxel_vessels_a_faint_signal():
    rho = 0.3
    centre = phantom._disc_overlap_fraction(np.array([0.0, 0.3, 2.0]), 0.1, rho)
    assert centre[0] == pytest.approx((0.1 / rho) ** 2)
    assert centre[0] > centre[1] > 0.0 and centre[2] == 0.0
    thick = phantom._disc_overlap_fraction(np.array([0.0, 1.0, 1.5, 2.0]), 1.5, rho)
    assert thick[0] == pytest.approx(1.0) and thick[1] == pytest.approx(1.0)
    assert 0.45 < thick[2] < 0.5 and thick[3] == 0.0


@pytest.mark.parametrize("site", ["A", "B"])
def test_tree_bifurcates_from_thick_roots_to_sub_voxel_leaves(site):
    segments = vessel_tree(site, 0)
    radii = segments[:, 6]
    assert radii.max() >= 1.5
    assert radii.min() < min(SITES[site].spacing_mm)
    starts, ends = segments[:, :3], segments[:, 3:6]
    end_set = {tuple(p) for p in ends}
    roots = [p for p in starts if tuple(p) not in end_set]
    assert 1 <= len(roots) <= 3
    _, children = np.unique(starts, axis=0, return_counts=True)
    assert np.sum(children == 2) > 50
    bottom = starts[:, 2].min()
    assert bottom < -0.4 * SITES[site].shape[2] * SITES[site].spacing_mm[2]


def test_sites_differ_in_spacing_noise_and_contrast():
    a, b = SITES["A"], SITES["B"]
    assert isinstance(a, Site) and a.spacing_mm[:2] != b.spacing_mm[:2]
    fov_a = np.multiply(a.shape, a.spacing_mm)
    fov_b = np.multiply(b.shape, b.spacing_mm)
    assert np.allclose(fov_a, fov_b, rtol=0.05)
    subject_a, subject_b = cached_subject("A", 1, MODERATE["A"]), cached_subject("B", 1, MODERATE["B"])
    assert subject_a.spacing == pytest.approx(a.spacing_mm)
    assert subject_b.spacing == pytest.approx(b.spacing_mm)
    sigma_a, sigma_b = background_sigma(subject_a), background_sigma(subject_b)
    assert sigma_a == pytest.approx(a.noise_sigma, rel=0.05)
    assert sigma_b == pytest.approx(b.noise_sigma, rel=0.05)
    assert sigma_b > 1.5 * sigma_a
    assert vessel_to_brain_ratio(subject_a) > vessel_to_brain_ratio(subject_b) + 0.2


def test_affine_is_ras_diagonal_and_centred():
    subject = cached_subject("B", 4, (64, 64, 24))
    affine = subject.affine
    assert np.allclose(affine[:3, :3], np.diag(SITES["B"].spacing_mm))
    centre = apply_affine(affine, (np.array(subject.image.shape) - 1) / 2.0)
    assert np.allclose(centre, 0.0)


def test_write_subject_round_trips(tmp_path: Path):
    subject = cached_subject("A", 4, (64, 64, 24))
    paths = write_subject(subject, tmp_path / "out")
    assert set(paths) == {"image", "label", "brain_mask", "mip"}
    expected = {"image": (subject.image, np.float32), "label": (subject.label, np.uint8),
                "brain_mask": (subject.brain_mask, np.uint8)}
    for key, (array, dtype) in expected.items():
        assert paths[key].name == f"{key}.nii.gz"
        img = nib.load(paths[key])
        data = np.asanyarray(img.dataobj)
        assert data.shape == array.shape and data.dtype == dtype
        assert np.array_equal(data, array)
        assert np.allclose(img.affine, subject.affine)
        assert img.header.get_zooms() == pytest.approx(subject.spacing)
        assert img.header.get_xyzt_units()[0] == "mm"
    assert set(np.unique(nib.load(paths["label"]).dataobj)) == {0, 1}
    png = paths["mip"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert matplotlib.image.imread(paths["mip"]).ndim == 3
    assert yellow_pixels(paths["mip"]) > 100, "the brain mask's outline is drawn"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())


def test_unknown_site_is_rejected_with_the_known_ones():
    with pytest.raises(ValueError, match=r"'D'.*A, B, C"):
        make_subject("D", 0)
    with pytest.raises(ValueError, match="'D'"):
        vessel_tree("D", 0)


@pytest.mark.parametrize("shape", [(64, 64, 8), (15, 64, 24), (64, 64)])
def test_bad_shape_is_rejected(shape):
    with pytest.raises(ValueError, match="shape"):
        make_subject("A", 0, shape)


@pytest.mark.parametrize("site, scalp", [("A", None), ("C", None), ("B", False)])
def test_subjects_without_a_scalp_or_slow_flow_render_as_before_either_existed(site, scalp):
    """The old look stays available: without scalp and slow flow, a subject is bit for bit the one rendered before."""
    subject = make_subject(site, 0, (48, 48, 24), scalp, slow_flow_signal=1.0)
    image = subject.image.astype(np.float64)
    total, squares, vessels, brain = BEFORE_SCALP[site]
    assert image.sum() == pytest.approx(total, rel=1e-6)
    assert (image * image).sum() == pytest.approx(squares, rel=1e-6)
    assert subject.label.sum() == vessels and subject.brain_mask.sum() == brain
    assert not subject.scalp.any()


@pytest.mark.parametrize("site", ["B", "A"])
def test_scalp_is_a_dark_skull_ring_and_bright_fat_outside_the_brain(site):
    subject = cached_subject(site, 4, (64, 64, 24)) if site == "B" else make_subject(site, 4, (64, 64, 24), True)
    brain, label = subject.brain_mask.astype(bool), subject.label.astype(bool)
    skull, fat = subject.scalp == phantom.SKULL, subject.scalp == phantom.FAT
    assert skull.sum() > 5000 and fat.sum() > 5000
    assert not np.any(brain & (skull | fat)) and not np.any(label & (skull | fat))
    distance = ndimage.distance_transform_edt(~brain, sampling=subject.spacing)
    assert distance[fat].min() > 3.9 * min(subject.spacing[:2]), "at least 4 voxels of skull between brain and fat"
    assert distance[skull].max() < distance[fat].max()
    tissue = subject.image[brain & ~label].mean()
    assert subject.image[skull].mean() < 0.3 * tissue
    assert subject.image[fat].mean() > 1.2 * tissue
    head = brain | skull | fat
    assert not head[[0, -1]].any() and not head[:, [0, -1]].any(), "air around the head in every slice"


@pytest.mark.parametrize(
    "site, scalp, expected", [("A", None, False), ("C", None, False), ("B", None, True), ("B", False, False),
                              ("A", True, True), ("C", True, True)]
)
def test_scalp_is_the_sites_default_and_can_be_switched(site, scalp, expected):
    subject = make_subject(site, 4, (64, 64, 24), scalp)
    outside = ~ndimage.binary_dilation(subject.brain_mask.astype(bool))
    bright = (subject.image > 0.5 * SITES[site].brain_intensity) & outside
    assert SITES[site].scalp == (site == "B")
    assert subject.scalp.any() == expected
    if expected:
        assert bright.sum() > 0.1 * outside.sum()
    else:
        assert bright.sum() == 0
    assert np.array_equal(subject.segments, vessel_tree(site, 4, (64, 64, 24), scalp))


def test_shape_too_small_for_a_scalp_is_rejected():
    with pytest.raises(ValueError, match="too small for a scalp"):
        make_subject("B", 0, (24, 24, 16))
    assert not make_subject("B", 0, (24, 24, 16), scalp=False).scalp.any()


@pytest.mark.parametrize("flag, scalp", [("--scalp", True), ("--no-scalp", False)])
def test_phantom_command_switches_the_scalp(tmp_path: Path, flag, scalp):
    argv = ["phantom", "--site", "A", "--seed", "2", "--shape", "48", "48", "24", flag, "--out", str(tmp_path)]
    assert main(argv) == 0
    written = np.asanyarray(nib.load(tmp_path / "image.nii.gz").dataobj)
    assert np.array_equal(written, make_subject("A", 2, (48, 48, 24), scalp).image)
