"""Memorisation check (beyond the paper): distance to closest record and a membership-inference attack.

Members are the training patches the GAN saw; non-members (held out) are patches of patients it never saw
(val/test). Distances are Euclidean over the image pixels of a patch, after per-patch min-max scaling to 0..255
(`dpmra.data.intensity.load_images`: the release's rule for generated images, applied to real patches too, so both
sides share one scale); the label is left out, because it is derived from the image's vessels and its 0/255
pixels would swamp the intensity differences.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import auc, roc_curve
from tqdm import tqdm

from dpmra.data.intensity import load_image_files
from dpmra.release.cards import card_columns
from dpmra.shared.atomic import write_json, write_tsv

log = logging.getLogger(__name__)

AUDIT_COLUMNS = [
    "source", "sigma", "seed", "epsilon", "dcr_train_median", "dcr_holdout_median", "near_copy_share", "mia_auc",
    "mia_tpr_at_1fpr",
]
NEAR_COPY_PERCENTILE = 5.0  # of held-out-to-training distances
ATTACK_FPR = 0.01
DISTANCE = "Euclidean over image pixels (label excluded), each patch min-max scaled to 0..255"
BLOCK = 2048  # images per block of queries or references: a 32 MB float64 distance block


def rows(images: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Images start:stop as float64 rows, shifted to centre 0..255 on 0 (smaller norms, less rounding)."""
    part = np.asarray(images[start:stop], dtype=np.float64)
    return part.reshape(len(part), -1) - 127.5


def nearest(queries: np.ndarray, reference: np.ndarray, desc: str = "nearest") -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the index of and Euclidean distance to its nearest reference image.

    Exhaustive search with ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b, one float64 matrix product per block of queries
    and references, so memory stays bounded at paper scale (a k-d tree does not help in thousands of pixel
    dimensions); the winner's distance is then computed directly. Ties (within rounding) go to the first index.
    """
    if queries.shape[1:] != reference.shape[1:]:
        raise ValueError(f"patch sizes differ: {queries.shape[1:]} and {reference.shape[1:]}")
    ref_sq = np.concatenate(
        [np.einsum("ij,ij->i", b, b) for b in (rows(reference, r, r + BLOCK) for r in range(0, len(reference), BLOCK))]
    )
    index = np.zeros(len(queries), dtype=np.int64)
    dist_sq = np.full(len(queries), np.inf)
    for q in tqdm(range(0, len(queries), BLOCK), desc=desc, disable=len(queries) <= BLOCK, leave=False):
        a = rows(queries, q, q + BLOCK)
        a_sq = np.einsum("ij,ij->i", a, a)
        best, best_sq = index[q : q + BLOCK], dist_sq[q : q + BLOCK]  # views: updated in place
        for r in range(0, len(reference), BLOCK):
            d2 = a_sq[:, None] + ref_sq[None, r : r + BLOCK] - 2.0 * (a @ rows(reference, r, r + BLOCK).T)
            arg = d2.argmin(axis=1)
            value = d2[np.arange(len(a)), arg]
            better = value < best_sq
            best[better], best_sq[better] = r + arg[better], value[better]
        # the expansion loses digits when a and b nearly coincide; the chosen pair's distance is recomputed directly
        # so an exact copy reports 0
        diff = a - (np.asarray(reference[best], dtype=np.float64).reshape(len(a), -1) - 127.5)
        best_sq[:] = np.einsum("ij,ij->i", diff, diff)
    return index, np.sqrt(dist_sq)


def equal_draw(n_a: int, n_b: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of min(n_a, n_b) items drawn without replacement from each of two sets."""
    m = min(n_a, n_b)
    return np.sort(rng.choice(n_a, m, replace=False)), np.sort(rng.choice(n_b, m, replace=False))


@dataclass
class DcrResult:
    """Distance to closest record: one row per synthetic patch, the near copies, and summary figures."""

    per_patch: pd.DataFrame  # synthetic_index, train_index, dcr_train, holdout_index, dcr_holdout, near_copy
    near_copies: pd.DataFrame  # synthetic_index, train_index, distance (nearest first)
    summary: dict


