"""Report pictures of volumes and patches, drawn without pyplot (no global backend) and written atomically."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from dpmra.shared.atomic import write_atomic


def new_figure(**kwargs) -> Figure:
    """A matplotlib figure with an Agg canvas attached."""
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> None:
    """Save a figure in the format of the path's suffix; the file appears only once complete."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".")))


def mip_extent(affine: np.ndarray, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """imshow extent in mm of an axial projection (rows: array axis 1, columns: array axis 0), for any affine.

    The pixel sizes are the voxel sizes along the first two array axes (the lengths of the affine's first two
    columns, not its diagonal, which shrinks under rotation) and the origin is the first voxel's position along
    those two directions: an oblique volume is shown at true size in its own in-plane frame, and for an
    unrotated one that frame is world x and y.
    """
    affine = np.asarray(affine, dtype=float)
    sx, sy = nib.affines.voxel_sizes(affine)[:2]
    x0, y0 = (affine[:3, :2] / (sx, sy)).T @ affine[:3, 3]
    return (x0 - sx / 2, x0 + (shape[1] - 0.5) * sx, y0 - sy / 2, y0 + (shape[0] - 0.5) * sy)


def save_mip(
    image: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    path: Path,
    title: str,
    brain_mask: np.ndarray | None = None,
) -> None:
    """Axial maximum-intensity projections in mm: the image, and the image with the label MIP in red.

    With a brain mask, both panels outline its projection in yellow, so a reader can check that the mask holds the
    vessels and leaves out the scalp.
    """
    mip = image.max(axis=2).T
    label_mip = np.ma.masked_equal(label.max(axis=2).T, 0)
    extent = mip_extent(affine, mip.shape)
    vmax = float(np.percentile(mip, 99.5))
    fig = new_figure(figsize=(10, 5.4))
    axes = fig.subplots(1, 2)
    for ax, panel in zip(axes, ("image MIP", "label MIP (red)")):
        ax.imshow(mip, cmap="gray", origin="lower", extent=extent, vmin=float(mip.min()), vmax=vmax)
        ax.set_title(panel if brain_mask is None else f"{panel}, brain mask (yellow)")
        ax.set_xlabel("x (mm, right)")
        ax.set_ylabel("y (mm, anterior)")
        if brain_mask is not None:
            draw_outline(ax, brain_mask.max(axis=2).T, extent)
    axes[1].imshow(label_mip, cmap=ListedColormap(["red"]), origin="lower", extent=extent, alpha=0.6)
    fig.suptitle(f"{title}: axial MIP")
    save_figure(fig, path, dpi=80)


def draw_outline(ax: Axes, mask: np.ndarray, extent: tuple[float, float, float, float]) -> None:
    """Outline a 2D binary mask (rows y, columns x) on axes showing an image with the same extent."""
    if mask.any() and not mask.all():
        mask = mask.astype(np.float32)
        ax.contour(mask, levels=[0.5], colors="yellow", linewidths=0.8, origin="lower", extent=extent)


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
