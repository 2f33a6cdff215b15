"""Time the one-run DP audit of a demo-sized GAN run against the run itself.

Both stages as the workflow calls them, on the same demo-sized training set (1,200 random pairs of 32 x 32 from 6
patients; the cost does not depend on the pixels) with the default config's settings for its epsilon-10 run:
`dpmra.generators.train.train_gan` (the `gan` rule: training, checkpoints, sample grids, plots) and
`dpmra.evaluation.dp_audit.run_dp_audit` (the `dp_audit` rule: the same training with 1,000 gradient canaries,
then the bound). Also the audit's training loop alone (`WganTrainer.run_epoch`, no canaries, no checkpoints), whose
difference to the audit is what canaries, checkpoints and the bound cost. The three are interleaved per repetition
so that machine load affects them alike; medians are reported.

    .venv/bin/python benchmarks/bench_dp_audit.py [--epochs 3] [--reps 2] [--threads 2] [--canaries 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from dpmra.evaluation.dp_audit import run_dp_audit
from dpmra.generators.interface import load_training_set
from dpmra.generators.params import GanParams
from dpmra.generators.train import train_gan
from dpmra.generators.wgan import WganTrainer

PAIRS, PATCH, PATIENTS = 1200, 32, 6
DEMO = dict(sigma=1.003, batch_size=32, n_critic=5, lr=5e-4, width_g=16, width_d=16, latent_dim=128)


def training_set(path: Path) -> Path:
    """A demo-sized training set of random pairs in [-1, 1]."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (PAIRS, 2, PATCH, PATCH)).astype(np.float32)
    np.savez(path, x=x, patient=np.arange(PAIRS) // (PAIRS // PATIENTS))
    return path


def timed(fn) -> float:
    """Wall time of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_epochs(data: Path, params: GanParams) -> None:
    """The training loop the audit runs, without canaries and without writing anything."""
    trainer = WganTrainer(load_training_set(data), params, torch.device("cpu"), bytes(32))
    for _ in range(params.epochs):
        trainer.run_epoch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each run (the demo trains 17)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the rules give 2)")
    parser.add_argument("--canaries", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = GanParams(epochs=args.epochs, **DEMO)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = training_set(root / "train_set.npz")
        secret = root / "secret.key"
        secret.write_bytes(bytes(range(32)))
        run_times, audit_times, plain_times = [], [], []
        for rep in range(args.reps):
            run_times.append(timed(partial(train_gan, data, root / f"gan{rep}", params, secret)))
            plain_times.append(timed(partial(plain_epochs, data, params)))
            generator, out = root / f"gan{rep}" / "generator.pt", root / f"audit{rep}"
            audit_times.append(timed(partial(run_dp_audit, generator, data, secret, args.canaries, None, out)))
        summary = json.loads((root / "audit0" / "dp_audit.json").read_text())
    run, audit, plain = (statistics.median(t) for t in (run_times, audit_times, plain_times))
    verdict = "ok" if audit <= run else "over budget"
    print(
        f"{PAIRS} pairs of {PATCH} x {PATCH}, width 16, {args.epochs} epochs ({summary['critic_steps']} critic "
        f"updates), {args.threads} threads, median of {args.reps}"
    )
    print(f"gan run (train_gan):           {run:7.1f} s")
    print(f"DP audit (run_dp_audit):       {audit:7.1f} s   ratio {audit / run:.2f}   ({verdict})")
    print(f"its loop alone (no canaries):  {plain:7.1f} s   audit extra {100 * (audit / plain - 1):+.1f} %")
    print(
        f"audit: {summary['correct']} of {summary['guesses']} right with {summary['canaries']} canaries, "
        f"epsilon >= {summary['epsilon_lower_bound']:.3g} (ceiling {summary['epsilon_ceiling']:.3g}), claimed "
        f"{summary['epsilon']['rdp']:.3g} RDP / {summary['epsilon']['prv']:.3g} PRV at delta {summary['delta']:.2g}"
    )


if __name__ == "__main__":
    main()
