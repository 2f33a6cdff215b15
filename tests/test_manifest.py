"""Manifest and phantom cohort tables, and the config schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from dpmra.data.manifest import ManifestError, check_manifest, phantom_table, read_manifest

ROOT = Path(__file__).resolve().parents[1]
HEADER = "patient\tsite\tsplit\timage\tlabel\tbrain_mask\n"


def manifest(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "samples.tsv"
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def row(patient: str, split: str, mask: str = "") -> str:
    return f"{patient}\tS\t{split}\t/d/{patient}.nii.gz\t/d/{patient}_label.nii.gz\t{mask}"


def test_example_manifest_is_valid():
    path = ROOT / "config" / "samples.tsv"
    table = read_manifest(path)
    validate(table, schema=str(ROOT / "workflow/schemas/samples.schema.yaml"))
    checked = check_manifest(table, path)
    assert checked.loc["P001", "split"] == "train" and checked.loc["P002", "brain_mask"] == ""


def test_duplicate_patient(tmp_path):
    path = manifest(tmp_path, row("P1", "train"), row("P1", "train"), row("P2", "val"))
    with pytest.raises(ManifestError, match=f"{path}: duplicate patient P1"):
        check_manifest(read_manifest(path), path)


def test_patient_in_two_splits(tmp_path):
    path = manifest(tmp_path, row("P1", "train"), row("P1", "test"), row("P2", "val"))
    with pytest.raises(ManifestError, match="patient P1 is in two splits"):
        check_manifest(read_manifest(path), path)


@pytest.mark.parametrize("present, missing", [("val", "train"), ("train", "val")])
def test_train_and_val_splits_required(tmp_path, present, missing):
    path = manifest(tmp_path, row("P1", present), row("P2", "test"))
    with pytest.raises(ManifestError, match=f"no patient in the {missing} split"):
        check_manifest(read_manifest(path), path)


def test_schema_rejects_bad_split_and_path(tmp_path):
    schema = str(ROOT / "workflow/schemas/samples.schema.yaml")
    with pytest.raises(WorkflowError):
        validate(read_manifest(manifest(tmp_path, row("P1", "training"))), schema=schema)
    bad_path = "P1\tS\ttrain\t/d/P1.png\t/d/P1_label.nii.gz\t"
    with pytest.raises(WorkflowError):
        validate(read_manifest(manifest(tmp_path, bad_path)), schema=schema)


def test_phantom_table_numbers_patients_per_site():
    table = phantom_table(
        {
            "train": {"site": "A", "patients": 2},
            "val": {"site": "A", "patients": 1},
            "external": {"site": "B", "patients": 2},
        },
        base_seed=10,
    )
    assert table.index.tolist() == ["A000", "A001", "A002", "B000", "B001"]
    assert table["split"].tolist() == ["train", "train", "val", "external", "external"]
    assert table["seed"].tolist() == [10, 11, 12, 10, 11]


def config_schema() -> str:
    return str(ROOT / "workflow/schemas/config.schema.yaml")


@pytest.mark.parametrize("name", ["config.yaml", "test.yaml"])
def test_shipped_configs_are_valid(name):
    config = yaml.safe_load((ROOT / "config" / name).read_text())
    validate(config, schema=config_schema(), set_default=True)
    assert config["patches"]["seed"] == 0


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["patches"].update(size=-4),
        lambda c: c["data"].update(source="dicom"),
        lambda c: c["data"]["phantom"]["splits"].update(train={"site": "D", "patients": 2}),
        lambda c: c["data"]["phantom"].update(shape=[64, 64]),
        lambda c: c["patches"].update(per_patinet=10),
    ],
)
def test_schema_rejects_bad_config(change):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    change(config)
    with pytest.raises(WorkflowError):
        validate(config, schema=config_schema())


def test_public_phantom_cohort_comes_from_its_own_site():
    splits = {"train": {"site": "A", "patients": 2}, "val": {"site": "A", "patients": 1}}
    table = phantom_table(splits, 0, {"site": "C", "patients": 2})
    assert table.loc[table["split"] == "public", "patient"].tolist() == ["C000", "C001"]
    with pytest.raises(ValueError, match="data.phantom.public: site A is also a split's site"):
        phantom_table(splits, 0, {"site": "A", "patients": 1})
