"""GAN training across runs: losses, the Wasserstein estimate and epsilon per epoch (every run's epochs.tsv)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from dpmra.evaluation.figures.style import FONT, PLAIN, WIDTH, save_all, sigma_legend, sigma_palette
from dpmra.evaluation.tables import parse_source
from dpmra.shared.pictures import new_figure


def read_epochs(paths: Iterable[Path]) -> pd.DataFrame:
    """Every run's epochs.tsv in one long table with source, sigma and seed from the run's directory."""
    tables = []
    for path in paths:
        parsed = parse_source(Path(path).parent.as_posix())
        if parsed is None:
            raise ValueError(f"{path}: not under sigma~{{sigma}}/seed~{{seed}}/")
        table = pd.read_csv(path, sep="\t")
        tables.append(table.assign(source=f"sigma~{parsed[0]}/seed~{parsed[1]}", sigma=parsed[0], seed=parsed[1]))
    return pd.concat(tables, ignore_index=True)


def plot_gan_curves(epochs_paths: list[Path], outputs: list[Path]) -> pd.DataFrame:
    """GAN training across runs: critic and generator losses, Wasserstein estimate and epsilon per epoch."""
    epochs = read_epochs(epochs_paths)
    palette = sigma_palette(epochs["sigma"])
    final = epochs.groupby("sigma")["epsilon_rdp"].last().to_dict()
    panels = [("loss_d", "critic loss"), ("loss_g", "generator loss"), ("wasserstein", "Wasserstein estimate")]
    styles = {"epsilon_rdp": "-", "epsilon_prv": "--", "epsilon_rdp_paper": ":"}
    with matplotlib.rc_context(FONT):
        fig = new_figure(figsize=(WIDTH, 7.5))
        axes = fig.subplots(2, 2).ravel()
        for _, run in epochs.groupby("source"):
            colour = palette[run["sigma"].iloc[0]]
            for ax, (column, label) in zip(axes, panels):
                ax.plot(run["epoch"], run[column], color=colour, linewidth=1.2, alpha=0.8)
                ax.set_ylabel(label)
            if run["sigma"].iloc[0] != "inf":
                for column, style in styles.items():
                    if column in run and run[column].notna().any():
                        axes[3].plot(run["epoch"], run[column], style, color=colour, linewidth=1.2)
        axes[3].set_ylabel("epsilon at the run's delta")
        if (epochs["sigma"] != "inf").any():
            axes[3].set_yscale("log")
            axes[3].yaxis.set_major_formatter(PLAIN)
            axes[3].yaxis.set_minor_formatter(PLAIN)
        names = {"epsilon_rdp": "RDP", "epsilon_prv": "PRV", "epsilon_rdp_paper": "RDP, paper's accounting"}
        axes[3].legend(
            handles=[
                Line2D([], [], color="0.3", ls=s, label=names[c])
                for c, s in styles.items()
                if c in epochs and epochs[c].notna().any()
            ],
            fontsize=8,
        )
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        sigma_legend(fig, palette, final, real=False)
        fig.suptitle("GAN training, every run")
        save_all(fig, outputs)
    return epochs
