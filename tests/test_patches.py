"""Patch extraction: counts, distinct centres, vessel centring, bounds, content and the training set."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import toy_subject

from dpmra.data.patches import (
    KIND_RANDOM,
    KIND_VESSEL,
    extract_patches,
    load_patches,
    patient_rng,
    save_patches,
    scale_to_unit_range,
    training_set,
)

P = 16


@pytest.fixture
def patches():
    image, label, mask = toy_subject()
    return extract_patches(image, label, mask, n_patches=61, size=P, rng=patient_rng(0, "P1")), (image, label, mask)


def test_counts_and_kinds(patches):
    p, _ = patches
    assert p.image.shape == (61, P, P) and p.label.shape == (61, P, P) and p.centres.shape == (61, 3)
    assert p.image.dtype == np.float32 and p.label.dtype == np.uint8
    assert (p.kind == KIND_VESSEL).sum() == 30 and (p.kind == KIND_RANDOM).sum() == 31


def test_centres_distinct_inside_and_on_target(patches):
    p, (_, label, mask) = patches
    assert len({tuple(c) for c in p.centres}) == len(p.centres)
    x, y, z = p.centres.T
    assert (x - P // 2 >= 0).all() and (x - P // 2 + P <= label.shape[0]).all()
    assert (y - P // 2 >= 0).all() and (y - P // 2 + P <= label.shape[1]).all()
    assert (label[x, y, z][p.kind == KIND_VESSEL] == 1).all()
    assert (mask[x, y, z] == 1).all()
    assert (p.label[p.kind == KIND_VESSEL, P // 2, P // 2] == 1).all()


def test_content_equals_direct_slicing(patches):
    p, (image, label, _) = patches
    for i, (x, y, z) in enumerate(p.centres):
        x0, y0 = x - P // 2, y - P // 2
        np.testing.assert_array_equal(p.image[i], image[x0 : x0 + P, y0 : y0 + P, z])
        np.testing.assert_array_equal(p.label[i], label[x0 : x0 + P, y0 : y0 + P, z])


def test_deterministic_per_seed_and_patient():
    image, label, mask = toy_subject()
    a = extract_patches(image, label, mask, 20, P, patient_rng(0, "P1"))
    b = extract_patches(image, label, mask, 20, P, patient_rng(0, "P1"))
    c = extract_patches(image, label, mask, 20, P, patient_rng(0, "P2"))
    np.testing.assert_array_equal(a.centres, b.centres)
    assert not np.array_equal(a.centres, c.centres)


def test_every_fitting_vessel_voxel_can_be_used_once():
    image, label, mask = toy_subject()
    fitting_vessels = int(label[P // 2 : 40 - P // 2 + 1, P // 2 : 36 - P // 2 + 1].sum())
    p = extract_patches(image, label, mask, 2 * fitting_vessels, P, patient_rng(0, "P1"))
    assert len({tuple(c) for c in p.centres[p.kind == KIND_VESSEL]}) == fitting_vessels
    with pytest.raises(ValueError, match="vessel centres fit"):
        extract_patches(image, label, mask, 2 * fitting_vessels + 2, P, patient_rng(0, "P1"))


def test_save_load_round_trip(patches, tmp_path):
    p, _ = patches
    save_patches(p, tmp_path / "p.npz")
    q = load_patches(tmp_path / "p.npz")
    for key in ("image", "label", "centres", "kind"):
        np.testing.assert_array_equal(getattr(p, key), getattr(q, key))


def test_scale_to_unit_range():
    images = np.stack([np.arange(16, dtype=np.float32).reshape(4, 4), np.full((4, 4), 7.0, np.float32)])
    scaled = scale_to_unit_range(images)
    assert scaled[0].min() == -1 and scaled[0].max() == 1
    assert scaled[0, 0, 1] == pytest.approx(-1 + 2 / 15)
    np.testing.assert_array_equal(scaled[1], 0)


def test_training_set(patches, tmp_path):
    p, _ = patches
    save_patches(p, tmp_path / "a.npz")
    save_patches(p, tmp_path / "b.npz")
    x = training_set([tmp_path / "a.npz", tmp_path / "b.npz"], tmp_path / "train.npz", tmp_path / "gallery.png")
    assert x.shape == (122, 2, P, P) and x.dtype == np.float32
    np.testing.assert_array_equal(np.load(tmp_path / "train.npz")["x"], x)
    np.testing.assert_array_equal(np.load(tmp_path / "train.npz")["patient"], [0] * 61 + [1] * 61)
    assert x[:, 0].min() >= -1 and x[:, 0].max() <= 1
    assert set(np.unique(x[:, 1]).tolist()) == {-1.0, 1.0}
    np.testing.assert_array_equal(x[:61, 1] == 1, p.label == 1)
    assert (tmp_path / "gallery.png").stat().st_size > 1000


def test_vessels_outside_the_mask_still_centre_vessel_patches():
    """A derived mask need not cover the label: vessel centres follow the label, random ones stay in the mask."""
    image, label, mask = toy_subject()
    mask[:, 15:, :] = 0  # the vessel along x (y = 17..18) now lies outside the mask
    outside = label.astype(bool) & (mask == 0)
    assert outside.any()
    p = extract_patches(image, label, mask, n_patches=400, size=P, rng=patient_rng(0, "P1"))
    x, y, z = p.centres.T
    vessel = p.kind == KIND_VESSEL
    assert (label[x, y, z][vessel] == 1).all() and outside[x, y, z][vessel].any()
    assert (mask[x, y, z][~vessel] == 1).all()
    assert len({tuple(c) for c in p.centres}) == len(p.centres)
