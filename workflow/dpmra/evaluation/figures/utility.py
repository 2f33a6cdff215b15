"""Figure stage: the paper's figures 2-9, Table 1 and the other tables as HTML, and the plots beyond the paper.

Everything here is regenerated from files under results/ (never from the config): epsilon on every axis is
the accountants' output gathered from the privacy cards into privacy.tsv. One colour per sigma (so per
epsilon) in every figure: the palette comes from the sorted set of sigmas of all GAN runs, which every figure
reads from the same table. Each plotting function returns the data frame it plotted, so tests can check numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from dpmra.release.cards import card_epsilon, read_card
from dpmra.shared.atomic import write_tsv
from dpmra.shared.html_tables import Section, mean_sd, number, write_page
from dpmra.shared.pictures import mip_extent, new_figure, save_figure

SOURCE = re.compile(r"sigma~(?P<sigma>inf|[0-9]+(?:\.[0-9]+)?)/seed~(?P<seed>[0-9]+)")
PRIVACY_COLUMNS = [
    "source",
    "sigma",
    "seed",
    "mode",
    "epochs",
    "critic_steps",
    "delta",
    "epsilon_rdp",
    "epsilon_prv",
    "epsilon_rdp_paper",
]
ACCOUNTANTS = {
    "epsilon_rdp": ("RDP (bound of the loop that ran)", "o"),
    "epsilon_prv": ("PRV (tighter estimate)", "D"),
    "epsilon_rdp_paper": ("RDP as the paper accounted", "X"),
}
REAL_COLOUR = "#7f7f7f"
PUBLIC_COLOUR = "#17becf"
NONPRIVATE_COLOUR = "#000000"
PRIVATE_COLOURMAP = "plasma"
ERROR_COLOURS = {1: ("TP", "#2ca02c"), 2: ("FP", "#d62728"), 3: ("FN", "#1f77b4")}
SAMPLES_PER_COLUMN = 2
FONT = {"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11, "legend.fontsize": 9}
DPI = 100
WIDTH = 11.5  # inches: 1150 pixels, the width of the report's content pane on a 1600-pixel window
PANELS_PER_ROW = 4
PLAIN = FuncFormatter(lambda value, _: f"{value:g}")
RUN_MARKERS = [
    Line2D([], [], marker="o", mfc="none", mec="0.3", ls="none", label="single run (seed)"),
    Line2D([], [], marker="o", color="0.3", ls="none", label="mean ± SD over seeds"),
]


# --- sources, runs and the privacy table -------------------------------------------------------------------


def parse_source(source: str) -> tuple[str, int] | None:
    """(sigma label, seed) of a synthetic source `sigma~S/seed~N` (anywhere in a path); None for others."""
    match = SOURCE.search(str(source))
    return (match["sigma"], int(match["seed"])) if match else None


def sigma_value(label: str) -> float:
    """The noise multiplier of a sigma label (`inf` for the non-private run)."""
    return float(label)


def privacy_row(card_path: Path) -> dict:
    """One GAN run's privacy accounting, from its privacy card; sigma and seed from the card's directory."""
    card_path = Path(card_path)
    parsed = parse_source(card_path.parent.as_posix())
    if parsed is None:
        raise ValueError(f"{card_path}: not under sigma~{{sigma}}/seed~{{seed}}/")
    card = read_card(card_path)
    try:
        epsilon = card["epsilon"]
        return {
            "source": f"sigma~{parsed[0]}/seed~{parsed[1]}",
            "sigma": parsed[0],
            "seed": parsed[1],
            "mode": card["mode"],
            "epochs": card["epochs"],
            "critic_steps": card["critic_steps"],
            "delta": card["delta"],
            "epsilon_rdp": card_epsilon(epsilon["rdp"]),
            "epsilon_prv": card_epsilon(epsilon["prv"]),
            "epsilon_rdp_paper": card_epsilon(epsilon["rdp_paper"]) if "rdp_paper" in epsilon else math.nan,
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{card_path}: not a privacy card with mode, epochs, delta and epsilon ({err!r})") from err


def privacy_table(cards: Iterable[Path]) -> pd.DataFrame:
    """privacy.tsv: one row per GAN run, most private first (ascending RDP epsilon, then seed)."""
    table = pd.DataFrame([privacy_row(c) for c in cards], columns=PRIVACY_COLUMNS)
    return table.sort_values(["epsilon_rdp", "seed"], kind="stable", ignore_index=True)


def read_privacy(path: Path) -> pd.DataFrame:
    """privacy.tsv with sigma kept as its label (`inf`, `0.65`) and epsilon as floats (inf allowed)."""
    return pd.read_csv(path, sep="\t", dtype={"sigma": str, "source": str, "mode": str})


def write_privacy_table(cards: list[Path], out: Path, html: Path) -> pd.DataFrame:
    """privacy.tsv and its HTML rendering from the privacy cards of every GAN run."""
    table = privacy_table(cards)
    write_tsv(table, out)
    shown = table.rename(columns={"epsilon_rdp": "epsilon RDP", "epsilon_prv": "epsilon PRV"})
    if shown["epsilon_rdp_paper"].isna().all():
        shown = shown.drop(columns="epsilon_rdp_paper")
    else:
        shown = shown.rename(columns={"epsilon_rdp_paper": "epsilon RDP (paper's accounting)"})
    note = (
        "epsilon at the run's delta after its last epoch, from the privacy card of the released dataset. "
        "RDP is the bound the project reports; PRV a tighter numerical estimate of the same mechanism; in "
        "paper mode the paper's own accounting of the published loop is shown beside its valid bound."
    )
    write_page("GAN runs: privacy accounting", [Section("Privacy per GAN run", shown, note)], html)
    return table


# --- colours and the epsilon axis --------------------------------------------------------------------------


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
    fig: Figure, palette: dict[str, str], epsilons: dict[str, float], real: bool, markers: Iterable[Line2D] = ()
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


# --- segmentation utility: Fig. 3, Fig. 5 and the accounting plot -----------------------------------------


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
            ax.set_ylabel(f"{split} {ylabel}")
            ax.grid(alpha=0.3)
        handles = UTILITY_MARKERS + [PUBLIC_MARKER] * (public is not None) + [INFINITE_MARKER] * infinite
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


# --- pictures of data: Fig. 2, Fig. 4, Fig. 7 ---------------------------------------------------------------


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


# --- synthetic data quality: Fig. 6, Fig. 8, Fig. 9 ---------------------------------------------------------


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
        fig = new_figure(figsize=(WIDTH, 4.6))
        axes = fig.subplots(1, 2)
        for ax in axes:
            x = epsilon_axis(ax, privacy["epsilon_rdp"], epsilon_label(privacy))
            ax.grid(alpha=0.3)
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


# --- privacy audit and GAN training ------------------------------------------------------------------------


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
        fig = new_figure(figsize=(WIDTH, 4.4))
        axes = fig.subplots(1, 3)
        for ax in axes:
            x = epsilon_axis(ax, privacy["epsilon_rdp"], epsilon_label(privacy))
            ax.grid(alpha=0.3)
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


# --- tables as HTML ----------------------------------------------------------------------------------------


INFINITE_NOTE = (
    "[k ∞]: k patients had an infinite distance (no vessel predicted inside the brain mask, or none labelled); "
    "the mean and SD are over the other patients."
)


def source_words(source: str) -> str:
    """A source in the study's words."""
    parsed = parse_source(source)
    if parsed is None:
        return "real patches" if source == "real" else source
    return f"synthetic, sigma = {parsed[0]}, seed {parsed[1]}"


