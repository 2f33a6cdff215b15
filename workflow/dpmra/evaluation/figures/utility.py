"""Segmentation utility against epsilon: Fig. 3 (test), Fig. 5 (external) and the accounting plot.

Each source's selected U-Net (highest validation DSC, `dpmra.evaluation.tables`) scored on a split, per GAN run
and as mean ± SD over seeds per sigma, each placebo beside the private run it controls, with real data and the
public warm start as references.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from dpmra.evaluation.figures.style import (
    FONT,
    PUBLIC_COLOUR,
    REAL_COLOUR,
    RUN_MARKERS,
    WIDTH,
    epsilon_axis,
    epsilon_label,
    save_all,
    sigma_epsilons,
    sigma_legend,
    sigma_palette,
)
from dpmra.evaluation.tables import read_privacy
from dpmra.privacy.plan import placebo_source
from dpmra.shared.pictures import new_figure

ACCOUNTANTS = {
    "epsilon_rdp": ("RDP (bound of the loop that ran)", "o"),
    "epsilon_prv": ("PRV (tighter estimate)", "D"),
    "epsilon_rdp_paper": ("RDP as the paper accounted", "X"),
}


def selected_scores(summary: pd.DataFrame, selection: pd.DataFrame, split: str) -> pd.DataFrame:
    """Per source, its selected setting's DSC and bAHD on a split (mean and SD over the patients with finite
    values, and n_inf, the patients with infinite ones), with val DSC."""
    rows = summary[summary["split"] == split].merge(selection, on=["source", "setting"])
    wide = rows.pivot_table(
        index=["source", "setting", "val_dsc_mean"], columns="metric", values=["mean", "sd", "n_inf"]
    )

    def column(statistic: str, metric: str) -> pd.Series | float:
        """One statistic of one metric; NaN where pivot_table dropped it for being NaN for every source."""
        return wide[(statistic, metric)] if (statistic, metric) in wide else math.nan

    out = pd.DataFrame(
        {
            f"{name}{suffix}": column(statistic, metric)
            for metric, name in (("dsc", "dsc"), ("bahd_mm", "bahd"))
            for statistic, suffix in (("mean", ""), ("sd", "_sd"), ("n_inf", "_n_inf"))
        }
    ).reset_index()
    return out.rename(columns={"val_dsc_mean": "val_dsc", "bahd": "bahd_mm"})


def utility_runs(summary: pd.DataFrame, selection: pd.DataFrame, privacy: pd.DataFrame, split: str) -> pd.DataFrame:
    """One row per GAN run with a scored U-Net: sigma, seed, epsilons and the selected U-Net's scores."""
    scores = selected_scores(summary, selection, split)
    return privacy.merge(scores, on="source").sort_values(["epsilon_rdp", "seed"], ignore_index=True)


def best_per_sigma(runs: pd.DataFrame) -> pd.DataFrame:
    """Per sigma, the run whose selected U-Net has the highest validation DSC (lowest seed on a tie)."""
    ordered = runs.sort_values(["sigma", "val_dsc", "seed"], ascending=[True, False, True])
    return ordered.groupby("sigma", sort=False).head(1).set_index("sigma")


def utility_by_sigma(runs: pd.DataFrame) -> pd.DataFrame:
    """Per sigma: epsilon, runs, mean and SD over seeds of DSC and bAHD (SD empty for one seed), and the best run."""
    grouped = runs.groupby("sigma")
    best = best_per_sigma(runs)
    table = pd.DataFrame(
        {
            "epsilon": grouped["epsilon_rdp"].mean(),
            "n_runs": grouped.size(),
            "dsc_mean": grouped["dsc"].mean(),
            "dsc_sd": grouped["dsc"].std(ddof=1),
            "bahd_mean": grouped["bahd_mm"].mean(),
            "bahd_sd": grouped["bahd_mm"].std(ddof=1),
            "best_source": best["source"],
            "best_dsc": best["dsc"],
            "best_bahd": best["bahd_mm"],
        }
    )
    return table.reset_index().sort_values("epsilon", ignore_index=True)


def mark_infinite(ax: Axes, position: tuple[float, float], n_inf: float, colour: str, ha: str = "left") -> None:
    """Write `k∞` beside a mean that left out k infinite values (at the top of the panel when none was finite)."""
    if not n_inf > 0:
        return
    x, y = position
    finite = bool(np.isfinite(y))
    ax.annotate(
        f"{int(n_inf)}∞", (x, y if finite else 0.97), xycoords=("data", "data" if finite else "axes fraction"),
        xytext=(5 if ha == "left" else -5, 0), textcoords="offset points", ha=ha, va="center" if finite else "top",
        fontsize=9, color=colour,
    )


def n_inf_column(metric: str) -> str:
    """The selected_scores column counting a metric's infinite values (dsc -> dsc_n_inf, bahd_mm -> bahd_n_inf)."""
    return f"{metric.split('_')[0]}_n_inf"


