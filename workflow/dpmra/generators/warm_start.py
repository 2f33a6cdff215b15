"""The public warm start (`gan.pretrain`): a `--public` run's generator.pt, checked, and loaded into a new run.

Only a run declared public may warm-start others; the private run takes its generator and critic weights and,
for the same optimiser, its optimiser statistics (public too) of the parameters it trains. What was public goes on
the privacy card.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

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


def warm_optimizers(
    optimizers: dict[str, tuple[torch.optim.Optimizer, nn.Module]], pretrained: dict, kind: str
) -> None:
    """Continue the public run's optimiser statistics (same optimiser only) for the parameters each optimiser trains.

    A fresh RMSprop divides the first gradients by sqrt(0.01 g^2), a step of 10 lr on every weight,
    which undoes a warm start within a few updates; the public run's statistics are public. This run's learning
    rates are kept; frozen parameters (`gan.private_blocks`) are in no optimiser and take no statistics.
    """
    if pretrained.get("params", {}).get("optimizer") != kind or "optimizers" not in pretrained:
        return
    for name, (optimizer, module) in optimizers.items():
        lrs = [group["lr"] for group in optimizer.param_groups]
        trained = [i for i, p in enumerate(module.parameters()) if p.requires_grad]
        optimizer.load_state_dict(trained_state(pretrained["optimizers"][name], trained))
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr


def trained_state(state: dict, positions: list[int]) -> dict:
    """A one-group optimiser state over all of a module's parameters, cut to those at `positions` and renumbered."""
    (group,) = state["param_groups"]
    return {
        "state": {new: state["state"][old] for new, old in enumerate(positions) if old in state["state"]},
        "param_groups": [{**group, "params": list(range(len(positions)))}],
    }
