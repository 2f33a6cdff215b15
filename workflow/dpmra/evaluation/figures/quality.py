"""The synthetic data against epsilon: Fig. 6 (Frechet distance), Fig. 8 (SSIM), Fig. 9 (t-SNE), and the
memorisation check's plot (membership inference, distances to closest record, near copies)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.patches import Patch

from dpmra.evaluation.figures.style import (
    FONT,
    REAL_COLOUR,
    RUN_MARKERS,
    epsilon_axis,
    epsilon_label,
    epsilon_panels,
    save_all,
    sigma_epsilons,
    sigma_legend,
    sigma_palette,
)
from dpmra.evaluation.tables import parse_source, read_privacy
from dpmra.shared.html_tables import number
from dpmra.shared.pictures import new_figure


def fd_label(backbones: Iterable[str]) -> str:
    """'FID' only for Inception-v3 features; otherwise the Fréchet distance named by its feature extractor."""
    names = sorted({b for b in backbones if isinstance(b, str)})
    if names == ["inception-v3"]:
        return "FID"
    return f"Fréchet distance ({', '.join(names) or 'unknown features'})"


def quality_runs(quality: pd.DataFrame, privacy: pd.DataFrame) -> pd.DataFrame:
    """Synthetic rows of quality.tsv with the run's sigma label and accountant epsilon from privacy.tsv."""
    synthetic = quality[quality["source"] != "real"].drop(columns=["sigma", "seed", "epsilon"])
    return privacy[["source", "sigma", "seed", "epsilon_rdp"]].merge(synthetic, on="source")


