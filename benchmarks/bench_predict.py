"""Whole-volume prediction of a phantom volume (default 312 x 384 x 127): our batched sliding-window inference
against MONAI's `sliding_window_inference` (same windows and Gaussian weights, per slice, or over the volume's
brain box as a batch of slices), and against edge-to-edge tiles (overlap 0); then all metrics of that volume,
with MONAI's surface HD95 and ASSD timed beside ours.

Run: .venv/bin/python benchmarks/bench_predict.py [--base-width 32] [--patch-size 96] [--overlap 0.5] [--repeats 3]
(MONAI comes with the test extra: pip install -e .[test])
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
from scipy import ndimage

from dpmra.data.phantom import make_subject
from dpmra.data.volumes import normalise_intensity
from dpmra.segmentation.metrics import segmentation_metrics
from dpmra.segmentation.predict import Segmenter, predict_probability, slice_region, volume_windows
from dpmra.segmentation.unet import UNet


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call, the device synchronised before the clock stops."""
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


@torch.inference_mode()
def monai_per_slice(segmenter: Segmenter, image: np.ndarray, mask: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    """MONAI over each slice's brain region (our regions, so the same windows), one call per slice."""
    device = next(segmenter.model.parameters()).device
    volume = (torch.from_numpy(image).to(device) - segmenter.mean) / segmenter.std
    out = torch.zeros_like(volume)
    for z in range(image.shape[2]):
        region = slice_region(mask[:, :, z], args.patch_size)
        if region is None:
            continue
        x0, x1, y0, y1 = region
        out[x0:x1, y0:y1, z] = sliding_window_inference(
            volume[x0:x1, y0:y1, z][None, None], args.patch_size, args.batch_size, segmenter.model,
            overlap=args.overlap, mode="gaussian", sigma_scale=0.125,
        )[0, 0]
    return np.where(mask > 0, out.cpu().numpy(), 0)


@torch.inference_mode()
def monai_brain_box(segmenter: Segmenter, image: np.ndarray, mask: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    """MONAI over the volume's 3D brain box, its slices as one batch (MONAI batches windows across them)."""
    device = next(segmenter.model.parameters()).device
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))
    volume = (torch.from_numpy(image[box]).to(device) - segmenter.mean) / segmenter.std
    slices = volume.permute(2, 0, 1)[:, None]
    blended = sliding_window_inference(
        slices, args.patch_size, args.batch_size, segmenter.model,
        overlap=args.overlap, mode="gaussian", sigma_scale=0.125,
    )[:, 0].permute(1, 2, 0)
    out = np.zeros(image.shape, np.float32)
    out[box] = blended.cpu().numpy()
    return np.where(mask > 0, out, 0)


def box_windows(mask: np.ndarray, size: int, overlap: float) -> int:
    """Windows MONAI runs over the brain box: per slice, its grid over the box's x-y extent."""
    xs, ys, zs = np.nonzero(mask)
    interval = max(int(size * (1 - overlap)), 1)
    count = [int(np.ceil(max(n - size, 0) / interval)) + 1 for n in (np.ptp(xs) + 1, np.ptp(ys) + 1)]
    return count[0] * count[1] * (int(np.ptp(zs)) + 1)


def bench_prediction(segmenter: Segmenter, image: np.ndarray, mask: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    """Print the four prediction timings side by side (median of interleaved repeats); return our probability map."""
    windows = {overlap: len(volume_windows(mask, args.patch_size, overlap)) for overlap in (args.overlap, 0.0)}
    print(f"windows: ours and MONAI per slice {windows[args.overlap]}, MONAI over the brain box "
          f"{box_windows(mask, args.patch_size, args.overlap)}, tiles (overlap 0) {windows[0.0]}; "
          f"median of {args.repeats}")

    def ours(overlap: float) -> np.ndarray:
        return predict_probability(segmenter, image, mask, args.patch_size, args.batch_size, overlap)

    methods = {
        "ours": lambda: ours(args.overlap),
        "per slice": lambda: monai_per_slice(segmenter, image, mask, args),
        "brain box": lambda: monai_brain_box(segmenter, image, mask, args),
        "tiles": lambda: ours(0.0),
    }
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    outputs = {}
    for _ in range(args.repeats):
        for name, method in methods.items():
            elapsed, outputs[name] = timed(method)
            seconds[name].append(elapsed)
    t = {name: float(np.median(values)) for name, values in seconds.items()}
    difference = {name: np.abs(outputs[name] - outputs["ours"]).max() for name in ("per slice", "brain box")}
    print(f"ours (batched, overlap {args.overlap}):      {t['ours']:7.2f} s")
    for name, words, note in (("per slice", "per slice:", ""), ("brain box", "brain box as one batch:", " (other regions)")):
        print(f"MONAI, {words:25s} {t[name]:7.2f} s   MONAI / ours {t[name] / t['ours']:5.2f}x   "
              f"max |difference| {difference[name]:.2e}{note}")
    print(f"ours, edge-to-edge tiles:        {t['tiles']:7.2f} s   ours / tiles {t['ours'] / t['tiles']:5.2f}x")
    return outputs["ours"]


def bench_metrics(label: np.ndarray, prediction: np.ndarray, mask: np.ndarray, spacing: tuple, name: str) -> None:
    """Print the time of all our metrics and of MONAI's surface HD95 and ASSD on the same masked volumes."""
    t_ours, scores = timed(lambda: segmentation_metrics(label, prediction, spacing, mask))
    y, y_pred = (torch.from_numpy((v > 0) & (mask > 0))[None, None].float() for v in (label, prediction))
    common = {"y_pred": y_pred, "y": y, "include_background": True, "spacing": spacing}
    t_hd, hd95 = timed(lambda: compute_hausdorff_distance(**common, percentile=95))
    t_asd, assd = timed(lambda: compute_average_surface_distance(**common, symmetric=True))
    print(f"all metrics, {name + ' prediction:':28s} {t_ours:5.2f} s   (dsc {scores['dsc']:.3f}, "
          f"hd95 {scores['hd95_mm']:.4f} mm, MONAI {hd95.item():.4f} mm in {t_hd:.2f} s; "
          f"assd {scores['assd_mm']:.4f} mm, MONAI {assd.item():.4f} mm in {t_asd:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--shape", type=int, nargs=3, default=(312, 384, 127))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each method; medians printed")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = tuple(args.shape)
    subject = make_subject("A", 0, shape)
    image, _ = normalise_intensity(subject.image, subject.brain_mask)
    image = image.astype(np.float32)
    model = UNet(base_width=args.base_width).to(device).eval()
    print(f"volume {'x'.join(map(str, shape))}, windows of {args.patch_size}, base width {args.base_width}, "
          f"batch {args.batch_size}, {device}, {torch.get_num_threads()} threads")
    segmenter = Segmenter(model, 100.0, 50.0)
    with torch.inference_mode():  # warm-up: CUDA context and kernel selection are not what is compared
        model(torch.zeros(args.batch_size, 1, args.patch_size, args.patch_size, device=device))
    probability = bench_prediction(segmenter, image, subject.brain_mask, args)

    rng = np.random.default_rng(0)
    plausible = ndimage.binary_dilation(subject.label) ^ ((rng.random(shape) < 0.001) & (subject.brain_mask > 0))
    for name, prediction in (("plausible", plausible), ("untrained model", probability >= 0.5)):
        bench_metrics(subject.label, prediction, subject.brain_mask, subject.spacing, name)


if __name__ == "__main__":
    main()
