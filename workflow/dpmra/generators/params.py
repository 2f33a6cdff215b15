"""Every setting of one GAN run (`GanParams`) and one Private Evolution run (`PeParams`), torch-free so that the command line can read its defaults.

The config schema's `gan.*` and `privacy.*` defaults are these (`tests/test_defaults.py` fails when they differ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from dpmra.privacy.delta import PAPER_DELTA


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
    private_blocks: int | None = None
    """The critic's last blocks trained in a warm-started run; the others keep the warm start's public weights.
    None trains every block."""
    placebo_run: bool = False
    """A placebo run (a public stand-in for the training set): its secret streams are its own, so its outputs say
    nothing about the noise of the private run with the same settings."""
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
        if self.private_blocks is not None and self.private_blocks < 1:
            raise ValueError(f"private_blocks must be >= 1 (None: every critic block), got {self.private_blocks}")
        if self.public and self.private_blocks is not None:
            raise ValueError(
                "a public run (the warm start) trains every critic block: private_blocks is for the runs "
                "warm-started from it"
            )
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
class PeParams:
    """Every setting of one Private Evolution run."""

    sigma: float = math.inf
    """Noise std on every vote count (sensitivity 1 per privacy unit); math.inf: no noise (not private)."""
    iterations: int = 3
    """T: rounds of votes, each one Gaussian mechanism."""
    candidates: int = 32
    """M: candidates per round."""
    threshold: float = 2.0
    """Counts below threshold x sigma are dropped (H)."""
    variation: float = 0.5
    """Variation scale of the first round; halved every round."""
    api: str = "simulator"
    widen: float = 2.0
    """Simulator API: the public site's values divided and multiplied by this."""
    unit: str = "patch"
    seed: int = 0
    """The run index: seeds the public streams (candidates, variations, resampling)."""
    delta: float | str | None = None
    placebo_run: bool = False

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.candidates < 2 or self.threshold < 0 or not 0 < self.variation <= 1:
            raise ValueError("PE needs iterations >= 1, candidates >= 2, threshold >= 0 and 0 < variation <= 1")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive (math.inf: no noise), got {self.sigma}")
        if self.api not in ("simulator", "generator") or self.unit not in ("patch", "patient"):
            raise ValueError(f"api must be simulator or generator and unit patch or patient, got {self.api}, {self.unit}")

    def scale(self, iteration: int) -> float:
        """The variation scale after round `iteration` (1-based): halved each round."""
        return self.variation * 0.5 ** (iteration - 1)
