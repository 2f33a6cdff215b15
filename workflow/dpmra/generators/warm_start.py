"""The public warm start (`gan.pretrain`): a `--public` run's generator.pt, checked, and loaded into a new run.

Only a run declared public may warm-start others; the private run takes its generator and critic weights and,
for the same optimiser, its optimiser statistics (public too). What was public goes on the privacy card.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from dpmra.generators.critic import Critic
from dpmra.generators.generator import Generator
from dpmra.shared import checkpoint


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
