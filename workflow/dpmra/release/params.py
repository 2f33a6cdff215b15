"""How a generator becomes a released dataset (`ReleaseParams`, `Validation`), torch-free for the command line.

The config schema's `synth.*` defaults are these (`tests/test_defaults.py` fails when they differ).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dpmra.features.backbones import AUTO

CHECKPOINT_CHOICES = ("last", "val_fd")


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


@dataclass(frozen=True)
class Validation:
    """Held-out patches (never training data) and the feature extractor that judge the epochs for "val_fd"."""

    patches: list[Path]
    backbone: str = AUTO
    weights: Path | None = None
