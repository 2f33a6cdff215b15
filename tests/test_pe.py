"""Private Evolution: the votes' sensitivity, the noise, the accounting, and where private data may go."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import norm

from dpmra.data.phantom import SITES
from dpmra.generators import pe
from dpmra.generators.generator import Generator
from dpmra.generators.interface import TrainingData, generate
from dpmra.generators.params import PeParams
from dpmra.generators.pe_apis import LatentApi, SimulatorApi
from dpmra.privacy.gdp import gdp_delta, gdp_epsilon, gdp_mu, pe_epsilons, solve_pe_sigma
from dpmra.privacy.plan import pe_placebo_sigmas, pe_sigmas, placebo_source

KEY = bytes(range(32))


def random_votes(rng: np.random.Generator, n: int = 300, m: int = 12, dim: int = 6) -> tuple:
    private = rng.standard_normal((n, dim))
    patient = rng.integers(0, 5, size=n)
    candidates = rng.standard_normal((m * 3, dim))
    owner = np.repeat(np.arange(m), 3)
    return private, patient, candidates, owner, m


@pytest.mark.parametrize("trial", range(20))
def test_removing_one_patch_moves_the_patch_votes_by_exactly_one(trial: int) -> None:
    rng = np.random.default_rng(trial)
    private, patient, candidates, owner, m = random_votes(rng)
    full = pe.vote_histogram(private, patient, candidates, owner, m, "patch")
    drop = rng.integers(len(private))
    keep = np.arange(len(private)) != drop
    fewer = pe.vote_histogram(private[keep], patient[keep], candidates, owner, m, "patch")
    assert np.linalg.norm(full - fewer) == pytest.approx(1.0)
    assert full.sum() == len(private)


@pytest.mark.parametrize("trial", range(20))
def test_removing_one_patient_moves_the_patient_votes_by_at_most_one(trial: int) -> None:
    rng = np.random.default_rng(100 + trial)
    private, patient, candidates, owner, m = random_votes(rng)
    full = pe.vote_histogram(private, patient, candidates, owner, m, "patient")
    gone = rng.integers(5)
    keep = patient != gone
    renumbered = np.unique(patient[keep], return_inverse=True)[1]
    fewer = pe.vote_histogram(private[keep], renumbered, candidates, owner, m, "patient")
    assert np.linalg.norm(full - fewer) <= 1.0 + 1e-12
    # a patient's scaled vote vector: here every patient has many patches, so each adds exactly norm 1
    assert np.linalg.norm(full - fewer) == pytest.approx(1.0)


def test_noise_has_std_sigma_and_comes_from_the_key() -> None:
    counts = np.zeros(20_000)
    sigma = 3.0

    def noise(key: bytes) -> np.ndarray:
        stream = np.random.default_rng(pe.derive_seed(key, pe.run_name(PeParams(sigma=sigma)), "noise"))
        return pe.noisy_histogram(counts, sigma, 0.0, stream) - counts

    # threshold 0 keeps the positive half exactly; the kept values are |N(0, sigma^2)|, mean sigma sqrt(2/pi)
    drawn = noise(KEY)
    kept = drawn[drawn > 0]
    assert kept.mean() == pytest.approx(sigma * math.sqrt(2 / math.pi), rel=0.03)
    assert len(kept) == pytest.approx(len(drawn) / 2, rel=0.03)
    assert np.array_equal(noise(KEY), noise(KEY))
    assert not np.array_equal(noise(KEY), noise(bytes(32)))


def test_unthresholded_noise_std_is_sigma() -> None:
    stream = np.random.default_rng(pe.derive_seed(KEY, "pe:test", "noise"))
    sigma = 2.5
    noisy = pe.noisy_histogram(np.full(50_000, 100.0), sigma, 0.0, stream)
    assert np.std(noisy - 100.0) == pytest.approx(sigma, rel=0.02)
    assert np.mean(noisy - 100.0) == pytest.approx(0.0, abs=0.05)


def test_counts_below_the_threshold_are_dropped() -> None:
    stream = np.random.default_rng(0)
    noisy = pe.noisy_histogram(np.array([0.0, 1.0, 50.0]), 1.0, 2.0, stream)
    assert noisy[2] > 40 and noisy[0] == 0.0


def exact_delta_by_integration(epsilon: float, mu: float) -> float:
    """delta(epsilon) of N(0,1) vs N(mu,1) from its definition, E_P[(1 - e^(epsilon - L))_+], by quadrature."""

    def integrand(x: float) -> float:
        loss = mu * x - mu * mu / 2  # log dP/dQ at x for P = N(mu, 1), Q = N(0, 1)
        return max(0.0, 1.0 - math.exp(epsilon - loss)) * norm.pdf(x, loc=mu)

    return quad(integrand, epsilon / mu + mu / 2, mu + 40)[0]


@pytest.mark.parametrize(("sigma", "iterations"), [(0.796, 3), (3.05, 3), (1.0, 1), (5.0, 10)])
def test_gdp_epsilon_agrees_with_quadrature_and_opacus(sigma: float, iterations: int) -> None:
    delta = 8e-5
    mu = gdp_mu(sigma, iterations)
    eps = gdp_epsilon(mu, delta)
    assert gdp_delta(eps, mu) == pytest.approx(delta, rel=1e-6)
    assert exact_delta_by_integration(eps, mu) == pytest.approx(delta, rel=1e-4)
    three = pe_epsilons(sigma, iterations, delta)
    assert three["epsilon_prv"] == pytest.approx(eps, abs=0.03)  # Opacus' PRV at sample rate 1, eps_error 0.01
    assert three["epsilon_rdp"] >= eps  # RDP is an upper bound of the exact curve


def test_sigma_solved_for_a_target_epsilon_meets_it() -> None:
    sigma = solve_pe_sigma(10.0, 3, 8e-5)
    assert sigma == pytest.approx(0.796, abs=0.001)  # the measured setting
    assert gdp_epsilon(gdp_mu(sigma, 3), 8e-5) == pytest.approx(10.0, abs=1e-6)
    labels = pe_sigmas({"epsilons": [10, 2], "iterations": 3}, 8e-5)
    assert float(labels[10.0]) >= sigma and gdp_epsilon(gdp_mu(float(labels[2.0]), 3), 8e-5) <= 2.0
    assert pe_placebo_sigmas({"placebo": [10]}, labels) == [labels[10.0]]
    with pytest.raises(ValueError, match="pe.placebo"):
        pe_placebo_sigmas({"placebo": [5]}, labels)
    assert placebo_source("pe~0.7964/seed~1") == "pe-placebo~0.7964/seed~1"


def test_simulator_ranges_come_from_the_public_site_only() -> None:
    api = SimulatorApi(site="C", widen=2.0)
    low, high = api.ranges().T
    public = SITES["C"]
    assert math.exp((low[1] + high[1]) / 2) == pytest.approx(public.vessel_contrast)
    assert math.exp(high[0]) == pytest.approx(public.spacing_mm[0] * 2.0)
    assert (low[4], high[4]) == (0.5, 1.0)
    rows = api.variation(api.random(200, np.random.default_rng(0)), 0.5, np.random.default_rng(1))
    assert ((rows[:, :5] >= low) & (rows[:, :5] <= high)).all()
    site = api.site_of(rows[0])
    assert site.name == "C" and site.brain_intensity == public.brain_intensity


def tiny_latent_api() -> LatentApi:
    torch.manual_seed(0)
    model = Generator(patch_size=16, width=4, latent_dim=8)
    return LatentApi({"config": model.config(), "state_dict": model.state_dict()})


def training(seed: int, n: int = 60) -> TrainingData:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2, 16, 16)).astype(np.float32)
    return TrainingData(torch.from_numpy(x), torch.from_numpy(np.arange(n) % 3), "volume")


def test_the_private_set_reaches_nothing_but_the_noisy_histogram(monkeypatch) -> None:
    """Two different private sets whose noisy histograms are forced equal give the same population: PE's
    output depends on the private data only through the histograms (the private step)."""
    api = tiny_latent_api()
    params = PeParams(sigma=1.0, iterations=3, candidates=16, api="generator")
    seen = []

    def forced(private, patient, candidates, owner, m, unit):
        seen.append(private.shape)
        return np.arange(m, dtype=np.float64) % 4 * 10

    monkeypatch.setattr(pe, "vote_histogram", forced)
    first, _ = pe.evolve(training(1), params, api, KEY, [])
    second, _ = pe.evolve(training(2), params, api, KEY, [])
    assert np.array_equal(first, second)
    assert len(seen) == 2 * params.iterations


def test_same_key_same_release_other_key_other_release() -> None:
    api = tiny_latent_api()
    params = PeParams(sigma=1.0, iterations=2, candidates=16, api="generator")
    data = training(3)
    a, hist_a = pe.evolve(data, params, api, KEY, [])
    b, hist_b = pe.evolve(data, params, api, KEY, [])
    c, hist_c = pe.evolve(data, params, api, bytes(32), [])
    assert np.array_equal(a, b) and np.array_equal(hist_a[0], hist_b[0])
    assert not np.array_equal(hist_a[0], hist_c[0])
    placebo, hist_p = pe.evolve(data, replace(params, placebo_run=True), api, KEY, [])
    assert not np.array_equal(hist_a[0], hist_p[0])  # the placebo's noise is its own


def test_release_samples_pairs_deterministically(tmp_path: Path) -> None:
    api = tiny_latent_api()
    data = training(4)
    params = PeParams(sigma=1.0, iterations=1, candidates=8, api="generator")
    population, histograms = pe.evolve(data, params, api, KEY, [])
    stored = pe.release_file(params, api, population, histograms, data, 60, 1e-3)
    pairs = generate(stored, 10, 0)
    assert pairs.shape == (10, 2, 16, 16) and pairs.dtype == np.float32
    assert np.array_equal(pairs, generate(stored, 10, 0))
    assert stored["epsilon"]["epsilon_gdp"] == pytest.approx(gdp_epsilon(1.0, 1e-3))
