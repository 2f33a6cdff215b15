"""Sweep of DP-WGAN recipes on the default cohort: which settings let private synthetic data train a U-Net.

Each setting is trained to a target epsilon (sigma solved by the RDP accountant, delta = 1/(10 N) rounded down;
epsilon 0 releases a warm-start setting's public generator alone, without private training),
released, used to train the default U-Net, and scored on the *validation* patients only (test and external
patients are for the final numbers, never for choosing a recipe). Prints one table (and appends each row to
``OUT/sweep.tsv``, so a killed sweep resumes): setting -> eps, sigma, critic steps, GAN minutes, Frechet
distance to the validation patches (random-CNN features), validation DSC. With ``--placebo`` every private run
is repeated on the placebo's public stand-ins (the base run's site-C patients after the warm start's), and the
summary prints each setting's placebo DSC and private gain (private minus placebo, paired by seed).

    python benchmarks/sweep_private.py --base results --out /tmp/sweep [--only NAME ...] [--epsilons 10 2] [--placebo]

``--base`` is a finished default run (its ``data/`` and the train and val patients' prepared volumes are read).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dpmra.data.intensity import load_images
from dpmra.data.patches import patient_patches, training_set
from dpmra.evaluation.tables import score_split
from dpmra.features.extract import RANDOM_CNN, frechet_distance, image_statistics
from dpmra.generators.params import GanParams
from dpmra.generators.train import train_gan
from dpmra.privacy.plan import sampling, sigma_for_epsilon
from dpmra.release.params import ReleaseParams
from dpmra.release.synth import release_dataset
from dpmra.segmentation.params import UnetParams
from dpmra.segmentation.predict import predict_patients
from dpmra.segmentation.training import train_unet

PATCH = 32
BASE = GanParams(epochs=17, batch_size=32, n_critic=5, lr=5e-4, width_g=16, width_d=16)
UNET = UnetParams(lr=1e-3, dropout=0.0, augment=False, batch_size=32, epochs=8, base_width=8, seed=0, loss="dice_bce")
ADAM = dict(optimizer="adam", beta1=0.5, lr=2e-4, ema=0.99)
SMALL = dict(width_g=8, width_d=8)

# name -> (patches per patient, intensity scale of the GAN, GanParams overrides, warm-start epochs or 0)
SETTINGS: dict[str, tuple[int, str, dict, int]] = {
    "default": (200, "per_patch", {}, 0),
    "volume-scale": (200, "volume", {}, 0),
    "w8-b64": (200, "volume", dict(**SMALL, batch_size=64, epochs=10), 0),
    "w8-b64-adam-ema": (200, "volume", dict(**SMALL, **ADAM, batch_size=64, epochs=10), 0),
    "w8-b64-adam-ema-normclip": (200, "volume", dict(**SMALL, **ADAM, batch_size=64, epochs=10, clipping="normalised"), 0),
    "w8-b128-nc20-adam-ema": (200, "volume", dict(**SMALL, **ADAM, batch_size=128, n_critic=20, epochs=3), 0),
    "warm-w8-b64-adam-ema": (200, "volume", dict(**SMALL, **ADAM, batch_size=64, epochs=3), 60),
    "warm-w8-b64-adam-ema-e1": (200, "volume", dict(**SMALL, **ADAM, batch_size=64, epochs=1), 60),
    "warm-w8-b64-rmsprop": (200, "volume", dict(**SMALL, batch_size=64, epochs=3), 60),
    "warm-w16-b32": (200, "volume", dict(epochs=3), 34),
    "warm24-w16-b32": (200, "volume", dict(epochs=3), 24),
    "warm24-w16-b32-pb1": (200, "volume", dict(epochs=3, private_blocks=1), 24),
    "warm24-w16-b32-pb2": (200, "volume", dict(epochs=3, private_blocks=2), 24),
    "warm24-w16-b32-pb1-e6": (200, "volume", dict(epochs=6, private_blocks=1), 24),
    "warm24-w16-b32-p1000": (1000, "volume", dict(epochs=3), 24),
    "warm24-w16-b32-p1000-e1": (1000, "volume", dict(epochs=1), 24),
    "warm24-w16-b128-p1000": (1000, "volume", dict(batch_size=128, epochs=3), 24),
    "warm24-w16-b32-e6": (200, "volume", dict(epochs=6), 24),
    "warm24-w16-b32-e12": (200, "volume", dict(epochs=12), 24),
    "warm24-w16-b64-e6": (200, "volume", dict(batch_size=64, epochs=6), 24),
    "warm24-w16-b32-lr2e-3": (200, "volume", dict(epochs=3, lr=2e-3), 24),
    "warm24-w16-b32-lr1e-4": (200, "volume", dict(epochs=3, lr=1e-4), 24),
    "warm-w16-b32-e6": (200, "volume", dict(epochs=6), 34),
    "warm-w16-b32-e1": (200, "volume", dict(epochs=1), 34),
    "warm-w16-b32-lr1e-4": (200, "volume", dict(epochs=3, lr=1e-4), 34),
    "warm-w16-patient": (200, "volume", dict(epochs=30, unit="patient", patient_batch=2.0, patient_patches=16), 34),
}
PUBLIC_PATIENTS = 3  # the default's warm-start cohort, C000-C002; the placebo's stand-ins follow
# Settings whose warm start keeps the default's batch of 32, so that only the private phase's batch differs.
WARM_BATCH = {"warm24-w16-b128-p1000": 32}
SYNTH_N = 1200  # pairs released per run: the default's N (6 x 200), also at 1,000 patches per patient


def cohort(base: Path) -> dict[str, list[str]]:
    """The base run's train, val, public and placebo patients, from its prepared volumes' names, in order."""
    patients = sorted(p.name for p in (base / "data").iterdir() if (p / "volume.json").is_file())
    site_a = [p for p in patients if p.startswith("A")]
    site_c = [p for p in patients if p.startswith("C")]
    return {
        "train": site_a[:6],
        "val": site_a[6:8],
        "public": site_c[:PUBLIC_PATIENTS],
        "placebo": site_c[PUBLIC_PATIENTS : PUBLIC_PATIENTS + 6],
    }


def build_training_set(
    base: Path, out: Path, per_patient: int, intensity: str, train: list[str], name: str = "train"
) -> Path:
    """Patches of the given patients (re-cut when per_patient differs) and their GAN training set."""
    folder = out / f"patches-{per_patient}"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for patient in train:
        path = folder / f"{patient}.npz"
        if not path.exists():
            data = base / "data" / patient
            patient_patches(patient, data / "image.nii.gz", data / "label.nii.gz", data / "brain_mask.nii.gz",
                            per_patient, PATCH, 0, path)
        files.append(path)
    train_set = folder / f"{name}_set-{intensity}.npz"
    if not train_set.exists():
        training_set(files, train_set, folder / f"{name}_gallery.png", intensity=intensity)
    return train_set


def warm_start(
    base: Path, out: Path, params: GanParams, epochs: int, secret: Path, intensity: str, public: list[str],
    batch_size: int | None = None,
) -> Path:
    """The public run (phantom site C, non-private) the private runs of one architecture start from."""
    files = [base / "patches" / f"{p}.npz" for p in public]
    if not files:
        raise ValueError(f"{base / 'patches'}: no public (site C) patches; build results/patches/C00*.npz first")
    public_set = out / f"public_set-{intensity}.npz"
    if not public_set.exists():
        training_set(files, public_set, out / "public_gallery.png", intensity=intensity)
    public = replace(
        params, sigma=math.inf, epochs=epochs, public=True, unit="patch", private_blocks=None,
        patient_batch=BASE.patient_batch, patient_patches=BASE.patient_patches,
        batch_size=batch_size or params.batch_size,
    )
    folder = out / "public" / run_digest(public)
    if not (folder / "generator.pt").exists():
        train_gan(public_set, folder, public, secret)
    return folder / "generator.pt"


def run_digest(params: GanParams) -> str:
    """A short name for a run's settings (public runs are shared by every setting of one architecture)."""
    import hashlib

    return hashlib.sha256(json.dumps(sorted(vars(params).items()), default=str).encode()).hexdigest()[:12]


