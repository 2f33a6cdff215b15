"""Release bundle: what a data steward may hand over for one synthetic dataset, as a folder and a deterministic zip.

A bundle holds the samples of the DP generator (dataset, NIfTI stacks, gallery; covered by epsilon by
post-processing), its privacy card copied byte for byte, aggregate quality numbers that read no training
patient (statistics of the synthetic set, and aggregates over held-out patients, labelled as not covered by
epsilon), a README for the recipient and a checksum manifest. Statistics of the training patches computed
outside the DP mechanism (fd_train, fd_gap) and anything per patient stay out.
The search of a bundle for private data is `dpmra.release.leaks`; the recipient's README is `dpmra.release.readme`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from dpmra.privacy.plan import placebo_source
from dpmra.release.readme import BUNDLE_FILES, MANIFEST, PLACEBO_NOTE, SYNTH_FILES, SYNTHETIC_NOTE, readme_text
from dpmra.shared.atomic import write_atomic, write_json

log = logging.getLogger(__name__)

ZIP_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_MODE = 0o100644 << 16
STORED_SUFFIXES = (".npz", ".gz", ".png")
HELD_OUT_SPLITS = ("test", "external")
HELD_OUT_NOTE = "computed on held-out patients, not covered by epsilon"
CHUNK = 1 << 20


def read_json(path: Path) -> dict:
    """A JSON object from a file, with a ValueError naming the file if it is missing or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def epsilon_value(value: object, path: Path) -> float:
    """A card's epsilon as a float ('inf' for no privacy); a ValueError naming the card otherwise."""
    if value == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{path}: epsilon.rdp must be a non-negative number or 'inf', got {value!r}")
    return float(value)


def card_facts(path: Path) -> dict:
    """From a privacy card only what the bundle states: dataset, family, epsilon (reported, PRV), delta, guarantee
    statement, and where the generator began (a GAN's warm start, PE's API)."""
    card = read_json(path)
    epsilon = card.get("epsilon")
    if not isinstance(epsilon, dict) or "rdp" not in epsilon:
        raise ValueError(f"{path}: privacy card has no epsilon.rdp")
    delta = card.get("delta")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 <= delta < 1:
        raise ValueError(f"{path}: privacy card needs a delta in [0, 1), got {delta!r}")
    if not isinstance(card.get("dataset"), str) or not card["dataset"]:
        raise ValueError(f"{path}: privacy card has no dataset name")
    guarantee = card.get("guarantee")
    statement = guarantee.get("statement") if isinstance(guarantee, dict) else None
    release = card.get("release")
    scaling = release.get("image_scaling") if isinstance(release, dict) else None
    warm = card.get("public_pretraining")
    mechanism = card.get("mechanism") if isinstance(card.get("mechanism"), dict) else None
    return {
        "family": card.get("family", "dp-wgan"),
        "api": mechanism.get("api") if mechanism else None,
        "warm_start": warm.get("statement") if isinstance(warm, dict) else None,
        "image_scaling": scaling if isinstance(scaling, str) and scaling else "on 0..255",
        "dataset": card["dataset"],
        "epsilon": epsilon_value(epsilon.get("gdp", epsilon["rdp"]), path),
        "accountant": "exact Gaussian DP" if "gdp" in epsilon else "RDP accountant",
        "epsilon_prv": epsilon_value(epsilon["prv"], path) if "prv" in epsilon else None,
        "delta": float(delta),
        "statement": statement if isinstance(statement, str) and statement else None,
    }


def finite_or_none(value: float) -> float | None:
    """A float for JSON: None where it is NaN or infinite (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def dataset_facts(path: Path) -> dict:
    """Size, scale and vessel share of the synthetic dataset, checked to be (n, P, P) image-label pairs."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            image, label = data["image"], data["label"]
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a dataset with arrays image and label ({err})") from err
    if image.ndim != 3 or image.shape != label.shape or image.shape[1] != image.shape[2] or not len(image):
        raise ValueError(f"{path}: image {image.shape} and label {label.shape} are not matching (n, P, P) stacks")
    return {
        "n_pairs": int(image.shape[0]),
        "patch_size": int(image.shape[1]),
        "image_dtype": str(image.dtype),
        "image_min": float(image.min()),
        "image_max": float(image.max()),
        "image_mean": float(image.mean(dtype=np.float64)),
        "image_sd": float(image.std(dtype=np.float64)),
        "label_dtype": str(label.dtype),
        "vessel_share": float((label > 0).mean(dtype=np.float64)),
    }


