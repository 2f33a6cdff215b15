"""Per-patch min-max scaling: the paper's rule for GAN inputs ([-1, 1]) and for generated images (0..255)."""

from __future__ import annotations

import numpy as np


def rescale_patches(images: np.ndarray, low: float, high: float) -> np.ndarray:
    """Min-max scale each patch (n, P, P) on its own to [low, high], float32; a constant patch becomes the midpoint."""
    images = np.asarray(images, dtype=np.float32)
    lo = images.min(axis=(1, 2), keepdims=True)
    span = images.max(axis=(1, 2), keepdims=True) - lo
    unit = np.where(span > 0, (images - lo) / np.where(span > 0, span, 1), 0.5)
    return (unit * (high - low) + low).astype(np.float32)
