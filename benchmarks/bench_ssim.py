"""Mean pairwise SSIM of 1,000 patches (499,500 pairs): the vectorised `ssim_diversity` against a scikit-image loop.

Budget: 1,000 images in under 60 s on this machine. The loop's time is measured on a subset of pairs and
extrapolated to all pairs; both run in the same process, one torch thread, interleaved.

Run: .venv/bin/python benchmarks/bench_ssim.py [--images 1000] [--loop-pairs 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from skimage.metrics import structural_similarity

from dpmra.evaluation.quality import ssim_diversity


def patches(n: int, size: int) -> np.ndarray:
    """Textured float32 patches on 0..255 (SSIM's cost does not depend on content)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    return (rng.uniform(0, 255, (n, size, size)) * ramp[None, :, None]).astype(np.float32)


def loop_seconds_per_pair(images: np.ndarray, n_pairs: int) -> tuple[float, float]:
    """Seconds per pair of scikit-image's structural_similarity over the first pairs, and their mean SSIM."""
    pairs = [(i, j) for i in range(len(images)) for j in range(i + 1, len(images))][:n_pairs]
    start = time.perf_counter()
    values = [structural_similarity(images[i], images[j], data_range=255.0) for i, j in pairs]
    return (time.perf_counter() - start) / len(pairs), float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--loop-pairs", type=int, default=2000, help="pairs timed in the scikit-image loop")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_pairs = args.images * (args.images - 1) // 2
    print(f"{args.images} images, {n_pairs} pairs, data range 255, 1 torch thread")
    for size in (32, 96):
        images = patches(args.images, size)
        per_pair, _ = loop_seconds_per_pair(images, args.loop_pairs)
        start = time.perf_counter()
        ssim_diversity(images, max_images=args.images)
        ours = time.perf_counter() - start
        per_pair_after, _ = loop_seconds_per_pair(images, args.loop_pairs)
        loop = (per_pair + per_pair_after) / 2 * n_pairs
        check = images[:40]
        _, reference = loop_seconds_per_pair(check, 10**9)
        error = abs(ssim_diversity(check) - reference)
        print(
            f"{size:2d} x {size:2d}: ssim_diversity {ours:7.2f} s ({'ok' if ours < 60 else 'over budget'}), "
            f"scikit-image loop {loop:8.1f} s (extrapolated from {args.loop_pairs} pairs), ratio {loop / ours:6.1f}x, "
            f"|difference| on 40 images {error:.1e}"
        )


if __name__ == "__main__":
    main()