def distance_to_closest_record(
    synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray, seed: int = 0
) -> DcrResult:
    """Each synthetic patch's nearest training and nearest held-out patch, and the near copies among them.

    Per patch and for near copies, the references are the full training and held-out sets. A near copy is a
    synthetic patch closer to a training patch than the 5th percentile of the distances from held-out patches to
    their nearest training patch (the same reference set): closer than real patients of other people usually come.
    Nearest-neighbour distances shrink as the reference set grows, so the two medians compared in the summary
    are taken against references drawn to the same size (the smaller set's, seeded, without replacement).
    """
    if min(len(synthetic), len(train), len(holdout)) < 1:
        raise ValueError(f"DCR needs images in every set, got {len(synthetic)}, {len(train)}, {len(holdout)}")
    train_index, dcr_train = nearest(synthetic, train, "DCR train")
    holdout_index, dcr_holdout = nearest(synthetic, holdout, "DCR holdout")
    _, holdout_to_train = nearest(holdout, train, "holdout to train")
    threshold = float(np.percentile(holdout_to_train, NEAR_COPY_PERCENTILE))
    near = dcr_train < threshold
    train_ref, holdout_ref = equal_draw(len(train), len(holdout), np.random.default_rng(seed))
    matched_train = dcr_train if len(train_ref) == len(train) else nearest(synthetic, train[train_ref], "DCR")[1]
    matched_holdout = (
        dcr_holdout if len(holdout_ref) == len(holdout) else nearest(synthetic, holdout[holdout_ref], "DCR")[1]
    )
    per_patch = pd.DataFrame(
        {
            "synthetic_index": np.arange(len(synthetic)),
            "train_index": train_index,
            "dcr_train": dcr_train,
            "holdout_index": holdout_index,
            "dcr_holdout": dcr_holdout,
            "near_copy": near.astype(int),
        }
    )
    near_copies = (
        per_patch.loc[near, ["synthetic_index", "train_index", "dcr_train"]]
        .rename(columns={"dcr_train": "distance"})
        .sort_values("distance", kind="stable")
        .reset_index(drop=True)
    )
    summary = {
        "dcr_train_median": float(np.median(matched_train)),
        "dcr_holdout_median": float(np.median(matched_holdout)),
        "near_copy_threshold": threshold,
        "near_copy_share": float(near.mean()),
        "n_near_copies": int(near.sum()),
        "n_synthetic": len(synthetic),
        "n_reference": len(train_ref),
    }
    return DcrResult(per_patch, near_copies, summary)