def table1_rows(table1: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 rows: real, the best non-private run and the best private run (highest val DSC)."""
    val = selection.set_index("source")["val_dsc_mean"]
    sources = pd.Series(table1["source"].unique())
    sigmas = sources.map(lambda s: (parse_source(s) or (None,))[0])
    picks = ["real"] if "real" in set(sources) else []
    for private in (False, True):
        group = sources[sigmas.notna() & ((sigmas != "inf") == private)]
        if len(group):
            picks.append(max(group, key=lambda s: (val.get(s, -math.inf), -list(sources).index(s))))
    return table1[table1["source"].isin(picks)].assign(order=lambda t: t["source"].map(picks.index))


def table1_section(table1: pd.DataFrame, selection: pd.DataFrame) -> Section:
    """Table 1 in the paper's layout: mean (SD) of DSC and bAHD per split, best value per column in bold."""
    rows = table1_rows(table1, selection)
    splits = [s for s in ("test", "external") if (rows["split"] == s).any()]
    records, raw = [], []
    for source, part in sorted(rows.groupby("source"), key=lambda item: item[1]["order"].iloc[0]):
        part = part.set_index("split")
        record = {"U-Net trained on": source_words(source), "epsilon": part["epsilon"].iloc[0]}
        values = {}
        for split in splits:
            if split in part.index:
                row = part.loc[split]
                record[f"{split} DSC"] = mean_sd(row["dsc_mean"], row["dsc_sd"], ".2f")
                record[f"{split} bAHD (mm)"] = mean_sd(row["bahd_mean"], row["bahd_sd"], ".2f", row["bahd_n_inf"])
                values[f"{split} DSC"] = row["dsc_mean"]
                values[f"{split} bAHD (mm)"] = -row["bahd_mean"] if np.isfinite(row["bahd_mean"]) else -math.inf
        records.append(record)
        raw.append(values)
    shown = pd.DataFrame(records)
    shown["epsilon"] = shown["epsilon"].map(lambda e: "–" if pd.isna(e) else number(float(e)))
    bold = set()
    for column in shown.columns[2:]:
        scores = [r.get(column, -math.inf) for r in raw]
        if scores:
            bold.add((int(np.argmax(scores)), column))
    note = (
        "Mean (SD) over patients of the U-Net setting with the highest validation DSC per source; best per column "
        "in bold. Private row: the GAN run (any sigma, seed) whose U-Net had the highest validation DSC. "
        f"{INFINITE_NOTE}"
    )
    return Section("Table 1: real, non-private and best private source", shown, note, bold=bold)


def all_sources_section(table1: pd.DataFrame) -> Section:
    """Every source's Table 1 values, one row per source and split."""
    bahd = zip(table1["bahd_mean"], table1["bahd_sd"], table1["bahd_n_inf"])
    shown = pd.DataFrame(
        {
            "source": table1["source"],
            "split": table1["split"],
            "epsilon": table1["epsilon"],
            "DSC mean (SD)": [mean_sd(m, s) for m, s in zip(table1["dsc_mean"], table1["dsc_sd"])],
            "bAHD mm mean (SD)": [mean_sd(m, s, n_inf=k) for m, s, k in bahd],
        }
    )
    note = f"epsilon: RDP bound after the GAN's last epoch; empty for real. {INFINITE_NOTE}"
    return Section("All training sources", shown, note)


def write_table1_html(table1_path: Path, selection_path: Path, out: Path) -> pd.DataFrame:
    """table1.html: the paper's Table 1 and the same values for every source."""
    table1 = pd.read_csv(table1_path, sep="\t", dtype={"source": str})
    selection = pd.read_csv(selection_path, sep="\t", dtype={"source": str})
    section = table1_section(table1, selection)
    write_page("Table 1: vessel segmentation", [section, all_sources_section(table1)], out)
    return section.table


def write_summary_html(summary_path: Path, selection_path: Path, out: Path) -> pd.DataFrame:
    """summary.html: the selected setting per source, and every setting's metrics per split (selected marked)."""
    summary = pd.read_csv(summary_path, sep="\t", dtype={"source": str})
    selection = pd.read_csv(selection_path, sep="\t", dtype={"source": str})
    summary["cell"] = [mean_sd(m, s, n_inf=k) for m, s, k in zip(summary["mean"], summary["sd"], summary["n_inf"])]
    wide = summary.pivot_table(
        index=["source", "setting", "split"], columns="metric", values="cell", aggfunc="first", sort=False
    )
    wide["n"] = summary.groupby(["source", "setting", "split"], sort=False)["n"].first()
    names = {
        "dsc": "DSC", "bahd_mm": "bAHD mm", "hd95_mm": "HD95 mm", "avd": "AVD", "assd_mm": "ASSD mm",
        "hd95_voxels_mm": "HD95 voxel sets mm",
    }
    wide = wide.reset_index().rename(columns=names)
    chosen = set(zip(selection["source"], selection["setting"]))
    marked = {i for i, r in enumerate(wide.itertuples()) if (r.source, r.setting) in chosen}
    sections = [
        Section(
            "Selected U-Net per source (highest mean validation DSC)",
            selection.rename(columns={"val_dsc_mean": "val DSC mean"}),
        ),
        Section(
            "Every setting: mean (SD) over patients",
            wide,
            f"Highlighted rows: the selected setting of each source. {INFINITE_NOTE}",
            marked_rows=marked,
        ),
    ]
    write_page("Segmentation: all U-Nets", sections, out)
    return wide


def write_quality_html(quality_path: Path, out: Path) -> pd.DataFrame:
    """quality.html: Fréchet distances and SSIM per synthetic dataset, real SSIM last."""
    quality = pd.read_csv(quality_path, sep="\t", dtype={"source": str, "sigma": str})
    name = fd_label(quality["fd_backbone"].dropna())
    shown = quality.rename(
        columns={
            "fd_backbone": "features",
            "fd_train": f"{name} to train",
            "fd_test": f"{name} to test",
            "fd_gap": "test - train (gap)",
            "ssim_mean": "mean SSIM",
        }
    )
    note = "Fréchet distances of each synthetic set to the real train and test patches; SSIM: mean over image pairs."
    write_page("Synthetic data quality", [Section("Quality per synthetic dataset", shown, note)], out)
    return shown


def write_audit_html(audit_path: Path, out: Path) -> pd.DataFrame:
    """audit.html: the empirical privacy audit per synthetic dataset."""
    audit = pd.read_csv(audit_path, sep="\t", dtype={"source": str, "sigma": str})
    shown = audit.rename(
        columns={
            "dcr_train_median": "DCR train (median)",
            "dcr_holdout_median": "DCR holdout (median)",
            "near_copy_share": "near-copy share",
            "mia_auc": "MIA AUC",
            "mia_tpr_at_1fpr": "MIA TPR at 1% FPR",
        }
    )
    note = (
        "DCR: Euclidean distance over the image pixels (each patch min-max scaled to 0..255) of a synthetic patch "
        "to its closest real training (or held-out) patch; near-copy share: synthetic patches closer to a training "
        "patch than the 5th percentile of held-out-to-training distances; MIA: membership-inference attack telling "
        "training from held-out patches (AUC 0.5 = chance)."
    )
    write_page("Memorisation / distance-to-closest-record check", [Section("Check per synthetic dataset", shown, note)], out)
    return shown
