"""Synthetic release: a trained generator sampled into a labelled patch dataset, with its privacy card.

Sampling is post-processing of the trained generator: this stage reads ``generator.pt``
(weights, accountant output, run parameters) and never the training data, so everything
it writes is covered by the run's (epsilon, delta). The card states what that guarantee is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from dpmra import __version__
from dpmra.data.intensity import load_images, rescale_patches
from dpmra.features.extract import (
    backbone_name,
    extract_features,
    feature_statistics,
    frechet_distance,
    resolve_backbone,
)
from dpmra.generators.generator import build_generator, sample_pairs
from dpmra.privacy.accountants import delta_warning, group_privacy
from dpmra.shared import checkpoint
from dpmra.shared.atomic import write_atomic, write_json
from dpmra.shared.pictures import save_patch_gallery

log = logging.getLogger(__name__)

GALLERY_SIZE = 8
CHECKPOINT_CHOICES = ("last", "val_fd")
STEWARD_NOTES = [
    "guarantee.statement says in words what epsilon and delta bound: per privacy unit (privacy_unit) and, "
    "for the patch unit, per patient by group privacy over the most patches one patient contributed.",
    "epsilon.rdp is the bound the project reports; epsilon.prv is a tighter numerical estimate of the same "
    "mechanism. Both hold only while everything under secret.keep_private stays private.",
    "sigma = inf means no privacy: the dataset may reproduce training patches; read the memorisation / "
    "distance-to-closest-record check (results/tables/audit.tsv) before sharing.",
    "The DP audit (results/tables/dp_audit.tsv, internal) retrains this run with canaries and bounds its epsilon "
    "from below; its epsilon_lower_bound must lie below epsilon.rdp and epsilon.prv, and a bound above them means "
    "the mechanism does not deliver its epsilon: do not share.",
]
SECRET = {
    "secret_streams": ["Poisson sampling of the training batches", "Gaussian noise of DP-SGD"],
    "public_streams": ["initial weights", "latent vectors of training and of this release"],
    "keep_private": [
        "the secret key file (config privacy.secret): it seeds the secret streams",
        "the GAN run's checkpoints/ directory: it holds the secret streams' states",
        "the training data and everything derived from them outside this release",
    ],
}


@dataclass(frozen=True)
class ReleaseParams:
    """How a generator becomes a dataset (the paper's threshold as default)."""

    n: int
    """Number of generated pairs."""
    label_threshold: float = 0.8
    """Generated labels (tanh output mapped from [-1, 1] to [0, 1]) above this are vessel."""
    seed: int = 0
    """Seed of the latent vectors; sampling is public randomness, unrelated to the training seed."""
    checkpoint: str = "last"
    """Which epoch to release: "last", or "val_fd" (lowest Frechet distance to the validation patients)."""
    selection_samples: int = 500
    """Generated and validation patches per Frechet distance when choosing by "val_fd"."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.checkpoint not in CHECKPOINT_CHOICES:
            raise ValueError(f"checkpoint must be one of {CHECKPOINT_CHOICES}, got {self.checkpoint!r}")
        if self.selection_samples < 2:
            raise ValueError(f"selection_samples must be >= 2, got {self.selection_samples}")
        if not 0 < self.label_threshold < 1:
            raise ValueError(f"label_threshold must be in (0, 1), got {self.label_threshold}")


def load_release(generator_path: Path) -> dict:
    """The stored generator.pt, checked for the fields a privacy card needs."""
    stored = checkpoint.load(generator_path)
    needed = {
        "state_dict", "config", "epsilon", "delta", "epochs", "critic_steps", "sample_rate", "params",
        "training_set_size", "unit", "units", "max_patches_per_patient", "intensity",
    }
    missing = sorted(needed - set(stored))
    if missing:
        raise ValueError(f"{generator_path}: not a complete generator file, missing {missing} (retrain the GAN)")
    return stored


def generate(stored: dict, n: int, seed: int) -> np.ndarray:
    """n pairs (n, 2, P, P) in [-1, 1] from a stored generator (config and weights), deterministic from the seed."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return sample_pairs(build_generator(stored["config"], stored["state_dict"], device), n, seed, batch_size=512)


IMAGE_SCALING = {
    "volume": "the generator's [-1, 1] mapped linearly to the volumes' 0..255 scale, as the real patches",
    "per_patch": "per-patch min-max to 0..255 (the paper's)",
}


def to_dataset(pairs: np.ndarray, label_threshold: float, intensity: str = "volume") -> tuple[np.ndarray, np.ndarray]:
    """Image back on the scale the GAN was trained on (float32 0..255), label binarised (uint8).

    ``volume``: (x + 1) * 127.5, the inverse of the training map, so synthetic and real patches share one scale;
    ``per_patch``: the paper's per-patch min-max to 0..255.
    """
    if intensity not in IMAGE_SCALING:
        raise ValueError(f"intensity must be one of {', '.join(IMAGE_SCALING)}, got {intensity!r}")
    if intensity == "volume":
        image = ((pairs[:, 0] + 1.0) * 127.5).clip(0.0, 255.0).astype(np.float32)
    else:
        image = rescale_patches(pairs[:, 0], 0.0, 255.0)
    label = ((pairs[:, 1] + 1) / 2 > label_threshold).astype(np.uint8)
    return image, label


def code_version() -> str:
    """The package version, with the git commit (and '.dirty') when run from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"


@dataclass(frozen=True)
class Validation:
    """Held-out patches (never training data) and the feature extractor that judge the epochs for "val_fd"."""

    patches: list[Path]
    backbone: str = "auto"
    weights: Path | None = None


def epoch_generators(run_dir: Path) -> list[tuple[int, dict]]:
    """(epoch, {"config", "state_dict"}) of every epoch checkpoint of a GAN run, in epoch order (the weights
    that epoch would release: the moving average where the run keeps one)."""
    paths = sorted((run_dir / "checkpoints").glob("epoch_*.pt"))
    if not paths:
        raise ValueError(f"{run_dir / 'checkpoints'}: no epoch checkpoints to choose from")
    generators = []
    for path in paths:
        state = checkpoint.load(path)
        weights = state["ema_generator"] if state.get("ema_generator") is not None else state["generator"]
        generators.append((state["epoch"], {"config": state["generator_config"], "state_dict": weights}))
    return generators


def choose_by_validation(run_dir: Path, release: ReleaseParams, validation: Validation) -> tuple[dict, list[dict]]:
    """The epoch generator whose samples have the lowest Frechet distance to the validation patients' patches,
    and every epoch's distance.

    Reads the run's checkpoints and held-out patches only: no training data outside the accounted training.
    """
    backbone = resolve_backbone(validation.backbone, validation.weights)
    intensity = load_release(run_dir / "generator.pt")["intensity"]
    real = load_images(validation.patches)
    real = real[np.random.default_rng(release.seed).permutation(len(real))[: release.selection_samples]]
    real_stats = feature_statistics(extract_features(real, backbone, validation.weights))
    scores, generators = [], {}
    for epoch, stored in epoch_generators(run_dir):
        image, _ = to_dataset(generate(stored, len(real), release.seed), release.label_threshold, intensity)
        fd = frechet_distance(*feature_statistics(extract_features(image, backbone, validation.weights)), *real_stats)
        scores.append({"epoch": epoch, "fd": fd, "fd_backbone": backbone_name(backbone), "n": len(real)})
        generators[epoch] = stored
        log.info("epoch %d: Frechet distance to the validation patches %.4g", epoch, fd)
    best = min(scores, key=lambda row: row["fd"])["epoch"]
    return generators[best], scores


def _json_sigma(sigma: float) -> float | str:
    """sigma as JSON: a number, or the string 'inf' for the non-private run (JSON has no infinity)."""
    return sigma if math.isfinite(sigma) else "inf"


def _json_epsilon(value: float) -> float | str:
    """epsilon as JSON: a number, or 'inf' where no privacy holds."""
    return float(value) if math.isfinite(value) else "inf"


def checkpoint_description(stored: dict, scores: list[dict]) -> dict:
    """The card's account of which epoch was released and why."""
    if not scores:
        return {"epoch": stored["epochs"], "chosen_by": "last epoch"}
    best = min(scores, key=lambda row: row["fd"])
    return {
        "epoch": best["epoch"],
        "chosen_by": f"lowest Frechet distance ({best['fd_backbone']}, {best['n']} patches) to the validation "
        "patients' patches; those patches are not covered by epsilon, and epsilon is that of the whole run "
        "because the choice saw every epoch",
        "scores": scores,
    }


def _bound(epsilon: float, delta: float) -> dict:
    """An (epsilon, delta) pair as JSON: 'inf' without privacy, 'vacuous' where delta reaches 1."""
    if math.isinf(epsilon) and delta < 1:
        return {"epsilon": "inf", "delta": delta}
    if delta >= 1:
        return {"epsilon": "vacuous", "delta": "vacuous"}
    return {"epsilon": epsilon, "delta": delta}


def guarantee(stored: dict) -> dict:
    """The guarantee per patch and per patient, with a statement in plain words."""
    eps, delta, unit = stored["epsilon"]["epsilon_rdp"], stored["delta"], stored["unit"]
    k = stored["max_patches_per_patient"]
    if stored["params"].get("public"):
        statement = (
            "PUBLIC DATA ONLY: the generator was trained on a training set declared public and never saw the "
            "private cohort; it carries no information about any private patient (epsilon 0)."
        )
        return {"unit": unit, "per_patch": _bound(0.0, 0.0), "per_patient": _bound(0.0, 0.0), "statement": statement}
    if math.isinf(eps):
        statement = (
            "NOT PRIVATE: the generator was trained without differential privacy (sigma = inf); the data may "
            "reproduce training patches and must not be shared as private data."
        )
        return {"unit": unit, "per_patch": _bound(eps, delta), "per_patient": _bound(eps, delta), "statement": statement}
    shown = f"(epsilon = {eps:.3g}, delta = {delta:.2g})"
    if unit == "patient":
        statement = (
            f"{shown}-differential privacy per training patient: whatever anyone learns from this dataset "
            "would be almost as likely had any one patient, with all of their patches, been left out."
        )
        return {"unit": unit, "per_patch": _bound(eps, delta), "per_patient": _bound(eps, delta), "statement": statement}
    group_eps, group_delta = group_privacy(eps, delta, k)
    per_patient = {**_bound(group_eps, group_delta), "group_size": k, "rule": "(k eps, k e^((k-1) eps) delta)"}
    statement = f"{shown}-differential privacy per training patch (one image-label pair). "
    if per_patient["delta"] == "vacuous":
        statement += (
            f"One patient contributed up to {k} patches, and group privacy over {k} patches gives no meaningful "
            "bound: there is no formal guarantee for a patient as a whole (train with privacy unit 'patient' for one)."
        )
    else:
        statement += f"Per patient (up to {k} patches, group privacy): epsilon = {group_eps:.3g}, delta = {group_delta:.2g}."
    return {"unit": unit, "per_patch": _bound(eps, delta), "per_patient": per_patient, "statement": statement}


def public_pretraining(stored: dict) -> dict | None:
    """What was public: the warm start the run began from (None without one)."""
    pretrained = stored.get("pretrained")
    if not pretrained:
        return None
    return {
        **pretrained,
        "statement": f"generator and critic started from weights trained without noise for {pretrained['epochs']} "
        f"epochs on a public training set of {pretrained['training_set_size']} pairs (not private data; it needs "
        "and has no guarantee); epsilon covers the private training that followed",
    }


def card_warnings(stored: dict) -> list[str]:
    """What a steward must read before sharing: no privacy, the paper's delta, the paper's loop."""
    warnings = []
    if math.isinf(stored["epsilon"]["epsilon_rdp"]) and not stored["params"].get("public"):
        warnings.append("trained without differential privacy (sigma = inf)")
    paper_delta = delta_warning(stored["delta"], stored["units"])
    if paper_delta:
        warnings.append(paper_delta)
    if stored["params"]["mode"] == "paper":
        warnings.append("the published loop: its own epsilon (epsilon.rdp_paper) is not a valid bound")
    return warnings


def privacy_card(stored: dict, release: ReleaseParams, dataset_name: str, scores: list[dict]) -> dict:
    """What a data steward needs to decide on sharing: the mechanism, its accounting, and the release.

    The run seed is not on the card: it seeds public streams only, and the card names no secret.
    """
    params = stored["params"]
    config = {"gan": params, "release": asdict(release)}
    return {
        "dataset": dataset_name,
        "sigma": _json_sigma(params["sigma"]),
        "mode": params["mode"],
        "privacy_unit": stored["unit"],
        "epsilon": {name.removeprefix("epsilon_"): _json_epsilon(v) for name, v in stored["epsilon"].items()},
        "delta": stored["delta"],
        "guarantee": guarantee(stored),
        "public_pretraining": public_pretraining(stored),
        "warnings": card_warnings(stored),
        "secret": SECRET,
        "accountants": "rdp: Renyi DP of the Poisson-subsampled Gaussian (the paper's orders); "
        "prv: privacy random variables (Opacus), a tighter estimate",
        "sample_rate": stored["sample_rate"],
        "training_set_size": stored["training_set_size"],
        "privacy_units": stored["units"],
        "max_patches_per_patient": stored["max_patches_per_patient"],
        "batch_size": params["batch_size"],
        "critic_steps": stored["critic_steps"],
        "epochs": stored["epochs"],
        "n_critic": params["n_critic"],
        "max_grad_norm": params["max_grad_norm"],
        "release": {
            "checkpoint": checkpoint_description(stored, scores),
            "n": release.n,
            "label_threshold": release.label_threshold,
            "sampling_seed": release.seed,
            "image_scaling": IMAGE_SCALING[stored["intensity"]],
        },
        "config_digest": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
        "code_version": code_version(),
        "notes": STEWARD_NOTES,
    }


def write_stack(volume: np.ndarray, path: Path) -> None:
    """Patches (n, P, P) as one P x P x n uint8 NIfTI (1 mm voxels: patches carry no scanner geometry)."""
    stack = np.clip(np.rint(np.moveaxis(volume, 0, -1)), 0, 255).astype(np.uint8)
    write_atomic(path, lambda tmp: nib.save(nib.Nifti1Image(stack, np.eye(4)), str(tmp)))


def release_dataset(
    generator_path: Path,
    out_dir: Path,
    release: ReleaseParams,
    dataset_name: str,
    validation: Validation | None = None,
) -> dict:
    """Write dataset.npz, image and label stacks, a gallery and privacy_card.json; return the card.

    The last epoch's generator is released, or with ``release.checkpoint == "val_fd"`` the epoch chosen
    on ``validation``; the card's epsilon is always that of the whole run.
    """
    out_dir = Path(out_dir)
    stored = load_release(generator_path)
    generator, scores = stored, []
    if release.checkpoint == "val_fd":
        if validation is None or not validation.patches:
            raise ValueError("checkpoint 'val_fd' needs the validation patients' patch files")
        generator, scores = choose_by_validation(Path(generator_path).parent, release, validation)
    log.info("%s: sampling %d pairs (sampling seed %d)", dataset_name, release.n, release.seed)
    image, label = to_dataset(
        generate(generator, release.n, release.seed), release.label_threshold, stored["intensity"]
    )
    write_atomic(out_dir / "dataset.npz", lambda tmp: np.savez_compressed(tmp, image=image, label=label))
    write_stack(image, out_dir / "images.nii.gz")
    write_stack(label * 255, out_dir / "labels.nii.gz")
    card = privacy_card(stored, release, dataset_name, scores)
    eps = card["epsilon"]
    save_patch_gallery(
        image[:GALLERY_SIZE],
        label[:GALLERY_SIZE],
        out_dir / "gallery.png",
        title=f"{dataset_name}: epsilon {eps.get('rdp')} (RDP), delta {card['delta']:.3g}",
    )
    write_json(card, out_dir / "privacy_card.json")
    log.info(
        "%s: %d pairs, vessel share %.4f, epsilon %s -> %s", dataset_name, release.n, label.mean(), eps, out_dir
    )
    return card
