"""Training a Wasserstein GAN on image-label patches, privately (DP-SGD on the critic) or not.

The stage behind ``results/gan/sigma~{sigma}/seed~{seed}/``. Two critic loops:

- ``fresh`` (default): every critic update draws its own Poisson batch (rate q = batch/N);
  only the real-data term of the critic loss D(fake) - D(real) is privatised (per-sample
  clip to C, one Gaussian draw of std sigma C, divided by the expected batch size), the
  fake-data term is added without noise. One accountant charge per critic update.
- ``paper`` (the published loop): one Poisson batch per generator iteration, reused for
  n_critic iterations of {clipped+noised step on the real batch; clipped+noised step on a
  fake batch; weight clipping}. Each iteration counts as one critic step. Both the
  paper's epsilon and the bound valid for that loop are reported.

sigma = inf is the non-private baseline: a plain WGAN, no clipping, no noise, epsilon inf.
An epoch is round(1/q) generator iterations, i.e. n_critic/q critic updates (the paper's
meaning). Fake batches always have the expected batch size: their size must not reveal
the private batch's.

Privacy unit (``unit``): ``patch`` (the paper's) treats each training pair as a record;
``patient`` samples patients by Poisson sampling (rate q = patient_batch / patients),
takes ``patient_patches`` of each sampled patient's pairs, and clips the sum of that
patient's per-pair gradients to C as one unit, so one patient moves an update by at most C.

The diagnostics in ``epochs.tsv`` (losses, Wasserstein estimate) are computed on private
batches outside the DP mechanism: they are for the operator, not for release. The
generator and its samples are covered by the reported epsilon (post-processing).

Randomness: the streams the guarantee relies on (Poisson sampling and the Gaussian noise)
are seeded from the secret key (``dpmra.privacy.secret``) and the run's settings, never from a
value that appears in an output; the public streams (initial weights, latent vectors, the
fixed sample grid) come from the run seed. Checkpoints store the secret streams' states and
stay private like the key.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm import tqdm

from dpmra.generators.critic import Critic
from dpmra.generators.generator import Generator, build_generator, sample_pairs
from dpmra.privacy.accountants import PAPER_DELTA, TrainingAccountant, resolve_delta
from dpmra.privacy.dpsgd import DPGradient
from dpmra.privacy.secret import derive_seed, load_key
from dpmra.shared import checkpoint
from dpmra.shared.devices import default_device

logger = logging.getLogger(__name__)

COLUMNS = [
    "epoch",
    "critic_steps",
    "loss_d",
    "loss_g",
    "wasserstein",
    "epsilon_rdp",
    "epsilon_prv",
    "unit",
    "seconds",
]
PAPER_COLUMNS = ["epsilon_rdp_paper"]
GRID_SAMPLES = 8


@dataclass(frozen=True)
class GanParams:
    """Everything that defines a GAN training run (the paper's values as defaults)."""

    sigma: float = math.inf
    """Noise multiplier of the critic's DP-SGD; math.inf = non-private."""
    epochs: int = 50
    batch_size: int = 32
    """Expected batch size; the Poisson sampling rate is batch_size / N."""
    n_critic: int = 5
    lr: float = 5e-5
    """Learning rate of the critic (and of the generator unless lr_generator is set)."""
    lr_generator: float | None = None
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """RMSprop (the paper's) or Adam with betas (beta1, 0.9)."""
    beta1: float = 0.5
    ema: float = 0.0
    """Decay of an exponential moving average of the generator's weights, released instead of the last
    weights (post-processing); 0 = off."""
    clipping: Literal["flat", "normalised"] = "flat"
    """Per-sample clipping: flat min(1, C/||g||), or normalised C/(||g|| + gamma) (Bu et al. 2023)."""
    clip_weight: float = 0.01
    """WGAN weight clipping of the critic, after each critic update."""
    max_grad_norm: float = 1.0
    """Per-sample gradient clipping norm C."""
    width_g: int = 96
    width_d: int = 96
    latent_dim: int = 128
    mode: Literal["fresh", "paper"] = "fresh"
    seed: int = 0
    """The run index of the study: seeds the public streams only (initial weights, latents)."""
    delta: float | str | None = None
    """Target delta; None means 1 / (10 N) rounded down, "1/N" the paper's (N privacy units)."""
    unit: Literal["patch", "patient"] = "patch"
    """Privacy unit: one training pair (the paper's) or one training patient."""
    patient_batch: float = 2.0
    """Expected patients per batch (unit patient); the Poisson rate is patient_batch / patients."""
    patient_patches: int = 16
    """Pairs taken from each sampled patient per critic update (unit patient)."""
    public: bool = False
    """The training set is declared public (a warm start's): no private data, so epsilon 0 and no noise."""
    sample_every: int = 1
    """Write a sample grid every this many epochs (and after the last)."""

    def __post_init__(self) -> None:
        if self.mode not in ("fresh", "paper"):
            raise ValueError(f"mode must be 'fresh' or 'paper', got {self.mode!r}")
        if self.optimizer not in ("rmsprop", "adam") or self.clipping not in ("flat", "normalised"):
            raise ValueError(f"unknown optimizer {self.optimizer!r} or clipping {self.clipping!r}")
        if not (0 <= self.ema < 1 and 0 <= self.beta1 < 1):
            raise ValueError(f"ema and beta1 must be in [0, 1), got {self.ema}, {self.beta1}")
        if self.lr_generator is not None and not self.lr_generator > 0:
            raise ValueError(f"lr_generator must be positive, got {self.lr_generator}")
        if self.unit not in ("patch", "patient"):
            raise ValueError(f"unit must be 'patch' or 'patient', got {self.unit!r}")
        if self.public and math.isfinite(self.sigma):
            raise ValueError("a public training set needs no noise: train it with sigma = inf")
        if self.unit == "patient" and self.mode != "fresh":
            raise ValueError("the patient unit is implemented for the fresh loop only")
        if not (self.patient_batch > 0 and self.patient_patches >= 1):
            raise ValueError("patient_batch must be positive and patient_patches >= 1")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive (math.inf for non-private), got {self.sigma}")
        positive = ("epochs", "batch_size", "n_critic", "width_g", "width_d", "latent_dim", "sample_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.clip_weight > 0 and self.max_grad_norm > 0):
            raise ValueError("lr, clip_weight and max_grad_norm must be positive")
        if self.delta is not None and self.delta != PAPER_DELTA and not 0 < float(self.delta) < 1:
            raise ValueError(f"delta must be in (0, 1) or '1/N', got {self.delta}")

    @property
    def private(self) -> bool:
        return math.isfinite(self.sigma)


@dataclass(frozen=True)
class TrainingData:
    """The GAN's private training pairs and the patient each came from."""

    x: Tensor
    """float32 (N, 2, P, P) in [-1, 1]."""
    patient: Tensor
    """int64 (N,): index of the pair's patient, 0 .. patients - 1."""
    intensity: str = "per_patch"
    """How channel 0 maps to the image scale: "volume" (image / 127.5 - 1) or "per_patch" (min-max, the paper's)."""

    @property
    def patients(self) -> int:
        return int(self.patient.max()) + 1

    def max_per_patient(self) -> int:
        """The most pairs one patient contributes: the group size of the per-patient guarantee."""
        return int(torch.bincount(self.patient).max())


def load_training_set(path: Path) -> TrainingData:
    """The ``x`` and ``patient`` arrays of a training-set .npz, checked."""
    with np.load(Path(path)) as npz:
        for name in ("x", "patient"):
            if name not in npz:
                raise ValueError(f"{path}: no array {name!r} (rebuild it with `dpmra training-set`)")
        x, patient = npz["x"], npz["patient"]
        intensity = str(npz["intensity"]) if "intensity" in npz else "per_patch"
    if x.ndim != 4 or x.shape[1] != 2 or x.shape[2] != x.shape[3] or x.shape[0] < 1:
        raise ValueError(f"{path}: 'x' must have shape (N, 2, P, P) with N >= 1, got {x.shape}")
    if x.dtype != np.float32:
        raise ValueError(f"{path}: 'x' must be float32, got {x.dtype}")
    if not np.isfinite(x).all() or x.min() < -1 or x.max() > 1:
        raise ValueError(f"{path}: 'x' must be finite and within [-1, 1]")
    if patient.shape != (x.shape[0],) or patient.min() < 0 or len(np.unique(patient)) != patient.max() + 1:
        raise ValueError(f"{path}: 'patient' must give each pair a patient index 0 .. patients - 1")
    return TrainingData(torch.from_numpy(x), torch.from_numpy(patient.astype(np.int64)), intensity)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients to a module's parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def _mean(values: list[float]) -> float:
    valid = [v for v in values if math.isfinite(v)]
    return float(np.mean(valid)) if valid else math.nan


PUBLIC_STREAMS = ("init", "latent", "fixed_z")
SECRET_STREAMS = ("sampler", "noise")
"""The streams the DP guarantee relies on: seeded from the secret key, never from the run seed."""


def _public_seeds(seed: int) -> dict[str, int]:
    """Seeds of the streams that may be public (initial weights, latents), derived from the run seed."""
    values = np.random.SeedSequence(seed).generate_state(len(PUBLIC_STREAMS), dtype=np.uint64)
    return {name: int(v) % 2**63 for name, v in zip(PUBLIC_STREAMS, values)}


def run_name(params: GanParams) -> str:
    """The run's identity for the keyed streams: every setting that shapes training, but not its length (more
    epochs continue a run) or plotting."""
    settings = {k: v for k, v in asdict(params).items() if k not in ("epochs", "sample_every")}
    return "gan:" + json.dumps(settings, sort_keys=True)


def _secret_seeds(key: bytes, params: GanParams) -> dict[str, int]:
    """Seeds of the sampling and noise streams: HMAC of the secret key, the run and the stream name."""
    return {name: derive_seed(key, run_name(params), name) for name in SECRET_STREAMS}


def key_check(key: bytes, params: GanParams) -> str:
    """A tag that tells whether a checkpoint was made with this key (kept in checkpoints only)."""
    return hmac.new(key, (run_name(params) + "\x00checkpoint").encode(), hashlib.sha256).hexdigest()


class WganTrainer:
    """The models, optimisers, random streams and privacy accounting of one run.

    All randomness after initialisation comes from the run's own generators (Poisson
    sampling and DP noise from the secret key; latent vectors from the run seed), whose
    states the checkpoints hold; the global RNGs are neither used nor changed.
    """

    def __init__(
        self, data: TrainingData, params: GanParams, device: torch.device, key: bytes, pretrained: dict | None = None
    ) -> None:
        self.params = params
        self.device = device
        self.data = data.x.to(device)
        self.patient = data.patient
        self.max_per_patient = data.max_per_patient()
        n, _, patch, _ = data.x.shape
        self.units = data.patients if params.unit == "patient" else n
        expected_units = params.patient_batch if params.unit == "patient" else params.batch_size
        self.sample_rate = min(1.0, expected_units / self.units)
        self.group_size = params.patient_patches if params.unit == "patient" else 1
        self.expected_batch = self.sample_rate * self.units * self.group_size
        self.fake_batch = max(1, round(self.expected_batch))
        self.iterations_per_epoch = max(1, round(1 / self.sample_rate))
        self.delta = resolve_delta(params.delta, self.units, "--delta")
        self.members = [torch.nonzero(self.patient == p).flatten() for p in range(data.patients)]
        self.data_fingerprint = hashlib.sha256(data.x.cpu().numpy().tobytes()).hexdigest()
        self.key_check = key_check(key, params)
        seeds = {**_public_seeds(params.seed), **_secret_seeds(key, params)}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds["init"])
            self.generator = Generator(patch, params.width_g, params.latent_dim).to(device)
            self.critic = Critic(patch, params.width_d).to(device)
        self.pretrained = warm_start(self.generator, self.critic, pretrained)
        self.intensity = data.intensity
        self.opt_g = _optimizer(self.generator, params, params.lr_generator or params.lr)
        self.opt_d = _optimizer(self.critic, params, params.lr)
        if pretrained is not None:
            warm_optimizers({"opt_g": self.opt_g, "opt_d": self.opt_d}, pretrained, params.optimizer)
        self.ema_generator = copy.deepcopy(self.generator).requires_grad_(False) if params.ema else None
        self.rng = {
            "sampler": torch.Generator().manual_seed(seeds["sampler"]),
            "noise": torch.Generator(device).manual_seed(seeds["noise"]),
            "latent": torch.Generator(device).manual_seed(seeds["latent"]),
        }
        fixed = torch.Generator().manual_seed(seeds["fixed_z"])
        self.fixed_z = torch.randn(GRID_SAMPLES, params.latent_dim, generator=fixed).to(device)
        self.dp = (
            DPGradient(
                self.critic,
                params.max_grad_norm,
                params.sigma,
                self.expected_batch,
                self.rng["noise"],
                normalised=params.clipping == "normalised",
            )
            if params.private
            else None
        )
        self.accountant = TrainingAccountant(params.sigma, self.sample_rate, params.n_critic, params.mode)
        self.epoch = 0
        self.critic_steps = 0
        self.generator_steps = 0
        self.rows: list[dict[str, float]] = []

    # --- one step each -------------------------------------------------------------

    def poisson_batch(self) -> Tensor:
        """Each privacy unit independently with probability q (the size varies, may be 0).

        Unit patient: each sampled patient's ``patient_patches`` pairs, drawn without replacement
        (with replacement if it has fewer), consecutive in the batch.
        """
        mask = torch.rand(self.units, generator=self.rng["sampler"]) < self.sample_rate
        if self.params.unit == "patch":
            return self.data[mask.to(self.device)]
        rows = [self._patient_rows(p) for p in torch.nonzero(mask).flatten().tolist()]
        if not rows:
            return self.data[:0]
        return self.data[torch.cat(rows).to(self.device)]

    def _patient_rows(self, patient: int) -> Tensor:
        """``patient_patches`` row indices of one patient, drawn from the secret sampling stream."""
        members, m = self.members[patient], self.params.patient_patches
        if len(members) >= m:
            pick = torch.randperm(len(members), generator=self.rng["sampler"])[:m]
        else:
            pick = torch.randint(len(members), (m,), generator=self.rng["sampler"])
        return members[pick]

    def fakes(self) -> Tensor:
        """A batch of expected-batch size from the generator, detached."""
        z = torch.randn(self.fake_batch, self.params.latent_dim, generator=self.rng["latent"], device=self.device)
        with torch.no_grad():
            return self.generator(z)

    def _privatised(self, batch: Tensor, sign: float) -> Tensor:
        """Add the gradient of sign * mean D(batch) (privatised if DP); return D(batch) detached."""
        if self.dp is not None:
            return self.dp.accumulate(batch, lambda scores: sign * scores, self.group_size).outputs
        if batch.shape[0] == 0:
            return batch.new_zeros(0)
        scores = self.critic(batch)
        (sign * scores.mean()).backward()
        return scores.detach()

    def _finish_critic_step(self) -> None:
        self.opt_d.step()
        with torch.no_grad():
            for p in self.critic.parameters():
                p.clamp_(-self.params.clip_weight, self.params.clip_weight)
        self.critic_steps += 1

    def critic_update_fresh(self) -> float:
        """One critic update on a fresh Poisson batch; returns D(real) - D(fake) (nan if empty)."""
        real, fake = self.poisson_batch(), self.fakes()
        self.opt_d.zero_grad(set_to_none=True)
        real_scores = self._privatised(real, -1.0)
        fake_scores = self.critic(fake)
        fake_scores.mean().backward()
        self._finish_critic_step()
        return _score_gap(real_scores, fake_scores.detach())

    def critic_update_paper(self, real: Tensor) -> float:
        """One iteration of the published loop: a step on the real batch, then one on a fake batch."""
        self.opt_d.zero_grad(set_to_none=True)
        real_scores = self._privatised(real, -1.0)
        self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)
        fake_scores = self._privatised(self.fakes(), 1.0)
        self._finish_critic_step()
        return _score_gap(real_scores, fake_scores)

    def generator_step(self) -> float:
        """One generator update on -mean D(G(z)); returns that loss."""
        z = torch.randn(self.fake_batch, self.params.latent_dim, generator=self.rng["latent"], device=self.device)
        self.opt_g.zero_grad(set_to_none=True)
        with frozen(self.critic):
            loss = -self.critic(self.generator(z)).mean()
            loss.backward()
        self.opt_g.step()
        self._update_ema()
        self.generator_steps += 1
        return loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Move the averaged generator towards the current one (weights by decay, BatchNorm buffers copied)."""
        if self.ema_generator is None:
            return
        for avg, current in zip(self.ema_generator.parameters(), self.generator.parameters()):
            avg.lerp_(current, 1 - self.params.ema)
        for avg, current in zip(self.ema_generator.buffers(), self.generator.buffers()):
            avg.copy_(current)

    @property
    def released_generator(self) -> Generator:
        """The generator that is released: the moving average where configured, else the current one."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    def generator_iteration(self) -> tuple[list[float], float]:
        """n_critic critic updates then one generator update; returns the score gaps and loss_g."""
        if self.params.mode == "fresh":
            gaps = [self.critic_update_fresh() for _ in range(self.params.n_critic)]
        else:
            real = self.poisson_batch()
            gaps = [self.critic_update_paper(real) for _ in range(self.params.n_critic)]
        return gaps, self.generator_step()

    # --- an epoch ------------------------------------------------------------------

    def run_epoch(self) -> dict[str, float]:
        """Train one epoch, charge the accountant, and record the epoch's row."""
        start = time.perf_counter()
        gaps: list[float] = []
        losses_g: list[float] = []
        for _ in tqdm(range(self.iterations_per_epoch), desc=f"epoch {self.epoch + 1}", leave=False):
            g, loss_g = self.generator_iteration()
            gaps.extend(g)
            losses_g.append(loss_g)
        if not self.params.public:  # a public training set costs no privacy
            self.accountant.charge_generator_iterations(self.iterations_per_epoch)
        self.epoch += 1
        wasserstein = _mean(gaps)
        row = {
            "epoch": self.epoch,
            "critic_steps": self.critic_steps,
            "loss_d": -wasserstein,
            "loss_g": _mean(losses_g),
            "wasserstein": wasserstein,
            **self.accountant.epsilons(self.delta),
            "unit": self.params.unit,
            "seconds": time.perf_counter() - start,
        }
        self.rows.append(row)
        return row

    # --- state ---------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically (on the same device)."""
        return {
            "epoch": self.epoch,
            "critic_steps": self.critic_steps,
            "generator_steps": self.generator_steps,
            "generator": self.generator.state_dict(),
            "ema_generator": None if self.ema_generator is None else self.ema_generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": {name: gen.get_state() for name, gen in self.rng.items()},
            "accountant": self.accountant.state_dict(),
            "rows": self.rows,
            "params": asdict(self.params),
            "data": self.data_fingerprint,
            "key_check": self.key_check,
            "pretrained": self.pretrained,
            "generator_config": self.generator.config(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state written by ``state_dict`` of this run (see ``resume_conflict``)."""
        conflict = self.resume_conflict(state)
        if conflict:
            raise ValueError(f"checkpoint is not of this run: {conflict}")
        self.epoch = state["epoch"]
        self.critic_steps = state["critic_steps"]
        self.generator_steps = state["generator_steps"]
        self.generator.load_state_dict(state["generator"])
        if self.ema_generator is not None:
            self.ema_generator.load_state_dict(state["ema_generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for name, gen in self.rng.items():
            gen.set_state(state["rng"][name].cpu())  # generator states are CPU byte tensors
        self.accountant.load_state_dict(state["accountant"])
        self.rows = [dict(r) for r in state["rows"]]

    def resume_conflict(self, state: dict) -> str | None:
        """Why a checkpoint cannot continue this run (other settings, other data, beyond the epochs), or None."""
        changed = checkpoint.changed_settings(state["params"], asdict(self.params))
        if changed:
            return changed
        if state.get("data") != self.data_fingerprint:
            return "other training data"
        if state.get("key_check") != self.key_check:
            return "made with another secret key"
        if state.get("pretrained") != self.pretrained:
            return "another warm start"
        if state["epoch"] > self.params.epochs:
            return f"epoch {state['epoch']} is beyond the requested {self.params.epochs}"
        return None

    @torch.no_grad()
    def sample_fixed(self) -> np.ndarray:
        """The released generator's output on the run's fixed latent vectors (eval mode)."""
        generator = self.released_generator
        generator.eval()
        try:
            return generator(self.fixed_z).cpu().numpy()
        finally:
            generator.train()


def load_warm_start(path: Path) -> dict:
    """A public run's generator.pt, checked: only a run declared public (``--public``) may warm-start others."""
    stored = checkpoint.load(path)
    if not stored.get("params", {}).get("public") or "critic" not in stored:
        raise ValueError(f"{path}: not the generator.pt of a run on a public training set (train it with --public)")
    return stored


def warm_start(generator: Generator, critic: Critic, pretrained: dict | None) -> dict | None:
    """Load a public run's generator and critic weights; return what the card says about them (or None)."""
    if pretrained is None:
        return None
    generator.load_state_dict(pretrained["state_dict"])
    critic.load_state_dict(pretrained["critic"])
    digest = hashlib.sha256()
    for name, tensor in sorted(pretrained["state_dict"].items()) + sorted(pretrained["critic"].items()):
        digest.update(name.encode() + tensor.cpu().numpy().tobytes())
    return {
        "training_set_size": pretrained["training_set_size"],
        "epochs": pretrained["epochs"],
        "weights_sha256": digest.hexdigest(),
    }


def warm_optimizers(optimizers: dict[str, torch.optim.Optimizer], pretrained: dict, kind: str) -> None:
    """Continue the public run's optimiser statistics (same optimiser only), keeping this run's learning rates.

    A fresh RMSprop divides the first gradients by sqrt(0.01 g^2), a step of 10 lr on every weight,
    which undoes a warm start within a few updates; the public run's statistics are public.
    """
    if pretrained.get("params", {}).get("optimizer") != kind or "optimizers" not in pretrained:
        return
    for name, optimizer in optimizers.items():
        lrs = [group["lr"] for group in optimizer.param_groups]
        optimizer.load_state_dict(pretrained["optimizers"][name])
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr


def _optimizer(module: nn.Module, params: GanParams, lr: float) -> torch.optim.Optimizer:
    """RMSprop (the paper's) or Adam with betas (beta1, 0.9) over a module's parameters."""
    if params.optimizer == "adam":
        return torch.optim.Adam(module.parameters(), lr=lr, betas=(params.beta1, 0.9))
    return torch.optim.RMSprop(module.parameters(), lr=lr)


def _score_gap(real_scores: Tensor, fake_scores: Tensor) -> float:
    """mean D(real) - mean D(fake), the critic's Wasserstein estimate; nan for an empty real batch."""
    if real_scores.numel() == 0:
        return math.nan
    return (real_scores.mean() - fake_scores.mean()).item()


# --- outputs -----------------------------------------------------------------------


def write_epochs_table(rows: list[dict[str, float]], path: Path, paper: bool) -> None:
    """epochs.tsv: the fixed columns (plus the paper's epsilon in paper mode), one row per epoch."""
    columns = COLUMNS + (PAPER_COLUMNS if paper else [])
    table = pd.DataFrame(rows, columns=columns)
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, sep="\t", index=False)
    tmp.replace(path)


def plot_losses(rows: list[dict[str, float]], path: Path) -> None:
    """loss.png: critic and generator losses and the Wasserstein estimate per epoch."""
    table = pd.DataFrame(rows)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for column in ("loss_d", "loss_g", "wasserstein"):
        ax.plot(table["epoch"], table[column], marker=".", label=column)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (epoch mean)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_epsilon(rows: list[dict[str, float]], path: Path, delta: float) -> None:
    """epsilon.png: epsilon per epoch by each accountant (nothing to draw for sigma = inf)."""
    table = pd.DataFrame(rows)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    labels = {
        "epsilon_rdp": "RDP (bound for the loop run)",
        "epsilon_prv": "PRV (bound for the loop run)",
        "epsilon_rdp_paper": "RDP, the paper's accounting",
    }
    for column, label in labels.items():
        if column in table and np.isfinite(table[column]).any():
            ax.plot(table["epoch"], table[column], marker=".", label=label)
    if not np.isfinite(table["epsilon_rdp"]).any():
        ax.text(0.5, 0.5, "non-private: epsilon = inf", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"epsilon (delta = {delta:.2g})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_samples(pairs: np.ndarray, path: Path, title: str, columns: int = 4) -> None:
    """A grid of image-label pairs (image left, label right), values in [-1, 1]."""
    n, _, p, _ = pairs.shape
    rows = math.ceil(n / columns)
    gap = max(1, p // 16)
    canvas = np.full((rows * (p + gap), columns * (2 * p + 2 * gap)), -1.0, dtype=np.float32)
    for k, (image, label) in enumerate(pairs):
        r, c = divmod(k, columns)
        top, left = r * (p + gap), c * (2 * p + 2 * gap)
        canvas[top : top + p, left : left + p] = image
        canvas[top : top + p, left + p + gap : left + 2 * p + gap] = label
    fig = Figure(figsize=(2 * columns, rows + 0.6))
    ax = fig.subplots()
    ax.imshow(canvas, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _epsilon_text(row: dict[str, float], delta: float) -> str:
    eps = row["epsilon_rdp"]
    shown = "inf" if math.isinf(eps) else f"{eps:.2f}"
    return f"epoch {row['epoch']}: epsilon = {shown} (RDP, delta = {delta:.2g})"


def write_generator(trainer: WganTrainer, path: Path) -> None:
    """generator.pt: weights, constructor args, epsilon and run parameters (weights_only-loadable)."""
    last = trainer.rows[-1]
    epsilons = {k: last[k] for k in ("epsilon_rdp", "epsilon_prv", *PAPER_COLUMNS) if k in last}
    checkpoint.save_atomic(
        {
            "state_dict": {k: v.cpu() for k, v in trainer.released_generator.state_dict().items()},
            "intensity": trainer.intensity,
            "config": trainer.generator.config(),
            "epsilon": epsilons,
            "delta": trainer.delta,
            "epochs": trainer.epoch,
            "critic_steps": trainer.critic_steps,
            "sample_rate": trainer.sample_rate,
            "training_set_size": len(trainer.data),
            "unit": trainer.params.unit,
            "units": trainer.units,
            "max_patches_per_patient": trainer.max_per_patient,
            "patches_per_unit_step": trainer.group_size,
            "critic": {k: v.cpu() for k, v in trainer.critic.state_dict().items()},
            "pretrained": trainer.pretrained,
            "params": asdict(trainer.params),
            **_public_optimizers(trainer),
        },
        path,
    )


def _public_optimizers(trainer: WganTrainer) -> dict:
    """A public run's optimiser states, for the runs it warm-starts (a private run's are not released)."""
    if not trainer.params.public:
        return {}
    return {"optimizers": {"opt_g": trainer.opt_g.state_dict(), "opt_d": trainer.opt_d.state_dict()}}


# --- the stage ---------------------------------------------------------------------


def resume(trainer: WganTrainer, ckpt_dir: Path, device: torch.device) -> None:
    """Continue from the latest checkpoint of this run; checkpoints of another run are deleted, not trusted.

    Snakemake reruns a GAN job when its settings or training data change; the checkpoints it kept are
    then from another run (or, with fewer epochs, beyond this one), and training starts afresh.
    """
    for path in sorted(ckpt_dir.glob("epoch_*.pt"), reverse=True):
        state = checkpoint.load(path, map_location=device)
        conflict = trainer.resume_conflict(state)
        if conflict is None:
            trainer.load_state_dict(state)
            logger.info("resuming from %s (epoch %d)", path, trainer.epoch)
            return
        logger.info("discarding %s: %s", path, conflict)
        path.unlink()


def train_gan(
    train_set: Path, out_dir: Path, params: GanParams, secret: Path, pretrained: Path | None = None
) -> None:
    """Train (or resume) a WGAN on ``train_set`` and write checkpoints, tables, plots, generator.pt.

    The sampling and noise streams are keyed by the key file ``secret`` (created on first use). With
    ``pretrained`` (the generator.pt of a run on a public training set) generator and critic start from its weights.
    Resumes from the last ``out_dir/checkpoints/epoch_*.pt``; a run killed mid-epoch
    redoes that epoch.
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    device = default_device()
    warm = load_warm_start(pretrained) if pretrained else None
    trainer = WganTrainer(load_training_set(train_set), params, device, load_key(secret), warm)
    resume(trainer, ckpt_dir, device)
    paper = params.mode == "paper"
    write_epochs_table(trainer.rows, out_dir / "epochs.tsv", paper)
    epochs = tqdm(
        range(trainer.epoch, params.epochs), desc="epochs", initial=trainer.epoch, total=params.epochs
    )
    for _ in epochs:
        row = trainer.run_epoch()
        checkpoint.save_atomic(trainer.state_dict(), checkpoint.epoch_path(ckpt_dir, trainer.epoch))
        write_epochs_table(trainer.rows, out_dir / "epochs.tsv", paper)
        if trainer.epoch % params.sample_every == 0 or trainer.epoch == params.epochs:
            path = out_dir / "samples" / f"epoch_{trainer.epoch:03d}.png"
            plot_samples(trainer.sample_fixed(), path, _epsilon_text(row, trainer.delta))
        logger.info(
            "epoch %d/%d: critic_steps=%d loss_d=%.4g loss_g=%.4g wasserstein=%.4g "
            "epsilon_rdp=%.3g epsilon_prv=%.3g (%.1f s)",
            row["epoch"],
            params.epochs,
            row["critic_steps"],
            row["loss_d"],
            row["loss_g"],
            row["wasserstein"],
            row["epsilon_rdp"],
            row["epsilon_prv"],
            row["seconds"],
        )
    if not trainer.rows:
        raise ValueError("no epoch was trained")
    plot_samples(trainer.sample_fixed(), out_dir / "samples.png", _epsilon_text(trainer.rows[-1], trainer.delta))
    plot_losses(trainer.rows, out_dir / "loss.png")
    plot_epsilon(trainer.rows, out_dir / "epsilon.png", trainer.delta)
    write_generator(trainer, out_dir / "generator.pt")


def load_generator(generator_path: Path, device: torch.device | None = None) -> Generator:
    """Rebuild the generator stored in a generator.pt, in eval mode."""
    stored = checkpoint.load(generator_path)
    return build_generator(stored["config"], stored["state_dict"], device or default_device())


def sample_generator(generator_path: Path, n: int, seed: int, batch_size: int = 256) -> np.ndarray:
    """n generated pairs, float32 (n, 2, P, P) in [-1, 1], deterministic from the seed."""
    return sample_pairs(load_generator(generator_path), n, seed, batch_size)
