"""Release privacy: the secret key, delta below 1/N, and the patient as privacy unit."""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dpmra.cli import main
from dpmra.generators import train
from dpmra.generators.critic import Critic
from dpmra.generators.interface import load_training_set
from dpmra.generators.params import GanParams
from dpmra.generators.train import train_gan
from dpmra.generators.wgan import SECRET_STREAMS, WganTrainer, run_name
from dpmra.privacy.delta import default_delta, delta_warning, group_privacy, resolve_delta
from dpmra.privacy.dpsgd import NORM_RTOL, DPGradient
from dpmra.privacy.plan import sampling
from dpmra.privacy.secret import KEY_BYTES, create_key, derive_seed, load_key, read_key
from dpmra.release.params import ReleaseParams
from dpmra.release.synth import release_dataset
from dpmra.shared import checkpoint

PATCH = 16
N = 40
PARAMS = GanParams(sigma=1.0, epochs=1, batch_size=8, width_g=4, width_d=4, latent_dim=8, seed=2)


@pytest.fixture(scope="module")
def train_set(tmp_path_factory) -> Path:
    """40 random pairs of 4 patients (10 each)."""
    path = tmp_path_factory.mktemp("data") / "train.npz"
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (N, 2, PATCH, PATCH)).astype(np.float32)
    x[:, 1] = np.sign(x[:, 1])
    np.savez(path, x=x, patient=np.arange(N) // 10)
    return path


def key_file(root: Path, fill: int) -> Path:
    path = root / f"key{fill}"
    path.write_bytes(bytes([fill]) * KEY_BYTES)
    return path


# --- the key -----------------------------------------------------------------------------


def test_key_is_created_once_private_and_random(tmp_path: Path) -> None:
    path = tmp_path / "private" / "secret.key"
    assert create_key(path) is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = read_key(path)
    assert len(key) == KEY_BYTES and key != bytes(KEY_BYTES)
    assert create_key(path) is False and load_key(path) == key
    assert create_key(tmp_path / "other.key") and read_key(tmp_path / "other.key") != key
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret.key"]  # no temporary left


def test_bad_key_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        read_key(tmp_path / "missing.key")
    (tmp_path / "short.key").write_bytes(b"abc")
    with pytest.raises(ValueError, match=r"short.key: a secret key is 32 bytes, this file has 3"):
        read_key(tmp_path / "short.key")


def test_derived_seeds_are_keyed_per_run_and_stream() -> None:
    a, b = bytes(32), bytes([1]) * 32
    assert derive_seed(a, "run", "noise") == derive_seed(a, "run", "noise")
    seeds = {derive_seed(a, "run", "noise"), derive_seed(b, "run", "noise"), derive_seed(a, "run", "sampler"),
             derive_seed(a, "other", "noise")}
    assert len(seeds) == 4 and all(0 <= s < 2**63 for s in seeds)


def test_secret_key_command_creates_and_keeps_the_key(tmp_path: Path, capsys) -> None:
    path = tmp_path / "k" / "secret.key"
    assert main(["secret-key", "--out", str(path)]) == 0
    key = read_key(path)
    assert main(["secret-key", "--out", str(path)]) == 0 and read_key(path) == key
    captured = capsys.readouterr()
    assert key.hex() not in captured.out + captured.err


# --- secret streams in training ------------------------------------------------------------


def test_keys_not_seeds_decide_the_noise(train_set: Path, tmp_path: Path, monkeypatch) -> None:
    """Same seed, other key: other batches, noise and weights. Same key and seed: bit-identical."""
    monkeypatch.setattr(train, "default_device", lambda: torch.device("cpu"))
    runs = {}
    for name, fill in (("a", 1), ("b", 1), ("c", 2)):
        train_gan(train_set, tmp_path / name, PARAMS, key_file(tmp_path, fill))
        runs[name] = checkpoint.load(tmp_path / name / "generator.pt")["state_dict"]
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])
    data = load_training_set(train_set)
    noise = [
        WganTrainer(data, PARAMS, torch.device("cpu"), bytes([fill]) * 32).rng["noise"].initial_seed()
        for fill in (1, 2)
    ]
    assert noise[0] != noise[1]


