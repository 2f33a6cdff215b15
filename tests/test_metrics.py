"""Segmentation metrics: against brute force, against MONAI, by hand, on every empty case, with a mask, from files."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from dpmra.data.volumes import VolumeError
from dpmra.segmentation import metrics
from dpmra.segmentation.metrics import METRICS, score_files, segmentation_metrics

SPACING = (0.5, 0.6, 0.9)
SHAPE = (9, 8, 7)
INF, NAN = math.inf, math.nan
HD_QUANTILE = 0.95


def surface(volume: np.ndarray) -> np.ndarray:
    """Voxels of a set with one of its 6 face neighbours outside it, by explicit shifts of the zero-padded volume."""
    padded = np.pad(volume, 1)
    inner = np.ones_like(volume)
    for axis in range(3):
        for step in (-1, 1):
            inner &= np.roll(padded, step, axis)[1:-1, 1:-1, 1:-1]
    return volume & ~inner


def directed(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each voxel of a to the nearest of b and from each of b to the nearest of a, pairwise in mm."""
    pairwise = cdist(np.argwhere(a) * np.asarray(spacing), np.argwhere(b) * np.asarray(spacing))
    return pairwise.min(axis=1), pairwise.min(axis=0)


def brute_force(truth: np.ndarray, prediction: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """The METRICS of two non-empty sets from explicit pairwise distances between voxel centres in mm."""
    to_p, to_t = directed(truth, prediction, spacing)
    surface_to_p, surface_to_t = directed(surface(truth), surface(prediction), spacing)
    both = float(np.sum(truth & prediction))
    n_t, n_p = int(truth.sum()), int(prediction.sum())
    return {
        "dsc": 2 * both / (n_t + n_p),
        "bahd_mm": (to_p.sum() + to_t.sum()) / (2 * n_t),
        "hd95_mm": max(np.percentile(surface_to_p, 95), np.percentile(surface_to_t, 95)),
        "sensitivity": both / n_t,
        "precision": both / n_p,
        "avd": abs(n_p - n_t) / n_t,
        "assd_mm": np.concatenate([surface_to_p, surface_to_t]).mean(),
        "hd95_voxels_mm": max(np.percentile(to_p, 95), np.percentile(to_t, 95)),
    }


def assert_metrics(actual: dict[str, float], expected: dict[str, float]) -> None:
    """Same keys in METRICS order, Python floats, equal values (NaN equal to NaN, inf to inf)."""
    assert tuple(actual) == METRICS
    assert METRICS[:6] == ("dsc", "bahd_mm", "hd95_mm", "sensitivity", "precision", "avd")  # scripts' columns
    assert all(type(v) is float for v in actual.values()), actual
    for key in METRICS:
        assert actual[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12, nan_ok=True), (key, actual)


def distances(value: float) -> dict[str, float]:
    """Every distance metric at one value (single voxels are their own surfaces, so all four agree)."""
    return dict.fromkeys(("bahd_mm", "hd95_mm", "assd_mm", "hd95_voxels_mm"), value)


def single(shape: tuple[int, int, int], *voxels: tuple[int, int, int]) -> np.ndarray:
    """A boolean volume with the given voxels set."""
    volume = np.zeros(shape, bool)
    for voxel in voxels:
        volume[voxel] = True
    return volume


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("density", [0.03, 0.3])
@pytest.mark.parametrize("max_share", [0.0, 1.0], ids=["transforms", "kdtree"])
def test_matches_brute_force(seed: int, density: float, max_share: float, monkeypatch) -> None:
    """Random sparse and dense volumes with anisotropic spacing agree with the pairwise-distance definitions,
    by either nearest-neighbour method."""
    monkeypatch.setattr(metrics, "KDTREE_MAX_SHARE", max_share)
    rng = np.random.default_rng(seed)
    truth = rng.random(SHAPE) < density
    prediction = rng.random(SHAPE) < density
    truth[rng.integers(0, 9), rng.integers(0, 8), rng.integers(0, 7)] = True
    prediction[rng.integers(0, 9), rng.integers(0, 8), rng.integers(0, 7)] = True
    assert_metrics(segmentation_metrics(truth, prediction, SPACING), brute_force(truth, prediction, SPACING))


def monai_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Random truth, a prediction near it (dilated, with noise), a mask and anisotropic spacing."""
    rng = np.random.default_rng(200 + seed)
    shape = tuple(int(n) for n in rng.integers(8, 28, 3))
    spacing = tuple(float(s) for s in rng.uniform(0.3, 2.0, 3))
    truth = rng.random(shape) < rng.uniform(0.01, 0.4)
    prediction = ndimage.binary_dilation(truth) ^ (rng.random(shape) < rng.uniform(0.01, 0.2))
    return truth, prediction, rng.random(shape) < 0.9, spacing


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")  # inside MONAI 1.6
@pytest.mark.parametrize("seed", range(8))
def test_surface_distances_match_monai(seed: int) -> None:
    """hd95_mm and assd_mm as MONAI computes them, on random anisotropic volumes cut to a mask.

    MONAI's surfaces and surface distances (`get_edge_surface_distance`, which its metrics call) with the
    95th percentile taken in float64 agree to 1e-6 mm, as does its ASSD. Its `compute_hausdorff_distance`
    agrees to 1e-5 relative only: torch.quantile in float32 rounds the interpolation position 0.95 (n - 1)
    (seed 2: 7.7e-6 mm at 1.9 mm).
    """
    monai_metrics = pytest.importorskip("monai.metrics")
    monai_utils = pytest.importorskip("monai.metrics.utils")
    torch = pytest.importorskip("torch")
    truth, prediction, mask, spacing = monai_case(seed)
    ours = segmentation_metrics(truth, prediction, spacing, mask)
    y, y_pred = (torch.from_numpy(v & mask) for v in (truth, prediction))
    _, directed_distances, _ = monai_utils.get_edge_surface_distance(y_pred, y, spacing=spacing, symmetric=True)
    hd95_float64 = max(torch.quantile(d.double(), HD_QUANTILE).item() for d in directed_distances)
    assert ours["hd95_mm"] == pytest.approx(hd95_float64, abs=1e-6)
    batch = {"y_pred": y_pred[None, None].float(), "y": y[None, None].float(), "include_background": True}
    hd95 = monai_metrics.compute_hausdorff_distance(**batch, percentile=95, spacing=spacing).item()
    assert ours["hd95_mm"] == pytest.approx(hd95, rel=1e-5)
    assd = monai_metrics.compute_average_surface_distance(**batch, symmetric=True, spacing=spacing).item()
    assert ours["assd_mm"] == pytest.approx(assd, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_matches_brute_force_with_mask(seed: int) -> None:
    """With a mask the metrics equal brute force on both sets cut to the mask."""
    rng = np.random.default_rng(100 + seed)
    truth = rng.random(SHAPE) < 0.2
    prediction = rng.random(SHAPE) < 0.2
    mask = rng.random(SHAPE) < 0.7
    expected = brute_force(truth & mask, prediction & mask, SPACING)
    assert_metrics(segmentation_metrics(truth, prediction, SPACING, mask), expected)


def test_sets_in_a_corner_of_a_large_grid() -> None:
    """Distances are right when both sets occupy a small part of the grid (the transform is cropped)."""
    shape = (40, 30, 20)
    truth = single(shape, (30, 25, 15), (31, 25, 15), (35, 28, 19))
    prediction = single(shape, (31, 25, 15), (33, 22, 12))
    assert_metrics(segmentation_metrics(truth, prediction, SPACING), brute_force(truth, prediction, SPACING))


def test_two_single_voxels_three_apart_along_x() -> None:
    """One voxel each, 3 voxels apart along x at 0.5 mm: both directed distances are 1.5 mm."""
    truth = single(SHAPE, (1, 4, 3))
    prediction = single(SHAPE, (4, 4, 3))
    expected = {"dsc": 0.0, "sensitivity": 0.0, "precision": 0.0, "avd": 0.0, **distances(1.5)}
    assert_metrics(segmentation_metrics(truth, prediction, (0.5, 0.6, 0.9)), expected)


def test_prediction_finds_one_of_two_truth_voxels() -> None:
    """Truth {a, b}, prediction {a}, |ab| = d: bAHD d/4, HD95 0.95 d by linear interpolation of [0, d], ASSD d/3."""
    truth = single(SHAPE, (2, 2, 2), (2, 2, 6))
    prediction = single(SHAPE, (2, 2, 2))
    d = 4 * 0.9
    expected = {
        "dsc": 2 / 3, "bahd_mm": d / 4, "hd95_mm": 0.95 * d, "sensitivity": 0.5, "precision": 1.0, "avd": 0.5,
        "assd_mm": d / 3, "hd95_voxels_mm": 0.95 * d,
    }
    assert_metrics(segmentation_metrics(truth, prediction, SPACING), expected)


def test_diagonal_distance_uses_anisotropic_spacing() -> None:
    """A one-voxel step along every axis is sqrt(0.5^2 + 0.6^2 + 0.9^2) mm."""
    truth = single(SHAPE, (3, 3, 3))
    prediction = single(SHAPE, (4, 4, 4))
    d = math.sqrt(0.5**2 + 0.6**2 + 0.9**2)
    expected = {"dsc": 0.0, "sensitivity": 0.0, "precision": 0.0, "avd": 0.0, **distances(d)}
    assert_metrics(segmentation_metrics(truth, prediction, SPACING), expected)


def test_prediction_equal_to_truth_is_perfect() -> None:
    """Identical sets: DSC, sensitivity and precision 1, distances and AVD 0."""
    truth = np.random.default_rng(7).random(SHAPE) < 0.1
    expected = {"dsc": 1.0, "sensitivity": 1.0, "precision": 1.0, "avd": 0.0, **distances(0.0)}
    assert_metrics(segmentation_metrics(truth, truth.copy(), SPACING), expected)


def test_surface_hd95_sees_a_hole_the_voxel_sets_hide() -> None:
    """A solid 9^3 truth and the same cube with a 3^3 hole inside: over voxel sets the hole is 27 of 729 truth
    voxels, under 5 %, so HD95 is 0; the hole's walls are 54 of the prediction's 440 surface voxels, each 2 mm
    from the truth's surface, so the surface HD95 is 2 mm."""
    truth = np.zeros((11, 11, 11), bool)
    truth[1:10, 1:10, 1:10] = True
    prediction = truth.copy()
    prediction[4:7, 4:7, 4:7] = False
    result = segmentation_metrics(truth, prediction, (1.0, 1.0, 1.0))
    assert_metrics(result, brute_force(truth, prediction, (1.0, 1.0, 1.0)))
    assert surface(truth).sum() == 9**3 - 7**3 and surface(prediction).sum() == 9**3 - 7**3 + 6 * 9
    assert result["hd95_voxels_mm"] == 0.0 and result["hd95_mm"] == 2.0
    assert result["assd_mm"] == pytest.approx(2 * 54 / (2 * 386 + 54))


BOTH_EMPTY = {"dsc": 1.0, "sensitivity": 1.0, "precision": 1.0, "avd": 0.0, **distances(0.0)}
TRUTH_EMPTY = {"dsc": 0.0, "sensitivity": NAN, "precision": 0.0, "avd": INF, **distances(INF)}
PREDICTION_EMPTY = {"dsc": 0.0, "sensitivity": 0.0, "precision": NAN, "avd": 1.0, **distances(INF)}


@pytest.mark.parametrize(
    ("truth_voxels", "prediction_voxels", "expected"),
    [
        ((), (), BOTH_EMPTY),
        ((), ((1, 1, 1), (5, 5, 5)), TRUTH_EMPTY),
        (((1, 1, 1), (5, 5, 5)), (), PREDICTION_EMPTY),
    ],
    ids=["both-empty", "truth-empty", "prediction-empty"],
)
def test_empty_cases_follow_the_docstring_table(truth_voxels: tuple, prediction_voxels: tuple, expected: dict) -> None:
    """Each empty case gives the values of the module's table, never an exception."""
    truth = single(SHAPE, *truth_voxels)
    prediction = single(SHAPE, *prediction_voxels)
    assert_metrics(segmentation_metrics(truth, prediction, SPACING), expected)


def test_mask_that_removes_all_truth_gives_the_truth_empty_case() -> None:
    """Emptiness is judged after masking: truth wholly outside the mask is an empty truth."""
    truth = single(SHAPE, (0, 0, 0))
    prediction = single(SHAPE, (5, 5, 5))
    mask = single(SHAPE, (5, 5, 5), (6, 6, 6))
    assert_metrics(segmentation_metrics(truth, prediction, SPACING, mask), TRUTH_EMPTY)


def test_predicted_blob_outside_the_mask_changes_nothing() -> None:
    """A false-positive blob outside the brain mask leaves every metric as without it."""
    rng = np.random.default_rng(3)
    mask = np.zeros(SHAPE, bool)
    mask[:6] = True
    truth = (rng.random(SHAPE) < 0.2) & mask
    prediction = (rng.random(SHAPE) < 0.2) & mask
    with_blob = prediction.copy()
    with_blob[7:, 2:6, 2:6] = True
    reference = segmentation_metrics(truth, prediction, SPACING, mask)
    assert_metrics(segmentation_metrics(truth, with_blob, SPACING, mask), reference)
    assert segmentation_metrics(truth, with_blob, SPACING)["precision"] < reference["precision"]


def test_distances_are_measured_in_the_full_grid() -> None:
    """Masking removes voxels but does not move them: the remaining distances are full-grid distances."""
    truth = single(SHAPE, (0, 0, 0), (8, 0, 0))
    prediction = single(SHAPE, (0, 0, 0), (8, 7, 0))
    mask = np.ones(SHAPE, bool)
    mask[4, :, :] = False
    mask[8, 0, 0] = False
    result = segmentation_metrics(truth, prediction, SPACING, mask)
    assert result["bahd_mm"] == pytest.approx(math.hypot(8 * 0.5, 7 * 0.6) / 2)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"prediction": np.zeros((3, 3, 3))}, "one shape"),
        ({"truth": np.zeros((9, 8)), "prediction": np.zeros((9, 8))}, "3D"),
        ({"spacing": (0.5, 0.0, 0.9)}, "spacing"),
        ({"mask": np.zeros(SHAPE)}, "mask is empty"),
        ({"mask": np.ones((3, 3, 3))}, "mask shape"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict, fragment: str) -> None:
    """Mismatched shapes, non-3D volumes, bad spacing and an empty mask raise ValueError saying which."""
    arguments = {"truth": single(SHAPE, (1, 1, 1)), "prediction": single(SHAPE, (1, 1, 1)), "spacing": SPACING}
    with pytest.raises(ValueError, match=fragment):
        segmentation_metrics(**{**arguments, **kwargs})


