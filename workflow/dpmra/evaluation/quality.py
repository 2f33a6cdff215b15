"""Quality stage: Fréchet distances to real train and test patches, SSIM diversity, t-SNE, and the quality table.

Every image set, real or synthetic, is first min-max scaled per patch to 0..255 (`dpmra.data.intensity.load_images`,
the rule the release applies to generated images), so both sides of a comparison share one scale.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.manifold import TSNE

from dpmra.data.intensity import load_images
from dpmra.features.backbones import AUTO
from dpmra.features.extract import (
    backbone_name,
    extract_features,
    frechet_distance,
    image_statistics,
    resolve_backbone,
)
from dpmra.release.cards import card_columns
from dpmra.shared.atomic import write_json, write_tsv

log = logging.getLogger(__name__)

QUALITY_COLUMNS = ["source", "sigma", "seed", "epsilon", "fd_backbone", "fd_train", "fd_test", "fd_gap", "ssim_mean"]
SSIM_DATA_RANGE = 255.0
SSIM_WINDOW = 7  # scikit-image's default for structural_similarity with gaussian_weights=False
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_CHUNK_POSITIONS = 64  # window positions per chunk
SSIM_BLOCK = 128  # images per block of pairs; only blocks on or above the diagonal are computed


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
        stats[name] = image_statistics(draw(images, n_fd, rng), backbone, weights, device=device)
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


def ssim_position_chunks(images: torch.Tensor, rows: int) -> Iterator[torch.Tensor]:
    """The 7x7 windows at every valid position, (L_chunk, n, 49) per chunk of `rows` output rows (one at a time:
    all windows at once would take 49x the images' memory)."""
    valid = images.shape[1] - SSIM_WINDOW + 1
    for r0 in range(0, valid, rows):
        strip = images[:, None, r0 : min(r0 + rows, valid) + SSIM_WINDOW - 1, :]
        yield F.unfold(strip, SSIM_WINDOW).permute(2, 0, 1)


def ssim_diversity(
    images: np.ndarray, data_range: float = SSIM_DATA_RANGE, max_images: int = 1000, seed: int = 0
) -> float:
    """Mean SSIM over all unordered pairs of up to max_images images (seeded draw without replacement).

    Exactly scikit-image's `structural_similarity(x, y, data_range=data_range)` averaged over pairs (7x7 uniform
    window, sample covariance, K1 0.01, K2 0.03, the 3-pixel border cropped), vectorised because a loop over
    499,500 pairs of 1,000 images costs minutes. The cropped output pixels are exactly those whose 7x7 window
    lies inside the image, so each local mean, variance and covariance is a statistic of one window; the
    covariances of all pairs at one position are a single matrix product of the centred windows (centring per
    window also avoids the E[xy] - E[x]E[y] cancellation). Float32 within a chunk of positions, float64 across.
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
    rows = max(1, SSIM_CHUNK_POSITIONS // (images.shape[2] - SSIM_WINDOW + 1))
    blocks = [slice(i, min(i + SSIM_BLOCK, n)) for i in range(0, n, SSIM_BLOCK)]
    covariance_scale = 2.0 / (SSIM_WINDOW**2 - 1)  # 2 x the sample covariance of a window's 49 values
    total = np.zeros((n, n))
    n_positions = (images.shape[1] - SSIM_WINDOW + 1) * (images.shape[2] - SSIM_WINDOW + 1)
    for windows in ssim_position_chunks(torch.from_numpy(images), rows):
        mean = windows.mean(dim=2)  # (L, n): ux per window
        centred = windows - mean[..., None]
        centred_t = centred.transpose(1, 2).contiguous()
        # S = (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2)), scikit-image's formula; halves of C1
        # and C2 are folded into per-image terms so each denominator factor is one broadcast sum
        lum_half = mean * mean + c1 / 2
        var_half = (centred * centred).sum(dim=2) / (SSIM_WINDOW**2 - 1) + c2 / 2
        for i, bi in enumerate(blocks):
            for bj in blocks[i:]:
                s = torch.baddbmm(torch.tensor(c2), centred[:, bi], centred_t[:, :, bj], alpha=covariance_scale)
                s.mul_(torch.baddbmm(torch.tensor(c1), mean[:, bi, None], mean[:, None, bj], alpha=2.0))
                s.div_(lum_half[:, bi, None] + lum_half[:, None, bj])
                s.div_(var_half[:, bi, None] + var_half[:, None, bj])
                total[bi, bj] += s.sum(dim=0).numpy()
    pairs = np.triu_indices(n, k=1)
    return float(total[pairs].mean() / n_positions)


def tsne_embedding(
    groups: dict[str, np.ndarray],
    n_per_group: int,
    perplexity: float = 30.0,
    seed: int = 0,
    backbone: str = AUTO,
    weights: Path | None = None,
) -> pd.DataFrame:
    """2-D t-SNE (scikit-learn, PCA start) of up to n_per_group images per group, on the Fréchet backbone's features.

    Features rather than raw pixels so the map shows what the Fréchet distances measure, not patch brightness.
    Images are on the 0..255 scale. Columns: x, y, source (the group name), index (the image's row in its group).
    """
    backbone = resolve_backbone(backbone, weights)
    rng = np.random.default_rng(seed)
    features, sources, indices = [], [], []
    for name, images in groups.items():
        chosen = np.sort(rng.permutation(len(images))[:n_per_group])
        features.append(extract_features(images[chosen], backbone, weights))
        sources += [name] * len(chosen)
        indices.append(chosen)
    n = len(sources)
    if n <= perplexity:
        raise ValueError(f"t-SNE with perplexity {perplexity} needs more than {perplexity:g} images, got {n}")
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    xy = tsne.fit_transform(np.concatenate(features))
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "source": sources, "index": np.concatenate(indices)})


def run_quality(
    synthetic: Path,
    train_patches: list[Path],
    test_patches: list[Path],
    out: Path,
    backbone: str,
    weights: Path | None,
    n: int,
    ssim_images: int,
    seed: int,
) -> dict:
    """Fréchet distances of one synthetic dataset to the real train and test patches, and its SSIM diversity (JSON)."""
    images = load_images([synthetic])
    scores = fd_scores(images, load_images(train_patches), load_images(test_patches), backbone, n, seed, weights)
    result = {
        "synthetic": str(synthetic),
        **scores,
        "ssim_mean": ssim_diversity(images, SSIM_DATA_RANGE, ssim_images, seed),
        "n_ssim": min(ssim_images, len(images)),
        "ssim_data_range": SSIM_DATA_RANGE,
        "seed": seed,
        "image_scale": "per-patch min-max to 0..255, real and synthetic",
    }
    write_json(result, out)
    log.info(
        "%s: %s fd_train %.4g, fd_test %.4g, gap %.4g (n %d); SSIM %.4f over %d images",
        synthetic, result["fd_backbone"], result["fd_train"], result["fd_test"], result["fd_gap"], result["n_fd"],
        result["ssim_mean"], result["n_ssim"],
    )
    return result


def run_ssim_real(patches: list[Path], out: Path, ssim_images: int, seed: int) -> dict:
    """SSIM diversity of real patches, the reference row of the quality table (JSON)."""
    images = load_images(patches)
    result = {
        "source": "real",
        "ssim_mean": ssim_diversity(images, SSIM_DATA_RANGE, ssim_images, seed),
        "n_ssim": min(ssim_images, len(images)),
        "ssim_data_range": SSIM_DATA_RANGE,
        "seed": seed,
        "image_scale": "per-patch min-max to 0..255",
    }
    write_json(result, out)
    log.info("real patches: SSIM %.4f over %d images", result["ssim_mean"], result["n_ssim"])
    return result


def run_tsne(
    groups: dict[str, list[Path]],
    out: Path,
    n_per_group: int,
    seed: int,
    backbone: str,
    weights: Path | None,
    perplexity: float = 30.0,
) -> pd.DataFrame:
    """t-SNE table (x, y, source, index) of real and synthetic patch files, one group per source (TSV)."""
    table = tsne_embedding(
        {name: load_images(paths) for name, paths in groups.items()}, n_per_group, perplexity, seed, backbone, weights
    )
    write_tsv(table, out)
    return table


def read_json(path: Path) -> dict:
    """One JSON object, with an error naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from err


def quality_table(quality_files: list[Path], cards: list[Path], real_ssim: Path | None = None) -> pd.DataFrame:
    """quality.tsv: one row per synthetic dataset (quality JSON and privacy card in the same order), then `real`.

    The `real` row carries only the SSIM diversity of real patches; its FD, sigma, seed and epsilon are empty.
    """
    if len(quality_files) != len(cards):
        raise ValueError(f"{len(quality_files)} quality files but {len(cards)} privacy cards")
    rows = []
    for path, card in zip(quality_files, cards):
        quality = read_json(path)
        missing = [key for key in ("synthetic", *QUALITY_COLUMNS[4:]) if key not in quality]
        if missing:
            raise ValueError(f"{path}: no {', '.join(missing)}; not written by run_quality")
        row = card_columns(card)
        if Path(quality["synthetic"]).parent.parts[-2:] != Path(card).parent.parts[-2:]:
            raise ValueError(f"{path}: scores {quality['synthetic']}, not the dataset of {card}")
        rows.append({**row, **{key: quality[key] for key in QUALITY_COLUMNS[4:]}})
    if real_ssim is not None:
        rows.append({"source": "real", "ssim_mean": read_json(real_ssim)["ssim_mean"]})
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS)


def write_quality_table(quality_files: list[Path], cards: list[Path], real_ssim: Path | None, out: Path) -> None:
    """Write quality.tsv."""
    write_tsv(quality_table(quality_files, cards, real_ssim), out)