def test_initial_weights_follow_the_public_seed_only(train_set: Path) -> None:
    data = load_training_set(train_set)
    a = WganTrainer(data, PARAMS, torch.device("cpu"), bytes(32))
    b = WganTrainer(data, PARAMS, torch.device("cpu"), bytes([7]) * 32)
    assert all(torch.equal(p, q) for p, q in zip(a.generator.parameters(), b.generator.parameters()))
    assert a.rng["sampler"].initial_seed() != b.rng["sampler"].initial_seed()


def test_no_output_holds_the_key_or_the_derived_seeds(train_set: Path, tmp_path: Path) -> None:
    """generator.pt, epochs.tsv, plots and the released dataset carry neither the key nor the secret seeds."""
    secret = key_file(tmp_path, 9)
    key = read_key(secret)
    train_gan(train_set, tmp_path / "gan", PARAMS, secret)
    release_dataset(tmp_path / "gan" / "generator.pt", tmp_path / "synth", ReleaseParams(n=8), "run")
    seeds = [derive_seed(key, run_name(PARAMS), s) for s in SECRET_STREAMS]
    needles = [key, key.hex().encode()]
    for seed in seeds:
        needles += [str(seed).encode(), seed.to_bytes(8, "little"), seed.to_bytes(8, "big")]
    files = [p for p in (tmp_path / "gan").iterdir() if p.is_file()] + list((tmp_path / "synth").iterdir())
    assert any(p.name == "generator.pt" for p in files) and any(p.name == "privacy_card.json" for p in files)
    for path in files:
        content = path.read_bytes()
        for needle in needles:
            assert needle not in content, path.name
    stored = checkpoint.load(tmp_path / "gan" / "generator.pt")
    assert "rng" not in stored and "key_check" not in stored


def test_more_epochs_continue_the_same_secret_streams() -> None:
    assert run_name(replace(PARAMS, epochs=9)) == run_name(PARAMS) != run_name(replace(PARAMS, lr=1e-3))


def test_checkpoints_of_another_key_are_not_resumed(train_set: Path, tmp_path: Path) -> None:
    train_gan(train_set, tmp_path / "run", PARAMS, key_file(tmp_path, 1))
    trainer = WganTrainer(load_training_set(train_set), PARAMS, torch.device("cpu"), bytes([2]) * 32)
    state = checkpoint.load(tmp_path / "run" / "checkpoints" / "epoch_001.pt")
    assert trainer.resume_conflict(state) == "made with another secret key"


# --- delta ---------------------------------------------------------------------------------


def test_default_delta_is_a_tenth_of_one_over_n_rounded_down() -> None:
    assert default_delta(1200) == 8e-5  # 1 / 12,000 = 8.3e-5
    assert default_delta(41000) == 2e-6  # 1 / 410,000 = 2.44e-6
    assert default_delta(1000) == 1e-4 and default_delta(6) == 0.01
    assert resolve_delta(None, 1200) == 8e-5 < 1 / 1200


def test_delta_above_one_over_n_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"gan.delta: delta 0.001 exceeds 1/N = 0.000833 for N = 1200"):
        resolve_delta(0.001, 1200, "gan.delta")
    assert resolve_delta("1/N", 1200) == 1 / 1200 == resolve_delta(1 / 1200, 1200)
    assert resolve_delta(1e-6, 1200) == 1e-6
    assert "weaker than usual practice" in delta_warning(1 / 1200, 1200)
    assert delta_warning(8e-5, 1200) is None
    with pytest.raises(ValueError, match="exceeds 1/N"):
        sampling({"batch_size": 32, "delta": 0.01}, {"unit": "patch", "patient_batch": 2}, 12, 100)


def test_paper_delta_is_allowed_with_a_warning_on_the_card(train_set: Path, tmp_path: Path) -> None:
    train_gan(train_set, tmp_path / "gan", replace(PARAMS, delta="1/N"), key_file(tmp_path, 3))
    card = release_dataset(tmp_path / "gan" / "generator.pt", tmp_path / "synth", ReleaseParams(n=4), "run")
    assert card["delta"] == pytest.approx(1 / N)
    assert any("weaker than usual practice" in w for w in card["warnings"])


