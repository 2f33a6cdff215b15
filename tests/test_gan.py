"""GAN training: outputs, the non-private baseline, paper mode, and kill-and-resume."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dpmra import cli
from dpmra.generators import train
from dpmra.generators.interface import COLUMNS, load_training_set, sample_generator
from dpmra.generators.params import GanParams
from dpmra.generators.train import train_gan
from dpmra.generators.warm_start import load_warm_start
from dpmra.generators.wgan import WganTrainer
from dpmra.privacy.accountants import epsilon
from dpmra.privacy.dpsgd import NORM_RTOL
from dpmra.release.cards import frozen_public_blocks
from dpmra.shared import checkpoint

PATCH = 16
N = 48
TINY = GanParams(sigma=1.0, epochs=2, batch_size=8, width_g=4, width_d=4, latent_dim=8, seed=3)
KEY = bytes(range(32))
PATIENTS = np.arange(N) // 12


def synthetic_patches(n: int, p: int, seed: int = 0) -> np.ndarray:
    """Bright discs (the 'vessels', labelled 1) on noise; image scaled to [-1, 1] per patch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:p, :p]
    x = np.empty((n, 2, p, p), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(0.25 * p, 0.75 * p, 2)
        label = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(0.1 * p, 0.2 * p) ** 2
        image = 0.3 * rng.standard_normal((p, p)) + 2.0 * label
        x[i, 0] = 2 * (image - image.min()) / (image.max() - image.min()) - 1
        x[i, 1] = np.where(label, 1.0, -1.0)
    return x


@pytest.fixture(scope="module")
def train_set(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.npz"
    np.savez(path, x=synthetic_patches(N, PATCH), patient=PATIENTS)
    return path


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("private") / "secret.key"
    path.write_bytes(KEY)
    return path


def final_state(out_dir: Path) -> dict:
    return checkpoint.load(checkpoint.latest_epoch_checkpoint(out_dir / "checkpoints"))


def assert_same_training(a: dict, b: dict) -> None:
    """Same counters, accountant, rows (but wall time) and bit-identical weights and optimisers."""
    for key in ("epoch", "critic_steps", "generator_steps", "accountant"):
        assert a[key] == b[key], key
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a["rows"]) == strip(b["rows"])
    for net in ("generator", "critic"):
        for name, tensor in a[net].items():
            assert torch.equal(tensor, b[net][name]), f"{net}.{name}"
    for opt in ("opt_g", "opt_d"):
        for pid, state in a[opt]["state"].items():
            assert torch.equal(state["square_avg"], b[opt]["state"][pid]["square_avg"])


def test_non_private_run_writes_outputs_and_critic_learns(train_set: Path, secret: Path, tmp_path: Path) -> None:
    params = replace(TINY, sigma=math.inf, epochs=3)
    train_gan(train_set, tmp_path, params, secret)
    table = pd.read_csv(tmp_path / "epochs.tsv", sep="\t")
    assert list(table.columns) == COLUMNS
    assert table["epoch"].tolist() == [1, 2, 3]
    assert table["critic_steps"].tolist() == [30, 60, 90]  # round(1/q) = 6 iterations x 5 critic updates
    assert np.isinf(table[["epsilon_rdp", "epsilon_prv"]].to_numpy()).all()
    # the critic's Wasserstein estimate D(real) - D(fake) grows as it learns to separate them
    assert table["wasserstein"].iloc[-1] > table["wasserstein"].iloc[0] > 0
    np.testing.assert_allclose(table["loss_d"], -table["wasserstein"])
    for name in ("loss.png", "epsilon.png", "generator.pt", "samples/epoch_001.png", "samples/epoch_003.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch_001.pt",
        "epoch_002.pt",
        "epoch_003.pt",
    ]
    stored = checkpoint.load(tmp_path / "generator.pt")
    assert stored["epsilon"]["epsilon_rdp"] == math.inf
    assert stored["params"]["sigma"] == math.inf
    samples = sample_generator(tmp_path / "generator.pt", 5, seed=1)
    assert samples.shape == (5, 2, PATCH, PATCH) and samples.dtype == np.float32
    assert samples.min() >= -1 and samples.max() <= 1
    np.testing.assert_array_equal(samples, sample_generator(tmp_path / "generator.pt", 5, seed=1))


def test_kill_and_resume_matches_uninterrupted(train_set: Path, secret: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    """Bit-identical on CPU (GPU kernels need not be deterministic)."""
    monkeypatch.setattr(train, "default_device", lambda: torch.device("cpu"))
    whole, staged, killed = tmp_path / "whole", tmp_path / "staged", tmp_path / "killed"
    train_gan(train_set, whole, TINY, secret)
    reference = final_state(whole)
    assert reference["critic_steps"] == 2 * 6 * 5

    # stopped cleanly after epoch 1, then asked for 2 epochs
    train_gan(train_set, staged, replace(TINY, epochs=1), secret)
    caplog.set_level(logging.INFO, logger="dpmra.generators.train")
    train_gan(train_set, staged, TINY, secret)
    assert "resuming from" in caplog.text  # more epochs continue the run, secret streams included
    assert_same_training(final_state(staged), reference)

    # killed in the middle of epoch 2: that epoch is redone from the epoch-1 checkpoint
    original = WganTrainer.generator_iteration
    calls = {"n": 0}

    def dies_in_epoch_two(self):
        calls["n"] += 1
        if calls["n"] == 6 + 3:
            raise KeyboardInterrupt("killed")
        return original(self)

    monkeypatch.setattr(WganTrainer, "generator_iteration", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_gan(train_set, killed, TINY, secret)
    assert checkpoint.latest_epoch_checkpoint(killed / "checkpoints").name == "epoch_001.pt"
    monkeypatch.setattr(WganTrainer, "generator_iteration", original)
    train_gan(train_set, killed, TINY, secret)
    resumed = final_state(killed)
    assert_same_training(resumed, reference)
    table = pd.read_csv(killed / "epochs.tsv", sep="\t")
    assert table["epoch"].tolist() == [1, 2]
    assert resumed["accountant"]["valid"]["history"] == [[1.0, 8 / N, 60]]
    torch.testing.assert_close(
        checkpoint.load(killed / "generator.pt")["state_dict"],
        checkpoint.load(whole / "generator.pt")["state_dict"],
        rtol=0,
        atol=0,
    )


def test_checkpoints_of_another_run_are_discarded(train_set: Path, secret: Path, tmp_path: Path, caplog) -> None:
    """Other settings, other data or fewer epochs: the kept checkpoints are deleted and training starts afresh."""
    fresh = replace(TINY, sigma=2.0, epochs=1)
    train_gan(train_set, tmp_path / "fresh", fresh, secret)
    train_gan(train_set, tmp_path / "run", TINY, secret)
    caplog.set_level(logging.INFO, logger="dpmra.generators.train")
    train_gan(train_set, tmp_path / "run", fresh, secret)
    assert "discarding" in caplog.text and "sigma: 1.0 -> 2.0" in caplog.text
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["epoch_001.pt"]
    fresh_table = pd.read_csv(tmp_path / "fresh" / "epochs.tsv", sep="\t").drop(columns="seconds")
    run_table = pd.read_csv(tmp_path / "run" / "epochs.tsv", sep="\t").drop(columns="seconds")
    pd.testing.assert_frame_equal(run_table, fresh_table)
    other = tmp_path / "other.npz"
    np.savez(other, x=synthetic_patches(N, PATCH, seed=9), patient=PATIENTS)
    caplog.clear()
    train_gan(other, tmp_path / "run", fresh, secret)
    assert "other training data" in caplog.text


def test_paper_mode_reports_both_epsilons(train_set: Path, secret: Path, tmp_path: Path) -> None:
    train_gan(train_set, tmp_path, replace(TINY, mode="paper", epochs=1), secret)
    table = pd.read_csv(tmp_path / "epochs.tsv", sep="\t")
    assert list(table.columns) == COLUMNS + ["epsilon_rdp_paper"]
    row = table.iloc[-1]
    assert row["critic_steps"] == 30
    assert np.isfinite(row[["epsilon_rdp", "epsilon_prv", "epsilon_rdp_paper"]].astype(float)).all()
    assert row["epsilon_rdp"] >= row["epsilon_rdp_paper"]
    history = final_state(tmp_path)["accountant"]
    assert history["valid"]["history"] == [[1.0 / math.sqrt(5), 8 / N, 6]]
    assert history["paper"]["history"] == [[1.0, 8 / N, 60]]


def test_fresh_update_privatises_only_the_real_term(train_set: Path, monkeypatch) -> None:
    """Critic gradient = sum of clipped real-sample gradients / expected batch + plain fake-term gradient."""
    params = replace(TINY, max_grad_norm=1e-3)
    trainer = WganTrainer(load_training_set(train_set), params, torch.device("cpu"), KEY)
    trainer.dp.noise_multiplier = 0.0
    real = trainer.data[:5]
    before = copy.deepcopy(trainer.critic)
    seen: dict = {}
    draw_fakes = trainer.fakes
    monkeypatch.setattr(trainer, "poisson_batch", lambda: real)
    monkeypatch.setattr(trainer, "fakes", lambda: seen.setdefault("fake", draw_fakes()))
    monkeypatch.setattr(
        trainer.opt_d,
        "step",
        lambda: seen.setdefault("grads", [p.grad.clone() for p in trainer.critic.parameters()]),
    )
    trainer.critic_update_fresh()

    params_before = list(before.parameters())
    expected = list(torch.autograd.grad(before(seen["fake"]).mean(), params_before))
    clipped = 0
    for x in real:
        grads = torch.autograd.grad(-before(x[None]).sum(), params_before)
        norm = torch.sqrt(sum(g.double().pow(2).sum() for g in grads)).item()
        factor = min(1.0, params.max_grad_norm / (1 + NORM_RTOL) / norm)
        clipped += factor < 1
        for e, g in zip(expected, grads):
            e += factor * g / trainer.expected_batch
    assert clipped > 0
    for got, want in zip(seen["grads"], expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-8)


def test_empty_poisson_batch_is_noise_plus_fake_term(train_set: Path, monkeypatch) -> None:
    trainer = WganTrainer(load_training_set(train_set), TINY, torch.device("cpu"), KEY)
    monkeypatch.setattr(trainer, "poisson_batch", lambda: trainer.data[:0])
    before = [p.detach().clone() for p in trainer.critic.parameters()]
    assert math.isnan(trainer.critic_update_fresh())
    assert trainer.critic_steps == 1
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.critic.parameters()))
    assert all(p.abs().max() <= TINY.clip_weight for p in trainer.critic.parameters())


def test_poisson_batches_have_rate_q(train_set: Path) -> None:
    trainer = WganTrainer(load_training_set(train_set), TINY, torch.device("cpu"), KEY)
    sizes = [trainer.poisson_batch().shape[0] for _ in range(2000)]
    assert np.mean(sizes) == pytest.approx(TINY.batch_size, rel=0.05)
    assert np.var(sizes) == pytest.approx(N * (8 / N) * (1 - 8 / N), rel=0.15)


def test_training_set_contract(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 1, 16, 16), np.float32), patient=np.arange(4))
    with pytest.raises(ValueError, match="shape"):
        load_training_set(bad)
    np.savez(bad, x=np.full((4, 2, 16, 16), 2.0, np.float32), patient=np.arange(4))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        load_training_set(bad)
    with pytest.raises(ValueError, match="mode"):
        GanParams(mode="other")


