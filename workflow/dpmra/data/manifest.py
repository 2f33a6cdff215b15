"""Patient tables: the phantom cohort from the config, or a user's manifest of NIfTI paths."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SPLITS = ("train", "val", "test", "external")
COLUMNS = ("patient", "site", "split", "image", "label", "brain_mask")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the rows at fault."""


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a tab-separated manifest as strings, with an empty brain_mask meaning 'derive one'."""
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, comment="#", keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ManifestError(f"{path}: cannot read the manifest ({err})") from err
    if "brain_mask" not in table.columns:
        table["brain_mask"] = ""
    return table


def check_manifest(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Reject duplicate patients and patients in two splits; require train and val. Returns the table indexed by patient."""
    missing = [c for c in COLUMNS[:5] if c not in table.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}")
    bad_split = table.loc[~table["split"].isin(SPLITS)]
    if len(bad_split):
        raise ManifestError(
            f"{path}: unknown split {sorted(set(bad_split['split']))} for patient(s) "
            f"{', '.join(bad_split['patient'])}; use one of {', '.join(SPLITS)}"
        )
    for patient, rows in table.groupby("patient", sort=False):
        if len(rows) > 1 and rows["split"].nunique() > 1:
            raise ManifestError(
                f"{path}: patient {patient} is in two splits ({', '.join(rows['split'])}); "
                "splits must be by patient so no patient's data reaches both training and testing"
            )
        if len(rows) > 1:
            raise ManifestError(f"{path}: duplicate patient {patient} ({len(rows)} rows)")
    for split, use in (("train", "the GANs train on it"), ("val", "U-Net settings are selected on it")):
        if not (table["split"] == split).any():
            raise ManifestError(f"{path}: no patient in the {split} split ({use})")
    return table.set_index("patient", drop=False)


def phantom_table(
    splits: dict[str, dict], base_seed: int, public: dict | None = None, placebo: dict | None = None
) -> pd.DataFrame:
    """The phantom cohort: patients {site}{index:03d}, numbered per site across cohorts, seed = base_seed + index.

    ``public``: a cohort of split "public" for the GAN warm start; ``placebo``: a cohort of split "placebo", the
    public stand-in for the private training set (numbered after the public cohort, so no patient is in both).
    Both come from a site no split uses.
    """
    split_sites = {spec["site"] for spec in splits.values() if spec}
    for key, spec in (("public", public), ("placebo", placebo)):
        if spec and spec["site"] in split_sites:
            raise ValueError(f"data.phantom.{key}: site {spec['site']} is also a split's site; use another site")
    rows, counters = [], {}
    cohorts = {split: splits.get(split) for split in SPLITS} | {"public": public, "placebo": placebo}
    for split, spec in cohorts.items():
        if not spec:
            continue
        site = spec["site"]
        for _ in range(spec["patients"]):
            index = counters.get(site, 0)
            counters[site] = index + 1
            rows.append({"patient": f"{site}{index:03d}", "site": site, "split": split, "seed": base_seed + index})
    return pd.DataFrame(rows, columns=["patient", "site", "split", "seed"]).set_index("patient", drop=False)