def test_train_gan_cli_refuses_a_large_delta(train_set: Path, tmp_path: Path, capsys) -> None:
    args = ["train-gan", "--train-set", str(train_set), "--sigma", "1", "--seed", "0", "--epochs", "1"]
    args += ["--delta", "0.5", "--secret", str(key_file(tmp_path, 4)), "--out", str(tmp_path / "gan")]
    assert main(args) == 1
    assert "--delta: delta 0.5 exceeds 1/N = 0.025 for N = 40" in capsys.readouterr().err


# --- group privacy and the patient unit ------------------------------------------------------


def test_group_privacy_by_hand() -> None:
    eps, delta = group_privacy(0.1, 1e-6, 3)
    assert eps == pytest.approx(0.3) and delta == pytest.approx(3 * math.exp(0.2) * 1e-6)
    assert group_privacy(10.0, 8e-5, 200) == (2000.0, math.inf)  # vacuous
    assert group_privacy(2.0, 1e-5, 1) == pytest.approx((2.0, 1e-5))


def test_patient_clipping_equals_an_explicit_per_patient_loop() -> None:
    """Each patient's summed gradient clipped to C, as a loop over patients computes it."""
    torch.manual_seed(0)
    critic = Critic(PATCH, width=4)
    m, patients, c = 3, 4, 0.05
    engine = DPGradient(critic, c, noise_multiplier=0.0, expected_batch_size=7.0)
    x = torch.randn(patients * m, 2, PATCH, PATCH)
    critic.zero_grad(set_to_none=True)
    result = engine.accumulate(x, lambda s: -s, group_size=m)
    params = engine.clipper.params
    expected = [torch.zeros_like(p) for p in params]
    norms = []
    for u in range(patients):
        grads = torch.autograd.grad(-critic(x[u * m : (u + 1) * m]).sum(), params)
        norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
        norms.append(norm)
        factor = min(1.0, c / (1 + NORM_RTOL) / norm)
        for e, g in zip(expected, grads):
            e += factor * g / 7.0
    torch.testing.assert_close(result.norms, torch.tensor(norms, dtype=torch.float64), rtol=1e-5, atol=1e-9)
    assert (result.factors < 1).all()
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-8)
    engine.remove()


@pytest.mark.parametrize("m", [1, 4, 12])
def test_a_patients_contribution_never_exceeds_c(m: int) -> None:
    """However many of one patient's patches are drawn, their clipped sum has norm <= C."""
    torch.manual_seed(m)
    critic = Critic(PATCH, width=4)
    engine = DPGradient(critic, 0.01, noise_multiplier=0.0, expected_batch_size=1.0)
    result = engine.clipper.clipped_grad_sum(torch.randn(m, 2, PATCH, PATCH), lambda s: -s, group_size=m)
    total = math.sqrt(sum(float(g.double().pow(2).sum()) for g in result.grads))
    assert result.norms.shape == (1,) and total <= 0.01
    engine.remove()


def test_a_batch_must_split_into_whole_patients() -> None:
    engine = DPGradient(Critic(PATCH, width=4), 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="does not split into units of 4"):
        engine.accumulate(torch.randn(6, 2, PATCH, PATCH), lambda s: -s, group_size=4)