def attack_metrics(is_member: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """ROC AUC and the true-positive rate at a false-positive rate of at most 1 %."""
    fpr, tpr, _ = roc_curve(is_member, score, drop_intermediate=False)
    return float(auc(fpr, tpr)), float(tpr[fpr <= ATTACK_FPR].max())


def membership_attack(
    synthetic: np.ndarray, members: np.ndarray, non_members: np.ndarray, n_bootstrap: int = 1000, seed: int = 0
) -> dict:
    """A distance attack on the released data alone (GAN-Leaks' full black-box attack, Chen et al. 2020).

    A candidate patch scores minus its distance to the nearest synthetic patch: the closer, the more likely it
    was in training. Members and non-members are drawn to equal counts (seeded). Reports ROC AUC (0.5: no better
    than chance) and the TPR at 1 % FPR, each with a 95 % percentile-bootstrap interval from resampling members
    and non-members separately.
    """
    if min(len(synthetic), len(members), len(non_members)) < 1:
        raise ValueError(f"attack needs images in every set, got {len(synthetic)}, {len(members)}, {len(non_members)}")
    rng = np.random.default_rng(seed)
    member_ref, non_member_ref = equal_draw(len(members), len(non_members), rng)
    m = len(member_ref)
    _, member_dist = nearest(members[member_ref], synthetic, "attack members")
    _, non_member_dist = nearest(non_members[non_member_ref], synthetic, "attack non-members")
    score = -np.concatenate([member_dist, non_member_dist])
    is_member = np.concatenate([np.ones(m, dtype=int), np.zeros(m, dtype=int)])
    mia_auc, mia_tpr = attack_metrics(is_member, score)
    boot = np.empty((n_bootstrap, 2))
    for b in tqdm(range(n_bootstrap), desc="bootstrap", leave=False, disable=n_bootstrap < 200):
        pick = np.concatenate([rng.integers(0, m, m), m + rng.integers(0, m, m)])
        boot[b] = attack_metrics(is_member[pick], score[pick])
    low, high = np.percentile(boot, [2.5, 97.5], axis=0) if n_bootstrap else np.full((2, 2), math.nan)
    return {
        "mia_auc": mia_auc,
        "mia_auc_low": float(low[0]),
        "mia_auc_high": float(high[0]),
        "mia_tpr_at_1fpr": mia_tpr,
        "mia_tpr_at_1fpr_low": float(low[1]),
        "mia_tpr_at_1fpr_high": float(high[1]),
        "n_members": m,
        "n_non_members": m,
        "n_bootstrap": n_bootstrap,
    }


def patch_origins(paths: list[Path], parts: list[np.ndarray]) -> pd.DataFrame:
    """patient (the file's stem, as results/patches/{patient}.npz) and patch row of every concatenated image."""
    return pd.DataFrame(
        {
            "patient": np.concatenate([[Path(p).stem] * len(x) for p, x in zip(paths, parts)]),
            "patch": np.concatenate([np.arange(len(x)) for x in parts]),
        }
    )


def locate(table: pd.DataFrame, column: str, origin: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Replace an index column into concatenated patch files with the patient and patch row it points to."""
    found = origin.iloc[table[column].to_numpy()].reset_index(drop=True).add_prefix(prefix)
    at = table.columns.get_loc(column)
    return pd.concat([table.iloc[:, :at], found, table.iloc[:, at + 1 :]], axis=1)


def run_audit(
    synthetic: Path,
    train_patches: list[Path],
    holdout_patches: list[Path],
    out_dir: Path,
    seed: int,
    n_bootstrap: int,
) -> dict:
    """Audit one synthetic dataset: audit.json (summary), dcr.tsv (per synthetic patch), near_copies.tsv."""
    images = np.concatenate(load_image_files([synthetic]))
    train_parts = load_image_files(train_patches)
    holdout_parts = load_image_files(holdout_patches)
    train, holdout = np.concatenate(train_parts), np.concatenate(holdout_parts)
    if images.shape[1:] != train.shape[1:] or holdout.shape[1:] != train.shape[1:]:
        raise ValueError(
            f"{synthetic}: patches of {images.shape[1:]}, training {train.shape[1:]}, held-out {holdout.shape[1:]}"
        )
    dcr = distance_to_closest_record(images, train, holdout, seed)
    attack = membership_attack(images, train, holdout, n_bootstrap, seed)
    train_origin = patch_origins(train_patches, train_parts)
    holdout_origin = patch_origins(holdout_patches, holdout_parts)
    per_patch = locate(dcr.per_patch, "train_index", train_origin, "train_")
    per_patch = locate(per_patch, "holdout_index", holdout_origin, "holdout_")
    near_copies = locate(dcr.near_copies, "train_index", train_origin, "train_")
    out_dir = Path(out_dir)
    summary = {"synthetic": str(synthetic), **dcr.summary, **attack, "seed": seed, "distance": DISTANCE}
    write_tsv(per_patch, out_dir / "dcr.tsv")
    write_tsv(near_copies, out_dir / "near_copies.tsv")
    write_json(summary, out_dir / "audit.json")
    log.info(
        "%s: DCR median train %.4g / held-out %.4g, near copies %.2f %%; attack AUC %.3f [%.3f, %.3f], "
        "TPR at 1 %% FPR %.3f",
        synthetic, summary["dcr_train_median"], summary["dcr_holdout_median"], 100 * summary["near_copy_share"],
        summary["mia_auc"], summary["mia_auc_low"], summary["mia_auc_high"], summary["mia_tpr_at_1fpr"],
    )
    return summary


def audit_table(audit_files: list[Path], cards: list[Path]) -> pd.DataFrame:
    """audit.tsv: one row per synthetic dataset (audit JSON and privacy card in the same order)."""
    if len(audit_files) != len(cards):
        raise ValueError(f"{len(audit_files)} audit files but {len(cards)} privacy cards")
    rows = []
    for path, card in zip(audit_files, cards):
        try:
            audit = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err})") from err
        missing = [key for key in ("synthetic", *AUDIT_COLUMNS[4:]) if key not in audit]
        if missing:
            raise ValueError(f"{path}: no {', '.join(missing)}; not written by run_audit")
        if Path(audit["synthetic"]).parent.parts[-2:] != Path(card).parent.parts[-2:]:
            raise ValueError(f"{path}: audits {audit['synthetic']}, not the dataset of {card}")
        rows.append({**card_columns(card), **{key: audit[key] for key in AUDIT_COLUMNS[4:]}})
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


def write_audit_table(audit_files: list[Path], cards: list[Path], out: Path) -> None:
    """Write audit.tsv."""
    write_tsv(audit_table(audit_files, cards), out)
