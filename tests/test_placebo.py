"""The placebo: a private run's recipe on a public stand-in cohort, which never reads a private patient."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, TEST_PE_SIGMA, snakemake

from dpmra.data.manifest import phantom_table
from dpmra.privacy.plan import placebo_sigmas


def test_stand_in_patients_are_fresh_public_site_patients():
    """Numbered after the warm start's cohort on the public site: in no split and not in the warm start's set."""
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())["data"]["phantom"]
    n_train = config["splits"]["train"]["patients"]
    table = phantom_table(config["splits"], config["seed"], config["public"], {"site": "C", "patients": n_train})
    placebo, public = table[table["split"] == "placebo"], table[table["split"] == "public"]
    assert len(placebo) == n_train and set(placebo["site"]) == {"C"}
    assert not set(placebo.index) & set(table.index[table["split"] != "placebo"])
    assert not set(placebo["seed"]) & set(public["seed"]), "no stand-in is a warm-start patient rendered again"
    assert placebo.index.tolist() == [f"C{i:03d}" for i in range(3, 3 + n_train)]


def test_a_stand_in_on_a_private_site_is_refused():
    with pytest.raises(ValueError, match="data.phantom.placebo: site A is also a split's site"):
        phantom_table({"train": {"site": "A", "patients": 2}}, 0, None, {"site": "A", "patients": 2})


def test_placebo_names_runs_by_target_epsilon_or_sigma_and_refuses_others():
    """gan.placebo [10, inf]: the sigma solved for epsilon 10 and the non-private run; 7 matches neither list."""
    gan = {"sigmas": ["inf"], "epsilons": [10, 2], "placebo": [10, "inf"]}
    by_epsilon = {10.0: "0.6794", 2.0: "1.47"}
    assert placebo_sigmas(gan, by_epsilon) == ["0.6794", "inf"]
    with pytest.raises(ValueError, match=r"gan.placebo: 7 is neither one of gan.epsilons \(\[10, 2\]\)"):
        placebo_sigmas({**gan, "placebo": [7]}, by_epsilon)


@pytest.mark.workflow
def test_placebo_run_needs_no_private_patient(tmp_path: Path):
    """The placebo's GAN and release built from scratch: no private patient is rendered, prepared or cut, and no
    private training set exists at any point (it may as well be deleted)."""
    target = "results/synth/placebo~1/seed~0/privacy_card.json"
    pe_target = f"results/synth/pe-placebo~{TEST_PE_SIGMA}/seed~0/privacy_card.json"  # test.yaml's PE placebo
    result = snakemake(tmp_path, target, pe_target, "--configfile", str(ROOT / "config/test.yaml"))
    assert result.returncode == 0, result.stdout[-3000:]
    rendered = sorted(p.name for p in (tmp_path / "results/phantom").iterdir())
    public = ["C000"]  # test.yaml: one warm-start patient, then 3 stand-ins (as many as train)
    assert rendered == [*public, "C001", "C002", "C003"]
    assert not (tmp_path / "results/patches/train_set.npz").exists()
    assert sorted(p.name for p in (tmp_path / "results/data").iterdir()) == rendered
    stored = pd.read_csv(tmp_path / "results/gan/placebo~1/seed~0/epochs.tsv", sep="\t")
    card = json.loads((tmp_path / target).read_text())
    assert card["epsilon"]["rdp"] == pytest.approx(stored["epsilon_rdp"].iloc[-1])
    pe_card = json.loads((tmp_path / pe_target).read_text())
    assert pe_card["family"] == "pe" and pe_card["training_set_size"] == 120  # the 3 stand-ins' 40 pairs each