def test_patient_unit_samples_patients_at_rate_q(train_set: Path) -> None:
    params = replace(PARAMS, unit="patient", patient_batch=1.0, patient_patches=3)
    trainer = WganTrainer(load_training_set(train_set), params, torch.device("cpu"), bytes(32))
    assert trainer.units == 4 and trainer.sample_rate == 0.25 and trainer.expected_batch == 3.0
    assert trainer.delta == 0.02  # 1 / (10 * 4) = 0.025 rounded down
    sizes, patients = [], []
    for _ in range(2000):
        batch = trainer.poisson_batch()
        sizes.append(batch.shape[0])
        for u in range(batch.shape[0] // 3):
            rows = [int(torch.nonzero((trainer.data == row).all(dim=(1, 2, 3))).flatten()[0]) for row in batch[3 * u : 3 * u + 3]]
            patients.append({r // 10 for r in rows})
    assert all(s % 3 == 0 for s in sizes)
    assert np.mean(sizes) / 3 == pytest.approx(1.0, rel=0.06)
    assert np.var(np.array(sizes) / 3) == pytest.approx(4 * 0.25 * 0.75, rel=0.15)
    assert all(len(p) == 1 for p in patients)  # a unit's patches are one patient's


def test_patient_unit_run_charges_patients_and_names_the_unit(train_set: Path, tmp_path: Path) -> None:
    params = replace(PARAMS, unit="patient", patient_batch=1.0, patient_patches=3, epochs=2)
    train_gan(train_set, tmp_path / "gan", params, key_file(tmp_path, 5))
    state = checkpoint.load(tmp_path / "gan" / "checkpoints" / "epoch_002.pt")
    assert state["accountant"]["valid"]["history"] == [[1.0, 0.25, 2 * 4 * 5]]  # round(1/q) = 4 iterations x 5
    table = (tmp_path / "gan" / "epochs.tsv").read_text().splitlines()
    assert table[0].split("\t")[-2] == "unit" and table[1].split("\t")[-2] == "patient"
    card = release_dataset(tmp_path / "gan" / "generator.pt", tmp_path / "synth", ReleaseParams(n=4), "run")
    assert card["privacy_unit"] == "patient" and card["privacy_units"] == 4
    assert card["guarantee"]["per_patient"] == {"epsilon": card["epsilon"]["rdp"], "delta": 0.02}
    assert "per training patient" in card["guarantee"]["statement"]


def test_patient_unit_needs_the_fresh_loop() -> None:
    with pytest.raises(ValueError, match="fresh loop only"):
        GanParams(unit="patient", mode="paper")


def test_plan_counts_patients_as_units() -> None:
    plan = sampling({"batch_size": 32, "delta": None}, {"unit": "patient", "patient_batch": 2}, 6, 200)
    assert (plan.units, plan.sample_rate, plan.delta) == (6, pytest.approx(1 / 3), 0.01)
    plan = sampling({"batch_size": 32, "delta": None}, {"unit": "patch", "patient_batch": 2}, 6, 200)
    assert (plan.units, plan.sample_rate, plan.delta) == (1200, pytest.approx(32 / 1200), 8e-5)


def test_epsilon_command_per_patient(capsys) -> None:
    base = ["epsilon", "--sigma", "1.0", "--sample-rate", "0.25", "--epochs", "2", "--delta", "0.02", "--json"]
    assert main([*base, "--unit", "patient"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["unit"] == "patient" and result["steps"] == 2 * 5 * 4 and result["epsilon"] > 0
    assert main(["epsilon", "--sigma", "2", "--sample-rate", "0.01", "--steps", "100", "--delta", "1e-5",
                 "--patches-per-patient", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    eps = result["epsilon"]
    assert result["patient"] == {
        "group_size": 4, "epsilon": pytest.approx(4 * eps), "delta": pytest.approx(4 * math.exp(3 * eps) * 1e-5)
    }
    assert main(["epsilon", "--sigma", "2", "--sample-rate", "0.01", "--steps", "100", "--delta", "1e-5",
                 "--patches-per-patient", "400"]) == 0
    assert "vacuous" in capsys.readouterr().out


def test_a_placebo_run_draws_secret_streams_of_its_own() -> None:
    """Same key, sigma and seed: the placebo's noise and sampling are not its private twin's, so nothing derived
    from the placebo (on public data) reveals the private run's noise; other runs keep their stream names."""
    key = bytes(range(32))
    private = [derive_seed(key, run_name(PARAMS), s) for s in SECRET_STREAMS]
    placebo = [derive_seed(key, run_name(replace(PARAMS, placebo_run=True)), s) for s in SECRET_STREAMS]
    assert not set(private) & set(placebo)
    assert "placebo_run" not in run_name(PARAMS)
