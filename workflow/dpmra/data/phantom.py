"""Synthetic TOF-MRA subjects: bifurcating vessel trees rendered on a textured brain.

Long on purpose: one simulator, whose geometry, tree growth, rendering and noise share one layout of random
streams per subject (moving a draw changes every subject), so it stays in one file.

No real patient data can ship, so the default workflow runs on phantom subjects. Each
subject is a 3D image (float32), its exact binary vessel label, a brain mask and a RAS
affine, all deterministic from (site, seed, shape, scalp).

Sites (``SITES``; voxel size in mm, default grid, look):

| site | role | voxel size | grid | brain signal | noise | scalp |
| --- | --- | --- | --- | --- | --- | --- |
| A | internal (train, val, test) | 0.5 x 0.5 x 0.7 | 192 x 192 x 64 | 120 | 5 | no |
| B | external test set | 0.6 x 0.6 x 0.7 | 160 x 160 x 64 | 150 | 12 | yes |
| C | public cohort (warm start) | 0.7 x 0.7 x 0.9 | 136 x 136 x 50 | 90 | 8 | no |

Scalp (``Site.scalp``, or ``scalp=True/False`` to override a site's look): the real-world
TOF traits of an unstripped head. Around the brain, at a distance measured in mm from the
brain mask, lie a dark skull ring (SKULL_SIGNAL of the brain's signal: bone has almost
none in TOF-MRA; SKULL_MM thick at anatomy scale 1) and outside it bright subcutaneous fat
(FAT_SIGNAL = 1.5 times the brain's: short T1; FAT_MM thick), then air. Both thicknesses
vary by up to SCALP_VARIATION around the head, are never thinner than SCALP_MIN_VOXELS
in-plane voxels, and are recorded per voxel in ``Subject.scalp`` (SKULL, FAT). The scalp
is outside the brain mask and holds no vessel; the brain mask stays the brain only. To fit
the head into the field of view with a margin of air, the brain's in-plane semi-axes (and
the anatomy scale) shrink; a grid too small for that is refused. Its random draws come
from their own stream, so subjects without a scalp are exactly those rendered before the
scalp existed.

Conventions
- Array axes are (x, y, z); z is the axial (slice) axis. The affine is
  ``diag(sx, sy, sz, 1)`` with a translation that puts the volume centre at world (0, 0, 0),
  so a voxel centre is at ``(index - (n - 1) / 2) * spacing`` mm.
- All geometry is generated in mm, so sites with other voxel sizes render the same anatomy
  class. The brain is an ellipsoid whose semi-axes are fixed fractions of the field of view
  (FOV = shape * spacing; smaller in-plane with a scalp), with a slightly irregular boundary;
  it is cut by the slab in z, as a TOF-MRA slab cuts the head. Root radii and branch lengths scale with the FOV (the
  geometric mean of its ratios to the default 96 x 96 x 44.8 mm), the leaf radius stays
  0.2 mm, so a small ``shape`` override gives a smaller tree of the same kind.
- The vessel tree (:func:`vessel_tree`, also ``Subject.segments``) is a list of straight
  segments, each with a constant radius: three roots (two carotid-like, one basilar-like)
  enter from the inferior side of the slab, run as tortuous polylines and bifurcate
  recursively with Murray's law (r_parent^3 = r_1^3 + r_2^3) and Murray's branching
  angles, from about 2 mm down to 0.2-0.25 mm at the leaves. Every segment keeps its
  label and partial-volume footprint inside the brain mask.
- Vessel voxels are about 1.4-2.8 % of the brain mask voxels for sites A and B, with or
  without a scalp, at the default shapes and at small overrides such as (64, 64, 24).

Label rule (exact, evaluated on the segments of :func:`vessel_tree`): a voxel is a vessel
voxel if, for at least one segment, its centre lies within the segment's radius of the
segment (distance d <= r), or the segment passes through the voxel (the closed voxel box
intersects the segment). The second clause keeps sub-voxel vessels in the label as a
chain of the voxels their centreline crosses; for r at least half the voxel diagonal it
adds nothing.

Image model: tissue signal (smooth grey/white-like variation plus fine texture) with vessels
mixed in by their partial-volume fraction, and the scalp's signal outside the brain, times a
smooth multiplicative bias field, then Rician noise sqrt((s + n1)^2 + n2^2). The
partial-volume fraction of a voxel is the overlap of the vessel cross-section (a disc of
radius r) with a disc of the voxel's cross-sectional area centred on the voxel centre,
divided by that area; a sub-voxel vessel of radius r gives about pi r^2 / voxel_width^2 at
its centreline, a faint signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from dpmra.data.volumes import save_nifti
from dpmra.shared.pictures import save_mip

MIN_AXIS = 16
REFERENCE_FOV_MM = (96.0, 96.0, 44.8)  # the FOV at which the anatomy has scale 1
BRAIN_SEMI_AXES_FRACTION = (0.42, 0.46, 0.75)  # of the FOV; z > 0.5, so the slab cuts the brain
BOUNDARY_IRREGULARITY = 0.04  # largest relative bump of the brain surface
ROOT_RADIUS_MM = 2.0
LEAF_RADIUS_MM = 0.2  # no branch is thinner
LENGTH_PER_RADIUS = (5.5, 9.0)  # branch length between bifurcations, in radii
STEP_PER_RADIUS = 2.0  # polyline segment length, in radii ...
MIN_STEP_MM = 1.0  # ... but at least this
TORTUOSITY = 0.25  # std of the random direction change per polyline step
OUTWARD_DRIFT = 0.08  # pull per step away from the z axis
THIN_RADIUS_MM = 0.5  # branches thinner than this ...
THIN_BRANCH_SURVIVAL = 0.6  # ... are grown with this probability
BRANCH_ASYMMETRY = (0.6, 1.0)  # range of r_minor / r_major at a bifurcation
SKULL_MM = 4.0  # dark skull ring (bone, very low TOF signal) around the brain, at anatomy scale 1 ...
FAT_MM = 3.0  # ... and the bright subcutaneous fat outside it
SCALP_VARIATION = 0.15  # largest relative change of a layer's thickness around the head
SCALP_MIN_VOXELS = (4.0, 3.0)  # skull and fat are never thinner (in-plane voxels), so 1-voxel smoothing keeps them
HEAD_MARGIN_MM = 1.5  # air between the fat and the in-plane edge of the field of view (at least 2 voxels)
MIN_BRAIN_SHRINK = 0.5  # a grid too small to fit a scalp around a brain this much smaller is refused
SKULL_SIGNAL = 0.05  # skull signal relative to brain_intensity
FAT_SIGNAL = 1.5  # fat signal relative to brain_intensity: short T1, brighter than brain in TOF-MRA
SKULL, FAT = 1, 2  # values of Subject.scalp
SLOW_FLOW_RADII_MM = (0.3, 1.0)  # slow flow: a branch this thin or thinner keeps Site.slow_flow_signal of its
# contrast, this thick or thicker all of it, linear in between


@dataclass(frozen=True)
class Site:
    """Acquisition parameters of one scanner site; two sites make the external test set a domain shift."""

    name: str
    spacing_mm: tuple[float, float, float]  # voxel size along (x, y, z)
    shape: tuple[int, int, int]  # default grid; both sites cover about 96 x 96 x 44.8 mm
    brain_intensity: float  # mean tissue signal before bias and noise
    vessel_contrast: float  # signal of a fully filled vessel voxel relative to brain_intensity
    noise_sigma: float  # std of each Gaussian channel of the Rician noise
    bias_strength: float  # std of the log bias field
    scalp: bool = False  # default look: a dark skull ring and bright subcutaneous fat around a smaller brain
    slow_flow_signal: float = 1.0  # contrast kept by the thinnest branches (1: none lost); see SLOW_FLOW_RADII_MM


SITES: dict[str, Site] = {
    "A": Site(
        name="A",
        spacing_mm=(0.5, 0.5, 0.7),
        shape=(192, 192, 64),
        brain_intensity=120.0,
        vessel_contrast=3.0,
        noise_sigma=5.0,
        bias_strength=0.10,
        slow_flow_signal=0.45,
    ),
    "B": Site(
        name="B",
        spacing_mm=(0.6, 0.6, 0.7),
        shape=(160, 160, 64),
        brain_intensity=150.0,
        vessel_contrast=2.2,
        noise_sigma=12.0,
        bias_strength=0.18,
        scalp=True,
        slow_flow_signal=0.45,
    ),
    # A public cohort for warm starts: another scanner (coarser in-plane, thicker slices, darker tissue, brighter
    # vessels), so that pretraining on it is not training on the private sites' domain.
    "C": Site(
        name="C",
        spacing_mm=(0.7, 0.7, 0.9),
        shape=(136, 136, 50),
        brain_intensity=90.0,
        vessel_contrast=3.6,
        noise_sigma=8.0,
        bias_strength=0.25,
    ),
}


@dataclass
class Subject:
    """One phantom subject: image, exact vessel label, brain mask and the geometry they come from."""

    image: np.ndarray  # float32 (x, y, z), scanner-like units: brain ~100-200, vessels brighter
    label: np.ndarray  # uint8 {0, 1}, the exact label rule of the module docstring
    brain_mask: np.ndarray  # uint8 {0, 1}
    affine: np.ndarray  # 4 x 4 float64, RAS, diagonal spacing, volume centre at world (0, 0, 0)
    site: str
    seed: int
    segments: np.ndarray  # (n, 7) float64: x0, y0, z0, x1, y1, z1, radius in world mm
    scalp: np.ndarray  # uint8: SKULL, FAT, or 0 (brain, air, and everywhere for a subject without a scalp)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm, read from the affine."""
        return tuple(float(v) for v in np.abs(np.diag(self.affine)[:3]))