# Axes permuted and flipped; sizes exact in the float32 NIfTI header, so the array axes' spacing is:
FILE_SPACING = (0.5, 0.75, 1.25)
AFFINE = np.array([[0.0, 0.75, 0.0, -10.0], [-0.5, 0.0, 0.0, 20.0], [0.0, 0.0, 1.25, 5.0], [0.0, 0.0, 0.0, 1.0]])


def write(data: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    """Save an array as NIfTI and return its path."""
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.fixture
def volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random truth, prediction and mask as uint8 {0,1}."""
    rng = np.random.default_rng(11)
    truth = (rng.random(SHAPE) < 0.2).astype(np.uint8)
    prediction = (rng.random(SHAPE) < 0.2).astype(np.uint8)
    mask = (rng.random(SHAPE) < 0.8).astype(np.uint8)
    return truth, prediction, mask


def test_score_files_round_trip(tmp_path: Path, volumes: tuple) -> None:
    """Scores from NIfTI files equal segmentation_metrics on the arrays, with the spacing of the affine."""
    truth, prediction, mask = volumes
    files = [write(a, tmp_path / f"{n}.nii.gz") for a, n in zip(volumes, ("truth", "prediction", "mask"))]
    assert_metrics(score_files(*files), segmentation_metrics(truth, prediction, FILE_SPACING, mask))
    assert_metrics(score_files(*files[:2]), segmentation_metrics(truth, prediction, FILE_SPACING))


def test_score_files_accepts_0_255_and_empty_prediction(tmp_path: Path, volumes: tuple) -> None:
    """Labels stored as {0,255} are binary; an all-zero prediction is a valid (empty) prediction."""
    truth, prediction, _ = volumes
    truth_file = write((truth * 255).astype(np.uint8), tmp_path / "truth.nii.gz")
    prediction_file = write((prediction * 255).astype(np.float32), tmp_path / "prediction.nii.gz")
    assert_metrics(score_files(truth_file, prediction_file), segmentation_metrics(truth, prediction, FILE_SPACING))
    empty_file = write(np.zeros(SHAPE, np.uint8), tmp_path / "empty.nii.gz")
    assert_metrics(score_files(truth_file, empty_file), PREDICTION_EMPTY)


@pytest.mark.parametrize(
    ("which", "data", "affine", "fragment"),
    [
        ("prediction", np.zeros((9, 8, 6), np.uint8), AFFINE, "shape"),
        ("prediction", None, np.diag([0.5, 0.75, 1.25, 1.0]), "affine differs"),
        ("mask", np.ones((9, 8, 6), np.uint8), AFFINE, "shape"),
        ("mask", None, AFFINE + np.pad(np.eye(3) * 0.1, ((0, 1), (0, 1))), "affine differs"),
        ("prediction", np.full(SHAPE, 2, np.uint8), AFFINE, "not binary"),
        ("mask", np.zeros(SHAPE, np.uint8), AFFINE, "empty"),
    ],
)
def test_score_files_errors_name_the_file(
    tmp_path: Path, volumes: tuple, which: str, data: np.ndarray | None, affine: np.ndarray, fragment: str
) -> None:
    """A file off the truth's grid, non-binary or an empty mask raises VolumeError naming that file."""
    paths = {n: write(a, tmp_path / f"{n}.nii.gz") for a, n in zip(volumes, ("truth", "prediction", "mask"))}
    original = volumes[("truth", "prediction", "mask").index(which)]
    paths[which] = write(original if data is None else data, tmp_path / f"bad_{which}.nii.gz", affine)
    with pytest.raises(VolumeError) as err:
        score_files(paths["truth"], paths["prediction"], paths["mask"])
    assert str(err.value).startswith(str(paths[which])), str(err.value)
    assert fragment in str(err.value), str(err.value)


def test_score_files_missing_file(tmp_path: Path, volumes: tuple) -> None:
    """A missing prediction file raises VolumeError naming it."""
    truth_file = write(volumes[0], tmp_path / "truth.nii.gz")
    with pytest.raises(VolumeError, match="missing.nii.gz"):
        score_files(truth_file, tmp_path / "missing.nii.gz")
