"""The one-run canary audit of the DP mechanism: the bound, the canaries, and a broken mechanism caught.

The bound is checked against direct sums of binomial terms and a closed form; the audit end to end on a tiny
critic (8 x 8 patches, width 4, 27,869 parameters) whose run claims epsilon 1 at delta 1e-5: with the noise the
accountant is told, the lower bound stays below the claim; with 10x less noise it exceeds the claim; with none it
reaches the ceiling for its canaries.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from dpmra.cli import main
from dpmra.evaluation.dp_audit import audit
from dpmra.generators.critic import Critic
from dpmra.generators.interface import TrainingData
from dpmra.generators.params import GanParams
from dpmra.generators.train import train_gan
from dpmra.privacy.accountants import solve_sigma
from dpmra.privacy.audit_bound import ceiling, correct_guesses, epsilon_lower_bound, guess, p_value, theorem_bounds
from dpmra.privacy.canaries import AuditedGradient, make_canaries
from dpmra.privacy.dpsgd import DPGradient
from dpmra.shared import checkpoint

KEY = bytes(range(32))
N, PATCH = 64, 8
CANARIES = 1000
DELTA = 1e-5
RATE, STEPS = 0.25, 200  # batch 16 of 64 pairs; 10 epochs of 4 generator iterations of 5 critic updates
CLAIM = 1.0
SIGMA = solve_sigma(CLAIM, RATE, STEPS, DELTA)
RUN = GanParams(
    sigma=SIGMA, epochs=10, batch_size=16, width_g=4, width_d=4, latent_dim=8, delta=DELTA, sample_every=100
)


def direct_tail(r: int, v: int, p: float) -> float:
    """P[Bin(r, p) >= v] as a sum of exact binomial terms."""
    return sum(math.comb(r, w) * p**w * (1 - p) ** (r - w) for w in range(v, r + 1))


def direct_theorem(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Steinke et al.'s Theorem 5.2 written out term by term."""
    p = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, w) * p**w * (1 - p) ** (r - w) for w in range(r + 1)]
    spread = max((sum(pmf[v - i : v]) / i for i in range(1, v + 1)), default=0.0)
    return min(1.0, direct_tail(r, v, p) + 2 * m * delta * spread)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (N, 2, PATCH, PATCH)).astype(np.float32)
    return TrainingData(torch.from_numpy(x), torch.arange(N) // 16)


# --- the bound -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r, v, eps", [(12, 9, 0.7), (30, 30, 2.0), (25, 13, 0.0), (40, 0, 1.0)])
def test_binomial_tail_matches_a_direct_sum(r: int, v: int, eps: float) -> None:
    p = math.exp(eps) / (1 + math.exp(eps))
    assert p_value(100, r, v, eps, 0.0) == pytest.approx(direct_tail(r, v, p), rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("m, r, eps, delta", [(50, 20, 1.0, 1e-3), (1000, 30, 2.5, 1e-5), (10, 10, 0.3, 0.01)])
def test_theorem_matches_its_terms_written_out(m: int, r: int, eps: float, delta: float) -> None:
    computed = theorem_bounds(m, r, eps, delta, r)
    expected = [direct_theorem(m, r, v, eps, delta) for v in range(r + 1)]
    np.testing.assert_allclose(computed, expected, rtol=1e-9, atol=1e-14)


def test_p_value_is_the_least_bound_over_smaller_counts() -> None:
    bounds = theorem_bounds(1000, 60, 1.5, 1e-4, 60)
    for v in (0, 30, 45, 60):
        assert p_value(1000, 60, v, 1.5, 1e-4) == pytest.approx(bounds[: v + 1].min())


@pytest.mark.parametrize("r", [10, 200])
def test_all_right_without_delta_is_the_closed_form(r: int) -> None:
    """q^r = 0.05 at the bound, so epsilon = log(q / (1 - q)) with q = 0.05^(1/r); r = 10 gives 1.0518."""
    q = 0.05 ** (1 / r)
    assert epsilon_lower_bound(1000, r, r, 0.0) == pytest.approx(math.log(q / (1 - q)), abs=1e-6)


def test_ceilings() -> None:
    """1,000 canaries all guessed right certify about 5.8 at delta 1e-5 (the issue's figure); 200 guesses ~4.2."""
    assert ceiling(1000, 1000, 1e-5) == pytest.approx(5.78, abs=0.02)
    assert ceiling(1000, 200, 1e-5) == pytest.approx(4.17, abs=0.02)
    assert ceiling(1000, 200, 8e-5) < ceiling(1000, 200, 1e-5)


def test_bound_grows_with_correct_guesses_and_is_zero_at_chance() -> None:
    bounds = [epsilon_lower_bound(1000, 200, v, 1e-5) for v in (100, 120, 150, 180, 200)]
    assert bounds[0] == 0.0 and all(a < b for a, b in zip(bounds, bounds[1:]))


def test_bound_exceeds_the_truth_at_most_as_often_as_the_confidence_allows() -> None:
    """Guesses of epsilon-DP randomised response (eps = 1) refute eps = 1 in at most ~5 % of audits."""
    rng = np.random.default_rng(1)
    correct = rng.binomial(100, math.exp(1) / (1 + math.exp(1)), size=200)
    refuted = [epsilon_lower_bound(1000, 100, int(v), 1e-5) > 1.0 for v in correct]
    assert np.mean(refuted) <= 0.08


def test_guesses_take_the_extremes_and_abstain_in_between() -> None:
    scores = np.array([0.3, -2.0, 5.0, 0.1, 4.0, -1.0])
    guesses = guess(scores, 2)
    assert guesses.tolist() == [0, -1, 1, 0, 1, -1]
    included = np.array([True, False, True, True, False, False])
    assert correct_guesses(guesses, included) == 3
    with pytest.raises(ValueError, match="guesses per side"):
        guess(scores, 4)


# --- the canaries and the engine -----------------------------------------------------------------------------


def test_canaries_are_orthogonal_unit_directions_drawn_from_the_key() -> None:
    params = list(Critic(PATCH, 4).parameters())
    marks = make_canaries(params, 100, KEY, "run", sample_rate=1.0, norm=1.0)
    support = marks.support.flatten()
    assert len(torch.unique(support)) == len(support) == 100 * (27869 // 100)
    assert torch.all(marks.signs.abs() == 1)
    assert 30 < int(marks.included.sum()) < 70
    same = make_canaries(params, 100, KEY, "run", 1.0, 1.0)
    other = make_canaries(params, 100, bytes(32), "run", 1.0, 1.0)
    assert torch.equal(same.included, marks.included) and torch.equal(same.support, marks.support)
    assert not torch.equal(other.included, marks.included)
    with pytest.raises(ValueError, match="canaries must be in 2..27869"):
        make_canaries(params, 30000, KEY, "run", 1.0, 1.0)


def test_canaries_join_the_clipped_sum_before_the_division_and_scores_read_the_update() -> None:
    critic = Critic(PATCH, 4)
    reference = DPGradient(copy.deepcopy(critic), 1.0, 0.0, expected_batch_size=4.0)
    engine = DPGradient(critic, 1.0, 0.0, expected_batch_size=4.0)
    marks = make_canaries(engine.clipper.params, 10, KEY, "run", sample_rate=1.0, norm=0.9)
    marks.included[:] = torch.tensor([True, False] * 5)
    audited = AuditedGradient(engine, marks)
    x = torch.rand(3, 2, PATCH, PATCH) * 2 - 1
    audited.accumulate(x, lambda out: -out)
    reference.accumulate(x, lambda out: -out)
    flat = torch.cat([p.grad.flatten() for p in engine.clipper.params]).double()
    flat_reference = torch.cat([p.grad.flatten() for p in reference.clipper.params]).double()
    added = torch.zeros_like(flat)
    for j in range(0, 10, 2):
        added[marks.support[j]] = 0.9 * marks.signs[j].double() / math.sqrt(marks.support.shape[1])
    torch.testing.assert_close(flat - flat_reference, added / 4.0, rtol=0, atol=1e-7)
    torch.testing.assert_close(marks.update_sum, flat)
    reference_scores = (flat_reference[marks.support] * marks.signs.double()).sum(1) / math.sqrt(marks.support.shape[1])
    expected = reference_scores.numpy() + 0.9 / 4.0 * marks.included.numpy()
    np.testing.assert_allclose(marks.scores(), expected, atol=1e-6)
    assert marks.sampled.tolist() == [1, 0] * 5


# --- the audit end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audits(data: TrainingData, one_torch_thread) -> dict:
    """The tiny run audited with the noise the accountant is told, with 10x less, and with none."""
    return {
        name: audit(data, RUN, KEY, CANARIES, noise_multiplier=noise).summary
        for name, noise in (("correct", None), ("broken", SIGMA / 10), ("noiseless", 0.0))
    }


def test_the_audit_reports_the_runs_own_accounting(audits: dict) -> None:
    summary = audits["correct"]
    assert summary["critic_steps"] == STEPS and summary["sample_rate"] == RATE and summary["delta"] == DELTA
    assert summary["epsilon"]["rdp"] == pytest.approx(CLAIM, abs=0.01)
    assert summary["guesses"] == 200 and summary["canaries"] == CANARIES
    assert summary["noise_multiplier_added"] == SIGMA


def test_with_the_claimed_noise_the_bound_stays_below_the_claim(audits: dict) -> None:
    summary = audits["correct"]
    assert summary["epsilon_lower_bound"] < min(summary["epsilon"].values())


def test_ten_times_less_noise_than_claimed_is_caught(audits: dict) -> None:
    summary = audits["broken"]
    assert summary["epsilon_lower_bound"] > 2 * summary["epsilon"]["rdp"]


def test_without_noise_the_bound_reaches_the_ceiling(audits: dict) -> None:
    summary = audits["noiseless"]
    assert summary["correct"] == summary["guesses"]
    assert summary["epsilon_lower_bound"] == pytest.approx(summary["epsilon_ceiling"])
    assert summary["epsilon_ceiling"] == pytest.approx(ceiling(CANARIES, 200, DELTA))


def test_patient_unit_canaries_are_patients(data: TrainingData, one_torch_thread) -> None:
    """Unit patient: canaries are sampled at the patient rate and the broken mechanism is caught the same way."""
    params = replace(RUN, unit="patient", patient_batch=1.0, patient_patches=4)
    correct = audit(data, params, KEY, CANARIES).summary
    broken = audit(data, params, KEY, CANARIES, noise_multiplier=SIGMA / 10).summary
    assert correct["privacy_unit"] == "patient" and correct["sample_rate"] == 0.25
    assert correct["epsilon_lower_bound"] < correct["epsilon"]["rdp"] < broken["epsilon_lower_bound"]


def test_a_warm_started_run_is_audited_from_the_same_start(data, tmp_path, capsys, one_torch_thread) -> None:
    """The audit starts from the run's public warm start; left out, the check against generator.pt refuses it."""
    train_set = tmp_path / "train_set.npz"
    np.savez(train_set, x=data.x.numpy(), patient=data.patient.numpy())
    secret = tmp_path / "secret.key"
    secret.write_bytes(KEY)
    public = replace(RUN, sigma=math.inf, epochs=1, public=True, delta=None)
    train_gan(train_set, tmp_path / "public", public, secret)
    warm = tmp_path / "public" / "generator.pt"
    train_gan(train_set, tmp_path / "run", replace(RUN, epochs=1), secret, warm)
    command = ["audit-dp", "run", "--generator", str(tmp_path / "run" / "generator.pt"), "--train-set", str(train_set),
               "--secret", str(secret), "--canaries", "100"]
    assert main([*command, "--pretrained", str(warm), "--out", str(tmp_path / "audit")]) == 0
    summary = json.loads((tmp_path / "audit" / "dp_audit.json").read_text())
    assert summary["pretrained"] == checkpoint.load(tmp_path / "run" / "generator.pt")["pretrained"] is not None
    assert main([*command, "--out", str(tmp_path / "cold")]) == 1
    assert "the audited run was warm-started; give --pretrained exactly when it was" in capsys.readouterr().err
    other = tmp_path / "other_public"
    train_gan(train_set, other, replace(public, seed=1), secret)
    assert main([*command, "--pretrained", str(other / "generator.pt"), "--out", str(tmp_path / "other")]) == 1
    assert "warm start {" in capsys.readouterr().err


def test_a_killed_audit_resumes_to_the_same_result(data: TrainingData, tmp_path, one_torch_thread) -> None:
    """Checkpoints hold the trainer's and the canaries' states: resuming from epoch 1 gives the same scores."""
    params = replace(RUN, epochs=2)
    whole = audit(data, params, KEY, 300, checkpoints=tmp_path)
    (tmp_path / "epoch_002.pt").unlink()
    resumed = audit(data, params, KEY, 300, checkpoints=tmp_path)
    pd.testing.assert_frame_equal(resumed.canaries, whole.canaries)
    assert resumed.summary["correct"] == whole.summary["correct"]
    assert audit(data, params, KEY, 300, checkpoints=tmp_path).summary["seconds"] < whole.summary["seconds"]


@pytest.mark.parametrize(
    "params, message",
    [
        (GanParams(), "sigma = inf is not private"),
        (GanParams(sigma=1.0, mode="paper"), "mode fresh"),
    ],
)
def test_runs_without_an_auditable_mechanism_are_refused(data: TrainingData, params: GanParams, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        audit(data, params, KEY, CANARIES)


def test_command_line_audits_a_trained_run_and_reports_it(data, tmp_path, capsys, one_torch_thread) -> None:
    """`dpmra audit-dp run` reads the run's settings from its generator.pt; table and figure follow."""
    train_set = tmp_path / "train_set.npz"
    np.savez(train_set, x=data.x.numpy(), patient=data.patient.numpy())
    secret = tmp_path / "secret.key"
    secret.write_bytes(KEY)
    params = replace(RUN, epochs=2)
    run_dir = tmp_path / "gan" / "sigma~x" / "seed~0"
    train_gan(train_set, run_dir, params, secret)
    out = tmp_path / "dp_audit" / "sigma~x" / "seed~0"
    common = ["--train-set", str(train_set), "--secret", str(secret), "--canaries", "300"]
    assert main(["audit-dp", "run", "--generator", str(run_dir / "generator.pt"), *common, "--out", str(out)]) == 0
    summary = json.loads((out / "dp_audit.json").read_text())
    stored = checkpoint.load(run_dir / "generator.pt")
    assert summary["epsilon"]["rdp"] == stored["epsilon"]["epsilon_rdp"] and summary["guesses"] == 60
    canaries = pd.read_csv(out / "canaries.tsv", sep="\t")
    assert len(canaries) == 300 and set(canaries["guess"]) == {"included", "excluded", "abstain"}
    table = tmp_path / "dp_audit.tsv"
    assert main(["audit-dp", "table", str(out / "dp_audit.json"), "--out", str(table)]) == 0
    row = pd.read_csv(table, sep="\t").iloc[0]
    assert row["run"] == "sigma~x/seed~0" and row["correct"] == summary["correct"]
    figures = [tmp_path / "dp_audit.png", tmp_path / "dp_audit.pdf"]
    assert main(["audit-dp", "figure", "--table", str(table), "--out", *map(str, figures)]) == 0
    assert all(f.stat().st_size > 0 for f in figures)
    stored["epsilon"]["epsilon_rdp"] *= 0.5
    checkpoint.save_atomic(stored, tmp_path / "claims_less.pt")
    tampered = ["audit-dp", "run", "--generator", str(tmp_path / "claims_less.pt"), *common, "--out", str(tmp_path)]
    assert main(tampered) == 1
    assert "the audit's accounting differs from the audited run's: epsilon rdp" in capsys.readouterr().err
