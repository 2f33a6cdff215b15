"""The report's HTML tables: Table 1, the summary of every U-Net, synthetic data quality, the memorisation check.

Each page is written with `dpmra.shared.html_tables` from a table under results/tables/ (one file, inline CSS).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from dpmra.evaluation.figures.quality import fd_label
from dpmra.evaluation.tables import parse_source
from dpmra.shared.html_tables import Section, mean_sd, number, write_page

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
