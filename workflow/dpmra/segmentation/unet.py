"""The segmentation network: Livne et al. (2019) "half U-Net", the soft Dice loss it was trained with, and Dice + BCE.

Architecture, following the public Keras code of Livne et al. (``Unet/utils/unet.py`` of
prediction2020/unet-vessel-segmentation), with the paper's half widths:

- 4 max-poolings (2 x 2); filters ``base_width * (1, 2, 4, 8, 16)`` (paper: 32-64-128-256-512).
- Every level, down, bottom and up, is one block: 3x3 conv (padding 1), ReLU, dropout,
  3x3 conv, ReLU. Dropout sits *between* the block's two convolutions, in all nine blocks,
  exactly where the Keras ``conv_block`` puts it; it is element-wise (``nn.Dropout``, as
  Keras ``Dropout``), and off when ``dropout = 0``.
- Up path: nearest-neighbour ``Upsample`` x2 (Keras ``UpSampling2D``, no weights), concatenated
  with the skip features (upsampled first, then skip, as Keras), then the level's block; its first
  conv is the "Upsample + conv". No transposed convolution.
- A 1x1 conv to one channel and a sigmoid: the forward pass returns vessel probabilities
  (``logits`` stops before the sigmoid, for the cross-entropy term of ``segmentation_loss``).
- Initialisation as Keras' defaults: Glorot-uniform kernels, zero biases.
- Weights and activations are channels-last (NHWC) unless ``memory_format`` says otherwise: the same arithmetic,
  faster on this project's CPU (``benchmarks/bench_unet_layout.py``); the layout is not part of ``config()``.

Parameter count, with w = base_width and block(a, b) = 9ab + b + 9b^2 + b:
block(1, w) + block(w, 2w) + block(2w, 4w) + block(4w, 8w) + block(8w, 16w)
+ block(24w, 8w) + block(12w, 4w) + block(6w, 2w) + block(3w, w) + (w + 1);
7,846,081 at w = 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dpmra.segmentation.params import check_loss

POOLINGS = 4
MULTIPLE = 2**POOLINGS


def conv_block(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    """One level: 3x3 conv, ReLU, dropout, 3x3 conv, ReLU (the Keras conv_block, without batch norm)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Conv2d(c_out, c_out, kernel_size=3, padding=1),
        nn.ReLU(),
    )


class UNet(nn.Module):
    """(B, 1, H, W) normalised image, H and W divisible by 16 -> (B, 1, H, W) vessel probabilities."""

    def __init__(
        self, base_width: int = 32, dropout: float = 0.0, memory_format: torch.memory_format = torch.channels_last
    ) -> None:
        super().__init__()
        if base_width < 1:
            raise ValueError(f"base_width must be positive, got {base_width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.base_width = base_width
        self.dropout = dropout
        self.memory_format = memory_format
        widths = [base_width * 2**level for level in range(POOLINGS + 1)]
        self.down = nn.ModuleList(
            conv_block(c_in, c_out, dropout) for c_in, c_out in zip([1, *widths[:-2]], widths[:-1])
        )
        self.bottom = conv_block(widths[-2], widths[-1], dropout)
        self.up = nn.ModuleList(
            conv_block(below + skip, skip, dropout) for below, skip in zip(widths[:0:-1], widths[-2::-1])
        )
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(widths[0], 1, kernel_size=1)
        self._init_weights()
        self.to(memory_format=memory_format)

    def _init_weights(self) -> None:
        """Glorot-uniform kernels and zero biases, Keras' defaults, as in the paper's code."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def config(self) -> dict[str, int | float]:
        """The constructor arguments that rebuild this network."""
        return {"base_width": self.base_width, "dropout": self.dropout}

    def forward(self, x: Tensor) -> Tensor:
        """Vessel probabilities for a batch of single-channel images."""
        return torch.sigmoid(self.logits(x))

    def logits(self, x: Tensor) -> Tensor:
        """Vessel logits (before the sigmoid) for a batch of single-channel images."""
        check_input(x)
        x = x.contiguous(memory_format=self.memory_format)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = block(torch.cat([self.upsample(x), skip], dim=1))
        return self.head(x)


def check_input(x: Tensor) -> None:
    """Require a (B, 1, H, W) batch with H and W divisible by 16, the four poolings' total stride."""
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"UNet expects a (B, 1, H, W) batch, got shape {tuple(x.shape)}")
    height, width = x.shape[2:]
    if height % MULTIPLE or width % MULTIPLE:
        raise ValueError(
            f"UNet input {height} x {width} is not divisible by {MULTIPLE} (2**{POOLINGS} poolings); "
            "use a patch size that is a multiple of 16"
        )


def dice_loss(prob: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """1 - soft Dice over the whole batch: 1 - (2 sum(p t) + eps) / (sum p + sum t + eps).

    As the paper's Keras ``dice_coef_loss`` (one Dice over all pixels of the batch, smooth 1),
    which returns -Dice; 1 - Dice has the same gradients and reads 0 for a perfect prediction.
    """
    prob = prob.reshape(-1)
    target = target.reshape(-1).to(prob.dtype)
    intersection = (prob * target).sum()
    return 1 - (2 * intersection + eps) / (prob.sum() + target.sum() + eps)


def segmentation_loss(logits: Tensor, target: Tensor, loss: str) -> Tensor:
    """The training loss on logits: soft Dice (``dice``), or soft Dice + mean binary cross-entropy (``dice_bce``).

    The cross-entropy term keeps a gradient where soft Dice has none: once every probability has
    saturated at 0, Dice's gradient vanishes with it and the network stays all-background.
    """
    check_loss(loss)
    dice = dice_loss(torch.sigmoid(logits), target)
    if loss == "dice":
        return dice
    return dice + F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
