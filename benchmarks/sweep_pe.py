"""Private Evolution on the default cohort, against its placebo: which API lets private votes teach a U-Net.

Each (setting, target epsilon, seed) runs PE on the six train patients (private) and on the placebo's six public
stand-ins (site C after the warm start's), releases as many pairs as the training set, trains the default U-Net
and scores it on the *validation* patients only. Prints one JSON row per run (appended to ``OUT/sweep_pe.tsv``,
so a killed sweep resumes), then the validation DSC per setting and the private gain (private minus placebo,
paired by seed), with the seconds of PE's private step (votes, noise, selection) and of the whole run.

    python benchmarks/sweep_pe.py --base results --out /tmp/sweep_pe [--only NAME ...] [--epsilons 10] [--seeds 0 1 2]

``--base`` is a finished default run (its prepared volumes, patches and public warm start are read).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sweep_private import UNET, build_training_set, cohort, val_fd

from dpmra.data.intensity import load_images
from dpmra.evaluation.tables import score_split
from dpmra.generators import pe
from dpmra.generators.interface import load_training_set
from dpmra.generators.params import PeParams
from dpmra.privacy.delta import default_delta
from dpmra.privacy.gdp import solve_pe_sigma
from dpmra.release.params import ReleaseParams
from dpmra.release.synth import release_dataset
from dpmra.segmentation.predict import predict_patients
from dpmra.segmentation.training import train_unet

PATCH = 32
PER_PATIENT = 200
# name -> PeParams overrides (sigma and seed are set per run)
SETTINGS: dict[str, dict] = {
    "simulator": dict(api="simulator"),
    "simulator-patient": dict(api="simulator", unit="patient"),
    "generator": dict(api="generator", candidates=2000),
}


def timed_private_step(params: PeParams, training, api, key: bytes) -> float:
    """Seconds of the private step alone over T rounds (embedding the private set, votes, noise, selection), on
    candidates rendered beforehand so that rendering is not counted."""
    rng = np.random.default_rng(0)
    population = api.random(params.candidates, rng)
    pairs, owner = api.render(population, rng)
    candidates = pe.embed(pairs)
    noise = np.random.default_rng(0)
    start = time.perf_counter()
    private = pe.embed(training.x.numpy())
    for _ in range(params.iterations):
        counts = pe.vote_histogram(private, training.patient.numpy(), candidates, owner, params.candidates, params.unit)
        histogram = pe.noisy_histogram(counts, params.sigma, params.threshold, noise)
        pe.resample(population, histogram, rng)
    return time.perf_counter() - start


def run_setting(base: Path, out: Path, name: str, epsilon: float, seed: int, patients: dict, training: str) -> dict:
    """PE, release, U-Net and val scores of one (setting, epsilon, seed) on the train patients or the stand-ins."""
    train_set = build_training_set(base, out, PER_PATIENT, "volume", patients[training], training)
    data = load_training_set(train_set)
    overrides = SETTINGS[name]
    unit = overrides.get("unit", "patch")
    n_units = data.patients if unit == "patient" else len(data.x)
    delta = default_delta(n_units)
    sigma = solve_pe_sigma(epsilon, PeParams.iterations, delta)
    params = PeParams(sigma=sigma, seed=seed, placebo_run=training == "placebo", **overrides)
    run = out / name / f"eps~{epsilon:g}" / f"seed~{seed}" / ("" if training == "train" else "placebo")
    start = time.perf_counter()
    stored = pe.train_pe(train_set, run / "pe", params, out / "secret.key", base / "gan/public/generator.pt")
    pe_seconds = time.perf_counter() - start
    release_dataset(run / "pe" / "generator.pt", run / "synth", ReleaseParams(n=len(data.x)), name)
    run_seconds = time.perf_counter() - start
    api = pe.build_run_api(params, data, base / "gan/public/generator.pt")
    private_step = timed_private_step(replace(params), data, api, b"\0" * 32)
    train_unet([run / "synth" / "dataset.npz"], run / "unet", UNET)
    predict_patients(run / "unet" / "model.pt", base / "data", patients["val"], run / "val", PATCH)
    scores = score_split(patients["val"], base / "data", run / "val", run / "val.tsv")
    val_patches = load_images([base / "patches" / f"{p}.npz" for p in patients["val"]])
    with np.load(run / "synth" / "dataset.npz") as npz:
        vessel_share = float(npz["label"].mean())
    return {
        "setting": name,
        "cohort": "private" if training == "train" else "placebo",
        "target_epsilon": epsilon,
        "seed": seed,
        "epsilon_gdp": round(stored["epsilon"]["epsilon_gdp"], 3),
        "sigma": round(sigma, 4),
        "pe_seconds": round(pe_seconds, 1),
        "release_seconds": round(run_seconds, 1),
        "private_step_seconds": round(private_step, 2),
        "vessel_share": round(vessel_share, 4),
        "fd_val": round(val_fd(run / "synth" / "dataset.npz", val_patches), 2),
        "val_dsc": round(float(scores["dsc"].mean()), 4),
    }


def summary(done: pd.DataFrame) -> pd.DataFrame:
    """Val DSC per (setting, epsilon): private and placebo means, the gain paired by seed (mean, SD), seeds."""
    keys = ["setting", "target_epsilon", "seed"]
    private, placebo = done[done["cohort"] == "private"], done[done["cohort"] == "placebo"]
    paired = private.merge(placebo, on=keys, suffixes=("", "_placebo"))
    paired["gain"] = paired["val_dsc"] - paired["val_dsc_placebo"]
    return paired.groupby(["setting", "target_epsilon"]).agg(
        private=("val_dsc", "mean"),
        placebo=("val_dsc_placebo", "mean"),
        gain=("gain", "mean"),
        gain_sd=("gain", "std"),
        seeds=("gain", "size"),
        vessel_share=("vessel_share", "mean"),
        private_step_s=("private_step_seconds", "median"),
        run_s=("release_seconds", "median"),
    ).round(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="results/ of a finished default run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="+", choices=sorted(SETTINGS), help="settings to run (default: all)")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[10.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    table_path = args.out / "sweep_pe.tsv"
    done = pd.read_csv(table_path, sep="\t") if table_path.exists() else pd.DataFrame(columns=["setting"])
    patients = cohort(args.base)
    for name in args.only or list(SETTINGS):
        for epsilon in args.epsilons:
            for seed in args.seeds:
                for training in ("train", "placebo"):
                    cohort_name = "private" if training == "train" else "placebo"
                    row_done = (done["setting"] == name) & (done.get("target_epsilon") == epsilon)
                    if len(done) and (row_done & (done["seed"] == seed) & (done["cohort"] == cohort_name)).any():
                        continue
                    row = run_setting(args.base, args.out, name, epsilon, seed, patients, training)
                    print(json.dumps(row), flush=True)
                    done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
                    done.to_csv(table_path, sep="\t", index=False)
    print(done.to_string(index=False))
    print(summary(done).to_string())


if __name__ == "__main__":
    main()