def held_out_quality(path: Path) -> dict:
    """From `dpmra quality` output only what reads no training patient: SSIM diversity and fd_test."""
    quality = read_json(path)
    missing = [k for k in ("fd_test", "fd_backbone", "n_fd", "ssim_mean", "n_ssim") if k not in quality]
    if missing:
        raise ValueError(f"{path}: quality JSON lacks {', '.join(missing)}")
    n = int(quality["n_fd"])
    return {
        "ssim": {
            "note": SYNTHETIC_NOTE,
            "ssim_mean": finite_or_none(quality["ssim_mean"]),
            "n_images": int(quality["n_ssim"]),
            "meaning": "mean SSIM over pairs of synthetic images; higher means less diverse",
        },
        "frechet_distance_test": {
            "note": f"{HELD_OUT_NOTE}; an aggregate over {n} patches",
            "value": finite_or_none(quality["fd_test"]),
            "backbone": str(quality["fd_backbone"]),
            "n_patches": n,
            "meaning": "Frechet distance between features of synthetic patches and held-out patients' patches (the test "
            "split, or validation where a study has no test split); lower is closer",
        },
    }


def read_table(path: Path, columns: Iterable[str]) -> pd.DataFrame:
    """A TSV results table, with a ValueError naming the file if it is missing or lacks columns."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    table = pd.read_csv(path, sep="\t", dtype={"source": str, "setting": str, "split": str})
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: table lacks columns {', '.join(missing)}")
    return table


def selected_dsc(summary: pd.DataFrame, selection: pd.DataFrame, source: str) -> tuple[str, pd.DataFrame] | None:
    """The validation-selected setting of `source` and its DSC rows of the summary; None where it has none."""
    chosen = selection.loc[selection["source"] == source, "setting"]
    if chosen.empty:
        return None
    rows = summary[
        (summary["source"] == source) & (summary["setting"] == chosen.iloc[0]) & (summary["metric"] == "dsc")
    ]
    return chosen.iloc[0], rows


def with_placebo(splits: dict, placebo: pd.DataFrame | None) -> dict:
    """Each split's placebo DSC and private gain (DSC minus the placebo's), where the run had a placebo."""
    if placebo is None:
        return splits
    for split, row in splits.items():
        found = placebo[placebo["split"] == split]
        if len(found) and row["dsc_mean"] is not None:
            placebo_dsc = finite_or_none(found["mean"].iloc[0])
            row["placebo_dsc_mean"] = placebo_dsc
            row["private_gain"] = None if placebo_dsc is None else row["dsc_mean"] - placebo_dsc
    return splits


def held_out_utility(summary_path: Path, selection_path: Path, source: str) -> dict:
    """DSC (mean, SD, n over held-out patients) of the U-Net trained on `source` at its validation-selected setting,
    and, where the run had a placebo, the placebo's DSC and the private gain."""
    selection = read_table(selection_path, ("source", "setting"))
    summary = read_table(summary_path, ("source", "setting", "split", "metric", "mean", "sd", "n"))
    found = selected_dsc(summary, selection, source)
    if found is None:
        raise ValueError(f"{selection_path}: no selected U-Net setting for {source}")
    setting, rows = found
    placebo = selected_dsc(summary, selection, placebo_source(source)) if placebo_source(source) else None
    splits = {}
    for split in HELD_OUT_SPLITS:
        row = rows[rows["split"] == split]
        if len(row):
            n = int(row["n"].iloc[0])
            splits[split] = {
                "note": f"{HELD_OUT_NOTE}; an aggregate over {n} patients",
                "dsc_mean": finite_or_none(row["mean"].iloc[0]),
                "dsc_sd": finite_or_none(row["sd"].iloc[0]),
                "n_patients": n,
            }
    return {
        "what": "vessel segmentation by a U-Net trained on this synthetic dataset alone, its hyper-parameters "
        "chosen by validation DSC, scored on whole held-out volumes",
        "unet_setting": setting,
        "placebo": PLACEBO_NOTE if placebo is not None else None,
        "splits": with_placebo(splits, placebo[1] if placebo is not None else None),
    }