def per_sigma(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean and SD over seeds (SD empty for one seed) of the given columns, per sigma, by epsilon."""
    grouped = runs.groupby("sigma")
    table = grouped[["epsilon_rdp"]].mean().rename(columns={"epsilon_rdp": "epsilon"})
    table["n_runs"] = grouped.size()
    for column in columns:
        table[f"{column}_mean"] = grouped[column].mean()
        table[f"{column}_sd"] = grouped[column].std(ddof=1)
    return table.reset_index().sort_values("epsilon", ignore_index=True)


def draw_runs_and_means(ax: Axes, runs: pd.DataFrame, means: pd.DataFrame, column: str, palette, x, marker="o"):
    """Each run as a small marker and the per-sigma mean ± SD as a large one, joined across epsilon in grey."""
    for _, run in runs.iterrows():
        ax.plot(x(run["epsilon_rdp"]), run[column], marker, mfc="none", mec=palette[run["sigma"]], ms=6, alpha=0.7)
    xs = [x(e) for e in means["epsilon"]]
    ax.plot(xs, means[f"{column}_mean"], color="0.5", linewidth=1, zorder=1)
    for pos, (_, row) in zip(xs, means.iterrows()):
        sd = row[f"{column}_sd"]
        ax.errorbar(
            pos,
            row[f"{column}_mean"],
            yerr=None if math.isnan(sd) else sd,
            fmt=marker,
            color=palette[row["sigma"]],
            ms=8,
            capsize=4,
            zorder=3,
        )


def plot_fid(quality_path: Path, privacy_path: Path, outputs: list[Path]) -> pd.DataFrame:
    """Fig. 6: Fréchet distance of each synthetic set to real train and test patches, and the train-test gap."""
    privacy = read_privacy(privacy_path)
    runs = quality_runs(pd.read_csv(quality_path, sep="\t", dtype={"source": str}), privacy)
    means = per_sigma(runs, ["fd_train", "fd_test", "fd_gap"])
    palette = sigma_palette(privacy["sigma"])
    name = fd_label(runs["fd_backbone"])
    short = "FID" if name == "FID" else "Fréchet distance"
    with matplotlib.rc_context(FONT):
        fig, axes, x = epsilon_panels(privacy, 2, 4.6)
        draw_runs_and_means(axes[0], runs, means, "fd_train", palette, x, marker="s")
        draw_runs_and_means(axes[0], runs, means, "fd_test", palette, x, marker="^")
        draw_runs_and_means(axes[1], runs, means, "fd_gap", palette, x)
        axes[0].set_ylabel(f"{short} (lower = closer)")
        axes[0].set_title("A: to real train (squares) and test (triangles)")
        axes[1].set_ylabel(f"{short} to test - to train")
        axes[1].set_title("B: gap (positive = closer to training patients)")
        axes[1].axhline(0, color="0.6", linewidth=1)
        axes[1].legend(handles=RUN_MARKERS, loc="best", fontsize=8)
        sigma_legend(fig, palette, sigma_epsilons(privacy), real=False)
        fig.suptitle(f"{name} between synthetic and real patches")
        save_all(fig, outputs)
    return means


def plot_ssim(quality_path: Path, privacy_path: Path, outputs: list[Path]) -> pd.DataFrame:
    """Fig. 8: mean pairwise SSIM of each synthetic set against epsilon, real patches as reference."""
    privacy = read_privacy(privacy_path)
    quality = pd.read_csv(quality_path, sep="\t", dtype={"source": str})
    runs = quality_runs(quality, privacy)
    means = per_sigma(runs, ["ssim_mean"])
    real = quality.loc[quality["source"] == "real", "ssim_mean"]
    palette = sigma_palette(privacy["sigma"])
    with matplotlib.rc_context(FONT):
        fig = new_figure(figsize=(8.5, 4.6))
        ax = fig.subplots()
        x = epsilon_axis(ax, privacy["epsilon_rdp"], epsilon_label(privacy))
        if len(real):
            ax.axhline(real.iloc[0], color=REAL_COLOUR, linestyle="--", linewidth=1.2)
        draw_runs_and_means(ax, runs, means, "ssim_mean", palette, x)
        ax.set_ylabel("mean pairwise SSIM (higher = less diverse)")
        ax.legend(handles=RUN_MARKERS, loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        sigma_legend(fig, palette, sigma_epsilons(privacy), real=len(real) > 0)
        fig.suptitle("Diversity of generated images (real patches: dashed)")
        save_all(fig, outputs)
    return means.assign(real_ssim=real.iloc[0] if len(real) else math.nan)


def tsne_groups(sources: Iterable[str], palette: dict[str, str]) -> dict[str, str]:
    """Colour per t-SNE group: real in grey, synthetic sets by their sigma, anything else from a qualitative map."""
    others = matplotlib.colormaps["tab10"]
    colours, k = {}, 0
    for source in dict.fromkeys(sources):
        parsed = parse_source(source)
        if parsed and parsed[0] in palette:
            colours[source] = palette[parsed[0]]
        elif str(source).startswith("real"):
            colours[source] = REAL_COLOUR
        else:
            colours[source] = to_hex(others(k % 10))
            k += 1
    return colours


def plot_tsne(tsne_path: Path, privacy_path: Path, outputs: list[Path]) -> pd.DataFrame:
    """Fig. 9: the t-SNE embedding of real and synthetic patches, one colour per sigma (seeds share it)."""
    privacy = read_privacy(privacy_path)
    table = pd.read_csv(tsne_path, sep="\t", dtype={"source": str})
    palette = sigma_palette(privacy["sigma"])
    colours = tsne_groups(table["source"], palette)
    epsilons = sigma_epsilons(privacy)
    with matplotlib.rc_context(FONT):
        fig = new_figure(figsize=(9, 7))
        ax = fig.subplots()
        for source, group in table.groupby("source", sort=False):
            ax.scatter(group["x"], group["y"], s=14, color=colours[source], alpha=0.6, linewidths=0)
        handles = []
        for source in dict.fromkeys(table["source"]):
            parsed = parse_source(source)
            if parsed is None:
                handles.append(Patch(color=colours[source], label=f"{source} patches"))
            elif not any(h.get_label().startswith(f"sigma = {parsed[0]}") for h in handles):
                eps = "∞" if parsed[0] == "inf" else number(epsilons.get(parsed[0], math.nan))
                handles.append(Patch(color=colours[source], label=f"sigma = {parsed[0]} (epsilon = {eps})"))
        ax.legend(handles=handles, loc="best", fontsize=8)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        fig.suptitle("t-SNE embedding of real and synthetic patches")
        save_all(fig, outputs)
    return table.assign(colour=table["source"].map(colours))


def plot_audit(audit_path: Path, privacy_path: Path, outputs: list[Path]) -> pd.DataFrame:
    """Empirical privacy against epsilon: membership-inference AUC, distances to closest record, near copies."""
    privacy = read_privacy(privacy_path)
    audit = pd.read_csv(audit_path, sep="\t", dtype={"source": str}).drop(columns=["sigma", "seed", "epsilon"])
    runs = privacy[["source", "sigma", "seed", "epsilon_rdp"]].merge(audit, on="source")
    runs["near_copy_pct"] = 100 * runs["near_copy_share"]
    columns = ["mia_auc", "dcr_train_median", "dcr_holdout_median", "near_copy_pct"]
    means = per_sigma(runs, columns)
    palette = sigma_palette(privacy["sigma"])
    with matplotlib.rc_context(FONT):
        fig, axes, x = epsilon_panels(privacy, 3, 4.4)
        draw_runs_and_means(axes[0], runs, means, "mia_auc", palette, x)
        axes[0].axhline(0.5, color="0.5", linestyle="--", linewidth=1)
        axes[0].set_ylabel("membership-inference AUC (0.5 = chance)")
        axes[0].legend(handles=RUN_MARKERS, loc="best", fontsize=8)
        draw_runs_and_means(axes[1], runs, means, "dcr_train_median", palette, x, marker="s")
        draw_runs_and_means(axes[1], runs, means, "dcr_holdout_median", palette, x, marker="^")
        axes[1].set_ylabel("median distance to closest record\n(pixel L2 on the 0..255 scale)")
        axes[1].set_title("to train (squares) and holdout (triangles)")
        draw_runs_and_means(axes[2], runs, means, "near_copy_pct", palette, x)
        axes[2].set_ylabel("near copies of training patches (%)")
        sigma_legend(fig, palette, sigma_epsilons(privacy), real=False)
        fig.suptitle("Memorisation / distance-to-closest-record check of the released synthetic data")
        save_all(fig, outputs)
    return means
