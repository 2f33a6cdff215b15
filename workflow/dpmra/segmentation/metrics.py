"""Per-patient vessel segmentation metrics: DSC, bAHD, surface HD95, sensitivity, precision, AVD, ASSD.

Definitions, with T the ground-truth voxel set, P the predicted voxel set, dT and dP their surfaces
(the voxels of the set with a face neighbour outside it: the set minus its binary erosion by the
6-neighbourhood, as MONAI's `get_mask_edges`), and d(x, S) the Euclidean distance in mm between the
centre of voxel x and the nearest voxel centre of S (anisotropic voxel spacing taken into account):

- dsc             2 |T & P| / (|T| + |P|)  (Dice similarity coefficient)
- bahd_mm         (sum_{t in T} d(t, P) + sum_{p in P} d(p, T)) / (2 |T|): the balanced average
                  Hausdorff distance of Aydin et al. 2021, as the bAVD of the EvaluateSegmentation
                  tool that paper used (both directed sums are normalised by the truth size)
- hd95_mm         max(Q95{d(p, dT) : p in dP}, Q95{d(t, dP) : t in dT}), the 95th percentile
                  Hausdorff distance between the surfaces, as MONAI's
                  `compute_hausdorff_distance(percentile=95)`; Q95 is linear interpolation between
                  order statistics (numpy.percentile's default, torch.quantile's)
- sensitivity     |T & P| / |T|             (TP / (TP + FN))
- precision       |T & P| / |P|             (TP / (TP + FP))
- avd             | |P| - |T| | / |T|       (absolute volume difference as a fraction of the truth
                  volume; voxel counts suffice since every voxel has the same volume)
- assd_mm         mean of {d(p, dT) : p in dP} and {d(t, dP) : t in dT} pooled, the average
                  symmetric surface distance (MONAI's `compute_average_surface_distance(symmetric=True)`)
- hd95_voxels_mm  max(Q95{d(t, P) : t in T}, Q95{d(p, T) : p in P}) over the whole voxel sets, this
                  project's HD95 before surfaces were used (kept to compare with earlier runs)

With a brain mask, voxels outside it are set to background in both T and P before anything is
computed (surfaces included); distances are still measured between positions in the full voxel grid.

Empty sets. Both empty is a perfect segmentation: every metric takes its perfect-agreement value.
Otherwise a ratio with a zero denominator is NaN when its numerator is also zero (undefined) and
inf when the numerator is positive, and the distance to an empty set is inf:

    case                      dsc  distances (bahd, hd95, assd, hd95_voxels)  sensitivity  precision  avd
    T empty,     P empty      1.0  0.0                                        1.0          1.0        0.0
    T empty,     P non-empty  0.0  inf                                        NaN          0.0        inf
    T non-empty, P empty      0.0  inf                                        0.0          NaN        1.0
    T non-empty, P non-empty  finite values as defined above

An empty brain mask is rejected (it would silently turn every case into a perfect one).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from dpmra.data.volumes import binary_values, check_same_grid, load_nifti

METRICS = ("dsc", "bahd_mm", "hd95_mm", "sensitivity", "precision", "avd", "assd_mm", "hd95_voxels_mm")
"""Metric names in output order: new ones are appended, so existing columns keep their positions."""
DISTANCES = ("bahd_mm", "hd95_mm", "assd_mm", "hd95_voxels_mm")
HD_PERCENTILE = 95.0


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with x / 0 = NaN for x = 0 and inf for x > 0 (see the module table)."""
    if denominator == 0:
        return float("nan") if numerator == 0 else float("inf")
    return float(numerator / denominator)


# Below this share of set voxels in the box, a k-d tree over voxel coordinates beats the
# distance transforms (which cost the whole box); measured on a 312 x 384 x 127 vessel volume
# (benchmarks/bench_predict.py): 0.7 s against 2.9 s at a 3 % share, while a dense untrained
# prediction (25 % of the box) is about 6x faster with the transforms.
KDTREE_MAX_SHARE = 1 / 8