def test_adam_and_ema_release_the_averaged_generator(train_set: Path, secret: Path, tmp_path: Path) -> None:
    """With ema, generator.pt holds the moving average (decay d: avg <- d avg + (1 - d) current), not the last weights."""
    params = replace(TINY, optimizer="adam", beta1=0.0, lr_generator=1e-3, ema=0.9, epochs=1)
    trainer = WganTrainer(load_training_set(train_set), params, torch.device("cpu"), KEY)
    assert isinstance(trainer.opt_d, torch.optim.Adam) and trainer.opt_d.defaults["betas"] == (0.0, 0.9)
    assert trainer.opt_g.defaults["lr"] == 1e-3 and trainer.opt_d.defaults["lr"] == TINY.lr
    before = [p.detach().clone() for p in trainer.ema_generator.parameters()]
    trainer.generator_iteration()
    for avg, old, current in zip(trainer.ema_generator.parameters(), before, trainer.generator.parameters()):
        torch.testing.assert_close(avg, 0.9 * old + 0.1 * current.detach())
    train_gan(train_set, tmp_path, params, secret)
    stored = checkpoint.load(tmp_path / "generator.pt")["state_dict"]
    state = final_state(tmp_path)
    assert all(torch.equal(stored[k], v) for k, v in state["ema_generator"].items())
    assert not all(torch.equal(stored[k], v) for k, v in state["generator"].items())


