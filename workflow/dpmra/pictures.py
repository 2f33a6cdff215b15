"""Report pictures of volumes and patches (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dpmra.volumes import write_atomic  # noqa: E402


def save_figure(fig: plt.Figure, path: Path, dpi: int = 100) -> None:
    """Save and close a figure; the file appears only once complete."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".")))
    plt.close(fig)


def save_mip(image: np.ndarray, label: np.ndarray, path: Path, title: str) -> None:
    """Axial maximum-intensity projection of the image beside that of the vessel label."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    axes[0].imshow(image.max(axis=2).T, cmap="gray", origin="lower")
    axes[0].set_title("image MIP")
    axes[1].imshow(label.max(axis=2).T, cmap="Reds", origin="lower", vmin=0, vmax=1)
    axes[1].set_title("vessel label MIP")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def save_patch_gallery(images: np.ndarray, labels: np.ndarray, path: Path, title: str) -> None:
    """Patches in columns: image on top, its label underneath."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.7), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i].T, cmap="gray", origin="lower")
        axes[1, i].imshow(labels[i].T, cmap="gray", origin="lower", vmin=labels.min(), vmax=labels.max())
    for ax in axes.ravel():
        ax.set_axis_off()
    axes[0, 0].set_title("image", fontsize=8, loc="left")
    axes[1, 0].set_title("label", fontsize=8, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
