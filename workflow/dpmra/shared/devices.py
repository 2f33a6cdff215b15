"""The torch device a stage runs on: the one asked for, else CUDA when present, else the CPU."""

from __future__ import annotations

import torch


def default_device(name: str | None = None) -> torch.device:
    """`name` as a device if given, else CUDA when available, else CPU."""
    if name is not None:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
