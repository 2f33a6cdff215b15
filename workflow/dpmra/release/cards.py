"""The privacy card (`privacy_card.json`): written by the release (`privacy_card`), read back by the stages that
report on synthetic datasets (quality, memorisation check, figures: `read_card`, `card_columns`).

What the card says (docs/design.md section 2.10): the mechanism, its accounting, the guarantee per patch and per
patient in plain words, what was public, warnings, what to keep secret, and how the release was made.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from dataclasses import asdict
from pathlib import Path

from dpmra import __version__
from dpmra.privacy.delta import delta_warning, group_privacy
from dpmra.release.params import ReleaseParams

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
IMAGE_SCALING = {
    "volume": "the generator's [-1, 1] mapped linearly to the volumes' 0..255 scale, as the real patches",
    "per_patch": "per-patch min-max to 0..255 (the paper's)",
}


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


def reported_epsilon(stored: dict) -> float:
    """The epsilon a run reports: Private Evolution's exact GDP value, the DP-WGAN's RDP bound."""
    return stored["epsilon"].get("epsilon_gdp", stored["epsilon"]["epsilon_rdp"])


def guarantee(stored: dict) -> dict:
    """The guarantee per patch and per patient, with a statement in plain words."""
    eps, delta, unit = reported_epsilon(stored), stored["delta"], stored["unit"]
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


def frozen_public_blocks(stored: dict) -> dict | None:
    """Which critic blocks kept the public warm start's weights (gan.private_blocks); None where all were trained."""
    private_blocks, total = stored["params"].get("private_blocks"), stored.get("critic_blocks")
    if private_blocks is None or private_blocks == total:
        return None
    frozen, trained = total - private_blocks, stored["trained_parameters"]
    return {
        "blocks": list(range(1, frozen + 1)),
        "critic_blocks": total,
        "trained_parameters": trained,
        "statement": f"critic blocks 1-{frozen} of {total} kept the public warm start's weights; only the last "
        f"{private_blocks} ({trained} parameters) were trained under DP-SGD, and only they carry noise. Epsilon "
        "is unchanged by the freezing: it depends on sigma, the sampling rate and the number of steps",
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


def api_description(api: dict) -> str:
    """Private Evolution's public API in words: what proposes the candidates, and from what."""
    if api["api"] == "simulator":
        return (
            f"the phantom simulator (Sim-PE): site {api['site']}'s public parameters (in-plane spacing, vessel "
            f"contrast, noise, bias field) divided and multiplied by {api['widen']}, slow-flow signal in "
            f"[1/{api['widen']}, 1], a fresh anatomy per candidate; {api['per_candidate']} pairs cut from each "
            "rendered subject as the real patients' are. In the demo the private cohort comes from the same "
            "simulator family; on real data the simulator's realism bounds what PE can reach"
        )
    return (
        "the public warm-start generator (trained without noise on the public cohort only): candidates are its "
        "latent vectors z ~ N(0, I), variations z' = sqrt(1 - a^2) z + a e"
    )


def pe_mechanism(stored: dict) -> dict:
    """The card's account of a Private Evolution run: API, rounds, noise, threshold, embedding, unit, accounting."""
    params = stored["params"]
    return {
        "family": "Private Evolution (Lin et al. 2024; Sim-PE 2025)",
        "api": api_description(stored["api"]),
        "iterations": params["iterations"],
        "candidates": params["candidates"],
        "sigma": _json_sigma(params["sigma"]),
        "threshold": params["threshold"] * params["sigma"] if math.isfinite(params["sigma"]) else 0.0,
        "embedding": stored["embedding"],
        "votes": "one vote per patch" if stored["unit"] == "patch"
        else "each patient's vote vector scaled to L2 norm at most 1",
        "accounting": "each round adds N(0, sigma^2) to every count of a vote histogram of L2 sensitivity 1 (adding "
        "or removing one privacy unit); T rounds compose to mu-GDP with mu = sqrt(T) / sigma. epsilon.gdp is the "
        "exact conversion at delta (reported); epsilon.rdp and epsilon.prv are Opacus' accountants of the same T "
        "Gaussian mechanisms",
        "released": "the last population of candidates (and the public API); only the noisy histograms touched "
        "the private data",
    }


def dpsgd_mechanism(stored: dict) -> dict:
    """The card's account of a DP-WGAN run: DP-SGD on the critic, its sampling and steps."""
    params = stored["params"]
    return {
        "accountants": "rdp: Renyi DP of the Poisson-subsampled Gaussian (the paper's orders); "
        "prv: privacy random variables (Opacus), a tighter estimate",
        "sample_rate": stored["sample_rate"],
        "batch_size": params["batch_size"],
        "critic_steps": stored["critic_steps"],
        "n_critic": params["n_critic"],
        "max_grad_norm": params["max_grad_norm"],
    }


PE_SECRET = {
    "secret_streams": ["Gaussian noise on the vote histograms"],
    "public_streams": ["candidates, variations and resampling (run seed)", "the sampling of this release"],
    "keep_private": [
        "the secret key file (config privacy.secret): it seeds the secret stream",
        "the training data and everything derived from them outside this release",
    ],
}


def privacy_card(stored: dict, release: ReleaseParams, dataset_name: str, scores: list[dict]) -> dict:
    """What a data steward needs to decide on sharing: the mechanism, its accounting, and the release.

    The run seed is not on the card: it seeds public streams only, and the card names no secret.
    """
    params = stored["params"]
    pe = stored.get("family") == "pe"
    config = {"pe" if pe else "gan": params, "release": asdict(release)}
    return {
        "dataset": dataset_name,
        "family": "pe" if pe else "dp-wgan",
        "sigma": _json_sigma(params["sigma"]),
        "mode": params["mode"],
        "privacy_unit": stored["unit"],
        "epsilon": {name.removeprefix("epsilon_"): _json_epsilon(v) for name, v in stored["epsilon"].items()},
        "delta": stored["delta"],
        "guarantee": guarantee(stored),
        "public_pretraining": None if pe else public_pretraining(stored),
        "frozen_public_blocks": None if pe else frozen_public_blocks(stored),
        "warnings": card_warnings(stored),
        "secret": PE_SECRET if pe else SECRET,
        **({"mechanism": pe_mechanism(stored)} if pe else dpsgd_mechanism(stored)),
        "training_set_size": stored["training_set_size"],
        "privacy_units": stored["units"],
        "max_patches_per_patient": stored["max_patches_per_patient"],
        "epochs": stored["epochs"],
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


# --- reading cards back ---------------------------------------------------------------------------------------


def card_epsilon(value: float | str | None) -> float:
    """An epsilon from a privacy card: a number, or 'inf' (or null) where no privacy holds."""
    return math.inf if value is None or value == "inf" else float(value)


def read_card(path: Path) -> dict:
    """A privacy card, with a ValueError naming the file if it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a JSON privacy card ({err})") from err


def card_columns(path: Path) -> dict:
    """source, sigma, seed and (RDP) epsilon of a synthetic dataset, from its privacy card.

    The source is the card's directory below the synth root, `sigma~{sigma}/seed~{seed}`; the seed (the run
    index) is read from it, since the card does not carry it.
    """
    path = Path(path)
    card = read_card(path)
    source = "/".join(path.parent.parts[-2:])
    try:
        return {
            "source": source,
            "sigma": float(card["sigma"]),
            "seed": int(source.rpartition("seed~")[2]),
            "epsilon": card_epsilon(card["epsilon"].get("gdp", card["epsilon"]["rdp"])),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a privacy card with sigma, seed and epsilon.rdp ({err!r})") from err
