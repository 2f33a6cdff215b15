"""The WGAN family's trainer: a Wasserstein GAN on image-label patches, privately (DP-SGD on the critic) or not.

`WganTrainer` holds one run's models, optimisers, random streams and accounting; the stage that runs it and
writes the run's files is `dpmra.generators.train`. Two critic loops:

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

``private_blocks`` (after a public warm start only): the critic's first blocks stay at the warm start's public
weights (no gradient, clipping share, noise or optimiser state); the noise spans only the trained dimension.

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
import math
import time
from contextlib import contextmanager
from dataclasses import asdict
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from dpmra.generators.critic import Critic, train_last_blocks
from dpmra.generators.generator import Generator
from dpmra.generators.interface import TrainingData
from dpmra.generators.params import GanParams
from dpmra.generators.warm_start import warm_optimizers, warm_start
from dpmra.privacy.accountants import TrainingAccountant
from dpmra.privacy.delta import resolve_delta
from dpmra.privacy.dpsgd import DPGradient
from dpmra.privacy.secret import derive_seed
from dpmra.shared import checkpoint

GRID_SAMPLES = 8


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
    epochs continue a run) or plotting; private_blocks and placebo_run only where set, so the other runs keep theirs."""
    dropped = {"epochs", "sample_every"} | {k for k in ("private_blocks", "placebo_run") if not getattr(params, k)}
    settings = {k: v for k, v in asdict(params).items() if k not in dropped}
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
        self.critic_trained = train_last_blocks(self.critic, params.private_blocks, pretrained is not None)
        self.intensity = data.intensity
        self.opt_g = _optimizer(self.generator.parameters(), params, params.lr_generator or params.lr)
        self.opt_d = _optimizer(self.critic_trained, params, params.lr)
        if pretrained is not None:
            optimizers = {"opt_g": (self.opt_g, self.generator), "opt_d": (self.opt_d, self.critic)}
            warm_optimizers(optimizers, pretrained, params.optimizer)
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

    @property
    def trained_parameters(self) -> int:
        """How many critic parameters this run trains (DP-SGD's noise has this dimension)."""
        return sum(p.numel() for p in self.critic_trained)

    def _finish_critic_step(self) -> None:
        self.opt_d.step()
        with torch.no_grad():
            for p in self.critic_trained:
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


def _optimizer(parameters: Iterable[nn.Parameter], params: GanParams, lr: float) -> torch.optim.Optimizer:
    """RMSprop (the paper's) or Adam with betas (beta1, 0.9) over the parameters a run trains."""
    if params.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, betas=(params.beta1, 0.9))
    return torch.optim.RMSprop(parameters, lr=lr)


def _score_gap(real_scores: Tensor, fake_scores: Tensor) -> float:
    """mean D(real) - mean D(fake), the critic's Wasserstein estimate; nan for an empty real batch."""
    if real_scores.numel() == 0:
        return math.nan
    return (real_scores.mean() - fake_scores.mean()).item()
