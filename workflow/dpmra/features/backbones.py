"""Whether the paper's Inception-v3 backbone can run here, decided without importing torch.

Snakemake imports this module when it reads the workflow, so a run that asks for FID stops before any job;
importing torch there would add seconds to every start, hence the torch hub directory is worked out here by
torch.hub.get_dir's own rule (environment only: torch.hub.set_dir, which this project never calls, is not seen).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

AUTO = "auto"
INCEPTION = "inception-v3"
RANDOM_CNN = "random-cnn-s0-d256"
BACKBONES = (AUTO, INCEPTION, RANDOM_CNN)

INCEPTION_WEIGHTS_GLOB = "pt_inception-2015-12-05-*.pth"
INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
# pytorch-fid's FID_WEIGHTS_URL, for fetching the file on a machine with network access
INCEPTION_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + INCEPTION_WEIGHTS_FILE
FID_INSTALL = "pip install -e .[fid]"


def hub_dir() -> Path:
    """torch.hub.get_dir() without torch: $TORCH_HOME/hub, $TORCH_HOME defaulting to $XDG_CACHE_HOME/torch, ~/.cache."""
    cache = os.getenv("XDG_CACHE_HOME", "~/.cache")
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


def weights_dir() -> Path:
    """The directory where pytorch-fid caches (and this project looks for) the Inception weights."""
    return hub_dir() / "checkpoints"


def hub_weights() -> Path | None:
    """pytorch-fid's cached Inception weights in the torch hub directory, if present."""
    found = sorted(weights_dir().glob(INCEPTION_WEIGHTS_GLOB))
    return found[-1] if found else None


def pytorch_fid_installed() -> bool:
    """Whether pytorch-fid and the torchvision it imports are installed (found, not imported: that needs torch)."""
    return all(importlib.util.find_spec(name) is not None for name in ("pytorch_fid", "torchvision"))


def missing_weights_reason() -> str:
    """What to do when no Inception weights are on disk: the file pytorch-fid expects and where to put it."""
    return (
        f"no Inception weights: place pytorch-fid's {INCEPTION_WEIGHTS_FILE} (from {INCEPTION_WEIGHTS_URL}) in "
        f"{weights_dir()}, or set quality.weights: PATH to a local copy (nothing is ever downloaded)"
    )


def inception_problems(weights: Path | str | None) -> list[str]:
    """Everything that keeps Inception-v3 from running here, as messages naming the file or package to fix."""
    problems = []
    if not pytorch_fid_installed():
        problems.append(f"pytorch-fid (with torchvision) is not installed; run `{FID_INSTALL}`")
    if weights is not None:
        if not Path(weights).is_file():
            problems.append(f"quality.weights: {weights}: Inception weights file not found")
    elif hub_weights() is None:
        problems.append(missing_weights_reason())
    return problems


def require_backbone(requested: str, weights: Path | str | None) -> None:
    """Raise ValueError at start when Inception-v3 (the paper's FID) is asked for but cannot run: no silent fallback."""
    if requested != INCEPTION:
        return
    problems = inception_problems(weights)
    if problems:
        raise ValueError(
            f"quality.backbone is {INCEPTION} (the paper's FID) but it cannot run: " + "; ".join(problems)
            + f". Set quality.backbone: {AUTO} only if Fréchet distances on random features (not FID) will do."
        )
