"""The statistics of the one-run canary audit: guesses, their count, and the epsilon it refutes.

Steinke, Nasr and Jagielski (NeurIPS 2023), "Privacy auditing with one (1) training run", Theorem 5.2. The
auditor guesses "included" for the k highest canary scores and "excluded" for the k lowest and abstains on the
rest; if the mechanism is (epsilon, delta)-DP, the number of correct guesses is stochastically dominated as in
the theorem, which turns the count into an epsilon that the mechanism provably (95 % confidence) does not meet.
Pure statistics on counts: no torch, no training (the audit run is `dpmra.evaluation.dp_audit`).
"""

from __future__ import annotations

import numpy as np
import scipy.special
import scipy.stats

CONFIDENCE = 0.95
GUESS_FRACTION = 0.1
"""Default guesses per side: k = m / 10 included and k excluded guesses, fixed in advance (no search over k)."""
EPSILON_STEP = 0.05
"""Grid step of the search for the first epsilon the count does not refute; bisection refines it."""
EPSILON_MAX = 100.0


def theorem_bounds(canaries: int, guesses: int, epsilon: float, delta: float, most: int) -> np.ndarray:
    """Theorem 5.2 for v = 0..most correct guesses: a bound on P[W >= v] for any (epsilon, delta)-DP mechanism.

    P[Bin(r, p) >= v] + 2 m delta max_{1 <= i <= v} P[v - i <= Bin(r, p) < v] / i with p = e^eps / (1 + e^eps),
    r guesses and m canaries; capped at 1.
    """
    p = float(scipy.special.expit(epsilon))
    v = np.arange(most + 1)
    tail = scipy.stats.binom.sf(v - 1, guesses, p)
    below = np.concatenate([[0.0], np.cumsum(scipy.stats.binom.pmf(np.arange(most), guesses, p))])
    i = np.arange(1, most + 1)
    start = v[:, None] - i[None, :]
    window = np.where(start >= 0, below[v][:, None] - below[np.clip(start, 0, None)], 0.0)
    spread = (window / i[None, :]).max(axis=1, initial=0.0)
    return np.minimum(tail + 2 * canaries * delta * spread, 1.0)


def p_value(canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """How likely an (epsilon, delta)-DP mechanism lets `correct` of `guesses` guesses (or more) be right.

    The least of the theorem's bounds over v' <= correct: each also bounds P[W >= correct], and the least is
    non-increasing in the count, so P[p-value of W < alpha] <= alpha holds even where the theorem's bound itself
    is not monotone in v.
    """
    if not 0 <= correct <= guesses <= canaries:
        raise ValueError(f"need 0 <= correct <= guesses <= canaries, got {correct}, {guesses}, {canaries}")
    return float(theorem_bounds(canaries, guesses, epsilon, delta, correct).min())


def epsilon_lower_bound(
    canaries: int, guesses: int, correct: int, delta: float, confidence: float = CONFIDENCE
) -> float:
    """The epsilon below which (epsilon, delta)-DP is refuted at `confidence`: the first epsilon not refuted.

    Taking the first epsilon whose p-value reaches 1 - confidence (not the last refuted one) keeps the bound
    valid without assuming the p-value grows with epsilon: the bound exceeds the true epsilon only if the true
    epsilon was refuted, which happens with probability at most 1 - confidence.
    """
    alpha = 1.0 - confidence

    def refuted(eps: float) -> bool:
        return p_value(canaries, guesses, correct, eps, delta) < alpha

    if not refuted(0.0):
        return 0.0
    low = 0.0
    while refuted(low + EPSILON_STEP):
        low += EPSILON_STEP
        if low > EPSILON_MAX:
            raise ValueError(f"no epsilon up to {EPSILON_MAX} explains {correct} of {guesses} guesses right")
    high = low + EPSILON_STEP
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if refuted(middle) else (low, middle)
    return low


def ceiling(canaries: int, guesses: int, delta: float, confidence: float = CONFIDENCE) -> float:
    """The most this audit can show: the lower bound when every guess is right."""
    return epsilon_lower_bound(canaries, guesses, guesses, delta, confidence)


def check_per_side(per_side: int, canaries: int) -> None:
    """k included and k excluded guesses need 1 <= k <= m / 2."""
    if not 1 <= per_side <= canaries // 2:
        raise ValueError(f"guesses per side must be in 1..{canaries // 2} for {canaries} canaries, got {per_side}")


def guess(scores: np.ndarray, per_side: int) -> np.ndarray:
    """+1 (included) for the k highest scores, -1 (excluded) for the k lowest, 0 (abstain) for the rest."""
    check_per_side(per_side, len(scores))
    order = np.argsort(scores, kind="stable")
    guesses = np.zeros(len(scores), dtype=np.int8)
    guesses[order[:per_side]] = -1
    guesses[order[len(scores) - per_side :]] = 1
    return guesses


def correct_guesses(guesses: np.ndarray, included: np.ndarray) -> int:
    """Guesses that match the inclusion: +1 on an included canary, -1 on an excluded one."""
    return int(((guesses == 1) & included).sum() + ((guesses == -1) & ~included).sum())
