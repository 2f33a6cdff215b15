"""Selection of the best U-Net setting, the summary and Table 1, on hand-made metric tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dpmra.evaluation.tables import write_tables
from dpmra.segmentation.metrics import METRICS


def metric_table(path, dsc: list[float], bahd: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"patient": f"P{i}", **dict.fromkeys(METRICS, 0.5), "dsc": d, "bahd_mm": b} for i, (d, b) in enumerate(zip(dsc, bahd))]
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)


@pytest.fixture
def study(tmp_path):
    metrics = tmp_path / "metrics"
    # real: setting s2 wins on validation; synthetic: s1 (tie broken by config order is not needed here)
    for source, val in (("real", {"s1": [0.7, 0.8], "s2": [0.9, 0.8]}), ("sigma~1/seed~0", {"s1": [0.6, 0.6], "s2": [0.5, 0.6]})):
        for setting in ("s1", "s2"):
            metric_table(metrics / source / setting / "val.tsv", val[setting], [1.0, 1.0])
            metric_table(metrics / source / setting / "test.tsv", [0.8, 0.6], [1.0, 3.0])
            metric_table(metrics / source / setting / "external.tsv", [0.5, 0.0, 0.0], [2.0, math.inf, math.inf])
    gan = tmp_path / "gan" / "sigma~1" / "seed~0"
    gan.mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2], "epsilon_rdp": [3.0, 4.5]}).to_csv(gan / "epochs.tsv", sep="\t", index=False)
    write_tables(metrics, tmp_path / "gan", ["real", "sigma~1/seed~0"], ["s1", "s2"], ["val", "test", "external"], tmp_path / "tables")
    return tmp_path / "tables"


def test_selection_by_mean_validation_dsc(study):
    selection = pd.read_csv(study / "selection.tsv", sep="\t")
    assert selection["setting"].tolist() == ["s2", "s1"]
    assert selection["val_dsc_mean"].tolist() == pytest.approx([0.85, 0.6])


def summary_row(summary: pd.DataFrame, split: str, metric: str) -> pd.Series:
    """The summary row of the real source's first setting."""
    part = summary[(summary.source == "real") & (summary.setting == "s1") & (summary.split == split)]
    return part[part.metric == metric].iloc[0]


def test_summary_has_every_source_setting_split_metric(study):
    summary = pd.read_csv(study / "summary.tsv", sep="\t")
    assert summary.columns.tolist() == ["source", "setting", "split", "metric", "mean", "sd", "n", "n_inf"]
    assert len(summary) == 2 * 2 * 3 * len(METRICS)
    row = summary_row(summary, "test", "dsc")
    assert row["mean"] == pytest.approx(0.7) and row["sd"] == pytest.approx(math.sqrt(0.02), rel=1e-5)
    assert (row["n"], row["n_inf"]) == (2, 0)


def test_summary_counts_infinite_distances_and_averages_the_finite_ones(study):
    """Two of three external patients with an empty prediction (bAHD inf): mean over the one finite value."""
    summary = pd.read_csv(study / "summary.tsv", sep="\t")
    bahd = summary_row(summary, "external", "bahd_mm")
    assert bahd["mean"] == 2.0 and math.isnan(bahd["sd"]) and (bahd["n"], bahd["n_inf"]) == (1, 2)
    dsc = summary_row(summary, "external", "dsc")
    assert dsc["mean"] == pytest.approx(0.5 / 3, rel=1e-5) and (dsc["n"], dsc["n_inf"]) == (3, 0)


def test_table1(study):
    table = pd.read_csv(study / "table1.tsv", sep="\t", keep_default_na=True)
    assert table.columns.tolist() == [
        "source", "split", "epsilon", "dsc_mean", "dsc_sd", "bahd_mean", "bahd_sd", "bahd_n", "bahd_n_inf",
        "private_gain",
    ]
    assert table["private_gain"].isna().all(), "no placebo in this study"
    assert table[["source", "split"]].values.tolist() == [
        ["real", "test"], ["real", "external"], ["sigma~1/seed~0", "test"], ["sigma~1/seed~0", "external"]
    ]
    assert math.isnan(table["epsilon"][0]) and table["epsilon"][2] == 4.5
    assert table["dsc_mean"][0] == pytest.approx(0.7) and table["bahd_mean"][0] == pytest.approx(2.0)
    assert table["bahd_sd"][0] == pytest.approx(math.sqrt(2), rel=1e-5) and table["dsc_sd"][1] == pytest.approx(0.2887, abs=1e-4)
    assert table[["bahd_n", "bahd_n_inf"]].values.tolist() == [[2, 0], [1, 2], [2, 0], [1, 2]]
    assert table["bahd_mean"][1] == 2.0 and math.isnan(table["bahd_sd"][1])


def test_private_gain_pairs_each_run_with_its_placebo_and_spreads_over_seeds():
    """Two seeds at sigma 0.5: gains 0.80 - 0.70 and 0.74 - 0.70 (mean 0.07, SD 0.0424); sigma inf has no placebo."""
    from dpmra.evaluation.tables import private_gain, with_private_gain

    rows = [
        ("sigma~0.5/seed~0", 0.80), ("sigma~0.5/seed~1", 0.74), ("placebo~0.5/seed~0", 0.70),
        ("placebo~0.5/seed~1", 0.70), ("sigma~inf/seed~0", 0.90), ("real", 0.95),
    ]
    table = pd.DataFrame(
        [{"source": s, "split": "test", "epsilon": 10.0, "dsc_mean": d} for s, d in rows]
    )
    gained = with_private_gain(table).set_index("source")["private_gain"]
    assert gained["sigma~0.5/seed~0"] == pytest.approx(0.10) and gained["sigma~0.5/seed~1"] == pytest.approx(0.04)
    assert gained.drop(["sigma~0.5/seed~0", "sigma~0.5/seed~1"]).isna().all()
    summary = private_gain(with_private_gain(table))
    assert summary[["sigma", "split", "seeds"]].values.tolist() == [["0.5", "test", 2]]
    row = summary.iloc[0]
    assert row["private_gain_mean"] == pytest.approx(0.07)
    assert row["private_gain_sd"] == pytest.approx(math.sqrt(((0.03) ** 2 + (0.03) ** 2) / 1))
    assert row["private_dsc_mean"] == pytest.approx(0.77) and row["placebo_dsc_mean"] == pytest.approx(0.70)
