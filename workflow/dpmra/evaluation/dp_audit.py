"""One-run canary audit of the critic's DP-SGD: an empirical epsilon lower bound per GAN run.

Steinke, Nasr and Jagielski (NeurIPS 2023), "Privacy auditing with one (1) training run". The audit trains the
run once more, with the run's settings and training data, through the same trainer and DP engine (the real
batches' Poisson sampling, the clipping, the noise, the accountant), with m white-box gradient canaries added
(`dpmra.privacy.canaries`); the count of correct guesses about which canaries were included bounds epsilon from
below (`dpmra.privacy.audit_bound`). Also the table of every audited run and its figure.

A privacy check that sits in evaluation, above the generators: it must train the very `WganTrainer` the run
used, so it imports the generators (no stage below imports it). The audit run draws its noise and sampling from
a key derived from the secret key, so it shares no random draw with the released run (with shared draws, the
difference of the two runs' updates would carry no noise). What it writes is post-processing of a DP run on the
training patients, kept internal like every result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dpmra.generators.interface import TrainingData, load_training_set
from dpmra.generators.params import GanParams
from dpmra.generators.warm_start import load_warm_start
from dpmra.generators.wgan import WganTrainer, run_name
from dpmra.privacy.audit_bound import (
    CONFIDENCE,
    GUESS_FRACTION,
    ceiling,
    check_per_side,
    correct_guesses,
    epsilon_lower_bound,
    guess,
)
from dpmra.privacy.canaries import AuditedGradient, GradientCanaries, make_canaries
from dpmra.privacy.dpsgd import NORM_RTOL
from dpmra.privacy.secret import read_key
from dpmra.shared import checkpoint
from dpmra.shared.atomic import write_json, write_tsv
from dpmra.shared.devices import default_device
from dpmra.shared.pictures import new_figure, save_figure

log = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "run", "sigma", "epsilon_rdp", "epsilon_prv", "delta", "canaries", "guesses", "correct", "epsilon_lower_bound",
    "epsilon_ceiling",
]


def audit_key(key: bytes, params: GanParams) -> bytes:
    """The audit run's key: HMAC of the secret key and the run, so its noise and sampling are the run's own."""
    return hmac.new(key, f"{run_name(params)}\x00dp-audit".encode(), hashlib.sha256).digest()


# --- the audit of one run -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Audit:
    """The summary written to dp_audit.json and one row per canary."""

    summary: dict
    canaries: pd.DataFrame


def _check_auditable(params: GanParams) -> None:
    """Refuse runs the audit does not cover: no privacy to audit, or the paper's reused-batch loop."""
    if not params.private:
        raise ValueError("sigma = inf is not private: there is no DP mechanism to audit")
    if params.mode != "fresh":
        raise ValueError("the DP audit covers the accounted loop (mode fresh), not the paper's reused batches")


def audited_trainer(
    data: TrainingData,
    params: GanParams,
    key: bytes,
    canaries: int,
    noise_multiplier: float,
    device: torch.device,
    pretrained: dict | None = None,
) -> tuple[WganTrainer, GradientCanaries]:
    """The run's trainer on the audit's own key, its DP engine carrying the canaries and adding this much noise."""
    _check_auditable(params)
    trainer = WganTrainer(data, params, device, audit_key(key, params), pretrained)
    engine = trainer.dp
    norm = engine.clipper.max_grad_norm / (1 + NORM_RTOL)
    marks = make_canaries(engine.clipper.params, canaries, key, run_name(params), trainer.sample_rate, norm)
    engine.noise_multiplier = noise_multiplier
    trainer.dp = AuditedGradient(engine, marks)
    return trainer, marks


def resume(trainer: WganTrainer, marks: GradientCanaries, directory: Path) -> None:
    """Continue from the latest checkpoint of this audit; checkpoints of another audit are deleted, not trusted."""
    for path in sorted(Path(directory).glob("epoch_*.pt"), reverse=True):
        state = checkpoint.load(path, map_location=trainer.device)
        conflict = trainer.resume_conflict(state["trainer"])
        if state["canaries"]["count"] != marks.count or state["noise_multiplier"] != trainer.dp.noise_multiplier:
            conflict = conflict or "other canaries or noise"
        if conflict is None:
            trainer.load_state_dict(state["trainer"])
            marks.load_state_dict(state["canaries"])
            log.info("resuming from %s (epoch %d)", path, trainer.epoch)
            return
        log.info("discarding %s: %s", path, conflict)
        path.unlink()


def train(trainer: WganTrainer, marks: GradientCanaries, checkpoints: Path | None) -> float:
    """Train the remaining epochs (checkpointing each one where a directory is given); returns the seconds taken."""
    if checkpoints is not None:
        resume(trainer, marks, checkpoints)
    start = time.perf_counter()
    while trainer.epoch < trainer.params.epochs:
        trainer.run_epoch()
        if checkpoints is not None:
            state = {
                "trainer": trainer.state_dict(),
                "canaries": marks.state_dict(),
                "noise_multiplier": trainer.dp.noise_multiplier,
            }
            checkpoint.save_atomic(state, checkpoint.epoch_path(checkpoints, trainer.epoch))
    return time.perf_counter() - start