def quality_summary(dataset: dict, quality: dict, utility: dict) -> dict:
    """The bundle's quality.json: statistics of the synthetic set and aggregates over held-out patients."""
    return {
        "synthetic_dataset": {"note": SYNTHETIC_NOTE, **dataset},
        "diversity": quality["ssim"],
        "frechet_distance_test": quality["frechet_distance_test"],
        "segmentation": utility,
    }


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_text(folder: Path, names: Iterable[str]) -> str:
    """MANIFEST.tsv: file, bytes and SHA-256 of each named file in `folder`, sorted by name."""
    rows = [f"{name}\t{(folder / name).stat().st_size}\t{sha256(folder / name)}" for name in sorted(names)]
    return "file\tbytes\tsha256\n" + "\n".join(rows) + "\n"


def zip_entry(arcname: str, size: int) -> zipfile.ZipInfo:
    """A zip entry with fixed time, permissions and system, stored if its data are already compressed."""
    info = zipfile.ZipInfo(arcname, date_time=ZIP_TIME)
    info.external_attr = ZIP_MODE
    info.create_system = 3
    info.compress_type = zipfile.ZIP_STORED if arcname.endswith(STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
    info.file_size = size
    return info


def write_zip(folder: Path, names: Iterable[str], prefix: str, out: Path) -> None:
    """Zip the named files of `folder` under `prefix/`, sorted, so that equal files give a byte-identical zip."""
    with zipfile.ZipFile(out, "w") as archive:
        for name in sorted(names):
            path = folder / name
            entry = zip_entry(f"{prefix}/{name}", path.stat().st_size)
            with open(path, "rb") as source, archive.open(entry, "w") as sink:
                shutil.copyfileobj(source, sink, CHUNK)


def check_out_dir(out_dir: Path) -> None:
    """Refuse a bundle folder that holds anything but bundle files: the folder is what gets handed over."""
    if not out_dir.is_dir():
        return
    extra = sorted(p.name for p in out_dir.iterdir() if p.name not in BUNDLE_FILES)
    if extra:
        raise ValueError(f"{out_dir}: holds {', '.join(extra)}, which are not bundle files; use an empty folder")


def copy_atomic(source: Path, target: Path) -> None:
    """Copy a file byte for byte under a temporary name, then rename it onto `target`."""
    write_atomic(target, lambda tmp: shutil.copyfile(source, tmp))


def write_bundle_files(synth_dir: Path, out_dir: Path, summary: dict, readme: str) -> None:
    """Every bundle file in `out_dir`, each written atomically; the manifest last."""
    for name in SYNTH_FILES:
        copy_atomic(synth_dir / name, out_dir / name)
    write_json(summary, out_dir / "quality.json")
    write_atomic(out_dir / "README.md", lambda tmp: Path(tmp).write_text(readme))
    manifest = manifest_text(out_dir, [n for n in BUNDLE_FILES if n != MANIFEST])
    write_atomic(out_dir / MANIFEST, lambda tmp: Path(tmp).write_text(manifest))


def build_bundle(
    synth_dir: Path, quality_path: Path, summary_path: Path, selection_path: Path, out_dir: Path, zip_path: Path
) -> dict:
    """Check every input, then write the bundle folder and its zip; on any error no bundle file is left.

    Returns the bundle's quality summary.
    """
    synth_dir, out_dir, zip_path = Path(synth_dir), Path(out_dir), Path(zip_path)
    missing = [str(synth_dir / n) for n in SYNTH_FILES if not (synth_dir / n).is_file()]
    if missing:
        raise ValueError(f"{', '.join(missing)}: file not found")
    check_out_dir(out_dir)
    facts = card_facts(synth_dir / "privacy_card.json")
    dataset = dataset_facts(synth_dir / "dataset.npz")
    utility = held_out_utility(summary_path, selection_path, facts["dataset"])
    summary = quality_summary(dataset, held_out_quality(quality_path), utility)
    readme = readme_text(facts, summary)
    try:
        write_bundle_files(synth_dir, out_dir, summary, readme)
        prefix = facts["dataset"].replace("/", "_")
        write_atomic(zip_path, lambda tmp: write_zip(out_dir, BUNDLE_FILES, prefix, tmp))
    except BaseException:
        for name in BUNDLE_FILES:
            (out_dir / name).unlink(missing_ok=True)
        zip_path.unlink(missing_ok=True)
        raise
    if math.isinf(facts["epsilon"]):
        log.warning("%s: NOT PRIVATE (epsilon inf); the README says so", facts["dataset"])
    log.info("%s: bundle of %d pairs -> %s, %s", facts["dataset"], dataset["n_pairs"], out_dir, zip_path)
    return summary