def draw_real(ax: Axes, real: pd.Series | None, metric: str, colour: str = REAL_COLOUR) -> None:
    """A reference source (real data, or the public warm start alone): a line at the mean over patients with a
    band of one SD, and its `k∞` if any."""
    if real is None:
        return
    mean, sd = real[metric], real[f"{metric.split('_')[0]}_sd"]
    ax.axhline(mean, color=colour, linestyle="--", linewidth=1.2)
    if not math.isnan(sd):
        ax.axhspan(mean - sd, mean + sd, color=colour, alpha=0.15, linewidth=0)
    mark_infinite(ax, (ax.get_xlim()[1], mean), real[n_inf_column(metric)], colour, ha="right")


PUBLIC_MARKER = Line2D([], [], color=PUBLIC_COLOUR, ls="--", label="public warm start alone (no private data)")
PLACEBO_MARKER = Line2D(
    [], [], marker="s", mfc="none", mec="0.3", ls="none", ms=7, label="placebo (same recipe on public stand-ins)"
)


def placebo_points(runs: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Each scored placebo at the epsilon of the private run it controls (same sigma and seed), in its colour."""
    rows = [
        {"sigma": run.sigma, "epsilon_rdp": run.epsilon_rdp, **scores.loc[placebo, ["dsc", "bahd_mm"]].to_dict()}
        for run in runs.itertuples()
        if (placebo := placebo_source(run.source)) in scores.index
    ]
    return pd.DataFrame(rows, columns=["sigma", "epsilon_rdp", "dsc", "bahd_mm"])


def draw_placebos(ax: Axes, placebos: pd.DataFrame, metric: str, palette, x) -> None:
    """Hollow squares beside the private runs: the control that private learning is measured against."""
    for _, row in placebos.iterrows():
        ax.plot(x(row["epsilon_rdp"]), row[metric], "s", mfc="none", mec=palette[row["sigma"]], ms=7, mew=1.5, zorder=3)


def draw_utility_panel(ax: Axes, runs: pd.DataFrame, by_sigma: pd.DataFrame, metric: str, palette, x) -> None:
    """Single runs (hollow), mean ± SD over seeds (filled, bars where defined, joined over finite epsilon: the
    privacy-utility curve) and the best run (star) per sigma."""
    mean_col, sd_col, best_col = (
        ("dsc_mean", "dsc_sd", "best_dsc") if metric == "dsc" else ("bahd_mean", "bahd_sd", "best_bahd")
    )
    for _, run in runs.iterrows():
        ax.plot(x(run["epsilon_rdp"]), run[metric], "o", mfc="none", mec=palette[run["sigma"]], ms=6, alpha=0.7)
        # e.g. bAHD of empty segmentations: left out of the mean, so said beside it rather than silently dropped
        mark_infinite(ax, (x(run["epsilon_rdp"]), run[metric]), run[n_inf_column(metric)], palette[run["sigma"]])
    finite = by_sigma[np.isfinite(by_sigma["epsilon"])].sort_values("epsilon")
    ax.plot([x(e) for e in finite["epsilon"]], finite[mean_col], "-", color="0.45", linewidth=1.2, zorder=2)
    for _, row in by_sigma.iterrows():
        colour, pos = palette[row["sigma"]], x(row["epsilon"])
        sd = row[sd_col] if not math.isnan(row[sd_col]) else None
        ax.errorbar(pos, row[mean_col], yerr=sd, fmt="o", color=colour, ms=7, capsize=4, zorder=3)
        ax.plot(pos, row[best_col], "*", color=colour, mec="white", mew=0.5, ms=15, zorder=4)


UTILITY_MARKERS = [
    *RUN_MARKERS,
    Line2D([], [], color="0.45", label="privacy-utility curve (means, finite epsilon)"),
    Line2D([], [], marker="*", color="0.3", ls="none", ms=12, label="best run (highest val DSC)"),
    Line2D([], [], color=REAL_COLOUR, ls="--", label="real data (mean ± SD over patients)"),
]
INFINITE_MARKER = Line2D(
    [], [], marker=r"$k\infty$", color="0.3", ls="none", ms=14,
    label="k patients with empty segmentation (infinite bAHD, not in the mean)",
)


def plot_utility(
    summary_path: Path, selection_path: Path, privacy_path: Path, split: str, outputs: list[Path]
) -> pd.DataFrame:
    """Fig. 3 (test) / Fig. 5 (external): DSC and bAHD of each source's selected U-Net against epsilon."""
    summary = pd.read_csv(summary_path, sep="\t")
    selection = pd.read_csv(selection_path, sep="\t")
    privacy = read_privacy(privacy_path)
    runs = utility_runs(summary, selection, privacy, split)
    by_sigma = utility_by_sigma(runs)
    scores = selected_scores(summary, selection, split).set_index("source")
    real = scores.loc["real"] if "real" in scores.index else None
    public = scores.loc["public"] if "public" in scores.index else None
    placebos = placebo_points(runs, scores)
    palette = sigma_palette(privacy["sigma"])
    infinite = bool((scores[["dsc_n_inf", "bahd_n_inf"]] > 0).any(axis=None))
    with matplotlib.rc_context(FONT):
        fig = new_figure(figsize=(WIDTH, 4.6))
        axes = fig.subplots(1, 2)
        for ax, metric, ylabel in zip(axes, ("dsc", "bahd_mm"), ("DSC", "bAHD (mm)")):
            x = epsilon_axis(ax, privacy["epsilon_rdp"], epsilon_label(privacy))
            draw_real(ax, real, metric)
            draw_real(ax, public, metric, PUBLIC_COLOUR)
            draw_utility_panel(ax, runs, by_sigma, metric, palette, x)
            draw_placebos(ax, placebos, metric, palette, x)
            ax.set_ylabel(f"{split} {ylabel}")
            ax.grid(alpha=0.3)
        handles = (
            UTILITY_MARKERS + [PUBLIC_MARKER] * (public is not None) + [PLACEBO_MARKER] * (not placebos.empty)
            + [INFINITE_MARKER] * infinite
        )
        sigma_legend(fig, palette, sigma_epsilons(privacy), real is not None, handles)
        fig.suptitle(f"U-Nets trained on synthetic data, scored on the {split} patients")
        save_all(fig, outputs)
    return by_sigma


def accounting_points(summary: pd.DataFrame, selection: pd.DataFrame, privacy: pd.DataFrame) -> pd.DataFrame:
    """Long table: per GAN run, split and accountant, the epsilon and the selected U-Net's DSC."""
    rows = []
    for split in ("test", "external"):
        runs = utility_runs(summary, selection, privacy, split)
        for column in ACCOUNTANTS:
            part = runs[["source", "sigma", "seed", "dsc", column]].rename(columns={column: "epsilon"})
            rows.append(part.assign(split=split, accountant=column).dropna(subset=["epsilon"]))
    return pd.concat(rows, ignore_index=True)[["source", "sigma", "seed", "split", "accountant", "epsilon", "dsc"]]


def plot_accounting(summary_path: Path, selection_path: Path, privacy_path: Path, outputs: list[Path]) -> pd.DataFrame:
    """Utility against epsilon under each accountant: the same U-Net (one per run) at each accountant's epsilon."""
    summary = pd.read_csv(summary_path, sep="\t")
    selection = pd.read_csv(selection_path, sep="\t")
    privacy = read_privacy(privacy_path)
    points = accounting_points(summary, selection, privacy)
    splits = [s for s in ("test", "external") if (points["split"] == s).any()] or ["test"]
    palette = sigma_palette(privacy["sigma"])
    present = [a for a in ACCOUNTANTS if (points["accountant"] == a).any()]
    with matplotlib.rc_context(FONT):
        fig = new_figure(figsize=(min(WIDTH, 5.5 * len(splits) + 1), 4.6))
        axes = np.atleast_1d(fig.subplots(1, len(splits)))
        for ax, split in zip(axes, splits):
            part = points[points["split"] == split]
            x = epsilon_axis(ax, part["epsilon"], "epsilon at the run's delta")
            references = selected_scores(summary, selection, split).set_index("source")
            for source, colour in (("real", REAL_COLOUR), ("public", PUBLIC_COLOUR)):
                draw_real(ax, references.loc[source] if source in references.index else None, "dsc", colour)
            for source, run in part.groupby("source"):
                colour = palette[run["sigma"].iloc[0]]
                xs = [x(e) for e in run["epsilon"]]
                ax.plot(xs, run["dsc"], "-", color=colour, linewidth=1, alpha=0.6)
                for (_, point), pos in zip(run.iterrows(), xs):
                    ax.plot(pos, point["dsc"], ACCOUNTANTS[point["accountant"]][1], color=colour, ms=7)
            ax.set_ylabel(f"{split} DSC")
            ax.set_title(f"{split} split")
            ax.grid(alpha=0.3)
        handles = [
            Line2D([], [], marker=ACCOUNTANTS[a][1], color="0.3", ls="none", label=ACCOUNTANTS[a][0]) for a in present
        ]
        handles.append(Line2D([], [], color=REAL_COLOUR, ls="--", label="real data (mean ± SD over patients)"))
        if (summary["source"] == "public").any():
            handles.append(PUBLIC_MARKER)
        sigma_legend(fig, palette, sigma_epsilons(privacy), False, handles)
        modes = ", ".join(sorted(privacy["mode"].dropna().unique()))
        fig.suptitle(f"Same U-Nets, epsilon under each accountant (loop mode: {modes})")
        save_all(fig, outputs)
    return points
