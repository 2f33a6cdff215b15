"""Privacy accounting for Poisson-subsampled Gaussian DP-SGD: RDP (the paper's) and PRV.

Thin wrappers on Opacus' accountants. The RDP orders are the paper's (1.1..10.9 step 0.1
and 12..63); with Opacus' RDP-to-DP conversion (Balle et al. 2020) they reproduce the
paper's epsilon values exactly when charged as the paper did (docs/design.md §2.2). PRV (Gopi et
al. 2021) is tighter; its reported value is Opacus' upper bound, not the estimate.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Literal


def _import_opacus_accountants():
    """Opacus' accountants, imported without the root-logger handler opacus installs on import.

    opacus.utils.module_utils calls logging.basicConfig at import time; inside Snakemake (which imports
    this module to plan sigmas) that duplicated every Snakemake message.
    """
    handlers, level = logging.root.handlers[:], logging.root.level
    from opacus.accountants import PRVAccountant, RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    logging.root.handlers[:], logging.root.level = handlers, level
    return PRVAccountant, RDPAccountant, get_noise_multiplier


PRVAccountant, RDPAccountant, get_noise_multiplier = _import_opacus_accountants()

RDP_ORDERS: tuple[float, ...] = tuple([1 + x / 10 for x in range(1, 100)] + list(range(12, 64)))
"""The paper's RDP orders."""

PRV_EPS_ERROR = 0.01
"""Absolute error allowed in the PRV accountant's epsilon (Opacus' default)."""

Mechanism = Literal["rdp", "prv"]
LoopMode = Literal["fresh", "paper"]
Charge = tuple[float, float, int]
"""(noise multiplier sigma, sample rate q, number of steps)."""


def _is_private(sigma: float) -> bool:
    return math.isfinite(sigma) and sigma > 0


def epsilon_of_history(history: list[Charge], delta: float, accountant: Mechanism = "rdp") -> float:
    """Epsilon at ``delta`` of a sequence of Poisson-subsampled Gaussian charges."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    charged = [(s, q, n) for s, q, n in history if n > 0 and q > 0]
    if not charged:
        return 0.0
    if any(not _is_private(s) for s, _, _ in charged):
        return math.inf
    if accountant == "rdp":
        acc = RDPAccountant()
        acc.history = list(charged)
        with warnings.catch_warnings():
            # the order range is fixed on purpose (the paper's), so extreme optima are expected
            warnings.simplefilter("ignore", UserWarning)
            return float(acc.get_epsilon(delta, alphas=list(RDP_ORDERS)))
    if accountant == "prv":
        acc = PRVAccountant()
        acc.history = list(charged)
        return float(acc.get_epsilon(delta, eps_error=PRV_EPS_ERROR))
    raise ValueError(f"accountant must be 'rdp' or 'prv', got {accountant!r}")


def epsilon(
    sigma: float, sample_rate: float, steps: int, delta: float, accountant: Mechanism = "rdp"
) -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian steps (sigma = noise multiplier)."""
    _check_rate(sample_rate)
    return epsilon_of_history([(sigma, sample_rate, steps)], delta, accountant)


def solve_sigma(
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: Mechanism = "rdp",
    tolerance: float = 0.01,
) -> float:
    """The noise multiplier whose epsilon is within ``tolerance`` below ``target_epsilon``."""
    _check_rate(sample_rate)
    if not target_epsilon > 0:
        raise ValueError(f"target epsilon must be positive, got {target_epsilon}")
    if math.isinf(target_epsilon):
        return math.inf
    if accountant not in ("rdp", "prv"):
        raise ValueError(f"accountant must be 'rdp' or 'prv', got {accountant!r}")
    kwargs = {"alphas": list(RDP_ORDERS)} if accountant == "rdp" else {"eps_error": PRV_EPS_ERROR}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
                epsilon_tolerance=tolerance,
                **kwargs,
            )
        )


def _check_rate(sample_rate: float) -> None:
    if not 0 <= sample_rate <= 1:
        raise ValueError(f"sample rate must be in [0, 1], got {sample_rate}")


class Ledger:
    """A checkpointable history of (sigma, q, steps) charges, merged when consecutive ones match."""

    def __init__(self) -> None:
        self.history: list[Charge] = []

    def charge(self, sigma: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` Poisson-subsampled Gaussian steps."""
        _check_rate(sample_rate)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if self.history and self.history[-1][:2] == (sigma, sample_rate):
            self.history[-1] = (sigma, sample_rate, self.history[-1][2] + steps)
        else:
            self.history.append((sigma, sample_rate, steps))

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.history)

    def epsilon(self, delta: float, accountant: Mechanism = "rdp") -> float:
        return epsilon_of_history(self.history, delta, accountant)

    def state_dict(self) -> dict:
        return {"history": [list(c) for c in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.history = [(float(s), float(q), int(n)) for s, q, n in state["history"]]


class TrainingAccountant:
    """The privacy cost of the critic's training loop, charged per generator iteration.

    ``fresh``: each of the n_critic critic updates draws its own Poisson batch: n_critic
    charges at sigma. ``paper`` (the published loop): one Poisson batch is reused for
    n_critic noisy updates, which together are one subsampled Gaussian with noise
    sigma / sqrt(n_critic), charged once; the fake-batch steps touch no private data.
    For comparison the paper's own accounting (2 * n_critic charges at sigma) is kept too.
    """

    def __init__(self, sigma: float, sample_rate: float, n_critic: int, mode: LoopMode = "fresh") -> None:
        if mode not in ("fresh", "paper"):
            raise ValueError(f"mode must be 'fresh' or 'paper', got {mode!r}")
        _check_rate(sample_rate)
        self.sigma = sigma
        self.sample_rate = sample_rate
        self.n_critic = n_critic
        self.mode = mode
        self.valid = Ledger()
        self.paper = Ledger()

    def charge_generator_iterations(self, n: int) -> None:
        """Charge n generator iterations (each with its n_critic critic updates)."""
        if self.mode == "fresh":
            self.valid.charge(self.sigma, self.sample_rate, n * self.n_critic)
        else:
            self.valid.charge(self.sigma / math.sqrt(self.n_critic), self.sample_rate, n)
            self.paper.charge(self.sigma, self.sample_rate, 2 * self.n_critic * n)

    def epsilons(self, delta: float) -> dict[str, float]:
        """The valid RDP and PRV bounds, plus in paper mode the paper's RDP accounting."""
        result = {
            "epsilon_rdp": self.valid.epsilon(delta, "rdp"),
            "epsilon_prv": self.valid.epsilon(delta, "prv"),
        }
        if self.mode == "paper":
            result["epsilon_rdp_paper"] = self.paper.epsilon(delta, "rdp")
        return result

    def state_dict(self) -> dict:
        return {
            "sigma": self.sigma,
            "sample_rate": self.sample_rate,
            "n_critic": self.n_critic,
            "mode": self.mode,
            "valid": self.valid.state_dict(),
            "paper": self.paper.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the charges; the loop's settings must match this accountant's."""
        mine = (self.sigma, self.sample_rate, self.n_critic, self.mode)
        theirs = (state["sigma"], state["sample_rate"], state["n_critic"], state["mode"])
        if mine != theirs:
            raise ValueError(f"accountant state is for (sigma, q, n_critic, mode) = {theirs}, not {mine}")
        self.valid.load_state_dict(state["valid"])
        self.paper.load_state_dict(state["paper"])
