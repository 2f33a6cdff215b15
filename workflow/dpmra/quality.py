"""Quality stage: Fréchet distances to real train and test patches, SSIM diversity, t-SNE, and the quality table.

Every image set, real or synthetic, is first min-max scaled per patch to 0..255 (`dpmra.features.load_images`,
the rule the release applies to generated images), so both sides of a comparison share one scale.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import linalg

from dpmra.atomic import write_atomic
from dpmra.features import backbone_name, extract_features, load_images, resolve_backbone

log = logging.getLogger(__name__)

QUALITY_COLUMNS = ["source", "sigma", "seed", "epsilon", "fd_backbone", "fd_train", "fd_test", "fd_gap", "ssim_mean"]
SSIM_DATA_RANGE = 255.0
SSIM_WINDOW = 7  # scikit-image's default for structural_similarity with gaussian_weights=False
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_CHUNK_POSITIONS = 64  # window positions per chunk
SSIM_BLOCK = 256  # images per block of pairs; only blocks on or above the diagonal are computed


def write_json(data: dict, path: Path) -> None:
    """Write one JSON object atomically."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


def write_tsv(table: pd.DataFrame, path: Path) -> None:
    """Write a tab-separated table atomically."""
    write_atomic(path, lambda tmp: table.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample covariance (rows are samples) of a feature matrix, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need a (n >= 2, d) feature matrix, got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)), the Fréchet distance of two Gaussians.

    Same numerical care as pytorch-fid's calculate_frechet_distance: when the product's square root is not
    finite (near-singular covariances) eps is added to both diagonals, and an imaginary part left by sqrtm is
    dropped only if the diagonal's is below 1e-3, else it is an error.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    cov1, cov2 = np.atleast_2d(cov1), np.atleast_2d(cov2)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: means {mu1.shape}, {mu2.shape}; covariances {cov1.shape}, {cov2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        log.warning("Fréchet distance: singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(len(cov1)) * eps
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def draw(images: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n images drawn without replacement (all of them, in drawn order, if there are no more than n)."""
    return images[rng.permutation(len(images))[:n]]


def fd_scores(
    synthetic: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    backbone: str,
    n: int,
    seed: int,
    weights: Path | None = None,
    device: str | None = None,
) -> dict:
    """Fréchet distances of synthetic images to real train and real test images, on equal sample counts.

    All three sets are on the 0..255 scale (per-patch min-max). n images are drawn without replacement from each
    set with one seeded generator; if a set is smaller, all three use the smallest size (`n_fd` says which). One
    synthetic draw serves both distances. `fd_gap = fd_test - fd_train`: positive when the synthetic images are
    closer to the patients the GAN trained on than to unseen ones, the paper's memorisation signal (its Fig. 6B).
    """
    backbone = resolve_backbone(backbone, weights)
    n_fd = min(n, len(synthetic), len(train), len(test))
    if n_fd < n:
        log.warning("Fréchet distance on %d samples per set, fewer than the %d asked for", n_fd, n)
    if n_fd < 2:
        raise ValueError(f"Fréchet distance needs at least 2 images per set, got {n_fd}")
    rng = np.random.default_rng(seed)
    stats = {}
    for name, images in (("synthetic", synthetic), ("train", train), ("test", test)):
        stats[name] = feature_statistics(extract_features(draw(images, n_fd, rng), backbone, weights, device=device))
    dims = len(stats["synthetic"][0])
    if n_fd <= dims:
        log.warning("Fréchet distance on %d samples of %d-d features: covariances are singular", n_fd, dims)
    fd_train = frechet_distance(*stats["synthetic"], *stats["train"])
    fd_test = frechet_distance(*stats["synthetic"], *stats["test"])
    return {
        "fd_backbone": backbone_name(backbone),
        "fd_train": fd_train,
        "fd_test": fd_test,
        "fd_gap": fd_test - fd_train,
        "n_fd": n_fd,
        "n_fd_requested": n,
    }


def ssim_position_chunks(images: torch.Tensor, rows: int) -> list[torch.Tensor]:
    """Centred 7x7 windows of every valid position, (L_chunk, n, 49) per chunk of `rows` output rows."""
    n, size, _ = images.shape
    valid = size - SSIM_WINDOW + 1
    chunks = []
    for r0 in range(0, valid, rows):
        r1 = min(r0 + rows, valid)
        strip = images[:, None, r0 : r1 + SSIM_WINDOW - 1, :]
        chunks.append(F.unfold(strip, SSIM_WINDOW).permute(2, 0, 1))  # (L_chunk, n, 49)
    return chunks


def ssim_diversity(
    images: np.ndarray, data_range: float = SSIM_DATA_RANGE, max_images: int = 1000, seed: int = 0
) -> float:
    """Mean SSIM over all unordered pairs of up to max_images images (seeded draw without replacement).

    Exactly scikit-image's `structural_similarity(x, y, data_range=data_range)` averaged over pairs (7x7 uniform
    window, sample covariance, K1 0.01, K2 0.03, the 3-pixel border cropped), vectorised because a loop over
    499,500 pairs of 1,000 images costs minutes. The cropped output pixels are exactly those whose 7x7 window
    lies inside the image, so each local mean, variance and covariance is a statistic of one window; the
    covariances of all pairs at one position are a single matrix product of the centred windows (centring per
    window also avoids the E[xy] - E[x]E[y] cancellation). Computed in float32 with float64 sums.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or images.shape[1] < SSIM_WINDOW or images.shape[2] < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images (n, H, W) of at least {SSIM_WINDOW} x {SSIM_WINDOW}, got {images.shape}")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"SSIM diversity expects square patches, got {images.shape[1:]}")
    images = draw(images, max_images, np.random.default_rng(seed))
    n = len(images)
    if n < 2:
        raise ValueError(f"SSIM diversity needs at least 2 images, got {n}")
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    scale = 2.0 / (SSIM_WINDOW**2 - 1)  # 2 x sample covariance of 49 values
    rows = max(1, SSIM_CHUNK_POSITIONS // (images.shape[2] - SSIM_WINDOW + 1))
    block = SSIM_BLOCK
    blocks = [slice(i, min(i + block, n)) for i in range(0, n, block)]
    total = np.zeros((n, n))
    n_positions = (images.shape[1] - SSIM_WINDOW + 1) * (images.shape[2] - SSIM_WINDOW + 1)
    for windows in ssim_position_chunks(torch.from_numpy(images), rows):
        mean = windows.mean(dim=2)  # (L, n)
        centred = windows - mean[..., None]
        var2 = (centred * centred).sum(dim=2) * scale + c2  # 2 vx + C2 ... halved below
        mean_sq = mean * mean
        for i, bi in enumerate(blocks):
            for bj in blocks[i:]:
                # S = (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2)), as scikit-image
                num = torch.baddbmm(torch.tensor(c2), centred[:, bi], centred[:, bj].transpose(1, 2), alpha=scale)
                num.mul_(torch.baddbmm(torch.tensor(c1), mean[:, bi, None], mean[:, None, bj], alpha=2.0))
                den = (mean_sq[:, bi, None] + mean_sq[:, None, bj] + c1).mul_(
                    (var2[:, bi, None] + var2[:, None, bj]) * 0.5
                )
                total[bi, bj] += num.div_(den).sum(dim=0, dtype=torch.float64).numpy()
    pairs = np.triu_indices(n, k=1)
    return float(total[pairs].mean() / n_positions)
