"""U-Net stage: train the half U-Net on (real or synthetic) patches (prediction: ``dpmra.segmentation.predict``).

Training (``train_unet``) follows the paper's public Keras code (Livne et al. 2019): inputs
normalised with the training patches' mean and standard deviation (one scalar each, stored
with the model), soft Dice loss (``loss = dice_bce``: soft Dice + binary cross-entropy), Adam.
Augmentation, when on, draws per sample a rotation of
up to 30 degrees, a shear of up to 20 degrees and a vertical flip (probability 1/2; in Keras'
sense: the patch array's first axis reversed), composed into one affine map applied with
``F.affine_grid``/``F.grid_sample`` to the normalised image (bilinear) and to the label
(bilinear, then thresholded at 0.5 so it stays binary; the same map, so image and label
stay aligned). Pixels mapped from outside the patch are 0, i.e. the
training mean for the image (the Keras code filled its normalised patches with 0 too) and
background for the label. An epoch is one pass over the shuffled patches.

Randomness: three streams from the seed: the global torch stream (weight initialisation and
dropout), a shuffle generator and an augmentation generator (both on the CPU). All three are
in the checkpoint, so a killed run resumes exactly where it stopped. On the CPU, runs are
bit-identical from the seed (and resumed equals uninterrupted); CUDA's convolution and
upsampling gradients use atomic adds, so GPU repeats differ in the last bits. Only the
latest checkpoint is kept: one holds the weights and Adam's two moments (about 94 MB at
base width 32), and the study trains hundreds of U-Nets.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from dpmra.segmentation.params import UnetParams
from dpmra.segmentation.unet import MULTIPLE, UNet, segmentation_loss
from dpmra.shared import checkpoint
from dpmra.shared.atomic import write_atomic
from dpmra.shared.devices import default_device

logger = logging.getLogger(__name__)

TRAINING_COLUMNS = ["epoch", "loss", "seconds"]
ROTATION_DEGREES = 30.0
SHEAR_DEGREES = 20.0
FLIP_PROBABILITY = 0.5


# --- training data -----------------------------------------------------------------


def read_pairs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The `image` (n,P,P) float32 and `label` (n,P,P) uint8 {0,1} arrays of one patch file, checked."""
    with np.load(Path(path)) as npz:
        missing = {"image", "label"} - set(npz.files)
        if missing:
            raise ValueError(f"{path}: no array(s) {sorted(missing)}")
        image, label = npz["image"], npz["label"]
    if image.ndim != 3 or image.shape[1] != image.shape[2] or image.shape[0] < 1:
        raise ValueError(f"{path}: 'image' must have shape (n, P, P) with n >= 1, got {image.shape}")
    if label.shape != image.shape:
        raise ValueError(f"{path}: 'label' shape {label.shape} differs from 'image' shape {image.shape}")
    if image.shape[1] % MULTIPLE:
        raise ValueError(f"{path}: patch size {image.shape[1]} is not a multiple of {MULTIPLE}, as the U-Net needs")
    if not np.isfinite(image).all():
        raise ValueError(f"{path}: 'image' has non-finite values")
    if not np.isin(label, (0, 1)).all():
        raise ValueError(f"{path}: 'label' must hold only 0 and 1")
    return image.astype(np.float32, copy=False), label.astype(np.uint8, copy=False)


