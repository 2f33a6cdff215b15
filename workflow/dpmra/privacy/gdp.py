"""Accounting of Private Evolution: T Gaussian mechanisms of L2 sensitivity 1, composed exactly as Gaussian DP.

A Gaussian mechanism with noise std sigma on a query of sensitivity 1 is (1/sigma)-GDP; T of them compose to
mu-GDP with mu = sqrt(T) / sigma (Dong, Roth and Su 2022, Corollary 2.5), and mu-GDP is (epsilon, delta)-DP exactly
for delta(epsilon) = Phi(-epsilon/mu + mu/2) - e^epsilon Phi(-epsilon/mu - mu/2) (their Corollary 2.13). Written
here because neither Opacus nor scipy has the unsubsampled composition in closed form; tests check it against
Opacus' PRV accountant at sample rate 1.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

MAX_EPSILON = 500.0


def gdp_mu(sigma: float, iterations: int) -> float:
    """mu of T Gaussian mechanisms of sensitivity 1 with noise std sigma (inf without noise)."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return math.sqrt(iterations) / sigma


def gdp_delta(epsilon: float, mu: float) -> float:
    """delta(epsilon) of mu-GDP, the exact trade-off (computed in log space where e^epsilon overflows)."""
    first = norm.cdf(-epsilon / mu + mu / 2)
    second = math.exp(epsilon + norm.logcdf(-epsilon / mu - mu / 2))
    return max(0.0, float(first - second))


def gdp_epsilon(mu: float, delta: float) -> float:
    """The smallest epsilon with delta(epsilon) <= delta for mu-GDP; inf for mu = inf."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if math.isinf(mu):
        return math.inf
    if gdp_delta(0.0, mu) <= delta:
        return 0.0
    if gdp_delta(MAX_EPSILON, mu) > delta:
        return math.inf
    return float(brentq(lambda e: gdp_delta(e, mu) - delta, 0.0, MAX_EPSILON, xtol=1e-10))


def pe_epsilons(sigma: float, iterations: int, delta: float) -> dict[str, float]:
    """Epsilon at delta of a PE run, three ways: exact GDP (the one reported), RDP and PRV (Opacus, rate 1)."""
    if math.isinf(sigma):
        return {"epsilon_gdp": math.inf, "epsilon_rdp": math.inf, "epsilon_prv": math.inf}
    # Opacus takes seconds to import; Snakemake solves PE's sigmas at every start through this module without it.
    from dpmra.privacy.accountants import epsilon as subsampled_epsilon

    with np.errstate(divide="ignore"):  # Opacus' PRV takes log(1 - q), -inf at rate 1, harmlessly
        return {
            "epsilon_gdp": gdp_epsilon(gdp_mu(sigma, iterations), delta),
            "epsilon_rdp": subsampled_epsilon(sigma, 1.0, iterations, delta, "rdp"),
            "epsilon_prv": subsampled_epsilon(sigma, 1.0, iterations, delta, "prv"),
        }


def solve_pe_sigma(target_epsilon: float, iterations: int, delta: float) -> float:
    """The noise std whose exact GDP epsilon at delta is the target (inf for an infinite target)."""
    if not target_epsilon > 0:
        raise ValueError(f"target epsilon must be positive, got {target_epsilon}")
    if math.isinf(target_epsilon):
        return math.inf
    mu = brentq(lambda m: gdp_epsilon(m, delta) - target_epsilon, 1e-6, 1e3, xtol=1e-12)
    return math.sqrt(iterations) / mu
