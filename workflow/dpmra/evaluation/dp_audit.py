"""One-run canary audit of the critic's DP-SGD: an empirical epsilon lower bound per GAN run.

Steinke, Nasr and Jagielski (NeurIPS 2023), "Privacy auditing with one (1) training run". The audit trains the
run once more, with the run's settings and training data, through the same trainer and DP engine (the real
batches' Poisson sampling, the clipping, the noise, the accountant), with m white-box gradient canaries added. A
canary is a privacy unit whose clipped gradient is a fixed random direction u_j of norm C in the critic's
parameter space; each is included independently with probability 1/2 (the inclusion draw is the audit's secret).
Every included canary is Poisson-sampled at each privatised critic update with the run's rate q, and when sampled
its gradient joins the clipped sum before the noise (the same Gaussian draw, the same division by the expected
batch size). A canary's score is the sum over updates of <privatised update added to .grad, u_j>. The auditor guesses
"included" for the k highest scores and "excluded" for the k lowest and abstains on the rest; if the mechanism
is (epsilon, delta)-DP, the number of correct guesses is stochastically dominated as in Steinke et al.'s
Theorem 5.2, which turns the count into an epsilon that the mechanism provably (95 % confidence) does not meet.

The directions are sparse: canary j is +-1/sqrt(s) on its own s = P // m parameters (a random partition, random
signs). They are exactly orthogonal, and storing them, adding a sampled canary and scoring all of them cost O(P)
whatever m; dense random directions would need m x P numbers (1.7 GB for the default critic at m = 1,000).
The audit run draws its noise and sampling from a key derived from the secret key, so it shares no random draw
with the released run (with shared draws, the difference of the two runs' updates would carry no noise), and its
canary streams are HMAC-derived seeds of the key and the run. What it writes is post-processing of a DP run on the
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.special
import scipy.stats
import torch
from torch import Tensor

from dpmra.generators.interface import TrainingData, load_training_set
from dpmra.generators.params import GanParams
from dpmra.generators.warm_start import load_warm_start
from dpmra.generators.wgan import WganTrainer, run_name
from dpmra.privacy.dpsgd import NORM_RTOL, BookKeepingClipper, ClippedSum, DPGradient
from dpmra.privacy.secret import derive_seed, read_key
from dpmra.shared import checkpoint
from dpmra.shared.atomic import write_json, write_tsv
from dpmra.shared.devices import default_device
from dpmra.shared.pictures import new_figure, save_figure

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
GUESS_FRACTION = 0.1
"""Default guesses per side: k = m / 10 included and k excluded guesses, fixed in advance (no search over k)."""
EPSILON_STEP = 0.05
"""Grid step of the search for the first epsilon the count does not refute; bisection refines it."""
EPSILON_MAX = 100.0
TABLE_COLUMNS = [
    "run", "sigma", "epsilon_rdp", "epsilon_prv", "delta", "canaries", "guesses", "correct", "epsilon_lower_bound",
    "epsilon_ceiling",
]


# --- the bound: Steinke, Nasr and Jagielski 2023, Theorem 5.2 -------------------------------------------------


def theorem_bounds(canaries: int, guesses: int, epsilon: float, delta: float, most: int) -> np.ndarray:
    """Theorem 5.2 for v = 0..most correct guesses: a bound on P[W >= v] for any (epsilon, delta)-DP mechanism.

    P[Bin(r, p) >= v] + 2 m delta max_{1 <= i <= v} P[v - i <= Bin(r, p) < v] / i with p = e^eps / (1 + e^eps),
    r guesses and m canaries; capped at 1.
    """
    p = float(scipy.special.expit(epsilon))
    v = np.arange(most + 1)
    tail = scipy.stats.binom.sf(v - 1, guesses, p)
    below = np.concatenate([[0.0], np.cumsum(scipy.stats.binom.pmf(np.arange(most), guesses, p))])
    i = np.arange(1, most + 1)
    start = v[:, None] - i[None, :]
    window = np.where(start >= 0, below[v][:, None] - below[np.clip(start, 0, None)], 0.0)
    spread = (window / i[None, :]).max(axis=1, initial=0.0)
    return np.minimum(tail + 2 * canaries * delta * spread, 1.0)


def p_value(canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """How likely an (epsilon, delta)-DP mechanism lets `correct` of `guesses` guesses (or more) be right.

    The least of the theorem's bounds over v' <= correct: each also bounds P[W >= correct], and the least is
    non-increasing in the count, so P[p-value of W < alpha] <= alpha holds even where the theorem's bound itself
    is not monotone in v.
    """
    if not 0 <= correct <= guesses <= canaries:
        raise ValueError(f"need 0 <= correct <= guesses <= canaries, got {correct}, {guesses}, {canaries}")
    return float(theorem_bounds(canaries, guesses, epsilon, delta, correct).min())


def epsilon_lower_bound(
    canaries: int, guesses: int, correct: int, delta: float, confidence: float = CONFIDENCE
) -> float:
    """The epsilon below which (epsilon, delta)-DP is refuted at `confidence`: the first epsilon not refuted.

    Taking the first epsilon whose p-value reaches 1 - confidence (not the last refuted one) keeps the bound
    valid without assuming the p-value grows with epsilon: the bound exceeds the true epsilon only if the true
    epsilon was refuted, which happens with probability at most 1 - confidence.
    """
    alpha = 1.0 - confidence

    def refuted(eps: float) -> bool:
        return p_value(canaries, guesses, correct, eps, delta) < alpha

    if not refuted(0.0):
        return 0.0
    low = 0.0
    while refuted(low + EPSILON_STEP):
        low += EPSILON_STEP
        if low > EPSILON_MAX:
            raise ValueError(f"no epsilon up to {EPSILON_MAX} explains {correct} of {guesses} guesses right")
    high = low + EPSILON_STEP
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if refuted(middle) else (low, middle)
    return low


def ceiling(canaries: int, guesses: int, delta: float, confidence: float = CONFIDENCE) -> float:
    """The most this audit can show: the lower bound when every guess is right."""
    return epsilon_lower_bound(canaries, guesses, guesses, delta, confidence)


def check_per_side(per_side: int, canaries: int) -> None:
    """k included and k excluded guesses need 1 <= k <= m / 2."""
    if not 1 <= per_side <= canaries // 2:
        raise ValueError(f"guesses per side must be in 1..{canaries // 2} for {canaries} canaries, got {per_side}")


def guess(scores: np.ndarray, per_side: int) -> np.ndarray:
    """+1 (included) for the k highest scores, -1 (excluded) for the k lowest, 0 (abstain) for the rest."""
    check_per_side(per_side, len(scores))
    order = np.argsort(scores, kind="stable")
    guesses = np.zeros(len(scores), dtype=np.int8)
    guesses[order[:per_side]] = -1
    guesses[order[len(scores) - per_side :]] = 1
    return guesses


def correct_guesses(guesses: np.ndarray, included: np.ndarray) -> int:
    """Guesses that match the inclusion: +1 on an included canary, -1 on an excluded one."""
    return int(((guesses == 1) & included).sum() + ((guesses == -1) & ~included).sum())


# --- the canaries and the audited DP engine -------------------------------------------------------------------


@dataclasses.dataclass
class GradientCanaries:
    """m white-box canaries: disjoint sparse unit directions in the critic's parameters, each in with prob. 1/2."""

    support: Tensor
    """(m, s) flat indices into the concatenated trainable parameters: canary j's coordinates."""
    signs: Tensor
    """(m, s) +-1: u_j = signs_j / sqrt(s) on support_j."""
    included: Tensor
    """(m,) bool: the audit's secret."""
    norm: float
    """Norm of a sampled canary's gradient: the clipping bound every real unit is held to."""
    sample_rate: float
    sampler: torch.Generator
    shapes: list[torch.Size]
    sampled: Tensor
    """(m,) how many updates each canary was sampled into (diagnostic; the scores never read it)."""
    update_sum: Tensor
    """(P,) float64 sum of the privatised updates the engine added to .grad."""

    @property
    def count(self) -> int:
        return len(self.included)

    def draw(self) -> list[Tensor]:
        """The summed gradients of the included canaries Poisson-sampled for one update, shaped as the parameters."""
        hit = (torch.rand(self.count, generator=self.sampler) < self.sample_rate) & self.included
        self.sampled += hit
        rows = torch.nonzero(hit).flatten().to(self.support.device)
        flat = torch.zeros(self.update_sum.numel(), dtype=self.signs.dtype, device=self.signs.device)
        scale = self.norm / math.sqrt(self.support.shape[1])
        flat[self.support[rows].flatten()] = scale * self.signs[rows].flatten()
        return [part.view(shape) for part, shape in zip(flat.split([s.numel() for s in self.shapes]), self.shapes)]

    def record(self, update: list[Tensor]) -> None:
        """Add one privatised update (per parameter, what was added to .grad) to the running sum."""
        self.update_sum += torch.cat([u.flatten() for u in update]).double()

    def scores(self) -> np.ndarray:
        """(m,) <sum of privatised updates, u_j>: the sum over updates of each update's inner product with u_j."""
        picked = self.update_sum[self.support] * self.signs.double()
        return (picked.sum(dim=1) / math.sqrt(self.support.shape[1])).cpu().numpy()

    def state_dict(self) -> dict:
        """What a resumed audit needs to continue bit-identically (the directions and inclusion follow from the key)."""
        return {
            "count": self.count,
            "sampled": self.sampled,
            "update_sum": self.update_sum.cpu(),
            "sampler": self.sampler.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state written by ``state_dict`` for the same canaries."""
        self.sampled = state["sampled"].clone()
        self.update_sum = state["update_sum"].to(self.update_sum.device)
        self.sampler.set_state(state["sampler"].cpu())


def _stream(key: bytes, run: str, name: str) -> torch.Generator:
    """A CPU generator seeded from the secret key, the run and the stream name."""
    return torch.Generator().manual_seed(derive_seed(key, run, name))


def make_canaries(
    params: list[Tensor], count: int, key: bytes, run: str, sample_rate: float, norm: float
) -> GradientCanaries:
    """m canaries over these parameters: inclusion, directions and sampling from the audit's keyed streams."""
    total = sum(p.numel() for p in params)
    if not 2 <= count <= total:
        raise ValueError(f"canaries must be in 2..{total} (the critic's trainable parameters), got {count}")
    width = total // count
    directions = _stream(key, run, "audit-directions")
    device, dtype = params[0].device, params[0].dtype
    support = torch.randperm(total, generator=directions)[: count * width].view(count, width)
    signs = torch.randint(0, 2, (count, width), generator=directions).to(dtype) * 2 - 1
    included = torch.rand(count, generator=_stream(key, run, "audit-inclusion")) < 0.5
    return GradientCanaries(
        support=support.to(device),
        signs=signs.to(device),
        included=included,
        norm=norm,
        sample_rate=sample_rate,
        sampler=_stream(key, run, "audit-sampler"),
        shapes=[p.shape for p in params],
        sampled=torch.zeros(count, dtype=torch.int64),
        update_sum=torch.zeros(total, dtype=torch.float64, device=device),
    )


class CanaryClipper:
    """The engine's clipper, its clipped sum also holding C u_j of each included canary sampled for the update."""

    def __init__(self, clipper: BookKeepingClipper, canaries: GradientCanaries) -> None:
        self.clipper = clipper
        self.canaries = canaries

    def clipped_grad_sum(
        self, inputs: Tensor, per_sample_loss: Callable[[Tensor], Tensor], group_size: int = 1
    ) -> ClippedSum:
        """The clipped sum of the batch's units plus the sampled canaries' gradients: canaries are units too."""
        result = self.clipper.clipped_grad_sum(inputs, per_sample_loss, group_size)
        extra = self.canaries.draw()
        return dataclasses.replace(result, grads=[g + e for g, e in zip(result.grads, extra)])

    def __getattr__(self, name: str):
        """Everything else (parameters, clipping bound, hooks) is the wrapped clipper's."""
        return getattr(self.clipper, name)


class AuditedGradient:
    """The trainer's own DP engine with canaries in its clipped sums, recording each privatised update it adds."""

    def __init__(self, engine: DPGradient, canaries: GradientCanaries) -> None:
        engine.clipper = CanaryClipper(engine.clipper, canaries)
        self.engine = engine
        self.canaries = canaries

    def accumulate(
        self, inputs: Tensor, per_sample_loss: Callable[[Tensor], Tensor] = lambda out: out, group_size: int = 1
    ) -> ClippedSum:
        """The engine's accumulate, then record what it added to each parameter's .grad."""
        params = self.engine.clipper.params
        before = [None if p.grad is None else p.grad.clone() for p in params]
        result = self.engine.accumulate(inputs, per_sample_loss, group_size)
        self.canaries.record([p.grad if b is None else p.grad - b for p, b in zip(params, before)])
        return result

    def __getattr__(self, name: str):
        """Everything else is the engine's."""
        return getattr(self.engine, name)


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
