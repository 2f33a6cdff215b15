"""The book-keeping DP-SGD engine against an explicit per-sample loop (and Opacus)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from dpmra.generators.critic import Critic, train_last_blocks
from dpmra.privacy import dpsgd
from dpmra.privacy.dpsgd import NORM_RTOL, BookKeepingClipper, DPGradient


def per_sample_reference(
    model: nn.Module, x: torch.Tensor, loss_fn, params: list[torch.Tensor]
) -> list[list[torch.Tensor]]:
    """Each sample's gradient, one backward pass per sample."""
    return [list(torch.autograd.grad(loss_fn(model(x[i : i + 1])).sum(), params)) for i in range(x.shape[0])]


def norm64(grads: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))


def check_against_loop(model: nn.Module, x: torch.Tensor, loss_fn, max_grad_norm: float) -> None:
    """Engine with sigma = 0 == sum of loop gradients clipped to C, / expected batch; no one exceeds C."""
    expected_batch = 5.0
    engine = DPGradient(model, max_grad_norm, noise_multiplier=0.0, expected_batch_size=expected_batch)
    params = engine.clipper.params
    model.zero_grad(set_to_none=True)
    result = engine.accumulate(x, loss_fn)
    reference = per_sample_reference(model, x, loss_fn, params)
    ref_norms = torch.tensor([norm64(g) for g in reference], dtype=torch.float64)
    torch.testing.assert_close(result.norms, ref_norms, rtol=1e-5, atol=1e-9)
    assert (result.factors < 1).any(), "the test should clip some samples"
    for factor, grads in zip(result.factors.tolist(), reference):
        assert factor * norm64(grads) <= max_grad_norm
    bound = max_grad_norm / (1 + NORM_RTOL)
    expected = [torch.zeros_like(p) for p in params]
    for grads, n in zip(reference, ref_norms.tolist()):
        for acc, g in zip(expected, grads):
            acc += min(1.0, bound / n) * g / expected_batch
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-7)
    engine.remove()


@pytest.fixture(params=["ghost", "explicit"])
def norm_path(request, monkeypatch) -> str:
    """Force one of the two per-layer norm computations."""
    monkeypatch.setattr(dpsgd, "use_ghost_norm", lambda *_: request.param == "ghost")
    return request.param


def test_linear_layers(norm_path: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 3))
    check_against_loop(model, torch.randn(7, 6) * 3, lambda out: (out**2).sum(dim=1), 0.5)


def test_linear_over_positions(norm_path: str) -> None:
    """A Linear applied at several positions per sample (B, T, D): the Gram path with T > 1."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2, bias=False))
    check_against_loop(model, torch.randn(6, 3, 4), lambda out: out.sum(dim=(1, 2)) ** 2, 0.3)


def test_conv_layers(norm_path: str) -> None:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(4, 3, 4, stride=1, padding=2, dilation=2, bias=False),
        nn.InstanceNorm2d(3),
        nn.Conv2d(3, 1, 2),
    )
    check_against_loop(model, torch.randn(6, 2, 11, 11), lambda out: out.mean(dim=(1, 2, 3)), 0.05)


@pytest.mark.parametrize("patch", [16, 32])
def test_paper_critic(patch: int) -> None:
    """The critic at small width, with the engine's own choice of norm path per layer."""
    torch.manual_seed(3)
    critic = Critic(patch, width=4)
    check_against_loop(critic, torch.randn(8, 2, patch, patch), lambda s: -s, 0.01)


def test_bound_holds_for_a_multi_million_parameter_layer(norm_path: str) -> None:
    """Where float32 norms drifted by 4e-4 (docs/design.md §2.1): norms within 1e-6, none above C."""
    torch.manual_seed(7)
    model = nn.Linear(3000, 1500)
    x = torch.randn(3, 3000) * 10
    weights = torch.linspace(-1, 1, 1500)
    loss_fn = lambda out: (out * weights).sum(dim=1)  # noqa: E731
    result = BookKeepingClipper(model, 1.0).clipped_grad_sum(x, loss_fn)
    exact = [norm64(g) for g in per_sample_reference(model, x, loss_fn, [model.weight, model.bias])]
    torch.testing.assert_close(result.norms, torch.tensor(exact, dtype=torch.float64), rtol=1e-6, atol=0)
    for factor, norm in zip(result.factors.tolist(), exact):
        assert factor < 1 and factor * norm <= 1.0