def load_sources(sources: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """All image-label pairs of the given patch files, concatenated; all files must share one patch size."""
    if not sources:
        raise ValueError("no training patch files given")
    pairs = [read_pairs(path) for path in sources]
    sizes = {image.shape[1] for image, _ in pairs}
    if len(sizes) > 1:
        listing = ", ".join(f"{path}: {image.shape[1]}" for path, (image, _) in zip(sources, pairs))
        raise ValueError(f"patch files differ in patch size ({listing})")
    if len(pairs) == 1:
        return pairs[0]
    return np.concatenate([image for image, _ in pairs]), np.concatenate([label for _, label in pairs])


def normalisation_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and (population) standard deviation of all training pixels, as the paper's code."""
    mean = float(images.mean(dtype=np.float64))
    std = float(images.std(dtype=np.float64))
    if not std > 0:
        raise ValueError("training images are constant: their standard deviation is 0")
    return mean, std


# --- augmentation ------------------------------------------------------------------


def augmentation_matrices(n: int, generator: torch.Generator) -> Tensor:
    """(n, 2, 3) affine_grid matrices: rotation (+-30 deg) after shear (+-20 deg) after a vertical flip (p 1/2)."""
    angle = torch.deg2rad((torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * ROTATION_DEGREES)
    shear = torch.deg2rad((torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * SHEAR_DEGREES)
    flip = 1 - 2 * (torch.rand(n, generator=generator, dtype=torch.float64) < FLIP_PROBABILITY).double()
    zero, one = torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    rotation = torch.stack([angle.cos(), -angle.sin(), angle.sin(), angle.cos()], dim=1).view(n, 2, 2)
    shearing = torch.stack([one, -shear.sin(), zero, shear.cos()], dim=1).view(n, 2, 2)
    # affine_grid's coordinates are (x = width, y = height): the flip negates y, i.e. flips the rows.
    flipping = torch.stack([one, zero, zero, flip], dim=1).view(n, 2, 2)
    linear = rotation @ shearing @ flipping
    return torch.cat([linear, zero.view(n, 1, 1).expand(n, 2, 1)], dim=2).float()


def augment(images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Apply one random affine map per sample to (B,1,P,P) images (bilinear) and labels (bilinear, >= 0.5)."""
    theta = augmentation_matrices(images.shape[0], generator).to(images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(torch.cat([images, labels], dim=1), grid, mode="bilinear", align_corners=False)
    return warped[:, :1], (warped[:, 1:] >= 0.5).to(labels.dtype)


# --- training ----------------------------------------------------------------------


def _seeds(seed: int) -> dict[str, int]:
    """Independent seeds for the run's random streams, derived from the run seed."""
    names = ("torch", "shuffle", "augment")
    values = np.random.SeedSequence(seed).generate_state(len(names), dtype=np.uint64)
    return {name: int(v) % 2**63 for name, v in zip(names, values)}


class UnetTrainer:
    """The network, optimiser, data and random streams of one training run."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, params: UnetParams, device: torch.device) -> None:
        self.params = params
        self.device = device
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels)
        self.mean, self.std = normalisation_stats(images)
        seeds = _seeds(params.seed)
        torch.manual_seed(seeds["torch"])
        self.model = UNet(params.base_width, params.dropout).to(device)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=params.lr)
        self.rng = {
            "shuffle": torch.Generator().manual_seed(seeds["shuffle"]),
            "augment": torch.Generator().manual_seed(seeds["augment"]),
        }
        self.epoch = 0
        self.rows: list[dict[str, float]] = []

    @property
    def data_summary(self) -> dict[str, float]:
        """Size and normalisation of the training data, to recognise the same data on resume."""
        return {"n": len(self.images), "patch_size": self.images.shape[1], "mean": self.mean, "std": self.std}

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """The normalised (B,1,P,P) images and float labels at `index`, on the device, augmented if asked."""
        images = ((self.images[index].to(self.device) - self.mean) / self.std).unsqueeze(1)
        labels = self.labels[index].to(self.device, torch.float32).unsqueeze(1)
        if self.params.augment:
            return augment(images, labels, self.rng["augment"])
        return images, labels

    def step(self, images: Tensor, labels: Tensor) -> float:
        """One Adam step on the run's loss of a batch; returns the loss."""
        self.optimiser.zero_grad(set_to_none=True)
        loss = segmentation_loss(self.model.logits(images), labels, self.params.loss)
        loss.backward()
        self.optimiser.step()
        return loss.item()

    def run_epoch(self) -> dict[str, float]:
        """One shuffled pass over the training patches; returns the epoch's row (mean batch loss)."""
        start = time.perf_counter()
        self.model.train()
        order = torch.randperm(len(self.images), generator=self.rng["shuffle"])
        batches = order.split(self.params.batch_size)
        losses = [
            self.step(*self.batch(index))
            for index in tqdm(batches, desc=f"epoch {self.epoch + 1}/{self.params.epochs}", leave=False)
        ]
        self.epoch += 1
        row = {"epoch": self.epoch, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - start}
        self.rows.append(row)
        return row

    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically (on the same device)."""
        rng = {name: gen.get_state() for name, gen in self.rng.items()}
        rng["torch_cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            rng["torch_cuda"] = torch.cuda.get_rng_state_all()
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "rng": rng,
            "rows": self.rows,
            "params": asdict(self.params),
            "data": self.data_summary,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state written by ``state_dict`` of this run (see ``resume_conflict``)."""
        conflict = self.resume_conflict(state)
        if conflict:
            raise ValueError(f"checkpoint is not of this run: {conflict}")
        self.epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        for name, gen in self.rng.items():
            gen.set_state(state["rng"][name])
        torch.set_rng_state(state["rng"]["torch_cpu"])
        if "torch_cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["torch_cuda"])
        self.rows = [dict(row) for row in state["rows"]]

    def resume_conflict(self, state: dict) -> str | None:
        """Why a checkpoint cannot continue this run (other settings, other data, beyond the epochs), or None."""
        changed = checkpoint.changed_settings(state["params"], asdict(self.params))
        if changed:
            return changed
        if not all(math.isclose(state["data"][k], v, rel_tol=1e-12) for k, v in self.data_summary.items()):
            return f"other training data ({state['data']} -> {self.data_summary})"
        if state["epoch"] > self.params.epochs:
            return f"epoch {state['epoch']} is beyond the requested {self.params.epochs}"
        return None


def save_checkpoint(trainer: UnetTrainer, directory: Path) -> None:
    """Write this epoch's checkpoint atomically, then remove the earlier ones (only the latest is needed)."""
    path = checkpoint.epoch_path(directory, trainer.epoch)
    checkpoint.save_atomic(trainer.state_dict(), path)
    for old in directory.glob("epoch_*.pt"):
        if old != path:
            old.unlink()


def write_training_table(rows: list[dict[str, float]], path: Path) -> None:
    """training.tsv: epoch, mean training loss, seconds; one row per epoch."""
    table = pd.DataFrame(rows, columns=TRAINING_COLUMNS)
    write_atomic(path, lambda tmp: table.to_csv(tmp, sep="\t", index=False))


def write_model(trainer: UnetTrainer, path: Path) -> None:
    """model.pt: weights, constructor args, normalisation mean and std, run parameters (weights_only-loadable)."""
    checkpoint.save_atomic(
        {
            "state_dict": {k: v.cpu() for k, v in trainer.model.state_dict().items()},
            "config": trainer.model.config(),
            "mean": trainer.mean,
            "std": trainer.std,
            "params": asdict(trainer.params),
            "epochs": trainer.epoch,
            "data": trainer.data_summary,
        },
        path,
    )


def train_unet(sources: list[Path], out_dir: Path, params: UnetParams) -> None:
    """Train (or resume) a U-Net on the patch files and write checkpoints, training.tsv and, last, model.pt.

    Resumes from the latest ``out_dir/checkpoints/epoch_*.pt``; a run killed mid-epoch redoes that epoch.
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    images, labels = load_sources([Path(s) for s in sources])
    trainer = UnetTrainer(images, labels, params, default_device())
    latest = checkpoint.latest_epoch_checkpoint(ckpt_dir)
    if latest is not None:
        state = checkpoint.load(latest, map_location="cpu")
        conflict = trainer.resume_conflict(state)
        if conflict is None:
            trainer.load_state_dict(state)
            logger.info("resuming from %s (epoch %d)", latest, trainer.epoch)
        else:  # Snakemake reruns the job after a change: the kept checkpoint is of another run
            logger.info("discarding %s: %s", latest, conflict)
            latest.unlink()
    logger.info(
        "training a U-Net (base width %d) on %d patches of %d x %d (mean %.4g, std %.4g) on %s",
        params.base_width, len(images), *images.shape[1:], trainer.mean, trainer.std, trainer.device,
    )
    while trainer.epoch < params.epochs:
        row = trainer.run_epoch()
        save_checkpoint(trainer, ckpt_dir)
        write_training_table(trainer.rows, out_dir / "training.tsv")
        logger.info(
            "epoch %d/%d: %s loss %.4f (%.1f s)", row["epoch"], params.epochs, params.loss, row["loss"], row["seconds"]
        )
    write_training_table(trainer.rows, out_dir / "training.tsv")
    write_model(trainer, out_dir / "model.pt")
