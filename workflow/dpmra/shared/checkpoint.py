"""Atomic checkpoint files: write to a temporary file, then rename over the target.

A run killed while writing leaves the previous file intact, never a truncated one.
Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from dpmra.shared.atomic import write_atomic

_EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt")


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to ``path`` atomically (a temporary file beside it, then a rename)."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint written by ``save_atomic`` (tensors and plain values only)."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def epoch_path(directory: Path, epoch: int) -> Path:
    """``directory/epoch_{epoch:03d}.pt``."""
    return Path(directory) / f"epoch_{epoch:03d}.pt"


def latest_epoch_checkpoint(directory: Path) -> Path | None:
    """The ``epoch_*.pt`` file with the highest epoch number in ``directory``, if any."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _EPOCH_FILE.fullmatch(p.name))]
    return max(found)[1] if found else None


def changed_settings(stored: dict, current: dict) -> str | None:
    """Which run settings other than `epochs` differ between a checkpoint and this run, as one phrase; None if none."""
    differ = [key for key in current if key != "epochs" and stored.get(key) != current[key]]
    if not differ:
        return None
    return "different parameters (" + ", ".join(f"{k}: {stored.get(k)!r} -> {current[k]!r}" for k in differ) + ")"
