"""What every generator family reads and writes: the training set in; epochs.tsv and generator.pt out; sampling.

A family's stage (`dpmra.generators.train` for the WGAN) trains on a training-set .npz (`load_training_set`) and
writes `epochs.tsv` (`write_epochs_table`, fixed columns) and `generator.pt` (the released weights, their
constructor arguments, the accountant's output and the run's settings; `load_release` checks it). Everything
above the generators (release, evaluation) samples a generator.pt through this module, never through a trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from dpmra.generators.generator import Generator, build_generator, sample_pairs
from dpmra.generators.pe_apis import sample_release
from dpmra.shared import checkpoint
from dpmra.shared.devices import default_device

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
EXACT_COLUMNS = ["epsilon_gdp"]


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



def write_epochs_table(rows: list[dict[str, float]], path: Path, paper: bool, exact: bool = False) -> None:
    """epochs.tsv: the fixed columns (plus the paper's epsilon in paper mode, the exact GDP epsilon of Private
    Evolution), one row per epoch (PE: per round)."""
    columns = COLUMNS + (PAPER_COLUMNS if paper else []) + (EXACT_COLUMNS if exact else [])
    table = pd.DataFrame(rows, columns=columns)
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, sep="\t", index=False)
    tmp.replace(path)



def load_release(generator_path: Path) -> dict:
    """The stored generator.pt, checked for the fields a privacy card needs."""
    stored = checkpoint.load(generator_path)
    needed = {
        "state_dict", "config", "epsilon", "delta", "epochs", "critic_steps", "sample_rate", "params",
        "training_set_size", "unit", "units", "max_patches_per_patient", "intensity",
    }
    missing = sorted(needed - set(stored))
    if missing:
        raise ValueError(f"{generator_path}: not a complete generator file, missing {missing} (retrain the GAN)")
    return stored


def load_generator(generator_path: Path, device: torch.device | None = None) -> Generator:
    """Rebuild the generator stored in a generator.pt, in eval mode."""
    stored = checkpoint.load(generator_path)
    return build_generator(stored["config"], stored["state_dict"], device or default_device())


def sample_generator(generator_path: Path, n: int, seed: int, batch_size: int = 256) -> np.ndarray:
    """n generated pairs, float32 (n, 2, P, P) in [-1, 1], deterministic from the seed."""
    return sample_pairs(load_generator(generator_path), n, seed, batch_size)


def generate(stored: dict, n: int, seed: int) -> np.ndarray:
    """n pairs (n, 2, P, P) in [-1, 1] from a stored generator (config and weights) or a Private Evolution release
    (its population and API), deterministic from the seed."""
    if stored.get("family") == "pe":
        return sample_release(stored, n, seed)
    generator = build_generator(stored["config"], stored["state_dict"], default_device())
    return sample_pairs(generator, n, seed, batch_size=512)


def epoch_generators(run_dir: Path) -> list[tuple[int, dict]]:
    """(epoch, {"config", "state_dict"}) of every epoch checkpoint of a GAN run, in epoch order (the weights
    that epoch would release: the moving average where the run keeps one)."""
    paths = sorted((run_dir / "checkpoints").glob("epoch_*.pt"))
    if not paths:
        raise ValueError(f"{run_dir / 'checkpoints'}: no epoch checkpoints to choose from")
    generators = []
    for path in paths:
        state = checkpoint.load(path)
        weights = state["ema_generator"] if state.get("ema_generator") is not None else state["generator"]
        generators.append((state["epoch"], {"config": state["generator_config"], "state_dict": weights}))
    return generators