@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_norms_match_opacus() -> None:
    """An independent check: Opacus' per-sample gradients have the same norms."""
    from opacus import GradSampleModule

    torch.manual_seed(4)
    critic = Critic(32, width=4)
    x = torch.randn(6, 2, 32, 32)
    ours = BookKeepingClipper(critic, 1.0).clipped_grad_sum(x, lambda s: -s).norms
    gsm = GradSampleModule(Critic(32, width=4), loss_reduction="sum")
    gsm._module.load_state_dict(critic.state_dict())
    (-gsm(x)).sum().backward()
    theirs = (
        torch.stack([p.grad_sample.reshape(6, -1).double().pow(2).sum(dim=1) for p in gsm.parameters()])
        .sum(dim=0)
        .sqrt()
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0)


def test_noise_std_matches_sigma_c_over_expected_batch() -> None:
    torch.manual_seed(5)
    critic = Critic(16, width=8)
    sigma, c, expected_batch = 1.3, 0.7, 4.0
    engine = DPGradient(critic, c, sigma, expected_batch, torch.Generator().manual_seed(0))
    x = torch.randn(3, 2, 16, 16)
    result = engine.accumulate(x, lambda s: -s)
    noise = torch.cat(
        [(p.grad - g / expected_batch).flatten() for p, g in zip(engine.clipper.params, result.grads)]
    )
    assert noise.numel() > 20_000
    target = sigma * c / expected_batch
    assert abs(noise.std().item() / target - 1) < 0.03
    assert abs(noise.mean().item()) < 0.03 * target


def test_empty_batch_gives_noise_alone() -> None:
    critic = Critic(16, width=4)
    engine = DPGradient(critic, 1.0, 2.0, 8.0, torch.Generator().manual_seed(0))
    result = engine.accumulate(torch.zeros(0, 2, 16, 16), lambda s: -s)
    assert result.norms.numel() == 0
    grads = torch.cat([p.grad.flatten() for p in engine.clipper.params])
    assert abs(grads.std().item() / (2.0 / 8.0) - 1) < 0.05


def test_accumulate_adds_to_existing_grad() -> None:
    torch.manual_seed(6)
    model = nn.Linear(3, 2)
    engine = DPGradient(model, 10.0, 0.0, 1.0)
    x = torch.randn(4, 3)
    model(x).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    result = engine.accumulate(x, lambda out: out.sum(dim=1))
    for p, b, g in zip(model.parameters(), before, result.grads):
        torch.testing.assert_close(p.grad, b + g)
    torch.testing.assert_close(result.factors, torch.ones(4, dtype=torch.float64))


def test_refuses_batchnorm_and_unsupported_layers() -> None:
    with pytest.raises(ValueError, match="BatchNorm"):
        BookKeepingClipper(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), 1.0)
    with pytest.raises(ValueError, match="running statistics"):
        BookKeepingClipper(
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.InstanceNorm2d(2, track_running_stats=True)), 1.0
        )
    with pytest.raises(ValueError, match="not Linear or Conv2d"):
        BookKeepingClipper(nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2)), 1.0)


def test_refuses_in_place_modified_outputs() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 1))
    with pytest.raises(RuntimeError, match="in place"):
        BookKeepingClipper(model, 1.0).clipped_grad_sum(torch.randn(2, 3), lambda out: out[:, 0])


def test_hooks_record_only_inside_the_engine() -> None:
    critic = Critic(16, width=4)
    engine = BookKeepingClipper(critic, 1.0)
    critic(torch.randn(2, 2, 16, 16)).sum().backward()
    assert engine._records is None
    engine.remove()
    assert not any(m._forward_hooks for m in critic.modules())


def test_normalised_clipping_scales_every_gradient_just_under_c() -> None:
    """Bu et al. 2023: each sample contributes C g / (||g|| + 0.01 C), so small and large gradients weigh alike."""
    torch.manual_seed(11)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 1))
    c, expected_batch = 0.5, 3.0
    engine = DPGradient(model, c, noise_multiplier=0.0, expected_batch_size=expected_batch, normalised=True)
    x = torch.randn(5, 6) * torch.tensor([1e-3, 1e-1, 1.0, 10.0, 100.0])[:, None]
    model.zero_grad(set_to_none=True)
    result = engine.accumulate(x, lambda out: out.sum(dim=1))
    reference = per_sample_reference(model, x, lambda out: out.sum(dim=1), engine.clipper.params)
    expected = [torch.zeros_like(p) for p in engine.clipper.params]
    for grads in reference:
        norm = norm64(grads)
        factor = c / (1 + NORM_RTOL) / (norm + dpsgd.NORMALISED_GAMMA * c)
        assert factor * norm < c
        for acc, g in zip(expected, grads):
            acc += factor * g / expected_batch
    for p, e in zip(engine.clipper.params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-9)
    engine.remove()


