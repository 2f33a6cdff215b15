"""Shapes and invariants of the GAN's generator and critic."""

import pytest
import torch
from torch import nn

from dpmra.generators.critic import Critic, map_sizes
from dpmra.generators.generator import Generator, default_n_upsample


@pytest.mark.parametrize("patch", [32, 96])
@pytest.mark.parametrize("width", [4, 8])
def test_generator_shape_and_range(patch: int, width: int) -> None:
    torch.manual_seed(0)
    gen = Generator(patch, width, latent_dim=16)
    out = gen(torch.randn(3, 16))
    assert out.shape == (3, 2, patch, patch)
    assert out.min() >= -1 and out.max() <= 1


def test_generator_paper_layout() -> None:
    """P = 96 starts from a 3 x 3 map: 1 linear, 5 upsampling blocks, 6 conv layers."""
    gen = Generator(96, 96, 128)
    assert (gen.start_size, gen.n_upsample) == (3, 5)
    assert sum(isinstance(m, nn.Upsample) for m in gen.modules()) == 5
    assert sum(isinstance(m, nn.Conv2d) for m in gen.modules()) == 6
    assert sum(isinstance(m, nn.Linear) for m in gen.modules()) == 1
    assert Generator(**gen.config()).config() == gen.config()


@pytest.mark.parametrize(("patch", "n_up", "start"), [(96, 5, 3), (32, 5, 1), (48, 4, 3), (16, 4, 1)])
def test_generator_start_map(patch: int, n_up: int, start: int) -> None:
    assert default_n_upsample(patch) == n_up
    assert Generator(patch, 4, 8).start_size == start


def test_generator_rejects_indivisible_patch() -> None:
    with pytest.raises(ValueError, match="divisible"):
        Generator(40, 4, 8, n_upsample=4)


@pytest.mark.parametrize("patch", [32, 96])
@pytest.mark.parametrize("width", [4, 8])
def test_critic_shape(patch: int, width: int) -> None:
    critic = Critic(patch, width)
    assert critic(torch.randn(5, 2, patch, patch)).shape == (5,)


def test_critic_paper_layout() -> None:
    """Six 4x4 stride-2 convs, paddings 2,2,2,2,2,1: a 2 x 2 map at 96 x 96; no BatchNorm."""
    critic = Critic(96, 8)
    convs = [m for m in critic.modules() if isinstance(m, nn.Conv2d)]
    assert [c.padding[0] for c in convs] == [2, 2, 2, 2, 2, 1]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert map_sizes(96)[-1] == 2
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules())
    norms = [m for m in critic.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 4 and not any(n.affine for n in norms)


def test_critic_normalises_only_maps_of_at_least_4_x_4() -> None:
    """P = 32: maps 17, 9, 5, 3, 2, 1; InstanceNorm after convs 2 and 3 (9 x 9, 5 x 5), biases on convs 4 and 5."""
    critic = Critic(32, 8)
    assert map_sizes(32) == [17, 9, 5, 3, 2, 1]
    layers = list(critic.net)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    normed = [i + 1 < len(layers) and isinstance(layers[i + 1], nn.InstanceNorm2d) for i in convs]
    assert normed == [False, True, True, False, False, False]
    assert [layers[i].bias is not None for i in convs] == [True, False, False, True, True, True]


def test_critic_score_is_mean_of_map() -> None:
    critic = Critic(96, 4)
    x = torch.randn(2, 2, 96, 96)
    assert torch.allclose(critic(x), critic.net(x).mean(dim=(1, 2, 3)))


def test_critic_scores_are_per_sample() -> None:
    """No cross-sample interaction: a sample's score does not depend on its batch."""
    critic = Critic(32, 4)
    x = torch.randn(4, 2, 32, 32)
    assert torch.allclose(critic(x)[1:2], critic(x[1:2]), atol=1e-6)


def test_critic_rejects_tiny_patch() -> None:
    with pytest.raises(ValueError, match="too small"):
        Critic(1, 4)
