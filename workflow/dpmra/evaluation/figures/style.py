"""What every report figure shares: one colour per sigma, the log epsilon axis, the legend, sizes, saving.

Every figure is regenerated from files under results/ (never from the config): epsilon on every axis is the
accountants' output gathered from the privacy cards into privacy.tsv (`dpmra.evaluation.tables`). One colour per
sigma (so per epsilon) in every figure: the palette comes from the sorted set of sigmas of all GAN runs, which
every figure reads from the same table. Each plotting function returns the data frame it plotted, so tests can
check numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullLocator

from dpmra.evaluation.tables import sigma_value
from dpmra.shared.html_tables import number
from dpmra.shared.pictures import new_figure, save_figure

REAL_COLOUR = "#7f7f7f"
PUBLIC_COLOUR = "#17becf"
NONPRIVATE_COLOUR = "#000000"
PRIVATE_COLOURMAP = "plasma"
FONT = {"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11, "legend.fontsize": 9}
DPI = 100
WIDTH = 11.5  # inches: 1150 pixels, the width of the report's content pane on a 1600-pixel window
PANELS_PER_ROW = 4
PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
RUN_MARKERS = [
    Line2D([], [], marker="o", mfc="none", mec="0.3", ls="none", label="single run (seed)"),
    Line2D([], [], marker="o", color="0.3", ls="none", label="mean ± SD over seeds"),
]


def sigma_palette(sigmas: Iterable[str]) -> dict[str, str]:
    """One colour per sigma label: black for inf, a sequential map from most to least noise for the rest."""
    unique = set(sigmas)
    finite = sorted((s for s in unique if s != "inf"), key=sigma_value, reverse=True)
    cmap = matplotlib.colormaps[PRIVATE_COLOURMAP]
    span = max(len(finite) - 1, 1)
    palette = {s: to_hex(cmap(0.05 + 0.75 * i / span)) for i, s in enumerate(finite)}
    if "inf" in unique:
        palette["inf"] = NONPRIVATE_COLOUR
    return palette


def infinity_x(finite: np.ndarray) -> float:
    """Where epsilon = inf sits on the log axis: a little right of the largest finite epsilon."""
    return float(np.max(finite)) * 3.0 if len(finite) else 1.0


def epsilon_axis(ax: Axes, epsilons: Iterable[float], label: str) -> Callable[[float], float]:
    """A log epsilon axis with a tick per value found and an '∞' tick for non-private runs; returns epsilon -> x."""
    values = np.asarray([e for e in epsilons if not math.isnan(e)], dtype=float)
    finite = np.unique(values[np.isfinite(values)])
    inf_x = infinity_x(finite)
    ticks = spaced_ticks(finite)
    labels = [f"{e:.3g}" for e in ticks]
    if np.isinf(values).any():
        ticks.append(inf_x)
        labels.append("∞")
        if len(finite):
            ax.axvline(math.sqrt(finite.max() * inf_x), color="0.6", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xticks(ticks, labels)
    ax.xaxis.set_minor_locator(NullLocator())
    low, high = (min(ticks), max(ticks)) if ticks else (1.0, 1.0)
    ax.set_xlim(low / 1.6, high * 1.6)
    ax.set_xlabel(label)
    return lambda e: inf_x if math.isinf(e) else e


def epsilon_panels(
    privacy: pd.DataFrame, panels: int, height: float
) -> tuple[Figure, np.ndarray, Callable[[float], float]]:
    """A report-wide figure of side-by-side panels, each on the runs' epsilon axis with a grid; returns the figure,
    its axes and the epsilon -> x map."""
    fig = new_figure(figsize=(WIDTH, height))
    axes = np.atleast_1d(fig.subplots(1, panels))
    for ax in axes:
        x = epsilon_axis(ax, privacy["epsilon_rdp"], epsilon_label(privacy))
        ax.grid(alpha=0.3)
    return fig, axes, x


def spaced_ticks(values: np.ndarray, ratio: float = 1.25) -> list[float]:
    """Sorted values thinned so that neighbours on the log axis differ by at least ``ratio`` (labels never overlap)."""
    ticks: list[float] = []
    for value in np.sort(values):
        if not ticks or value >= ticks[-1] * ratio:
            ticks.append(float(value))
    return ticks


def epsilon_label(privacy: pd.DataFrame, accountant: str = "RDP") -> str:
    """Axis label naming the accountant and delta (delta read from the runs; shown if they share one)."""
    deltas = privacy["delta"].dropna().unique()
    delta = f", delta = {deltas[0]:.3g}" if len(deltas) == 1 else ""
    return f"epsilon ({accountant}{delta})"


def sigma_legend(
    fig: Figure, palette: dict[str, str], epsilons: dict[str, float], real: bool, markers: Sequence[Line2D] = ()
) -> None:
    """A figure legend below the panels: the markers' meanings, then one entry per sigma with its epsilon (and real
    data, if shown)."""
    handles = [*markers] + ([Patch(color=REAL_COLOUR, label="real data")] if real else [])
    order = sorted(palette, key=lambda s: (epsilons.get(s, math.inf), s))
    for s in order:
        eps = epsilons.get(s, math.nan)
        text = "sigma = inf (non-private)" if s == "inf" else f"sigma = {s}: epsilon = {number(eps)}"
        handles.append(Patch(color=palette[s], label=text))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3 if markers else 4), frameon=False)


def save_all(fig: Figure, outputs: Iterable[Path]) -> None:
    """Save a figure to every output path (PNG and PDF), each in the format of its suffix."""
    for path in outputs:
        save_figure(fig, Path(path), dpi=DPI)


def sigma_epsilons(privacy: pd.DataFrame, column: str = "epsilon_rdp") -> dict[str, float]:
    """Mean epsilon per sigma label (seeds of one sigma share it, as their runs have the same length)."""
    return privacy.groupby("sigma")[column].mean().to_dict()
