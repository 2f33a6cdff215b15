"""Pictures of data: Fig. 2 (real and generated pairs), Fig. 4 (error maps), Fig. 7 (segmentations)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from dpmra.evaluation.figures.style import FONT, PANELS_PER_ROW, REAL_COLOUR, WIDTH, save_all, sigma_palette
from dpmra.evaluation.figures.utility import best_per_sigma
from dpmra.evaluation.tables import read_privacy
from dpmra.shared.html_tables import number
from dpmra.shared.pictures import mip_extent, new_figure

ERROR_COLOURS = {1: ("TP", "#2ca02c"), 2: ("FP", "#d62728"), 3: ("FN", "#1f77b4")}
SAMPLES_PER_COLUMN = 2


def first_seed_per_sigma(privacy: pd.DataFrame) -> pd.DataFrame:
    """Per sigma, the run with the lowest seed, least private first (inf last)."""
    first = privacy.sort_values(["sigma", "seed"]).groupby("sigma").head(1)
    return first.sort_values("epsilon_rdp", ascending=False, ignore_index=True)


def column_title(sigma: str, epsilon: float) -> str:
    """A panel title in the study's words."""
    return "epsilon = ∞\n(non-private)" if sigma == "inf" else f"epsilon = {number(epsilon)}\n(sigma = {sigma})"


def sample_columns(train_set: Path, synth_dir: Path, privacy: pd.DataFrame) -> list[dict]:
    """Fig. 2 columns: real pairs first, then the first pairs of each sigma's lowest-seed dataset (0..1 labels)."""
    with np.load(train_set) as data:
        real = data["x"][:SAMPLES_PER_COLUMN]
    columns = [{"title": "real", "colour": REAL_COLOUR, "image": real[:, 0], "label": (real[:, 1] + 1) / 2}]
    palette = sigma_palette(privacy["sigma"])
    for _, run in first_seed_per_sigma(privacy).iterrows():
        with np.load(Path(synth_dir) / run["source"] / "dataset.npz") as data:
            image, label = data["image"][:SAMPLES_PER_COLUMN], data["label"][:SAMPLES_PER_COLUMN]
        columns.append(
            {
                "title": column_title(run["sigma"], run["epsilon_rdp"]),
                "colour": palette[run["sigma"]],
                "source": run["source"],
                "image": image,
                "label": label.astype(float),
            }
        )
    return columns


def frame(ax: Axes, colour: str) -> None:
    """Hide ticks and draw the panel's border in its sigma colour."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(2.5)


def plot_samples(train_set: Path, synth_dir: Path, privacy_path: Path, outputs: list[Path]) -> list[dict]:
    """Fig. 2: generated image (top) and label (bottom) patches per epsilon, real pairs in the first column."""
    privacy = read_privacy(privacy_path)
    columns = sample_columns(train_set, synth_dir, privacy)
    n = len(columns)
    with matplotlib.rc_context(FONT):
        side = min(1.9, (WIDTH - 0.6) / n)
        fig = new_figure(figsize=(side * n + 0.6, side * 2 * SAMPLES_PER_COLUMN + 1.2))
        axes = fig.subplots(2 * SAMPLES_PER_COLUMN, n, squeeze=False)
        for j, column in enumerate(columns):
            for k in range(SAMPLES_PER_COLUMN):
                axes[2 * k, j].imshow(column["image"][k].T, cmap="gray", origin="lower")
                axes[2 * k + 1, j].imshow(column["label"][k].T, cmap="gray", origin="lower", vmin=0, vmax=1)
            for i in range(2 * SAMPLES_PER_COLUMN):
                frame(axes[i, j], column["colour"])
            axes[0, j].set_title(column["title"], fontsize=9)
        for k in range(SAMPLES_PER_COLUMN):
            axes[2 * k, 0].set_ylabel("image")
            axes[2 * k + 1, 0].set_ylabel("label")
        fig.suptitle("Real and generated pairs")
        save_all(fig, outputs)
    return columns


def showcase(selection: pd.DataFrame, privacy: pd.DataFrame) -> pd.DataFrame:
    """Sources to show one patient for: real, then per sigma the run with the best val DSC, least private first."""
    runs = privacy.merge(selection, on="source").rename(columns={"val_dsc_mean": "val_dsc", "epsilon_rdp": "epsilon"})
    best = best_per_sigma(runs).reset_index().sort_values("epsilon", ascending=False)
    real = selection[selection["source"] == "real"].rename(columns={"val_dsc_mean": "val_dsc"})
    columns = ["source", "setting", "sigma", "epsilon", "val_dsc"]
    return pd.concat([real.assign(sigma=None, epsilon=math.nan), best], ignore_index=True)[columns]


def axial_mip(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Axial maximum-intensity projection (y rows, x columns) of a canonical NIfTI volume, and its affine."""
    volume = nib.load(str(path))
    return np.asarray(volume.dataobj).max(axis=2).T, volume.affine


def error_counts(error_map: np.ndarray) -> dict[str, int]:
    """Voxel counts of true positives, false positives and false negatives in an error map."""
    return {name.lower(): int((error_map == code).sum()) for code, (name, _) in ERROR_COLOURS.items()}


def source_title(row: pd.Series, palette: dict[str, str]) -> tuple[str, str]:
    """Panel title and colour of a showcase source."""
    if row["source"] == "real":
        return "U-Net trained on real", REAL_COLOUR
    return column_title(row["sigma"], row["epsilon"]), palette[row["sigma"]]