def last_blocks(critic: Critic, count: int) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The parameters of the critic's last `count` convolutions (with their biases) and of the others, read off
    the layers; a block is a strided convolution with what follows it."""
    convs = [layer for layer in critic.net if isinstance(layer, nn.Conv2d)]
    params = lambda layers: [p for layer in layers for p in layer.parameters()]  # noqa: E731
    return params(convs[len(convs) - count :]), params(convs[: len(convs) - count])


@pytest.mark.parametrize("private_blocks", [1, 2, 3])
def test_frozen_blocks_are_outside_the_clipping(private_blocks: int, norm_path: str) -> None:
    """Per-sample norms over the trained blocks only, as a one-backward-per-sample loop; the sigma-0 update is the
    mean of their clipped per-sample gradients, and frozen parameters get no gradient at all."""
    torch.manual_seed(8)
    critic = Critic(16, width=4)
    whole = copy.deepcopy(critic)
    returned = train_last_blocks(critic, private_blocks)
    trained, frozen = last_blocks(critic, private_blocks)
    assert [id(p) for p in returned] == [id(p) for p in trained]
    assert all(not p.requires_grad for p in frozen) and all(p.requires_grad for p in trained)
    x = torch.randn(6, 2, 16, 16)
    reference = per_sample_reference(critic, x, lambda s: -s, trained)
    ref_norms = torch.tensor([norm64(g) for g in reference], dtype=torch.float64)
    whole_grads = per_sample_reference(whole, x, lambda s: -s, list(whole.parameters()))
    assert (ref_norms < torch.tensor([norm64(g) for g in whole_grads])).all()  # no share for the frozen blocks
    c = float(ref_norms.median())  # some samples clipped, some not
    engine = DPGradient(critic, c, noise_multiplier=0.0, expected_batch_size=6.0)
    assert [id(p) for p in engine.clipper.params] == [id(p) for p in trained]
    result = engine.accumulate(x, lambda s: -s)
    torch.testing.assert_close(result.norms, ref_norms, rtol=1e-5, atol=1e-12)
    assert (result.factors < 1).any() and (result.factors == 1).any()
    bound = c / (1 + NORM_RTOL)
    for i, p in enumerate(trained):
        mean = sum(min(1.0, bound / n) * grads[i] for grads, n in zip(reference, ref_norms.tolist())) / 6
        torch.testing.assert_close(p.grad, mean, rtol=1e-4, atol=1e-9)
    assert all(p.grad is None for p in frozen)
    engine.remove()


def test_noise_only_on_the_trained_parameters() -> None:
    """Noise of std sigma C per trained coordinate, over exactly the trained dimension; none on frozen blocks."""
    torch.manual_seed(9)
    critic = Critic(16, width=8)
    train_last_blocks(critic, 2)
    sigma, c, expected_batch = 1.3, 0.7, 4.0
    engine = DPGradient(critic, c, sigma, expected_batch, torch.Generator().manual_seed(0))
    result = engine.accumulate(torch.randn(3, 2, 16, 16), lambda s: -s)
    noise = torch.cat(
        [(p.grad - g / expected_batch).flatten() for p, g in zip(engine.clipper.params, result.grads)]
    )
    assert noise.numel() == (64 * 64 * 16 + 64) + (64 * 16 + 1)  # conv5 (bias on its 2 x 2 map) and the head
    assert abs(noise.std().item() / (sigma * c / expected_batch) - 1) < 0.03
    trained, frozen = last_blocks(critic, 2)
    assert all(p.grad is None for p in frozen) and all(p.grad is not None for p in trained)


def test_train_last_blocks_refuses_more_blocks_than_the_critic_has() -> None:
    critic = Critic(16, width=4)
    with pytest.raises(ValueError, match=r"gan\.private_blocks .* is 7: the critic has 6 blocks"):
        train_last_blocks(critic, 7)
    assert len(train_last_blocks(critic, None)) == len(list(critic.parameters()))
