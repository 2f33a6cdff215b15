"""Privacy audit: nearest records against brute force, the membership attack on leaky and safe generators, files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dpmra.evaluation import memorisation as audit
from dpmra.evaluation.memorisation import (
    AUDIT_COLUMNS,
    attack_metrics,
    audit_table,
    distance_to_closest_record,
    membership_attack,
    nearest,
    run_audit,
    write_audit_table,
)


def patches(n: int, seed: int, size: int = 8) -> np.ndarray:
    """Independent noise patches on 0..255."""
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size)).astype(np.float32)


def brute_force(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """All pairwise Euclidean distances, directly."""
    diff = queries.reshape(len(queries), 1, -1).astype(np.float64) - reference.reshape(1, len(reference), -1)
    return np.sqrt((diff**2).sum(axis=2))


def test_nearest_matches_brute_force_across_blocks(monkeypatch):
    monkeypatch.setattr(audit, "BLOCK", 16)  # several query and reference blocks
    queries, reference = patches(50, 0), patches(70, 1)
    reference[33] = queries[4]  # an exact copy
    index, distance = nearest(queries, reference)
    full = brute_force(queries, reference)
    np.testing.assert_array_equal(index, full.argmin(axis=1))
    np.testing.assert_allclose(distance, full.min(axis=1), rtol=1e-12, atol=1e-9)
    assert index[4] == 33 and distance[4] == 0.0


def test_dcr_matches_brute_force():
    synthetic, train, holdout = patches(30, 0), patches(50, 1), patches(40, 2)
    synthetic[:3] = train[[5, 17, 44]]  # copies of training patches
    result = distance_to_closest_record(synthetic, train, holdout, seed=3)
    to_train, to_holdout = brute_force(synthetic, train), brute_force(synthetic, holdout)
    threshold = np.percentile(brute_force(holdout, train).min(axis=1), 5)
    table = result.per_patch
    np.testing.assert_allclose(table["dcr_train"], to_train.min(axis=1), rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(table["train_index"], to_train.argmin(axis=1))
    np.testing.assert_allclose(table["dcr_holdout"], to_holdout.min(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(table["holdout_index"], to_holdout.argmin(axis=1))
    assert result.summary["near_copy_threshold"] == pytest.approx(threshold, rel=1e-12)
    near = to_train.min(axis=1) < threshold
    assert result.summary["near_copy_share"] == pytest.approx(near.mean())
    copies = result.near_copies
    assert list(copies.columns) == ["synthetic_index", "train_index", "distance"]
    assert set(copies["synthetic_index"]) == set(np.flatnonzero(near))
    for i, j in zip([0, 1, 2], [5, 17, 44]):  # every copy is found, at distance 0, whatever the draw below
        assert table.loc[i, "dcr_train"] == 0 and table.loc[i, "train_index"] == j and table.loc[i, "near_copy"]
    # the medians compare equal-size reference sets: 40 of the 50 training patches
    train_ref = np.sort(np.random.default_rng(3).choice(50, 40, replace=False))
    assert result.summary["n_reference"] == 40
    assert result.summary["dcr_train_median"] == pytest.approx(np.median(brute_force(synthetic, train[train_ref]).min(axis=1)))
    assert result.summary["dcr_holdout_median"] == pytest.approx(np.median(to_holdout.min(axis=1)))


def test_attack_metrics_agree_with_roc_auc_score():
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 0], 100)
    scores = rng.normal(size=200) + 0.7 * labels
    value, tpr = attack_metrics(labels, scores)
    assert value == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    negatives = np.sort(scores[labels == 0])[::-1]
    assert tpr == pytest.approx(np.mean(scores[labels == 1] > negatives[1]))  # at most 1 of 100 false positives


def test_attack_finds_a_generator_that_returns_its_training_patches():
    members, non_members = patches(200, 1), patches(300, 2)
    result = membership_attack(members, members, non_members, n_bootstrap=200, seed=0)
    assert result["mia_auc"] > 0.99 and result["mia_tpr_at_1fpr"] > 0.99
    assert result["n_members"] == result["n_non_members"] == 200


def test_attack_is_at_chance_on_a_generator_that_returns_held_out_patches():
    members, non_members, fresh = patches(200, 1), patches(200, 2), patches(200, 3)
    for synthetic in (non_members[:100], fresh):  # held-out patches (half of them), or independent draws
        result = membership_attack(synthetic, members, non_members[100:], n_bootstrap=200, seed=0)
        assert abs(result["mia_auc"] - 0.5) < 0.1, result
        assert result["mia_auc_low"] <= result["mia_auc"] <= result["mia_auc_high"]
        assert result["mia_auc_low"] < 0.5 < result["mia_auc_high"]
        assert result["mia_tpr_at_1fpr_low"] <= result["mia_tpr_at_1fpr"] <= result["mia_tpr_at_1fpr_high"]


def test_run_audit_and_table_end_to_end(tmp_path):
    paths = {}
    for i, patient in enumerate(["t1", "t2", "h1"]):
        paths[patient] = tmp_path / f"{patient}.npz"
        image = patches(30, i) * 0.3 + 10  # real units: the stage rescales each patch to 0..255
        np.savez(paths[patient], image=image, label=np.zeros(image.shape, np.uint8))
    folder = tmp_path / "synth" / "sigma~inf" / "seed~0"
    folder.mkdir(parents=True)
    t2 = np.load(paths["t2"])["image"]
    released = np.concatenate([t2[[3, 7]], patches(18, 9) * 0.3 + 10])
    np.savez_compressed(folder / "dataset.npz", image=released, label=np.zeros(released.shape, np.uint8))
    card = {"sigma": "inf", "seed": 0, "epsilon": {"rdp": None, "prv": None}}
    (folder / "privacy_card.json").write_text(json.dumps(card))

    out = tmp_path / "audit" / "sigma~inf" / "seed~0"
    summary = run_audit(folder / "dataset.npz", [paths["t1"], paths["t2"]], [paths["h1"]], out, 0, 100)
    written = json.loads((out / "audit.json").read_text())
    assert written == pytest.approx(summary)
    for key in ["dcr_train_median", "dcr_holdout_median", "near_copy_share", "mia_auc", "mia_auc_low",
                "mia_auc_high", "mia_tpr_at_1fpr", "mia_tpr_at_1fpr_low", "mia_tpr_at_1fpr_high", "n_members"]:
        assert key in written
    assert written["n_synthetic"] == 20 and written["n_reference"] == 30 and written["n_members"] == 30
    dcr = pd.read_csv(out / "dcr.tsv", sep="\t")
    assert list(dcr.columns) == ["synthetic_index", "train_patient", "train_patch", "dcr_train", "holdout_patient",
                                 "holdout_patch", "dcr_holdout", "near_copy"]
    assert len(dcr) == 20 and set(dcr["holdout_patient"]) == {"h1"}
    copies = pd.read_csv(out / "near_copies.tsv", sep="\t")
    assert list(copies.columns) == ["synthetic_index", "train_patient", "train_patch", "distance"]
    found = {(row.train_patient, row.train_patch) for row in copies.itertuples() if row.distance == 0}
    assert found <= {("t2", 3), ("t2", 7)}  # exact copies point back to their patient and patch row
    assert written["near_copy_share"] == pytest.approx(len(copies) / 20)

    table_path = tmp_path / "tables" / "audit.tsv"
    write_audit_table([out / "audit.json"], [folder / "privacy_card.json"], table_path)
    table = pd.read_csv(table_path, sep="\t", keep_default_na=False)
    assert list(table.columns) == AUDIT_COLUMNS
    assert table.loc[0, "source"] == "sigma~inf/seed~0" and float(table.loc[0, "epsilon"]) == np.inf
    assert float(table.loc[0, "mia_auc"]) == pytest.approx(summary["mia_auc"], rel=1e-5)
    (tmp_path / "bad.json").write_text(json.dumps({"sigma": 1.0}))
    with pytest.raises(ValueError, match="bad.json"):
        audit_table([out / "audit.json"], [tmp_path / "bad.json"])