@dataclass(frozen=True)
class _Geometry:
    """Physical layout of one volume: grid, brain ellipsoid and the scale of the anatomy."""

    shape: tuple[int, int, int]
    spacing: np.ndarray
    fov: np.ndarray
    semi_axes: np.ndarray
    scale: float
    scalp_mm: tuple[float, float] = (0.0, 0.0)  # mean skull and fat thickness; zero without a scalp

    @property
    def has_scalp(self) -> bool:
        """Whether a skull and fat surround the brain."""
        return self.scalp_mm[0] > 0.0

    @property
    def voxel_width(self) -> float:
        """Edge of the cube with the voxel's volume, the width partial volume is computed with."""
        return float(np.prod(self.spacing) ** (1.0 / 3.0))

    @property
    def half_diagonal(self) -> float:
        """Largest distance from a voxel centre to a point of its voxel."""
        return float(np.linalg.norm(self.spacing) / 2.0)

    def axis_coordinates(self, axis: int) -> np.ndarray:
        """World coordinates (mm) of the voxel centres along one axis."""
        n = self.shape[axis]
        return (np.arange(n) - (n - 1) / 2.0) * self.spacing[axis]


def _get_site(site: str) -> Site:
    """Look up a site by name, failing with the list of known sites."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; known sites: {', '.join(sorted(SITES))}")
    return SITES[site]


def _affine_for(spacing_mm: tuple[float, float, float], shape: tuple[int, int, int]) -> np.ndarray:
    """RAS affine with diagonal spacing that puts the volume centre at world (0, 0, 0)."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    affine = np.diag(np.append(spacing, 1.0))
    affine[:3, 3] = -(np.asarray(shape, dtype=np.float64) - 1.0) / 2.0 * spacing
    return affine