def _distances_to(target: np.ndarray, query: np.ndarray, sampling: tuple[float, float, float]) -> np.ndarray:
    """Distance in mm from each `query` voxel centre (in np.nonzero order) to the nearest `target` voxel centre."""
    if target.sum() + query.sum() <= KDTREE_MAX_SHARE * target.size:
        return _distances_kdtree(target, query, sampling)
    return _distances_edt(target, query, sampling)


def _distances_kdtree(target: np.ndarray, query: np.ndarray, sampling: tuple[float, float, float]) -> np.ndarray:
    """Nearest-neighbour distances by a k-d tree over the target's voxel centres in mm (exact)."""
    scale = np.asarray(sampling)
    tree = cKDTree(np.argwhere(target) * scale)
    distances, _ = tree.query(np.argwhere(query) * scale, workers=-1)
    return distances


def _distances_edt(target: np.ndarray, query: np.ndarray, sampling: tuple[float, float, float]) -> np.ndarray:
    """Nearest-neighbour distances from the exact Euclidean feature transform of the target's complement."""
    # The feature transform gives every voxel the index of its nearest zero voxel in `sampling`
    # units; the zeros are exactly the `target` voxels, so that is the nearest target voxel centre.
    # Only the feature transform is asked for and distances are taken at the query voxels alone,
    # cheaper than a full-grid distance map.
    nearest = ndimage.distance_transform_edt(~target, sampling=sampling, return_distances=False, return_indices=True)
    query_index = np.nonzero(query)
    offsets = np.stack([nearest[axis][query_index] - query_index[axis] for axis in range(3)], axis=-1)
    return np.sqrt(((offsets * np.asarray(sampling)) ** 2).sum(axis=-1))


