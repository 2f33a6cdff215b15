"""Private Evolution (Lin et al. 2024; Sim-PE 2025): the second DP family, whose noise lands on a vote histogram.

A public API proposes M candidates; every private unit votes for the candidates nearest to its pairs in a fixed
public embedding; Gaussian noise of std sigma is added to each count, counts below H = threshold x sigma are
dropped, and the next population is drawn from the noisy histogram and varied. After T rounds the population is
released. The private set is read only by `vote_histogram`; everything after the noisy histogram is
post-processing. The noise is drawn from the secret key's stream of this run, never from the run seed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from dpmra.generators.interface import TrainingData, load_training_set, write_epochs_table
from dpmra.generators.params import PeParams
from dpmra.generators.pe_apis import LatentApi, PeApi, SimulatorApi
from dpmra.privacy.delta import resolve_delta
from dpmra.privacy.gdp import pe_epsilons
from dpmra.privacy.secret import derive_seed, load_key
from dpmra.shared import checkpoint

log = logging.getLogger(__name__)

EMBEDDING = "Fourier magnitudes |FFT2| of both channels on 0..1 at frequencies |k| <= 3 (label x 3)"
LOW_FREQUENCIES = 3
LABEL_WEIGHT = 3.0


def run_name(params: PeParams) -> str:
    """The run's identity for the keyed noise stream (every setting; a placebo's streams are its own)."""
    return "pe:" + json.dumps(asdict(params), sort_keys=True)


def embed(pairs: np.ndarray) -> np.ndarray:
    """The public embedding of (n, 2, P, P) pairs in [-1, 1]: low-frequency Fourier magnitudes, shift-invariant,
    so a vessel votes for a candidate with a vessel of its calibre and contrast wherever it lies in the patch."""
    x = (np.asarray(pairs, dtype=np.float32) + 1.0) / 2.0
    size = x.shape[-1]
    spectrum = np.abs(np.fft.rfft2(x, axes=(-2, -1))) / size**2
    k = LOW_FREQUENCIES
    rows = np.r_[0 : k + 1, size - k : size]
    low = spectrum[:, :, rows, : k + 1]
    low[:, 1] *= LABEL_WEIGHT
    return low.reshape(len(x), -1)


def nearest(private: np.ndarray, candidates: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Index of each private embedding's nearest candidate embedding (Euclidean)."""
    cand = torch.as_tensor(candidates, dtype=torch.float64)
    found = [
        torch.cdist(torch.as_tensor(part, dtype=torch.float64), cand).argmin(dim=1)
        for part in np.array_split(private, max(1, math.ceil(len(private) / chunk)))
    ]
    return torch.cat(found).numpy()


def vote_histogram(
    private: np.ndarray, patient: np.ndarray, candidates: np.ndarray, owner: np.ndarray, m: int, unit: str
) -> np.ndarray:
    """Votes per candidate, sensitivity 1 per unit: one vote per patch, or per patient a vote vector scaled to
    L2 norm at most 1. The only function that reads private data."""
    votes = owner[nearest(private, candidates)]
    if unit == "patch":
        return np.bincount(votes, minlength=m).astype(np.float64)
    counts = np.zeros((int(patient.max()) + 1, m))
    np.add.at(counts, (patient, votes), 1.0)
    norms = np.linalg.norm(counts, axis=1, keepdims=True)
    return (counts / np.maximum(norms, 1.0)).sum(axis=0)


def noisy_histogram(counts: np.ndarray, sigma: float, threshold: float, noise: np.random.Generator) -> np.ndarray:
    """Counts plus N(0, sigma^2) each, then those below threshold x sigma set to 0 (no noise for sigma = inf)."""
    if math.isinf(sigma):
        return counts.copy()
    noisy = counts + sigma * noise.standard_normal(counts.shape)
    return np.where(noisy >= threshold * sigma, noisy, 0.0)