def test_warm_start_from_a_public_run(train_set: Path, secret: Path, tmp_path: Path) -> None:
    """A --public run costs no epsilon; a run warm-started from it begins at its generator and critic weights."""
    public = replace(TINY, sigma=math.inf, public=True, epochs=1)
    train_gan(train_set, tmp_path / "public", public, secret)
    table = pd.read_csv(tmp_path / "public" / "epochs.tsv", sep="\t")
    assert (table["epsilon_rdp"] == 0).all() and (table["epsilon_prv"] == 0).all()
    stored = checkpoint.load(tmp_path / "public" / "generator.pt")
    warm = load_warm_start(tmp_path / "public" / "generator.pt")
    trainer = WganTrainer(load_training_set(train_set), TINY, torch.device("cpu"), KEY, warm)
    assert all(torch.equal(v, trainer.generator.state_dict()[k]) for k, v in stored["state_dict"].items())
    assert all(torch.equal(v, trainer.critic.state_dict()[k]) for k, v in stored["critic"].items())
    assert trainer.pretrained["training_set_size"] == N and trainer.pretrained["epochs"] == 1
    train_gan(train_set, tmp_path / "private", TINY, secret, tmp_path / "public" / "generator.pt")
    assert checkpoint.load(tmp_path / "private" / "generator.pt")["pretrained"] == trainer.pretrained
    with pytest.raises(ValueError, match="not the generator.pt of a run on a public training set"):
        load_warm_start(tmp_path / "private" / "generator.pt")
    with pytest.raises(ValueError, match="needs no noise"):
        replace(TINY, public=True)


