"""Accounting: the paper's epsilon table (docs/design.md §2.2), the valid bounds, and Google's dp-accounting."""

from __future__ import annotations

import math

import pytest

from dpmra.privacy.accountants import RDP_ORDERS, Ledger, TrainingAccountant, epsilon, solve_sigma

N = 41_000
Q = 32 / N
DELTA = 1 / N
BATCHES = 1281
N_CRITIC = 5

# sigma, epochs, paper accounting, bound of the loop as published, fresh loop RDP, fresh loop PRV
TABLE = [
    (2.0, 50, 1.31, 1.31, 0.90, 0.83),
    (1.5, 50, 1.91, 2.87, 1.31, 1.20),
    (1.2, 50, 2.66, 6.66, 1.80, 1.66),
    (0.8, 50, 5.72, 42.4, 3.85, 3.54),
    (0.65, 50, 10.18, 112, 6.83, 6.25),
    (0.65, 29, 7.43, 82, 5.10, 4.60),
]
IDS = [f"sigma{s}-{e}ep" for s, e, *_ in TABLE]


def paper_scale(sigma: float, epochs: int, mode: str) -> TrainingAccountant:
    acc = TrainingAccountant(sigma, Q, N_CRITIC, mode)
    acc.charge_generator_iterations(BATCHES * epochs)
    return acc


@pytest.mark.parametrize(("sigma", "epochs", "paper", "published", "fresh_rdp", "fresh_prv"), TABLE, ids=IDS)
def test_paper_mode_reproduces_table(sigma, epochs, paper, published, fresh_rdp, fresh_prv) -> None:
    """Paper accounting within 0.05; the published loop's RDP bound within 1 % (table: 3 digits)."""
    acc = paper_scale(sigma, epochs, "paper")
    assert acc.paper.epsilon(DELTA, "rdp") == pytest.approx(paper, abs=0.05)
    assert acc.valid.epsilon(DELTA, "rdp") == pytest.approx(published, rel=0.01)
    assert acc.valid.epsilon(DELTA, "rdp") >= acc.paper.epsilon(DELTA, "rdp") - 0.01


@pytest.mark.parametrize(("sigma", "epochs", "paper", "published", "fresh_rdp", "fresh_prv"), TABLE, ids=IDS)
def test_fresh_mode_reproduces_table(sigma, epochs, paper, published, fresh_rdp, fresh_prv) -> None:
    """Fresh loop, 5 * 1281 charges per epoch: RDP within 0.01, PRV within 0.02 (its eps_error)."""
    acc = paper_scale(sigma, epochs, "fresh")
    eps = acc.epsilons(DELTA)
    assert eps["epsilon_rdp"] == pytest.approx(fresh_rdp, abs=0.01)
    assert eps["epsilon_prv"] == pytest.approx(fresh_prv, abs=0.02)
    assert "epsilon_rdp_paper" not in eps
    assert acc.valid.steps == N_CRITIC * BATCHES * epochs


@pytest.mark.parametrize(("sigma", "epochs"), [(2.0, 50), (0.8, 50), (0.65, 29)])
def test_rdp_agrees_with_dp_accounting(sigma: float, epochs: int) -> None:
    """Google's RDP accountant, same orders and conversion: within 1 %."""
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    steps = N_CRITIC * BATCHES * epochs
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(Q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    google = RdpAccountant(list(RDP_ORDERS))
    google.compose(event)
    assert epsilon(sigma, Q, steps, DELTA, "rdp") == pytest.approx(google.get_epsilon(DELTA), rel=0.01)


@pytest.mark.parametrize(("sigma", "epochs"), [(2.0, 50), (0.65, 29)])
def test_prv_agrees_with_dp_accounting_pld(sigma: float, epochs: int) -> None:
    """Google's PLD accountant (discretisation 1e-4): PRV's upper bound within 0.02 + 1 %."""
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    steps = N_CRITIC * BATCHES * epochs
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(Q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    pld = PLDAccountant(value_discretization_interval=1e-4)
    pld.compose(event)
    expected = pld.get_epsilon(DELTA)
    assert abs(epsilon(sigma, Q, steps, DELTA, "prv") - expected) <= 0.02 + 0.01 * expected


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_solve_sigma_round_trip(accountant: str) -> None:
    """epsilon(solve_sigma(e)) lies within the solver's tolerance below e."""
    q, steps, delta = 0.01, 2000, 1e-5
    sigma = solve_sigma(3.0, q, steps, delta, accountant)
    assert 3.0 - 0.011 <= epsilon(sigma, q, steps, delta, accountant) <= 3.0


def test_solve_sigma_paper_scale() -> None:
    """The sigma that gives the paper's 7.4 for the fresh loop is smaller than the paper's 0.65."""
    sigma = solve_sigma(7.43, Q, N_CRITIC * BATCHES * 29, DELTA, "rdp")
    assert 0.4 < sigma < 0.65
    assert epsilon(sigma, Q, N_CRITIC * BATCHES * 29, DELTA) == pytest.approx(7.43, abs=0.011)


def test_non_private_and_trivial_cases() -> None:
    assert epsilon(math.inf, Q, 100, DELTA) == math.inf
    assert epsilon(math.inf, Q, 100, DELTA, "prv") == math.inf
    assert epsilon(1.0, Q, 0, DELTA) == 0.0
    assert solve_sigma(math.inf, Q, 100, DELTA) == math.inf
    acc = TrainingAccountant(math.inf, Q, N_CRITIC, "paper")
    acc.charge_generator_iterations(10)
    assert set(acc.epsilons(DELTA).values()) == {math.inf}
    with pytest.raises(ValueError):
        epsilon(1.0, 1.5, 10, DELTA)
    with pytest.raises(ValueError):
        epsilon(1.0, Q, 10, DELTA, "gdp")


def test_ledger_merges_and_round_trips() -> None:
    ledger = Ledger()
    for _ in range(3):
        ledger.charge(1.0, Q, 5)
    ledger.charge(2.0, Q, 1)
    assert ledger.history == [(1.0, Q, 15), (2.0, Q, 1)]
    copy = Ledger()
    copy.load_state_dict(ledger.state_dict())
    assert copy.history == ledger.history
    assert copy.epsilon(DELTA) == ledger.epsilon(DELTA)


def test_charging_in_pieces_equals_charging_at_once() -> None:
    whole = TrainingAccountant(1.0, Q, N_CRITIC, "paper")
    whole.charge_generator_iterations(6)
    pieces = TrainingAccountant(1.0, Q, N_CRITIC, "paper")
    for _ in range(3):
        pieces.charge_generator_iterations(2)
    assert pieces.state_dict() == whole.state_dict()
    restored = TrainingAccountant(1.0, Q, N_CRITIC, "paper")
    restored.load_state_dict(whole.state_dict())
    assert restored.epsilons(DELTA) == whole.epsilons(DELTA)
    with pytest.raises(ValueError, match="accountant state"):
        TrainingAccountant(2.0, Q, N_CRITIC, "paper").load_state_dict(whole.state_dict())