def _crop(
    truth: np.ndarray, prediction: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Both sets cut to the bounding box of T | P, axes reordered shortest first, and the reordered spacing.

    Every nearest neighbour lies in T or P, hence inside the box, and the volume outside the box is
    background, so distances and surfaces in the box equal the full-grid ones. Distances do not
    depend on axis order; scipy's transform runs about a quarter faster with the longest axis
    contiguous, as on a 192 x 192 x 64 slab.
    """
    union = truth | prediction
    box = tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(union))
    order = tuple(int(axis) for axis in np.argsort(union[box].shape, kind="stable"))
    truth_box = np.ascontiguousarray(truth[box].transpose(order))
    prediction_box = np.ascontiguousarray(prediction[box].transpose(order))
    return truth_box, prediction_box, tuple(spacing[axis] for axis in order)


def _surface(volume: np.ndarray) -> np.ndarray:
    """Voxels of a set with a face neighbour outside it (outside the array counts as outside), as MONAI's edges."""
    return volume & ~ndimage.binary_erosion(volume, border_value=0)


def _percentile_hausdorff(to_prediction: np.ndarray, to_truth: np.ndarray) -> float:
    """The larger of the two directed HD_PERCENTILE-th percentiles (linear interpolation, numpy's default)."""
    return float(max(np.percentile(to_prediction, HD_PERCENTILE), np.percentile(to_truth, HD_PERCENTILE)))


def _directed(
    source: np.ndarray, target: np.ndarray, sampling: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """d(x, target) for every voxel x of `source`, and d(x, target's surface) for every surface voxel x of it.

    One nearest-surface search serves both: a nearest target voxel to a point outside the target lies on its
    surface (from an interior voxel, one step towards the point is a closer target voxel, whatever the
    spacing), so d(x, target) is 0 inside the target and d(x, target's surface) elsewhere.
    """
    to_surface = _distances_to(_surface(target), source, sampling)
    return np.where(target[source], 0.0, to_surface), to_surface[_surface(source)[source]]


def _distance_metrics(
    truth: np.ndarray, prediction: np.ndarray, spacing: tuple[float, float, float]
) -> dict[str, float]:
    """bahd_mm, hd95_mm, assd_mm and hd95_voxels_mm of two non-empty sets."""
    truth_box, prediction_box, sampling = _crop(truth, prediction, spacing)
    to_prediction, surface_to_prediction = _directed(truth_box, prediction_box, sampling)
    to_truth, surface_to_truth = _directed(prediction_box, truth_box, sampling)
    surface_sum = surface_to_prediction.sum() + surface_to_truth.sum()
    return {
        "bahd_mm": float((to_prediction.sum() + to_truth.sum()) / (2 * truth_box.sum())),
        "hd95_mm": _percentile_hausdorff(surface_to_prediction, surface_to_truth),
        "assd_mm": float(surface_sum / (surface_to_prediction.size + surface_to_truth.size)),
        "hd95_voxels_mm": _percentile_hausdorff(to_prediction, to_truth),
    }


def _check_spacing(spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    """Voxel spacing as three positive finite floats (mm), or ValueError."""
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive finite sizes in mm, got {spacing}")
    return values


def segmentation_metrics(
    truth: np.ndarray,
    prediction: np.ndarray,
    spacing: tuple[float, float, float],
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """The METRICS of a 3D prediction against the truth (non-zero = vessel), inside `mask` if given."""
    truth = np.asarray(truth) != 0
    prediction = np.asarray(prediction) != 0
    spacing = _check_spacing(spacing)
    if truth.ndim != 3 or prediction.shape != truth.shape:
        raise ValueError(f"truth and prediction must be 3D of one shape, got {truth.shape} and {prediction.shape}")
    if mask is not None:
        mask = np.asarray(mask) != 0
        if mask.shape != truth.shape:
            raise ValueError(f"mask shape {mask.shape} differs from truth shape {truth.shape}")
        if not mask.any():
            raise ValueError("brain mask is empty")
        truth = truth & mask
        prediction = prediction & mask

    n_truth = int(truth.sum())
    n_prediction = int(prediction.sum())
    n_both = int((truth & prediction).sum())
    if n_truth == 0 and n_prediction == 0:
        values = {"dsc": 1.0, "sensitivity": 1.0, "precision": 1.0, "avd": 0.0, **dict.fromkeys(DISTANCES, 0.0)}
        return {name: values[name] for name in METRICS}
    if n_truth == 0 or n_prediction == 0:
        distances = dict.fromkeys(DISTANCES, float("inf"))
    else:
        distances = _distance_metrics(truth, prediction, spacing)
    values = {
        "dsc": _ratio(2 * n_both, n_truth + n_prediction),
        "sensitivity": _ratio(n_both, n_truth),
        "precision": _ratio(n_both, n_prediction),
        "avd": _ratio(abs(n_prediction - n_truth), n_truth),
        **distances,
    }
    return {name: values[name] for name in METRICS}


def _binary_data(img: nib.Nifti1Image, path: Path, what: str, allow_empty: bool) -> np.ndarray:
    """The {0,1} data of a volume stored as {0,1} or {0,255}; VolumeError naming the file otherwise."""
    data = np.asarray(img.dataobj)
    if allow_empty and not data.any():
        return np.zeros(data.shape, np.uint8)
    return binary_values(data, path, what)


def score_files(truth: Path, prediction: Path, mask: Path | None = None) -> dict[str, float]:
    """The METRICS of a predicted vessel NIfTI against the truth NIfTI, inside the brain-mask NIfTI if given.

    All files must share the truth's shape and affine; the spacing comes from the truth's affine.
    Truth and prediction may be empty (see the module table); the mask may not.
    """
    paths = {"truth": Path(truth), "prediction": Path(prediction)}
    if mask is not None:
        paths["mask"] = Path(mask)
    images = {key: load_nifti(path) for key, path in paths.items()}
    for key in list(paths)[1:]:
        check_same_grid(images["truth"], paths["truth"], images[key], paths[key])
    truth_data = _binary_data(images["truth"], paths["truth"], "vessel label", allow_empty=True)
    prediction_data = _binary_data(images["prediction"], paths["prediction"], "prediction", allow_empty=True)
    mask_data = None
    if mask is not None:
        mask_data = _binary_data(images["mask"], paths["mask"], "brain mask", allow_empty=False)
    spacing = tuple(float(s) for s in nib.affines.voxel_sizes(images["truth"].affine))
    return segmentation_metrics(truth_data, prediction_data, spacing, mask_data)
