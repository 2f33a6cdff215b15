"""U-Net memory layout: channels-last (NHWC, the default) against contiguous NCHW, side by side in one run.

Times one Adam step on the Dice + BCE loss (training) and one forward pass of a batch of windows (prediction)
for the same weights in both layouts, interleaved, median of `--repeats`, and prints the largest difference
between the two layouts' probabilities (computed first, while both still hold the same weights).

Run: .venv/bin/python benchmarks/bench_unet_layout.py [--base-width 8] [--patch-size 32] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch
from timing import median_seconds

from dpmra.segmentation.unet import UNet, segmentation_loss

LAYOUTS = {"contiguous (NCHW)": torch.contiguous_format, "channels-last (NHWC)": torch.channels_last}


def training_step(model: UNet, optimiser: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor) -> None:
    """One Adam step on the Dice + BCE loss, as the training loop takes it."""
    optimiser.zero_grad(set_to_none=True)
    segmentation_loss(model.logits(images), labels, "dice_bce").backward()
    optimiser.step()


def main() -> None:
    """Print per-step seconds of both layouts, their ratio, and the probabilities' largest difference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-width", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--predict-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    size = args.patch_size
    images = torch.randn(args.train_batch, 1, size, size, generator=generator)
    labels = (torch.rand(args.train_batch, 1, size, size, generator=generator) < 0.05).float()
    windows = torch.randn(args.predict_batch, 1, size, size, generator=generator)
    reference = UNet(args.base_width)
    models = {}
    for name, layout in LAYOUTS.items():
        model = UNet(args.base_width, memory_format=layout)
        model.load_state_dict(reference.state_dict())
        models[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))
    with torch.inference_mode():
        first, second = (model.eval()(windows) for model, _ in models.values())
    difference = (first - second).abs().max().item()
    print(f"U-Net base width {args.base_width}, {size} x {size}, {args.threads} thread(s), median of {args.repeats}")
    train, predict = {name: [] for name in LAYOUTS}, {name: [] for name in LAYOUTS}
    for _ in range(args.repeats):
        for name, (model, optimiser) in models.items():
            model.train()
            train[name].append(median_seconds(lambda: training_step(model, optimiser, images, labels), args.steps))
            model.eval()
            with torch.inference_mode():
                predict[name].append(median_seconds(lambda: model(windows), args.steps))
    for label, table, batch in (("train step", train, args.train_batch), ("predict", predict, args.predict_batch)):
        seconds = {name: sorted(times)[len(times) // 2] for name, times in table.items()}
        slow, fast = seconds.values()
        print(f"{label} (batch {batch}): " + ", ".join(f"{n} {s * 1e3:.1f} ms" for n, s in seconds.items())
              + f"; NCHW / NHWC {slow / fast:.2f}x")
    print(f"max |probability difference| between the layouts: {difference:.2e}")


if __name__ == "__main__":
    main()