def summarise(trainer: WganTrainer, marks: GradientCanaries, per_side: int, seconds: float) -> Audit:
    """The guesses, their count and the bound, beside the run's own accounting."""
    scores = marks.scores()
    included = marks.included.numpy()
    guesses = guess(scores, per_side)
    correct = correct_guesses(guesses, included)
    last, m, r = trainer.rows[-1], marks.count, 2 * per_side
    summary = {
        "sigma": trainer.params.sigma,
        "noise_multiplier_added": trainer.dp.noise_multiplier,
        "mode": trainer.params.mode,
        "privacy_unit": trainer.params.unit,
        "sample_rate": trainer.sample_rate,
        "critic_steps": trainer.critic_steps,
        "epochs": trainer.epoch,
        "max_grad_norm": trainer.params.max_grad_norm,
        "delta": trainer.delta,
        "epsilon": {"rdp": last["epsilon_rdp"], "prv": last["epsilon_prv"]},
        "pretrained": trainer.pretrained,
        "canaries": m,
        "included": int(included.sum()),
        "guesses": r,
        "correct": correct,
        "confidence": CONFIDENCE,
        "epsilon_lower_bound": epsilon_lower_bound(m, r, correct, trainer.delta),
        "epsilon_ceiling": ceiling(m, r, trainer.delta),
        "canary_design": f"white-box gradient canaries: disjoint random sparse directions of {marks.support.shape[1]} "
        f"parameters each, norm {marks.norm:.6g}, Poisson-sampled at q = {trainer.sample_rate:.6g}",
        "seconds": seconds,
    }
    rows = pd.DataFrame(
        {
            "canary": np.arange(m),
            "included": included.astype(int),
            "sampled_updates": marks.sampled.numpy(),
            "score": scores,
            "guess": pd.Series(guesses).map({1: "included", -1: "excluded", 0: "abstain"}),
        }
    )
    return Audit(summary, rows)


def audit(
    data: TrainingData,
    params: GanParams,
    key: bytes,
    canaries: int,
    per_side: int | None = None,
    noise_multiplier: float | None = None,
    device: torch.device | None = None,
    checkpoints: Path | None = None,
    pretrained: dict | None = None,
) -> Audit:
    """Train the run once more with canaries and bound its epsilon from below.

    ``noise_multiplier`` is the noise the engine actually adds (default: the run's sigma, which the accountant is
    told); another value makes a deliberately broken mechanism, for checking that the audit catches it.
    ``checkpoints``: a directory to checkpoint each epoch in and resume from (it holds secret states).
    ``pretrained``: the public warm start the run began from (``dpmra.generators.warm_start.load_warm_start``), if any.
    """
    per_side = per_side if per_side is not None else max(1, round(GUESS_FRACTION * canaries))
    check_per_side(per_side, canaries)
    added = params.sigma if noise_multiplier is None else noise_multiplier
    trainer, marks = audited_trainer(data, params, key, canaries, added, device or torch.device("cpu"), pretrained)
    seconds = train(trainer, marks, checkpoints)
    return summarise(trainer, marks, per_side, seconds)


def run_params(generator: Path) -> GanParams:
    """The audited run's settings, as its generator.pt records them (so every training option carries over)."""
    return GanParams(**checkpoint.load(generator)["params"])


def run_mismatch(summary: dict, stored: dict) -> str | None:
    """Which part of the accounting differs between the audit run and the audited run's generator.pt, or None."""
    pairs = [
        ("critic_steps", summary["critic_steps"], stored["critic_steps"]),
        ("sample_rate", summary["sample_rate"], stored["sample_rate"]),
        ("delta", summary["delta"], stored["delta"]),
        ("epsilon rdp", summary["epsilon"]["rdp"], stored["epsilon"]["epsilon_rdp"]),
        ("epsilon prv", summary["epsilon"]["prv"], stored["epsilon"]["epsilon_prv"]),
    ]
    differ = [f"{name} {ours} against {theirs}" for name, ours, theirs in pairs if not math.isclose(ours, theirs)]
    if summary["pretrained"] != stored.get("pretrained"):
        differ.append(f"warm start {summary['pretrained']} against {stored.get('pretrained')}")
    return "; ".join(differ) or None


