"""Per-patch min-max scaling: the paper's rule for GAN inputs ([-1, 1]) and for generated images (0..255).

Also the one loader every measurement uses (`load_images`), so real and synthetic images share one scale.
No torch here: the light environment's rules (audit, tables) load images too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def rescale_patches(images: np.ndarray, low: float, high: float) -> np.ndarray:
    """Min-max scale each patch (n, P, P) on its own to [low, high], float32; a constant patch becomes the midpoint."""
    images = np.asarray(images, dtype=np.float32)
    lo = images.min(axis=(1, 2), keepdims=True)
    span = images.max(axis=(1, 2), keepdims=True) - lo
    unit = np.where(span > 0, (images - lo) / np.where(span > 0, span, 1), 0.5)
    return (unit * (high - low) + low).astype(np.float32)


def load_image_files(paths: list[Path]) -> list[np.ndarray]:
    """The `image` array of each patch or dataset .npz file, min-max scaled per patch to 0..255.

    Real patches are in their volume's normalised units and released synthetic images are already per-patch
    min-max scaled to 0..255 (the paper's rule for generated images); applying that same rule to both puts them
    on one scale, and is a no-op (up to rounding) for the synthetic ones.
    """
    if not paths:
        raise ValueError("no image files given")
    parts = []
    for path in map(Path, paths):
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        with np.load(path) as data:
            if "image" not in data.files:
                raise ValueError(f"{path}: no array 'image' (has {', '.join(data.files) or 'none'})")
            image = data["image"]
        if image.ndim != 3 or image.shape[1] != image.shape[2] or len(image) == 0:
            raise ValueError(f"{path}: 'image' must be (n >= 1, P, P), got {image.shape}")
        if parts and image.shape[1:] != parts[0].shape[1:]:
            raise ValueError(f"{path}: patches of {image.shape[1:]} differ from {paths[0]}'s {parts[0].shape[1:]}")
        parts.append(rescale_patches(image, 0.0, 255.0))
    return parts


def load_images(paths: list[Path]) -> np.ndarray:
    """All images of patch or dataset .npz files, concatenated, on the 0..255 scale (see load_image_files)."""
    return np.concatenate(load_image_files(paths))
