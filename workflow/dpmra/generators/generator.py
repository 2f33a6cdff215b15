"""The WGAN generator: a latent vector to an image-label patch pair in [-1, 1].

Architecture (the "upsampling" variant of the paper's public code): one linear layer
maps z to a small feature map, then ``n_upsample`` blocks (Upsample x2, 3x3 conv,
BatchNorm, ReLU) double it to the patch size, and a last 3x3 conv at full resolution
maps to 2 channels (image, vessel label) followed by tanh.

Start map: the paper's 96 x 96 patches are 3 * 2**5, so the linear layer produces a
3 x 3 map and 5 upsampling blocks plus the final conv give the paper's 6 conv layers.
Other patch sizes keep this shape: by default ``n_upsample = min(5, v2(P))`` (v2 = the
number of times 2 divides P) and the start map is ``P / 2**n_upsample`` (P=32: 1 x 1
and 5 blocks; P=48: 3 x 3 and 4 blocks; P=16: 1 x 1 and 4 blocks).

Widths: the start map has ``8 * width`` channels; each block halves the channel count,
never going below ``width`` (paper: width 96).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MAX_UPSAMPLE = 5


def default_n_upsample(patch_size: int) -> int:
    """The number of x2 upsampling blocks for a patch size: min(5, times 2 divides it)."""
    if patch_size < 1:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    n = 0
    while n < MAX_UPSAMPLE and patch_size % 2 ** (n + 1) == 0:
        n += 1
    return n


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Upsample x2 (nearest), 3x3 conv, BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class Generator(nn.Module):
    """z (B, latent_dim) -> (B, 2, P, P) image-label pairs in [-1, 1] (tanh)."""

    def __init__(
        self,
        patch_size: int = 96,
        width: int = 96,
        latent_dim: int = 128,
        n_upsample: int | None = None,
    ) -> None:
        super().__init__()
        if n_upsample is None:
            n_upsample = default_n_upsample(patch_size)
        if n_upsample < 0 or patch_size % 2**n_upsample != 0:
            raise ValueError(f"patch_size {patch_size} is not divisible by 2**n_upsample = 2**{n_upsample}")
        if width < 1 or latent_dim < 1:
            raise ValueError(f"width and latent_dim must be positive, got {width}, {latent_dim}")
        self.patch_size = patch_size
        self.width = width
        self.latent_dim = latent_dim
        self.n_upsample = n_upsample
        self.start_size = patch_size // 2**n_upsample
        channels = [max(width, 8 * width // 2**i) for i in range(n_upsample + 1)]
        self.project = nn.Linear(latent_dim, channels[0] * self.start_size**2)
        self.start_norm = nn.BatchNorm2d(channels[0])
        self.blocks = nn.Sequential(*(_block(a, b) for a, b in zip(channels, channels[1:])))
        self.to_pair = nn.Conv2d(channels[-1], 2, kernel_size=3, padding=1)
        self._init_weights()

    def config(self) -> dict[str, int]:
        """The constructor arguments that rebuild this generator."""
        return {
            "patch_size": self.patch_size,
            "width": self.width,
            "latent_dim": self.latent_dim,
            "n_upsample": self.n_upsample,
        }

    def _init_weights(self) -> None:
        """DCGAN initialisation: weights N(0, 0.02), BatchNorm scale N(1, 0.02), biases 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], -1, self.start_size, self.start_size)
        x = torch.relu(self.start_norm(x))
        return torch.tanh(self.to_pair(self.blocks(x)))


def build_generator(config: dict, state_dict: dict, device: torch.device) -> Generator:
    """A generator rebuilt from its stored constructor arguments and weights, in eval mode on `device`."""
    generator = Generator(**config)
    generator.load_state_dict(state_dict)
    return generator.to(device).eval()


@torch.no_grad()
def sample_pairs(generator: Generator, n: int, seed: int, batch_size: int = 256) -> np.ndarray:
    """n pairs (n, 2, P, P) float32 in [-1, 1]; z is drawn on the CPU from the seed, so every device sees the same z."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    device = next(generator.parameters()).device
    z = torch.randn(n, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    out = np.empty((n, 2, generator.patch_size, generator.patch_size), dtype=np.float32)
    for start in range(0, n, batch_size):
        out[start : start + batch_size] = generator(z[start : start + batch_size].to(device)).cpu().numpy()
    return out
