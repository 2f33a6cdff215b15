"""The WGAN critic: an image-label patch pair to one realness score per sample.

Six 4x4 convolutions with stride 2 (padding 2 for convs 1-5, padding 1 for the sixth,
as in the paper's public code, so a 96 x 96 input ends in a 2 x 2 map), LeakyReLU 0.2,
InstanceNorm (no affine parameters) after convs 2-5 where their map is at least 4 x 4
(the paper's 96 x 96: maps 25, 13, 7, 4, all normalised). On smaller patches the deep maps
are tiny (P=32: 3 x 3 and 2 x 2 after convs 4 and 5); normalising 4 or 9 values per
channel leaves a saturated critic that stops training the generator, so those convs get
a bias instead. The score is the mean of the final map. No BatchNorm: DP-SGD needs
per-sample gradients, and BatchNorm mixes samples. Activations are not in place, so the
DP engine can read each layer's output gradient.

A block is one strided convolution with the InstanceNorm and LeakyReLU after it; the sixth (the head, to one
channel) is the last block. A warm-started private run may train only the last blocks (`train_last_blocks`).
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL = 4
STRIDE = 2
PADDINGS = (2, 2, 2, 2, 2, 1)
NORMED = (False, True, True, True, True)
MIN_NORM_SIZE = 4
"""InstanceNorm only on maps of at least this size (all four at the paper's 96 x 96)."""


def conv_out_size(size: int, padding: int) -> int:
    """Spatial size after one 4x4 stride-2 convolution with the given padding."""
    return (size + 2 * padding - KERNEL) // STRIDE + 1


def map_sizes(patch_size: int) -> list[int]:
    """Spatial size after each of the six convolutions."""
    sizes = [patch_size]
    for padding in PADDINGS:
        sizes.append(conv_out_size(sizes[-1], padding))
    return sizes[1:]


class Critic(nn.Module):
    """(B, 2, P, P) -> (B,) WGAN critic scores."""

    def __init__(self, patch_size: int = 96, width: int = 96, in_channels: int = 2) -> None:
        super().__init__()
        sizes = map_sizes(patch_size)
        if sizes[-1] < 1:
            raise ValueError(
                f"patch_size {patch_size} is too small for the critic: map sizes {sizes} "
                "(the output needs >= 1 x 1)"
            )
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        self.patch_size = patch_size
        self.width = width
        channels = [in_channels, width, 2 * width, 4 * width, 8 * width, 8 * width, 1]
        layers: list[nn.Module] = []
        for i, padding in enumerate(PADDINGS):
            last = i == len(PADDINGS) - 1
            normed = not last and NORMED[i] and sizes[i] >= MIN_NORM_SIZE
            layers.append(nn.Conv2d(channels[i], channels[i + 1], KERNEL, STRIDE, padding, bias=not normed))
            if normed:
                layers.append(nn.InstanceNorm2d(channels[i + 1], affine=False))
            if not last:
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)
        self._init_weights()

    def _init_weights(self) -> None:
        """DCGAN initialisation: conv weights N(0, 0.02), biases 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def blocks(self) -> list[list[nn.Module]]:
        """The layers of each block in forward order: a strided convolution and the norm and activation after it."""
        blocks: list[list[nn.Module]] = []
        for layer in self.net:
            if isinstance(layer, nn.Conv2d):
                blocks.append([])
            blocks[-1].append(layer)
        return blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(1, 2, 3))


def train_last_blocks(critic: Critic, count: int | None, warm_started: bool = True) -> list[nn.Parameter]:
    """Freeze all but the critic's last `count` blocks (None: none frozen); return the parameters left to train.

    Frozen parameters get requires_grad False, so neither the DP engine nor the optimiser sees them: they keep
    the warm start's public weights and the noise covers only the trained dimension. Without a warm start the
    frozen weights would be a random initialisation nobody chose as public, so freezing is refused.
    """
    if count is not None and not warm_started:
        raise ValueError(
            "gan.private_blocks (--private-blocks) keeps the critic's first blocks at their starting weights, which "
            "are public only when they come from the public warm start: give --pretrained (gan.pretrain)"
        )
    blocks = critic.blocks()
    if count is not None and not 1 <= count <= len(blocks):
        raise ValueError(f"gan.private_blocks (--private-blocks) is {count}: the critic has {len(blocks)} blocks")
    frozen = blocks[: len(blocks) - count] if count is not None else []
    for block in frozen:
        for layer in block:
            layer.requires_grad_(False)
    return [p for p in critic.parameters() if p.requires_grad]
