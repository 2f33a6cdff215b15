"""Report pictures of volumes and patches, drawn without pyplot (no global backend) and written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from dpmra.atomic import write_atomic


def new_figure(**kwargs) -> Figure:
    """A matplotlib figure with an Agg canvas attached."""
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> None:
    """Save a figure in the format of the path's suffix; the file appears only once complete."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".")))


def save_mip(image: np.ndarray, label: np.ndarray, affine: np.ndarray, path: Path, title: str) -> None:
    """Axial maximum-intensity projections in mm: the image, and the image with the label MIP in red."""
    mip = image.max(axis=2).T
    label_mip = np.ma.masked_equal(label.max(axis=2).T, 0)
    sx, sy = np.abs(np.diag(affine)[:2])
    x0, y0 = affine[:2, 3]
    extent = (x0 - sx / 2, x0 + (mip.shape[1] - 0.5) * sx, y0 - sy / 2, y0 + (mip.shape[0] - 0.5) * sy)
    vmax = float(np.percentile(mip, 99.5))
    fig = new_figure(figsize=(10, 5.4))
    axes = fig.subplots(1, 2)
    for ax, panel in zip(axes, ("image MIP", "label MIP (red)")):
        ax.imshow(mip, cmap="gray", origin="lower", extent=extent, vmin=float(mip.min()), vmax=vmax)
        ax.set_title(panel)
        ax.set_xlabel("x (mm, right)")
        ax.set_ylabel("y (mm, anterior)")
    axes[1].imshow(label_mip, cmap=ListedColormap(["red"]), origin="lower", extent=extent, alpha=0.6)
    fig.suptitle(f"{title}: axial MIP")
    save_figure(fig, path, dpi=80)


def save_patch_gallery(images: np.ndarray, labels: np.ndarray, path: Path, title: str) -> None:
    """Patches in columns: image on top, its label underneath."""
    n = len(images)
    fig = new_figure(figsize=(1.2 * n, 2.9))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i].T, cmap="gray", origin="lower")
        axes[1, i].imshow(labels[i].T, cmap="gray", origin="lower", vmin=labels.min(), vmax=labels.max())
    for ax in axes.ravel():
        ax.set_axis_off()
    axes[0, 0].set_title("image", fontsize=8, loc="left")
    axes[1, 0].set_title("label", fontsize=8, loc="left")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