def _resolve_shape(site: Site, shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """The site's default shape, or a validated override."""
    if shape is None:
        return site.shape
    if len(shape) != 3 or any(int(n) != n for n in shape):
        raise ValueError(f"shape must be three integers, got {shape!r}")
    if min(shape) < MIN_AXIS:
        raise ValueError(f"shape {tuple(shape)} too small: every axis needs at least {MIN_AXIS} voxels")
    return tuple(int(n) for n in shape)


def _scalp_thickness(spacing: np.ndarray, scale: float) -> tuple[float, float]:
    """Mean skull and fat thickness (mm): the anatomy's, but never thinner than SCALP_MIN_VOXELS after variation."""
    skull_floor, fat_floor = (n * float(spacing[:2].max()) / (1.0 - SCALP_VARIATION) for n in SCALP_MIN_VOXELS)
    return max(SKULL_MM * scale, skull_floor), max(FAT_MM * scale, fat_floor)


def _brain_shrink(
    fov: np.ndarray, semi_axes: np.ndarray, spacing: np.ndarray, scalp_mm: tuple[float, float]
) -> float:
    """Factor (at most 1) on the brain's in-plane axes that leaves room for the thickest scalp and a margin of air."""
    margin = max(HEAD_MARGIN_MM, 2.0 * float(spacing[:2].max()))
    room = fov[:2] / 2.0 - sum(scalp_mm) * (1.0 + SCALP_VARIATION) - margin
    return float(min(1.0, (room / (semi_axes[:2] * (1.0 + BOUNDARY_IRREGULARITY))).min()))


def _geometry(site: Site, shape: tuple[int, int, int] | None, scalp: bool = False) -> _Geometry:
    """Grid, brain and anatomy scale for a site at the given (or default) shape; a scalp shrinks the brain in-plane."""
    shape = _resolve_shape(site, shape)
    spacing = np.asarray(site.spacing_mm, dtype=np.float64)
    fov = spacing * np.asarray(shape)
    semi_axes = fov * np.asarray(BRAIN_SEMI_AXES_FRACTION)
    scale = float(np.prod(fov / np.asarray(REFERENCE_FOV_MM)) ** (1.0 / 3.0))
    if not scalp:
        return _Geometry(shape=shape, spacing=spacing, fov=fov, semi_axes=semi_axes, scale=scale)
    scalp_mm = _scalp_thickness(spacing, scale)
    shrink = _brain_shrink(fov, semi_axes, spacing, scalp_mm)
    if shrink < MIN_BRAIN_SHRINK:
        raise ValueError(f"shape {shape} too small for a scalp at site {site.name}; use a larger shape or no scalp")
    # The slab still cuts the brain in z; the anatomy scale follows the in-plane shrink (geometric mean of the axes).
    return _Geometry(
        shape=shape,
        spacing=spacing,
        fov=fov,
        semi_axes=semi_axes * np.array([shrink, shrink, 1.0]),
        scale=scale * shrink ** (2.0 / 3.0),
        scalp_mm=scalp_mm,
    )


def _streams(site: str, seed: int) -> dict[str, np.random.Generator]:
    """Independent random streams per component, so the tree does not depend on the texture draws."""
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    # Appending a name keeps the earlier children (and so every subject without a scalp) unchanged.
    names = ("tree", "boundary", "texture", "bias", "noise", "scalp")
    children = np.random.SeedSequence([int(seed), ord(site)]).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def _ellipsoid_norm(points: np.ndarray, semi_axes: np.ndarray) -> np.ndarray:
    """Ellipsoidal radius |p / semi_axes|: 1 on the smooth brain surface."""
    return np.linalg.norm(points / semi_axes, axis=-1)


def _wall_margin(radius: float, geom: _Geometry) -> float:
    """Distance (mm) from a centreline beyond which a segment touches no voxel, in label or image."""
    return max(radius + geom.voxel_width / math.sqrt(math.pi), geom.half_diagonal)


def _inside(point: np.ndarray, radius: float, geom: _Geometry) -> bool:
    """Whether a centreline point keeps its capsule inside every possible brain mask and the slab."""
    # Every mask contains the ellipsoid scaled by 1 - BOUNDARY_IRREGULARITY; the ellipsoidal norm is
    # convex and grows by at most 1/min(semi_axes) per mm, so capsules between accepted points stay inside.
    limit = 1.0 - BOUNDARY_IRREGULARITY - _wall_margin(radius, geom) / geom.semi_axes.min()
    half_slab = geom.fov[2] / 2.0
    return bool(_ellipsoid_norm(point, geom.semi_axes) <= limit and -half_slab <= point[2] <= half_slab)


def _unit(v: np.ndarray) -> np.ndarray:
    """v scaled to unit length."""
    return v / np.linalg.norm(v)


def _step(
    point: np.ndarray, direction: np.ndarray, length: float, radius: float, geom: _Geometry, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """Next polyline point after a small random turn, or None if no turn keeps the vessel in the brain."""
    # The outward drift fans trees out from the midline towards the cortex; retries bend inwards.
    inward = _unit(-point / geom.semi_axes**2) if np.any(point) else np.zeros(3)
    radial = np.array([point[0], point[1], 0.0])
    outward = _unit(radial) if np.any(radial) else np.zeros(3)
    for attempt in range(8):
        turn = TORTUOSITY * rng.standard_normal(3) + OUTWARD_DRIFT * outward + 0.5 * attempt * inward
        turned = _unit(direction + turn)
        candidate = point + length * turned
        if _inside(candidate, radius, geom):
            return candidate, turned
    return None


def _rotate_towards(direction: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotate a unit direction by angle towards a unit vector perpendicular to it."""
    return _unit(math.cos(angle) * direction + math.sin(angle) * axis)


def _bifurcate(
    direction: np.ndarray, radius: float, rng: np.random.Generator
) -> list[tuple[np.ndarray, float]]:
    """Two child (direction, radius) pairs: Murray's law radii and Murray's optimal branching angles."""
    asymmetry = rng.uniform(*BRANCH_ASYMMETRY)
    r1 = radius / (1.0 + asymmetry**3) ** (1.0 / 3.0)
    r2 = asymmetry * r1
    cos1 = (radius**4 + r1**4 - r2**4) / (2.0 * radius**2 * r1**2)
    cos2 = (radius**4 + r2**4 - r1**4) / (2.0 * radius**2 * r2**2)
    jitter = rng.uniform(-0.15, 0.15, size=2)
    angle1 = math.acos(min(1.0, max(-1.0, cos1))) + jitter[0]
    angle2 = math.acos(min(1.0, max(-1.0, cos2))) + jitter[1]
    perpendicular = _unit(np.cross(direction, _unit(rng.standard_normal(3))))
    return [
        (_rotate_towards(direction, perpendicular, angle1), r1),
        (_rotate_towards(direction, -perpendicular, angle2), r2),
    ]


def _roots(geom: _Geometry, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Root (point, direction, radius): two carotid-like and one basilar-like trunk entering from below."""
    a, b, _ = geom.semi_axes
    bottom = -geom.fov[2] / 2.0 + 0.5 * geom.spacing[2]
    layout = [((-0.3, 0.12), 1.0), ((0.3, 0.12), 1.0), ((0.0, -0.22), 0.8)]
    roots = []
    for (fx, fy), relative_radius in layout:
        point = np.array([fx * a, fy * b, bottom]) + rng.normal(0.0, 0.03, 3) * np.array([a, b, 0.0])
        direction = _unit(np.array([-0.3 * fx, -0.3 * fy, 1.0]) + 0.2 * rng.standard_normal(3))
        radius = ROOT_RADIUS_MM * geom.scale * relative_radius * rng.uniform(0.9, 1.05)
        if _inside(point, radius, geom):
            roots.append((point, direction, radius))
    return roots


def _grow_tree(geom: _Geometry, rng: np.random.Generator) -> np.ndarray:
    """Grow all root trees depth-first into an (n, 7) array of (x0, y0, z0, x1, y1, z1, r) in mm."""
    min_step = MIN_STEP_MM * geom.scale
    thin_radius = THIN_RADIUS_MM * geom.scale
    stack = list(reversed(_roots(geom, rng)))
    segments = []
    while stack:
        point, direction, radius = stack.pop()
        length = rng.uniform(*LENGTH_PER_RADIUS) * radius
        n_steps = max(1, math.ceil(length / max(STEP_PER_RADIUS * radius, min_step)))
        completed = True
        for _ in range(n_steps):
            moved = _step(point, direction, length / n_steps, radius, geom, rng)
            if moved is None:
                completed = False
                break
            end, direction = moved
            segments.append((*point, *end, radius))
            point = end
        if not completed:
            continue
        # Under Murray's law the number of leaves grows as (r_root / r_leaf)^3; pruning thin branches
        # keeps the vessel fraction realistic and the segment count (hence render time) bounded.
        for child_direction, child_radius in reversed(_bifurcate(direction, radius, rng)):
            survives = child_radius >= thin_radius or rng.random() < THIN_BRANCH_SURVIVAL
            if child_radius >= LEAF_RADIUS_MM and survives:
                stack.append((point, child_direction, child_radius))
    return np.asarray(segments, dtype=np.float64).reshape(-1, 7)


def _use_scalp(site: Site, scalp: bool | None) -> bool:
    """Whether to render a scalp: as asked, or the site's default when None."""
    return site.scalp if scalp is None else bool(scalp)


def vessel_tree(
    site: str, seed: int, shape: tuple[int, int, int] | None = None, scalp: bool | None = None
) -> np.ndarray:
    """Vessel segments (x0, y0, z0, x1, y1, z1, radius) in world mm: the exact geometry of the label."""
    site_params = _get_site(site)
    geom = _geometry(site_params, shape, _use_scalp(site_params, scalp))
    return _grow_tree(geom, _streams(site, seed)["tree"])


def _disc_overlap_fraction(distance: np.ndarray, radius: float, voxel_radius: float) -> np.ndarray:
    """Area of a vessel disc inside a voxel disc at the given centre distance, as a fraction of the voxel disc."""
    r, rho = radius, voxel_radius
    d = np.maximum(distance, 1e-12)
    cos_r = np.clip((d * d + r * r - rho * rho) / (2.0 * d * r), -1.0, 1.0)
    cos_rho = np.clip((d * d + rho * rho - r * r) / (2.0 * d * rho), -1.0, 1.0)
    kite = (-d + r + rho) * (d + r - rho) * (d - r + rho) * (d + r + rho)
    lens = r * r * np.arccos(cos_r) + rho * rho * np.arccos(cos_rho) - 0.5 * np.sqrt(np.maximum(kite, 0.0))
    area = np.where(d <= abs(r - rho), math.pi * min(r, rho) ** 2, np.where(d >= r + rho, 0.0, lens))
    return area / (math.pi * rho * rho)


def _segment_distance(axes: list[np.ndarray], p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance from every point of the grid spanned by three coordinate vectors to the segment p0-p1."""
    v = p1 - p0
    rel = [c - p0[i] for i, c in enumerate(axes)]
    grid = np.ix_(*rel)
    t = (grid[0] * v[0] + grid[1] * v[1] + grid[2] * v[2]) / max(float(v @ v), 1e-24)
    np.clip(t, 0.0, 1.0, out=t)
    return np.sqrt((grid[0] - t * v[0]) ** 2 + (grid[1] - t * v[1]) ** 2 + (grid[2] - t * v[2]) ** 2)


def _segment_crosses_voxels(
    axes: list[np.ndarray], spacing: np.ndarray, p0: np.ndarray, p1: np.ndarray
) -> np.ndarray:
    """Whether the segment p0-p1 intersects each closed voxel box centred on the grid points (slab test)."""
    v = p1 - p0
    lows, highs = [], []
    for i, c in enumerate(axes):
        near, far = c - spacing[i] / 2.0 - p0[i], c + spacing[i] / 2.0 - p0[i]
        if v[i] == 0.0:
            hit = (near <= 0.0) & (far >= 0.0)
            low, high = np.where(hit, -np.inf, np.inf), np.where(hit, np.inf, -np.inf)
        else:
            low, high = np.minimum(near / v[i], far / v[i]), np.maximum(near / v[i], far / v[i])
        shape = [1, 1, 1]
        shape[i] = -1
        lows.append(low.reshape(shape))
        highs.append(high.reshape(shape))
    enter = np.maximum(np.maximum(np.maximum(lows[0], lows[1]), lows[2]), 0.0)
    leave = np.minimum(np.minimum(np.minimum(highs[0], highs[1]), highs[2]), 1.0)
    return enter <= leave


def _bounding_slices(
    p0: np.ndarray, p1: np.ndarray, reach: float, geom: _Geometry
) -> tuple[slice, ...] | None:
    """Index ranges of the voxels within reach (mm) of a segment's bounding box, or None if outside the grid."""
    slices = []
    for i in range(3):
        origin = -(geom.shape[i] - 1) / 2.0 * geom.spacing[i]
        lo = math.floor((min(p0[i], p1[i]) - reach - origin) / geom.spacing[i]) - 1
        hi = math.ceil((max(p0[i], p1[i]) + reach - origin) / geom.spacing[i]) + 1
        lo, hi = max(lo, 0), min(hi, geom.shape[i] - 1)
        if lo > hi:
            return None
        slices.append(slice(lo, hi + 1))
    return tuple(slices)


def slow_flow(radius: np.ndarray | float, kept: float, scale: float = 1.0) -> np.ndarray:
    """Fraction of a vessel's contrast its flow keeps at this radius: `kept` for the thinnest branches, 1 for thick
    (SLOW_FLOW_RADII_MM at anatomy scale 1, scaled with the tree)."""
    low, high = (r * scale for r in SLOW_FLOW_RADII_MM)
    return kept + (1.0 - kept) * np.clip((np.asarray(radius) - low) / (high - low), 0.0, 1.0)


def _render_vessels(
    segments: np.ndarray, geom: _Geometry, kept: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Partial-volume vessel fraction, the same weighted by each segment's slow-flow signal (float32), and the exact
    label (bool), each segment only in its bounding box."""
    fraction = np.zeros(geom.shape, dtype=np.float32)
    bright = np.zeros(geom.shape, dtype=np.float32)
    label = np.zeros(geom.shape, dtype=bool)
    coordinates = [geom.axis_coordinates(i) for i in range(3)]
    voxel_radius = geom.voxel_width / math.sqrt(math.pi)
    for x0, y0, z0, x1, y1, z1, radius in segments:
        p0, p1 = np.array([x0, y0, z0]), np.array([x1, y1, z1])
        box = _bounding_slices(p0, p1, _wall_margin(radius, geom), geom)
        if box is None:
            continue
        axes = [coordinates[i][box[i]] for i in range(3)]
        distance = _segment_distance(axes, p0, p1)
        inside = distance <= radius
        # For r >= half the voxel diagonal the crossing clause is implied by d <= r.
        if radius < geom.half_diagonal:
            inside |= _segment_crosses_voxels(axes, geom.spacing, p0, p1)
        label[box] |= inside
        overlap = _disc_overlap_fraction(distance, radius, voxel_radius)
        np.maximum(fraction[box], overlap, out=fraction[box])
        np.maximum(bright[box], overlap * np.float32(slow_flow(radius, kept, geom.scale)), out=bright[box])
    return fraction, bright, label


def _coarse_shape(geom: _Geometry, grid_mm: float) -> tuple[int, int, int]:
    """Shape of a grid over the same field of view with cells of about grid_mm."""
    return tuple(max(4, math.ceil(f / grid_mm)) for f in geom.fov)


def _resize(field: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Linearly resample a coarse field covering the field of view onto the volume grid (float32)."""
    zoom = [n / m for n, m in zip(shape, field.shape)]
    return ndimage.zoom(field.astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True)


def _smooth_field(rng: np.random.Generator, geom: _Geometry, grid_mm: float, sigma_mm: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field: Gaussian-filtered noise on a coarse grid, resized to the volume."""
    coarse = _coarse_shape(geom, grid_mm)
    sigma = [sigma_mm / (f / n) for f, n in zip(geom.fov, coarse)]
    field = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma, mode="wrap")
    return _resize((field - field.mean()) / field.std(), geom.shape)


def _boundary_bump(geom: _Geometry, rng: np.random.Generator) -> np.ndarray:
    """Irregularity of the brain surface: a smooth function of direction bounded by BOUNDARY_IRREGULARITY."""
    coarse = _coarse_shape(geom, 2.0)
    axes = [((np.arange(n) + 0.5) / n - 0.5) * f / s for n, f, s in zip(coarse, geom.fov, geom.semi_axes)]
    x, y, z = np.ix_(*axes)
    norm = np.maximum(np.sqrt(x * x + y * y + z * z), 1e-6)
    n_waves = 6
    wave_vectors = rng.standard_normal((n_waves, 3)) * rng.uniform(1.5, 4.0, (n_waves, 1))
    phases = rng.uniform(0.0, 2.0 * math.pi, n_waves)
    weights = rng.uniform(0.5, 1.0, n_waves)
    bump = sum(w * np.cos((k[0] * x + k[1] * y + k[2] * z) / norm + phase)
               for k, phase, w in zip(wave_vectors, phases, weights))
    # Linear resampling is a convex combination, so the bound survives the resize.
    return _resize(bump * (BOUNDARY_IRREGULARITY / weights.sum()), geom.shape)


def _brain_level(geom: _Geometry, rng: np.random.Generator) -> np.ndarray:
    """Signed level (ellipsoidal units) of the irregular brain surface: negative inside, zero on the boundary."""
    x, y, z = np.ix_(*[(geom.axis_coordinates(i) / geom.semi_axes[i]).astype(np.float32) for i in range(3)])
    return np.sqrt(x * x + y * y + z * z) - 1.0 - _boundary_bump(geom, rng)


def _tissue(geom: _Geometry, site: Site, rng: np.random.Generator) -> np.ndarray:
    """Brain tissue signal: grey/white-like patches (smooth field through tanh) plus fine texture."""
    matter = _smooth_field(rng, geom, grid_mm=1.0, sigma_mm=4.0)
    texture = _smooth_field(rng, geom, grid_mm=1.0, sigma_mm=1.0)
    return site.brain_intensity * (1.0 + 0.10 * np.tanh(1.5 * matter) + 0.04 * texture)


def _bias_field(geom: _Geometry, site: Site, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative coil bias field, log-normal around 1."""
    return np.exp(site.bias_strength * _smooth_field(rng, geom, grid_mm=4.0, sigma_mm=30.0))


def _scalp(
    brain_mask: np.ndarray, geom: _Geometry, site: Site, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Scalp signal (float32, before bias) and layers (uint8 SKULL / FAT) at their distance (mm) from the brain."""
    distance = ndimage.distance_transform_edt(~brain_mask, sampling=geom.spacing).astype(np.float32)
    skull_mm, fat_mm = geom.scalp_mm
    skull = skull_mm * (1.0 + SCALP_VARIATION * np.clip(_smooth_field(rng, geom, 4.0, 12.0), -1.0, 1.0))
    outer = skull + fat_mm * (1.0 + SCALP_VARIATION * np.clip(_smooth_field(rng, geom, 4.0, 12.0), -1.0, 1.0))
    texture = _smooth_field(rng, geom, grid_mm=1.0, sigma_mm=1.5)
    # Soft layer edges over about one voxel, like the brain's.
    width = geom.voxel_width
    head = np.clip((outer - distance) / width + 0.5, 0.0, 1.0) * ~brain_mask
    fat = head * np.clip((distance - skull) / width + 0.5, 0.0, 1.0)
    fat_signal = FAT_SIGNAL * site.brain_intensity * (1.0 + 0.05 * texture)
    signal = SKULL_SIGNAL * site.brain_intensity * (head - fat) + fat_signal * fat
    layers = np.where(distance <= skull, SKULL, FAT) * ((distance > 0) & (distance <= outer))
    return signal.astype(np.float32), layers.astype(np.uint8)


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of std sigma per channel."""
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary)


def make_subject(
    site: str | Site,
    seed: int,
    shape: tuple[int, int, int] | None = None,
    scalp: bool | None = None,
    slow_flow_signal: float | None = None,
) -> Subject:
    """Generate one deterministic phantom subject; shape overrides the site's grid, scalp and slow_flow_signal its
    default look (slow_flow_signal 1: every branch keeps its full contrast, as before slow flow existed); a Site
    object renders a site that is not in SITES (Private Evolution's candidates)."""
    site_params = site if isinstance(site, Site) else _get_site(site)
    geom = _geometry(site_params, shape, _use_scalp(site_params, scalp))
    streams = _streams(site_params.name, seed)
    segments = _grow_tree(geom, streams["tree"])
    kept = site_params.slow_flow_signal if slow_flow_signal is None else slow_flow_signal
    fraction, bright, label = _render_vessels(segments, geom, kept)
    level = _brain_level(geom, streams["boundary"])
    brain_mask = level <= 0.0
    # Soft tissue edge over about one voxel; the ellipsoidal level is converted to mm.
    edge = np.clip(0.5 - level * (geom.semi_axes.mean() / geom.voxel_width), 0.0, 1.0)
    tissue = _tissue(geom, site_params, streams["texture"])
    bias = _bias_field(geom, site_params, streams["bias"])
    vessel = np.float32(site_params.brain_intensity * site_params.vessel_contrast)
    signal = edge * tissue * (1.0 - fraction) + vessel * bright
    layers = np.zeros(geom.shape, dtype=np.uint8)
    if geom.has_scalp:
        scalp_signal, layers = _scalp(brain_mask, geom, site_params, streams["scalp"])
        signal = signal + (1.0 - edge) * scalp_signal
    image = _rician(bias * signal, site_params.noise_sigma, streams["noise"])
    return Subject(
        image=image.astype(np.float32),
        label=label.astype(np.uint8),
        brain_mask=brain_mask.astype(np.uint8),
        affine=_affine_for(site_params.spacing_mm, geom.shape),
        site=site_params.name,
        seed=int(seed),
        segments=segments,
        scalp=layers,
    )


def write_subject(subject: Subject, out_dir: Path) -> dict[str, Path]:
    """Write image, label and brain mask NIfTI files and the MIP PNG atomically; return their paths."""
    out_dir = Path(out_dir)
    volumes = {
        "image": subject.image.astype(np.float32),
        "label": subject.label.astype(np.uint8),
        "brain_mask": subject.brain_mask.astype(np.uint8),
    }
    paths = {key: out_dir / f"{key}.nii.gz" for key in volumes}
    for key, array in volumes.items():
        save_nifti(array, subject.affine, paths[key])
    paths["mip"] = out_dir / "mip.png"
    title = f"phantom site {subject.site}, seed {subject.seed}"
    save_mip(subject.image, subject.label, subject.affine, paths["mip"], title, subject.brain_mask)
    return paths
