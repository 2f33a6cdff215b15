"""delta and group privacy: the delta a run may use, the card's warning about it, and the per-patient bound.

By default delta = 1 / (10 N) rounded down to one significant digit (N privacy units); the paper's 1/N is allowed
with a warning; a larger one is refused (docs/design.md section 2.4). Group privacy turns a per-patch guarantee
into a per-patient one (section 2.5). Pure arithmetic, no opacus or torch: the command line, the privacy card and
the workflow's planner read it without loading the accountants (`dpmra.privacy.accountants`).
"""

from __future__ import annotations

import math

PAPER_DELTA = "1/N"
"""The paper's delta, one over the number of privacy units: allowed, with a warning on the card."""


def default_delta(n_units: int) -> float:
    """1 / (10 N) rounded down to one significant digit: well below the 1/N of a mechanism that leaks a record."""
    if n_units < 1:
        raise ValueError(f"need at least one privacy unit, got {n_units}")
    value = 1.0 / (10 * n_units)
    exponent = math.floor(math.log10(value))
    mantissa = math.floor(value / 10**exponent + 1e-9)
    return float(f"{mantissa}e{exponent}")


def resolve_delta(configured: float | str | None, n_units: int, key: str = "delta") -> float:
    """The delta of a run: the default rule, the paper's 1/N, or a configured value no larger than 1/N.

    A delta above 1/N allows a mechanism that publishes a random record outright, so it is refused.
    """
    if configured is None:
        return default_delta(n_units)
    if configured == PAPER_DELTA:
        return 1.0 / n_units
    delta = float(configured)
    if not 0 < delta < 1:
        raise ValueError(f"{key}: delta must be in (0, 1), got {configured}")
    if delta > (1.0 / n_units) * (1 + 1e-9):
        raise ValueError(
            f"{key}: delta {configured} exceeds 1/N = {1 / n_units:.3g} for N = {n_units} privacy units; "
            f"use at most 1/N (the paper's choice, '{PAPER_DELTA}') or leave it empty for 1/(10 N)"
        )
    return delta


def delta_warning(delta: float, n_units: int) -> str | None:
    """A warning for the card when delta is as large as 1/N (the paper's choice), else None."""
    if delta * n_units < 1 - 1e-9:
        return None
    return (
        f"delta = {delta:.3g} equals 1/N for N = {n_units}: weaker than usual practice (delta much smaller than "
        "1/N); a mechanism that publishes one whole record at random meets it"
    )


def group_privacy(epsilon: float, delta: float, group_size: int) -> tuple[float, float]:
    """(k eps, k e^{(k-1) eps} delta): the guarantee for a group of k units from one of (eps, delta).

    The standard group-privacy rule for approximate DP; delta above 1 (vacuous) is returned as inf.
    """
    if group_size < 1:
        raise ValueError(f"group size must be >= 1, got {group_size}")
    if math.isinf(epsilon):
        return math.inf, math.inf
    k = group_size
    log_delta = math.log(k) + (k - 1) * epsilon + math.log(delta)
    return k * epsilon, math.exp(log_delta) if log_delta < 0 else math.inf