def val_fd(dataset: Path, val_patches: np.ndarray) -> float:
    """Frechet distance (random-CNN features) between the released images and the validation patches."""
    synthetic = load_images([dataset])[: len(val_patches)]
    stats = [image_statistics(x, RANDOM_CNN) for x in (synthetic, val_patches)]
    return frechet_distance(*stats[0], *stats[1])


def run_setting(
    base: Path, out: Path, name: str, epsilon: float, seed: int, secret: Path, patients: dict, training: str = "train"
) -> dict:
    """Train, release, segment and score one (setting, epsilon, seed) on the train patients or the placebo's
    stand-ins (`training`); returns the table row."""
    per_patient, intensity, overrides, warm_epochs = SETTINGS[name]
    params = replace(BASE, **overrides)
    pretrained = (
        warm_start(base, out, params, warm_epochs, secret, intensity, patients["public"], WARM_BATCH.get(name))
        if warm_epochs
        else None
    )
    train_set = build_training_set(base, out, per_patient, intensity, patients[training], training)
    gan_config = {"batch_size": params.batch_size, "delta": None, "epochs": params.epochs,
                  "n_critic": params.n_critic, "mode": "fresh"}
    privacy = {"unit": params.unit, "patient_batch": params.patient_batch}
    plan = sampling(gan_config, privacy, len(patients["train"]), per_patient)
    sigma = sigma_for_epsilon(epsilon, plan, gan_config) if 0 < epsilon < math.inf else math.inf
    params = replace(params, sigma=sigma, seed=seed)
    run = out / name / f"eps~{epsilon:g}" / f"seed~{seed}" / ("" if training == "train" else "placebo")
    start = time.perf_counter()
    if epsilon == 0:  # the warm start alone: no private training
        run.mkdir(parents=True, exist_ok=True)
        (run / "gan").mkdir(exist_ok=True)
        (run / "gan" / "generator.pt").write_bytes(pretrained.read_bytes())
    else:
        train_gan(train_set, run / "gan", params, secret, pretrained)
    minutes = (time.perf_counter() - start) / 60
    stored = torch.load(run / "gan" / "generator.pt", weights_only=True)
    release_dataset(run / "gan" / "generator.pt", run / "synth", ReleaseParams(n=SYNTH_N), name)
    train_unet([run / "synth" / "dataset.npz"], run / "unet", UNET)
    predict_patients(run / "unet" / "model.pt", base / "data", patients["val"], run / "val", PATCH)
    scores = score_split(patients["val"], base / "data", run / "val", run / "val.tsv")
    val_patches = load_images([base / "patches" / f"{p}.npz" for p in patients["val"]])
    return {
        "setting": name,
        "cohort": "private" if training == "train" else "placebo",
        "target_epsilon": epsilon,
        "seed": seed,
        "epsilon": stored["epsilon"]["epsilon_rdp"],
        "sigma": sigma,
        "critic_steps": stored["critic_steps"],
        "gan_minutes": round(minutes, 2),
        "fd_val": round(val_fd(run / "synth" / "dataset.npz", val_patches), 2),
        "val_dsc": round(float(scores["dsc"].mean()), 4),
        "val_sensitivity": round(float(scores["sensitivity"].mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="results/ of a finished default run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="+", choices=sorted(SETTINGS), help="settings to run (default: all)")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[10.0, 2.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds (latents; the key varies noise)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--placebo", action="store_true", help="repeat each private run on the public stand-ins")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    table_path = args.out / "sweep.tsv"
    done = pd.read_csv(table_path, sep="\t") if table_path.exists() else pd.DataFrame()
    patients = cohort(args.base)
    secret = args.out / "secret.key"
    for name in args.only or list(SETTINGS):
        for epsilon in args.epsilons:
            if epsilon == 0 and not SETTINGS[name][3]:
                continue  # epsilon 0 is the warm start alone
            for seed in [0] if epsilon == 0 else args.seeds:
                trainings = ["train", "placebo"] if args.placebo and epsilon > 0 else ["train"]
                for training in trainings:
                    if is_done(done, name, epsilon, seed, training):
                        continue
                    row = run_setting(args.base, args.out, name, epsilon, seed, secret, patients, training)
                    print(json.dumps(row), flush=True)
                    done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
                    done.to_csv(table_path, sep="\t", index=False)
    print(done.to_string(index=False))
    print(summary(done).to_string())


def is_done(done: pd.DataFrame, name: str, epsilon: float, seed: int, training: str = "train") -> bool:
    """Whether the table already has this (setting, epsilon, seed, cohort)."""
    if done.empty:
        return False
    cohort_name = "private" if training == "train" else "placebo"
    cohorts = done["cohort"] if "cohort" in done else pd.Series("private", index=done.index)
    row = (done["setting"] == name) & (done["target_epsilon"] == epsilon) & (done["seed"] == seed)
    return bool((row & (cohorts == cohort_name)).any())


def summary(done: pd.DataFrame) -> pd.DataFrame:
    """Validation DSC per (setting, epsilon) over seeds (mean, min, max, count) and, where placebos ran, the placebo's
    mean and the private gain (private minus placebo, paired by seed): its mean and SD."""
    done = done.assign(cohort=done["cohort"] if "cohort" in done else "private")
    private = done[done["cohort"] == "private"]
    table = private.groupby(["setting", "target_epsilon"])["val_dsc"].agg(["mean", "min", "max", "count"])
    keys = ["setting", "target_epsilon", "seed"]
    paired = private.merge(done[done["cohort"] == "placebo"], on=keys, suffixes=("", "_placebo"))
    if not paired.empty:
        paired["gain"] = paired["val_dsc"] - paired["val_dsc_placebo"]
        gains = paired.groupby(["setting", "target_epsilon"]).agg(
            placebo=("val_dsc_placebo", "mean"), gain=("gain", "mean"), gain_sd=("gain", "std")
        )
        table = table.join(gains)
    return table.round(3)


if __name__ == "__main__":
    main()