def run_dp_audit(
    generator: Path,
    train_set: Path,
    secret: Path,
    canaries: int,
    per_side: int | None,
    out_dir: Path,
    pretrained: Path | None = None,
) -> dict:
    """Audit the run that wrote ``generator``: dp_audit.json (the bound, the claim) and canaries.tsv (per canary).

    ``pretrained``: the public run's generator.pt the audited run was warm-started from, if any.
    """
    params = run_params(generator)
    if (pretrained is None) != (checkpoint.load(generator).get("pretrained") is None):
        started = "was not" if pretrained else "was"
        raise ValueError(f"{generator}: the audited run {started} warm-started; give --pretrained exactly when it was")
    out_dir = Path(out_dir)
    data, key = load_training_set(train_set), read_key(secret)
    warm = load_warm_start(pretrained) if pretrained else None
    result = audit(
        data, params, key, canaries, per_side, device=default_device(), checkpoints=out_dir / "checkpoints",
        pretrained=warm,
    )
    mismatch = run_mismatch(result.summary, checkpoint.load(generator))
    if mismatch:
        raise ValueError(f"{generator}: the audit's accounting differs from the audited run's: {mismatch}")
    write_tsv(result.canaries, out_dir / "canaries.tsv")
    write_json(result.summary, out_dir / "dp_audit.json")
    s = result.summary
    log.info(
        "DP audit: %d of %d guesses right with %d canaries: epsilon >= %.3g (95 %%; ceiling %.3g); claimed %.3g "
        "(RDP), %.3g (PRV) at delta %.3g; %.1f s",
        s["correct"], s["guesses"], s["canaries"], s["epsilon_lower_bound"], s["epsilon_ceiling"],
        s["epsilon"]["rdp"], s["epsilon"]["prv"], s["delta"], s["seconds"],
    )
    return s


# --- the table and the figure ---------------------------------------------------------------------------------


def audit_row(path: Path) -> dict:
    """One run's row from its dp_audit.json: the claim beside the audit's count and lower bound."""
    try:
        summary = json.loads(Path(path).read_text())
        return {
            "run": "/".join(Path(path).parent.parts[-2:]),
            "sigma": summary["sigma"],
            "epsilon_rdp": summary["epsilon"]["rdp"],
            "epsilon_prv": summary["epsilon"]["prv"],
            **{name: summary[name] for name in TABLE_COLUMNS[4:]},
        }
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a dp_audit.json written by `dpmra audit-dp run` ({err!r})") from err


def audit_table(audits: list[Path]) -> pd.DataFrame:
    """dp_audit.tsv: one row per audited run, smallest claim first."""
    table = pd.DataFrame([audit_row(path) for path in audits], columns=TABLE_COLUMNS)
    return table.sort_values(["epsilon_rdp", "run"], kind="stable", ignore_index=True)


def write_audit_table(audits: list[Path], out: Path) -> pd.DataFrame:
    """Write dp_audit.tsv; log every run whose lower bound exceeds its claim (a bug in the mechanism)."""
    table = audit_table(audits)
    write_tsv(table, out)
    for row in table.itertuples():
        if row.epsilon_lower_bound > min(row.epsilon_rdp, row.epsilon_prv):
            log.warning(
                "%s: audited epsilon >= %.3g exceeds the claim (RDP %.3g, PRV %.3g): the mechanism does not "
                "deliver its epsilon; do not release this run", row.run, row.epsilon_lower_bound, row.epsilon_rdp,
                row.epsilon_prv,
            )
    return table


def plot_audit(table_path: Path, outputs: list[Path]) -> pd.DataFrame:
    """Claimed epsilon (RDP and PRV) against the audited lower bound per run, with the claim line and the ceiling."""
    table = pd.read_csv(table_path, sep="\t", dtype={"run": str})
    fig = new_figure(figsize=(7.5, 5))
    ax = fig.subplots()
    top = max(table[["epsilon_rdp", "epsilon_prv"]].max().max(), table["epsilon_ceiling"].max(), 1.0) * 1.08
    right = 1.3 * top  # room for the run labels
    claim = "lower bound = claim (above: a bug)"
    ax.plot([0, right], [0, right], color="0.4", linestyle="--", linewidth=1, label=claim)
    for value in sorted(table["epsilon_ceiling"].unique()):
        ax.axhline(value, color="0.6", linestyle=":", linewidth=1)
    ax.plot([], [], color="0.6", linestyle=":", linewidth=1, label="ceiling: every guess right")
    for row in table.itertuples():
        bug = row.epsilon_lower_bound > min(row.epsilon_rdp, row.epsilon_prv)
        colour = "#d62728" if bug else "#1f77b4"
        ax.plot([row.epsilon_prv, row.epsilon_rdp], [row.epsilon_lower_bound] * 2, color=colour, linewidth=1)
        ax.plot(row.epsilon_rdp, row.epsilon_lower_bound, "o", color=colour)
        ax.plot(row.epsilon_prv, row.epsilon_lower_bound, "D", mfc="none", mec=colour)
        ax.annotate(row.run, (row.epsilon_rdp, row.epsilon_lower_bound), xytext=(4, 4), textcoords="offset points",
                    fontsize=8)
    ax.plot([], [], "o", color="#1f77b4", label="claimed epsilon, RDP")
    ax.plot([], [], "D", mfc="none", mec="#1f77b4", label="claimed epsilon, PRV")
    ax.plot([], [], "o", color="#d62728", label="lower bound above the claim: a bug")
    ax.set_xlim(0, right)
    ax.set_ylim(0, top)
    ax.set_xlabel("claimed epsilon (accountant)")
    ax.set_ylabel(f"audited epsilon lower bound ({100 * CONFIDENCE:.0f} % confidence)")
    ax.set_title("One-run canary audit of the DP mechanism")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    for path in outputs:
        save_figure(fig, Path(path))
    return table
