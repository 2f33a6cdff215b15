"""Settings of a U-Net run (`UnetParams`) and of prediction, torch-free so that the command line reads their defaults.

The config schema's `unet.*` defaults are these (`tests/test_defaults.py` fails when they differ); `unet.lr`,
`unet.dropout` and `unet.augment` are lists there (the grid of settings), and the single run's defaults below are
the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

THRESHOLD = 0.5
"""Predicted probability above which a voxel is vessel."""
OVERLAP = 0.5
"""Share of a window's side that neighbouring windows overlap by: half, nnU-Net's step (MONAI's default is 0.25)."""
LOSSES = ("dice", "dice_bce")
"""Training losses: the paper's soft Dice, or soft Dice + binary cross-entropy (MONAI's ``DiceCELoss`` convention)."""
PREDICT_BATCH = 64
"""Windows per model call in prediction."""


def check_loss(loss: str) -> None:
    """Refuse a training loss that is not one of LOSSES."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


@dataclass(frozen=True)
class UnetParams:
    """Everything that defines a U-Net training run (the paper's values as defaults)."""

    lr: float = 1e-4
    dropout: float = 0.0
    augment: bool = False
    batch_size: int = 64
    epochs: int = 15
    base_width: int = 32
    seed: int = 0
    loss: str = "dice"

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_loss(self.loss)
        for name in ("batch_size", "epochs", "base_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