def resample(population: np.ndarray, histogram: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """M candidates drawn with probability proportional to the noisy histogram (uniform where all are dropped)."""
    m = len(population)
    total = histogram.sum()
    p = histogram / total if total > 0 else np.full(m, 1.0 / m)
    return population[rng.choice(m, size=m, p=p)]


def build_run_api(params: PeParams, training: TrainingData, generator: Path | None) -> PeApi:
    """The run's API: the simulator at the training set's patch size and scale, or the warm-start generator."""
    if params.api == "simulator":
        return SimulatorApi(widen=params.widen, patch_size=training.x.shape[-1], intensity=training.intensity)
    if generator is None:
        raise ValueError("the generator API needs the public warm-start generator (--generator generator.pt)")
    stored = checkpoint.load(generator)
    if stored.get("params", {}).get("public") is not True:
        raise ValueError(f"{generator}: not a public warm start; the PE API must be public")
    return LatentApi({"config": stored["config"], "state_dict": stored["state_dict"]})


def evolve(
    private: TrainingData, params: PeParams, api: PeApi, key: bytes, progress: list[dict]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """T rounds of votes, noise, selection and variation; returns the final population and the noisy histograms."""
    public = np.random.default_rng([params.seed, 0x9E])
    noise = np.random.default_rng(derive_seed(key, run_name(params), "noise"))
    x = private.x.numpy()
    private_embedding, patient = embed(x), private.patient.numpy()
    population = api.random(params.candidates, public)
    histograms = []
    for t in range(1, params.iterations + 1):
        start = time.perf_counter()
        pairs, owner = api.render(population, public)
        counts = vote_histogram(private_embedding, patient, embed(pairs), owner, params.candidates, params.unit)
        histogram = noisy_histogram(counts, params.sigma, params.threshold, noise)
        del counts
        histograms.append(histogram)
        population = resample(population, histogram, public)
        if t < params.iterations:
            population = api.variation(population, params.scale(t), public)
        progress.append({"iteration": t, "kept": int((histogram > 0).sum()), "seconds": time.perf_counter() - start})
        log.info("round %d/%d: %d of %d candidates kept", t, params.iterations, progress[-1]["kept"], params.candidates)
    return population, histograms


def units(training: TrainingData, unit: str) -> int:
    """Privacy units of a training set: pairs or patients."""
    return training.patients if unit == "patient" else len(training.x)


def train_pe(
    train_set: Path, out_dir: Path, params: PeParams, secret: Path, generator: Path | None = None
) -> dict:
    """Run PE on a training set; write generator.pt (the released population and API) and epochs.tsv."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    training = load_training_set(train_set)
    api = build_run_api(params, training, generator)
    n_units = units(training, params.unit)
    delta = resolve_delta(params.delta, n_units)
    started, progress = time.perf_counter(), []
    population, histograms = evolve(training, params, api, load_key(secret), progress)
    rows = []
    for row in progress:
        eps = pe_epsilons(params.sigma, row["iteration"], delta)
        rows.append(
            {
                "epoch": row["iteration"],
                "critic_steps": 0,
                "loss_d": math.nan,
                "loss_g": math.nan,
                "wasserstein": math.nan,
                "epsilon_rdp": eps["epsilon_rdp"],
                "epsilon_prv": eps["epsilon_prv"],
                "epsilon_gdp": eps["epsilon_gdp"],
                "unit": params.unit,
                "seconds": row["seconds"],
            }
        )
    stored = release_file(params, api, population, histograms, training, n_units, delta)
    checkpoint.save_atomic(stored, out_dir / "generator.pt")
    write_epochs_table(rows, out_dir / "epochs.tsv", paper=False, exact=True)
    log.info(
        "PE (%s API, sigma %s, T %d): epsilon %.4g (GDP) at delta %.2g in %.1f s -> %s",
        params.api, params.sigma, params.iterations, stored["epsilon"]["epsilon_gdp"], delta,
        time.perf_counter() - started, out_dir,
    )
    return stored


def release_file(
    params: PeParams,
    api: PeApi,
    population: np.ndarray,
    histograms: list[np.ndarray],
    training: TrainingData,
    n_units: int,
    delta: float,
) -> dict:
    """What a PE run releases, in the fields every generator.pt has (`interface.load_release`), plus its own."""
    return {
        "family": "pe",
        "api": api.state(),
        "population": torch.from_numpy(population),
        "final_scale": params.scale(params.iterations),
        "noisy_histograms": [h.tolist() for h in histograms],
        "state_dict": None,
        "config": None,
        "epsilon": pe_epsilons(params.sigma, params.iterations, delta),
        "delta": delta,
        "epochs": params.iterations,
        "critic_steps": 0,
        "sample_rate": 1.0,
        "params": {**asdict(params), "mode": "pe", "public": False},
        "training_set_size": len(training.x),
        "unit": params.unit,
        "units": n_units,
        "max_patches_per_patient": training.max_per_patient(),
        "intensity": training.intensity,
        "embedding": EMBEDDING,
    }