def test_warm_start_continues_the_public_optimiser_statistics(train_set: Path, secret: Path, tmp_path: Path) -> None:
    """RMSprop's square averages come from the public run, so the first private step is about lr, not 10 lr."""
    public = replace(TINY, sigma=math.inf, public=True, epochs=1, lr=1e-3)
    train_gan(train_set, tmp_path / "public", public, secret)
    warm = load_warm_start(tmp_path / "public" / "generator.pt")
    private = replace(TINY, lr=2e-4)
    trainer = WganTrainer(load_training_set(train_set), private, torch.device("cpu"), KEY, warm)
    stored = warm["optimizers"]["opt_d"]["state"]
    for index, p in enumerate(trainer.critic.parameters()):
        torch.testing.assert_close(trainer.opt_d.state[p]["square_avg"], stored[index]["square_avg"])
    assert [g["lr"] for g in trainer.opt_d.param_groups] == [2e-4] and trainer.opt_g.param_groups[0]["lr"] == 2e-4
    adam = WganTrainer(load_training_set(train_set), replace(TINY, optimizer="adam"), torch.device("cpu"), KEY, warm)
    assert not adam.opt_d.state  # another optimiser starts afresh
    private_run = tmp_path / "private"
    train_gan(train_set, private_run, private, secret, tmp_path / "public" / "generator.pt")
    assert "optimizers" not in checkpoint.load(private_run / "generator.pt")


# --- fewer private parameters: the critic's first blocks frozen at the public warm start ------------------------

# The critic at P = 16, width 4: each block's parameters (a strided conv, bias where its map is not normalised).
BLOCK_KEYS = [
    ["net.0.weight", "net.0.bias"],  # 2 -> 4 channels, 9 x 9
    ["net.2.weight"],  # 4 -> 8, 5 x 5, InstanceNorm
    ["net.5.weight", "net.5.bias"],  # 8 -> 16, 3 x 3
    ["net.7.weight", "net.7.bias"],  # 16 -> 32, 2 x 2
    ["net.9.weight", "net.9.bias"],  # 32 -> 32, 2 x 2
    ["net.11.weight", "net.11.bias"],  # the head: 32 -> 1, 1 x 1
]
LAST_TWO_BLOCKS = (32 * 32 * 16 + 32) + (32 * 16 + 1)


@pytest.fixture(scope="module")
def public_run(train_set: Path, secret: Path, tmp_path_factory) -> Path:
    """A one-epoch warm start on the (here declared public) training set: its generator.pt."""
    out = tmp_path_factory.mktemp("public")
    train_gan(train_set, out, replace(TINY, sigma=math.inf, public=True, epochs=1), secret)
    return out / "generator.pt"


