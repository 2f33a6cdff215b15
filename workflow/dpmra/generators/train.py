"""The WGAN stage behind ``results/gan/sigma~{sigma}/seed~{seed}/``: train or resume one run, write its outputs.

Per epoch a checkpoint (``checkpoints/epoch_NNN.pt``, the trainer's whole state: private) and ``epochs.tsv``;
at the end the sample grid, ``loss.png``, ``epsilon.png`` and ``generator.pt`` (`dpmra.generators.interface`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from dpmra.generators.interface import PAPER_COLUMNS, load_training_set, write_epochs_table
from dpmra.generators.params import GanParams
from dpmra.generators.warm_start import load_warm_start
from dpmra.generators.wgan import WganTrainer
from dpmra.privacy.secret import load_key
from dpmra.shared import checkpoint
from dpmra.shared.devices import default_device

logger = logging.getLogger(__name__)


def plot_losses(rows: list[dict[str, float]], path: Path) -> None:
    """loss.png: critic and generator losses and the Wasserstein estimate per epoch."""
    table = pd.DataFrame(rows)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for column in ("loss_d", "loss_g", "wasserstein"):
        ax.plot(table["epoch"], table[column], marker=".", label=column)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (epoch mean)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_epsilon(rows: list[dict[str, float]], path: Path, delta: float) -> None:
    """epsilon.png: epsilon per epoch by each accountant (nothing to draw for sigma = inf)."""
    table = pd.DataFrame(rows)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    labels = {
        "epsilon_rdp": "RDP (bound for the loop run)",
        "epsilon_prv": "PRV (bound for the loop run)",
        "epsilon_rdp_paper": "RDP, the paper's accounting",
    }
    for column, label in labels.items():
        if column in table and np.isfinite(table[column]).any():
            ax.plot(table["epoch"], table[column], marker=".", label=label)
    if not np.isfinite(table["epsilon_rdp"]).any():
        ax.text(0.5, 0.5, "non-private: epsilon = inf", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"epsilon (delta = {delta:.2g})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_samples(pairs: np.ndarray, path: Path, title: str, columns: int = 4) -> None:
    """A grid of image-label pairs (image left, label right), values in [-1, 1]."""
    n, _, p, _ = pairs.shape
    rows = math.ceil(n / columns)
    gap = max(1, p // 16)
    canvas = np.full((rows * (p + gap), columns * (2 * p + 2 * gap)), -1.0, dtype=np.float32)
    for k, (image, label) in enumerate(pairs):
        r, c = divmod(k, columns)
        top, left = r * (p + gap), c * (2 * p + 2 * gap)
        canvas[top : top + p, left : left + p] = image
        canvas[top : top + p, left + p + gap : left + 2 * p + gap] = label
    fig = Figure(figsize=(2 * columns, rows + 0.6))
    ax = fig.subplots()
    ax.imshow(canvas, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _epsilon_text(row: dict[str, float], delta: float) -> str:
    eps = row["epsilon_rdp"]
    shown = "inf" if math.isinf(eps) else f"{eps:.2f}"
    return f"epoch {row['epoch']}: epsilon = {shown} (RDP, delta = {delta:.2g})"


def write_generator(trainer: WganTrainer, path: Path) -> None:
    """generator.pt: weights, constructor args, epsilon and run parameters (weights_only-loadable)."""
    last = trainer.rows[-1]
    epsilons = {k: last[k] for k in ("epsilon_rdp", "epsilon_prv", *PAPER_COLUMNS) if k in last}
    checkpoint.save_atomic(
        {
            "state_dict": {k: v.cpu() for k, v in trainer.released_generator.state_dict().items()},
            "intensity": trainer.intensity,
            "config": trainer.generator.config(),
            "epsilon": epsilons,
            "delta": trainer.delta,
            "epochs": trainer.epoch,
            "critic_steps": trainer.critic_steps,
            "sample_rate": trainer.sample_rate,
            "training_set_size": len(trainer.data),
            "unit": trainer.params.unit,
            "units": trainer.units,
            "max_patches_per_patient": trainer.max_per_patient,
            "patches_per_unit_step": trainer.group_size,
            "critic": {k: v.cpu() for k, v in trainer.critic.state_dict().items()},
            "critic_blocks": len(trainer.critic.blocks()),
            "trained_parameters": trainer.trained_parameters,
            "pretrained": trainer.pretrained,
            "params": asdict(trainer.params),
            **_public_optimizers(trainer),
        },
        path,
    )


def _public_optimizers(trainer: WganTrainer) -> dict:
    """A public run's optimiser states, for the runs it warm-starts (a private run's are not released)."""
    if not trainer.params.public:
        return {}
    return {"optimizers": {"opt_g": trainer.opt_g.state_dict(), "opt_d": trainer.opt_d.state_dict()}}



# --- the stage ---------------------------------------------------------------------


def log_trained_blocks(trainer: WganTrainer) -> None:
    """Say which critic blocks this run trains and how many parameters the DP noise spans."""
    blocks = len(trainer.critic.blocks())
    frozen = blocks - (trainer.params.private_blocks or blocks)
    total = sum(p.numel() for p in trainer.critic.parameters())
    logger.info(
        "critic: trains %d of %d parameters, its last %d of %d blocks (%s)",
        trainer.trained_parameters, total, blocks - frozen, blocks,
        f"blocks 1-{frozen} frozen at the public warm start" if frozen else "none frozen",
    )


def resume(trainer: WganTrainer, ckpt_dir: Path, device: torch.device) -> None:
    """Continue from the latest checkpoint of this run; checkpoints of another run are deleted, not trusted.

    Snakemake reruns a GAN job when its settings or training data change; the checkpoints it kept are
    then from another run (or, with fewer epochs, beyond this one), and training starts afresh.
    """
    for path in sorted(ckpt_dir.glob("epoch_*.pt"), reverse=True):
        state = checkpoint.load(path, map_location=device)
        conflict = trainer.resume_conflict(state)
        if conflict is None:
            trainer.load_state_dict(state)
            logger.info("resuming from %s (epoch %d)", path, trainer.epoch)
            return
        logger.info("discarding %s: %s", path, conflict)
        path.unlink()


def train_gan(
    train_set: Path, out_dir: Path, params: GanParams, secret: Path, pretrained: Path | None = None
) -> None:
    """Train (or resume) a WGAN on ``train_set`` and write checkpoints, tables, plots, generator.pt.

    The sampling and noise streams are keyed by the key file ``secret`` (created on first use). With
    ``pretrained`` (the generator.pt of a run on a public training set) generator and critic start from its weights.
    Resumes from the last ``out_dir/checkpoints/epoch_*.pt``; a run killed mid-epoch
    redoes that epoch.
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    device = default_device()
    warm = load_warm_start(pretrained) if pretrained else None
    trainer = WganTrainer(load_training_set(train_set), params, device, load_key(secret), warm)
    resume(trainer, ckpt_dir, device)
    log_trained_blocks(trainer)
    paper = params.mode == "paper"
    write_epochs_table(trainer.rows, out_dir / "epochs.tsv", paper)
    epochs = tqdm(
        range(trainer.epoch, params.epochs), desc="epochs", initial=trainer.epoch, total=params.epochs
    )
    for _ in epochs:
        row = trainer.run_epoch()
        checkpoint.save_atomic(trainer.state_dict(), checkpoint.epoch_path(ckpt_dir, trainer.epoch))
        write_epochs_table(trainer.rows, out_dir / "epochs.tsv", paper)
        if trainer.epoch % params.sample_every == 0 or trainer.epoch == params.epochs:
            path = out_dir / "samples" / f"epoch_{trainer.epoch:03d}.png"
            plot_samples(trainer.sample_fixed(), path, _epsilon_text(row, trainer.delta))
        logger.info(
            "epoch %d/%d: critic_steps=%d loss_d=%.4g loss_g=%.4g wasserstein=%.4g "
            "epsilon_rdp=%.3g epsilon_prv=%.3g (%.1f s)",
            row["epoch"],
            params.epochs,
            row["critic_steps"],
            row["loss_d"],
            row["loss_g"],
            row["wasserstein"],
            row["epsilon_rdp"],
            row["epsilon_prv"],
            row["seconds"],
        )
    if not trainer.rows:
        raise ValueError("no epoch was trained")
    plot_samples(trainer.sample_fixed(), out_dir / "samples.png", _epsilon_text(trainer.rows[-1], trainer.delta))
    plot_losses(trainer.rows, out_dir / "loss.png")
    plot_epsilon(trainer.rows, out_dir / "epsilon.png", trainer.delta)
    write_generator(trainer, out_dir / "generator.pt")
