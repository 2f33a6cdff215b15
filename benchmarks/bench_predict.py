"""Whole-volume prediction of a 312 x 384 x 127 volume: batched inference against one model call per patch
(the original implementation's way), same output; and all metrics of that volume.

Run: .venv/bin/python benchmarks/bench_predict.py [--base-width 32] [--patch-size 96]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from dpmra.metrics import segmentation_metrics
from dpmra.phantom import make_subject
from dpmra.predict import Segmenter, predict_probability, volume_tiles
from dpmra.unet import UNet
from dpmra.volumes import normalise_intensity

SHAPE = (312, 384, 127)


def timed(fn):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    subject = make_subject("A", 0, SHAPE)
    image, _ = normalise_intensity(subject.image, subject.brain_mask)
    model = UNet(base_width=args.base_width).to(device).eval()
    tiles = len(volume_tiles(subject.brain_mask, args.patch_size))
    print(f"volume {'x'.join(map(str, SHAPE))}, {tiles} tiles of {args.patch_size}, base width {args.base_width}, {device}")

    segmenter = Segmenter(model, 100.0, 50.0)

    def run(batch_size: int) -> np.ndarray:
        return predict_probability(segmenter, image, subject.brain_mask, args.patch_size, batch_size)

    with torch.inference_mode():  # warm-up: CUDA context and kernel selection are not what is compared
        model(torch.zeros(args.batch_size, 1, args.patch_size, args.patch_size, device=device))
        model(torch.zeros(1, 1, args.patch_size, args.patch_size, device=device))
    t_batched, batched = timed(lambda: run(args.batch_size))
    t_single, single = timed(lambda: run(1))
    print(f"batched ({args.batch_size} per call):  {t_batched:7.2f} s")
    print(f"one call per patch:      {t_single:7.2f} s   ratio {t_single / t_batched:5.2f}x")
    print(f"max |difference|:        {np.abs(batched - single).max():.2e}")

    rng = np.random.default_rng(0)
    plausible = ndimage.binary_dilation(subject.label) ^ ((rng.random(SHAPE) < 0.001) & (subject.brain_mask > 0))
    for name, prediction in (("plausible", plausible), ("untrained model", batched >= 0.5)):
        t_metrics, scores = timed(
            lambda: segmentation_metrics(subject.label, prediction, subject.spacing, subject.brain_mask)
        )
        print(f"all metrics, {name + ' prediction:':28s} {t_metrics:5.2f} s   (dsc {scores['dsc']:.3f})")


if __name__ == "__main__":
    main()