def test_frozen_blocks_keep_the_warm_start_weights(
    train_set: Path, secret: Path, public_run: Path, tmp_path: Path, caplog
) -> None:
    """private_blocks 2: blocks 1-4 get no gradient and end bit-identical to the warm start; 5 and 6 train."""
    warm = load_warm_start(public_run)
    params = replace(TINY, private_blocks=2, epochs=1)
    trainer = WganTrainer(load_training_set(train_set), params, torch.device("cpu"), KEY, warm)
    named = dict(trainer.critic.named_parameters())
    assert list(named) == [key for keys in BLOCK_KEYS for key in keys]
    frozen, trained = [k for ks in BLOCK_KEYS[:4] for k in ks], [k for ks in BLOCK_KEYS[4:] for k in ks]
    assert trainer.trained_parameters == LAST_TWO_BLOCKS
    assert not any(named[k].requires_grad for k in frozen) and all(named[k].requires_grad for k in trained)
    stored_opt = warm["optimizers"]["opt_d"]["state"]
    for k in trained:  # the public run's RMSprop statistics continue for the trained parameters only
        position = list(named).index(k)
        torch.testing.assert_close(trainer.opt_d.state[named[k]]["square_avg"], stored_opt[position]["square_avg"])
    assert set(map(id, trainer.opt_d.state)) == {id(named[k]) for k in trained}
    trainer.critic_update_fresh()
    assert all(named[k].grad is None for k in frozen) and all(named[k].grad is not None for k in trained)

    caplog.set_level(logging.INFO, logger="dpmra.generators.train")
    train_gan(train_set, tmp_path, params, secret, public_run)
    assert f"trains {LAST_TWO_BLOCKS} of 27861 parameters, its last 2 of 6 blocks (blocks 1-4 frozen" in caplog.text
    stored = checkpoint.load(tmp_path / "generator.pt")
    for state in (stored["critic"], final_state(tmp_path)["critic"]):
        assert all(torch.equal(state[k], warm["critic"][k]) for k in frozen)
        assert not any(torch.equal(state[k], warm["critic"][k]) for k in trained)
    assert stored["params"]["private_blocks"] == 2 and stored["trained_parameters"] == LAST_TWO_BLOCKS
    card = frozen_public_blocks(stored)
    assert card["blocks"] == [1, 2, 3, 4] and card["critic_blocks"] == 6
    assert card["trained_parameters"] == LAST_TWO_BLOCKS
    assert frozen_public_blocks(checkpoint.load(public_run)) is None


def test_freezing_leaves_epsilon_unchanged(train_set: Path, public_run: Path) -> None:
    """The same sigma, q and steps give the same epsilon, whatever the number of trained parameters."""
    warm = load_warm_start(public_run)
    rows = []
    for private_blocks in (None, 1):
        params = replace(TINY, private_blocks=private_blocks, epochs=1)
        trainer = WganTrainer(load_training_set(train_set), params, torch.device("cpu"), KEY, warm)
        rows.append(trainer.run_epoch())
    assert rows[0]["critic_steps"] == rows[1]["critic_steps"] == 30
    delta = trainer.delta
    for name, accountant in (("epsilon_rdp", "rdp"), ("epsilon_prv", "prv")):
        assert rows[0][name] == rows[1][name] == epsilon(TINY.sigma, 8 / N, 30, delta, accountant)


def test_private_blocks_needs_a_warm_start_and_at_most_six(train_set: Path, public_run: Path) -> None:
    data = load_training_set(train_set)
    with pytest.raises(ValueError, match=r"gan\.private_blocks .*give --pretrained"):
        WganTrainer(data, replace(TINY, private_blocks=1), torch.device("cpu"), KEY)
    warm = load_warm_start(public_run)
    with pytest.raises(ValueError, match=r"gan\.private_blocks \(--private-blocks\) is 7: the critic has 6 blocks"):
        WganTrainer(data, replace(TINY, private_blocks=7), torch.device("cpu"), KEY, warm)
    with pytest.raises(ValueError, match="must be >= 1"):
        replace(TINY, private_blocks=0)
    with pytest.raises(ValueError, match="public run"):
        replace(TINY, sigma=math.inf, public=True, private_blocks=2)


def test_command_line_passes_private_blocks_except_to_the_warm_start(monkeypatch, tmp_path: Path) -> None:
    """The workflow gives the warm start the shared options too: --public drops --private-blocks."""
    seen = []
    monkeypatch.setattr(train, "train_gan", lambda *args: seen.append(args[2]))
    monkeypatch.setattr(cli, "set_torch_threads", lambda threads: None)
    common = ["train-gan", "--train-set", "x.npz", "--seed", "0", "--out", str(tmp_path), "--private-blocks", "2"]
    assert cli.main([*common, "--sigma", "1.5", "--pretrained", "public.pt"]) == 0
    assert cli.main([*common, "--sigma", "inf", "--public"]) == 0
    assert [params.private_blocks for params in seen] == [2, None]
    assert seen[0].sigma == 1.5 and seen[1].public