def showcase_prediction(predictions: Path, source: str, setting: str, patient: str, name: str) -> str:
    """A test patient's prediction volume `name` (.nii.gz) of one U-Net, as `dpmra predict` lays them out."""
    return str(Path(predictions) / source / setting / "test" / patient / f"{name}.nii.gz")


def plot_error_maps(
    selection_path: Path, privacy_path: Path, predictions: Path, image: Path, patient: str, outputs: list[Path]
) -> pd.DataFrame:
    """Fig. 4: one test patient's error maps per epsilon, as axial projections over the image MIP."""
    selection = pd.read_csv(selection_path, sep="\t")
    privacy = read_privacy(privacy_path)
    shown = showcase(selection, privacy)
    palette = sigma_palette(privacy["sigma"])
    background, affine = axial_mip(image)
    extent = mip_extent(affine, background.shape)
    cmap = ListedColormap([colour for _, colour in ERROR_COLOURS.values()])
    counts = []
    with matplotlib.rc_context(FONT):
        columns = min(len(shown), PANELS_PER_ROW)
        rows = math.ceil(len(shown) / columns)
        fig = new_figure(figsize=(WIDTH * columns / PANELS_PER_ROW, WIDTH / PANELS_PER_ROW * rows + 1.2))
        axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
        for ax in axes[len(shown) :]:
            ax.set_axis_off()
        for ax, (_, row) in zip(axes, shown.iterrows()):
            path = showcase_prediction(predictions, row["source"], row["setting"], patient, "error_map")
            volume = np.asarray(nib.load(path).dataobj)
            counts.append({"source": row["source"], "setting": row["setting"], **error_counts(volume)})
            projection = np.ma.masked_equal(volume.max(axis=2).T, 0)
            ax.imshow(background, cmap="gray", origin="lower", extent=extent)
            ax.imshow(projection, cmap=cmap, vmin=0.5, vmax=3.5, origin="lower", extent=extent, interpolation="nearest")
            title, colour = source_title(row, palette)
            ax.set_title(title, fontsize=9)
            frame(ax, colour)
        handles = [Patch(color=c, label=name) for name, c in ERROR_COLOURS.values()]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        fig.suptitle(f"Error maps of test patient {patient} (axial projection: FN over FP over TP)")
        save_all(fig, outputs)
    return pd.DataFrame(counts)


def patient_dsc(metrics: Path, source: str, setting: str, split: str, patient: str) -> float:
    """One patient's DSC from a per-patient metric table."""
    table = pd.read_csv(Path(metrics) / source / setting / f"{split}.tsv", sep="\t", dtype={"patient": str})
    return float(table.set_index("patient").loc[patient, "dsc"])


def segmentation_sources(shown: pd.DataFrame) -> pd.DataFrame:
    """Fig. 7 sources: real, the best non-private run and the best private run (highest val DSC), as present."""
    private = shown[shown["sigma"].notna() & (shown["sigma"] != "inf")]
    picks = [shown[shown["source"] == "real"], shown[shown["sigma"] == "inf"]]
    if len(private):
        picks.append(private.loc[[private["val_dsc"].idxmax()]])
    return pd.concat(picks, ignore_index=True)


def plot_segmentation(
    selection_path: Path,
    privacy_path: Path,
    predictions: Path,
    data: Path,
    metrics: Path,
    patient: str,
    outputs: list[Path],
) -> pd.DataFrame:
    """Fig. 7: a test patient's segmentations against its ground truth, as axial maximum-intensity projections."""
    selection = pd.read_csv(selection_path, sep="\t")
    privacy = read_privacy(privacy_path)
    chosen = segmentation_sources(showcase(selection, privacy))
    chosen["dsc"] = [patient_dsc(metrics, r.source, r.setting, "test", patient) for r in chosen.itertuples()]
    palette = sigma_palette(privacy["sigma"])
    image, affine = axial_mip(Path(data) / patient / "image.nii.gz")
    truth, _ = axial_mip(Path(data) / patient / "label.nii.gz")
    extent = mip_extent(affine, image.shape)
    n = 2 + len(chosen)
    with matplotlib.rc_context(FONT):
        fig = new_figure(figsize=(WIDTH, WIDTH / n + 1.4))
        axes = fig.subplots(1, n)
        axes[0].imshow(image, cmap="gray", origin="lower", extent=extent, vmax=float(np.percentile(image, 99.5)))
        axes[0].set_title("image MIP")
        axes[1].imshow(truth, cmap="gray", origin="lower", extent=extent, vmin=0, vmax=1)
        axes[1].set_title("ground truth")
        for ax, row in zip(axes[2:], chosen.itertuples()):
            seg, _ = axial_mip(showcase_prediction(predictions, row.source, row.setting, patient, "segmentation"))
            ax.imshow(seg, cmap="gray", origin="lower", extent=extent, vmin=0, vmax=1)
            title, colour = source_title(pd.Series(row._asdict()), palette)
            ax.set_title(f"{title.replace(chr(10), ' ')}\nDSC {row.dsc:.2f}", fontsize=9)
            frame(ax, colour)
        for ax in axes[:2]:
            ax.set_xlabel("x (mm)")
        axes[0].set_ylabel("y (mm)")
        fig.suptitle(f"Test patient {patient}: segmentation against ground truth (axial MIP)")
        save_all(fig, outputs)
    return chosen
