"""Time one critic update: non-private, book-keeping DP (ours), and Opacus per-sample hooks.

A critic update is: gradient of D(fake).mean() - D(real).mean() on a batch of 32 real and
32 (pre-generated) fake pairs, RMSprop step, weight clipping. The private variants clip
the real term per sample (C = 1) and add one Gaussian draw (sigma = 1). Methods are
interleaved within each repetition so that machine load affects them alike; the median
is reported. Then the peak RSS of a few paper-width training iterations, each in its own
process.

    .venv/bin/python benchmarks/bench_critic_step.py [--reps 15] [--no-rss]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import torch

from dpmra.generators.critic import Critic
from dpmra.privacy.dpsgd import DPGradient

BATCH = 32
CONFIGS = [(16, 32), (32, 32), (32, 96), (96, 96)]  # (width, patch): the default, wider, and the paper's
CLIP = 0.01


def _make(width: int, patch: int) -> tuple[Critic, torch.optim.Optimizer]:
    torch.manual_seed(0)
    critic = Critic(patch, width)
    return critic, torch.optim.RMSprop(critic.parameters(), lr=5e-5)


def _finish(critic: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.step()
    with torch.no_grad():
        for p in critic.parameters():
            p.clamp_(-CLIP, CLIP)


def non_private_update(width: int, patch: int) -> Callable[[torch.Tensor, torch.Tensor], None]:
    critic, opt = _make(width, patch)

    def update(real: torch.Tensor, fake: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        (critic(fake).mean() - critic(real).mean()).backward()
        _finish(critic, opt)

    return update


def book_keeping_update(width: int, patch: int) -> Callable[[torch.Tensor, torch.Tensor], None]:
    critic, opt = _make(width, patch)
    noise_gen = torch.Generator(next(critic.parameters()).device).manual_seed(0)
    dp = DPGradient(critic, 1.0, 1.0, BATCH, noise_gen)

    def update(real: torch.Tensor, fake: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        dp.accumulate(real, lambda scores: -scores)
        critic(fake).mean().backward()
        _finish(critic, opt)

    return update


def opacus_update(width: int, patch: int) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """Opacus GradSampleModule hooks for per-sample gradients; clip and noise by hand."""
    from opacus import GradSampleModule

    warnings.filterwarnings("ignore", message="Full backward hook is firing")

    critic, opt = _make(width, patch)
    gsm = GradSampleModule(critic, loss_reduction="sum")
    noise_gen = torch.Generator().manual_seed(0)
    params = [p for p in gsm.parameters() if p.requires_grad]

    def update(real: torch.Tensor, fake: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        gsm.enable_hooks()
        (-gsm(real)).sum().backward()
        samples = [p.grad_sample for p in params]
        norms = torch.stack([s.reshape(BATCH, -1).pow(2).sum(1).double() for s in samples]).sum(0).sqrt()
        factors = (1.0 / norms).clamp(max=1.0).float()
        for p, s in zip(params, samples):
            clipped = torch.einsum("b,b...->...", factors, s)
            p.grad = (clipped + torch.randn(p.shape, generator=noise_gen)) / BATCH
            p.grad_sample = None
        gsm.disable_hooks()
        gsm(fake).mean().backward()
        _finish(critic, opt)

    return update


def time_config(width: int, patch: int, reps: int) -> dict[str, float]:
    """Median seconds per update of each method, interleaved."""
    methods = {
        "non-private": non_private_update(width, patch),
        "book-keeping": book_keeping_update(width, patch),
        "opacus-hooks": opacus_update(width, patch),
    }
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(BATCH, 2, patch, patch, generator=gen) * 2 - 1
    fake = torch.rand(BATCH, 2, patch, patch, generator=gen) * 2 - 1
    times: dict[str, list[float]] = {name: [] for name in methods}
    for update in methods.values():
        update(real, fake)
    for _ in range(reps):
        for name, update in methods.items():
            start = time.perf_counter()
            update(real, fake)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def rss_child(sigma: float, iterations: int) -> None:
    """Paper-width training (width 96, P = 96, batch 32) for a few generator iterations; print peak RSS."""
    from dpmra.generators.interface import TrainingData
    from dpmra.generators.params import GanParams
    from dpmra.generators.wgan import WganTrainer

    data = TrainingData(torch.rand(1024, 2, 96, 96) * 2 - 1, torch.arange(1024) // 256)
    params = GanParams(sigma=sigma, batch_size=BATCH)
    trainer = WganTrainer(data, params, torch.device("cpu"), key=bytes(32))
    for _ in range(iterations):
        trainer.generator_iteration()
    print(peak_rss_self_gib())


def peak_rss_self_gib() -> float:
    """This process's peak resident set: VmHWM, which (unlike getrusage's ru_maxrss, kept
    across exec on Linux) does not include the benchmarking parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_rss_gib(sigma: float, iterations: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(sigma), "--iterations", str(iterations)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS measurement")
    parser.add_argument("--iterations", type=int, default=2, help="generator iterations per RSS run")
    parser.add_argument("--rss-child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child is not None:
        rss_child(args.rss_child, args.iterations)
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}, "
        f"batch {BATCH}, median of {args.reps} interleaved reps"
    )
    print(
        f"{'width':>5} {'P':>3} {'non-private s':>14} {'book-keeping s':>15} {'opacus s':>9} "
        f"{'bk/np':>6} {'opacus/np':>9}"
    )
    for width, patch in CONFIGS:
        t = time_config(width, patch, args.reps)
        np_, bk, op = t["non-private"], t["book-keeping"], t["opacus-hooks"]
        print(
            f"{width:>5} {patch:>3} {np_:>14.4f} {bk:>15.4f} {op:>9.4f} {bk / np_:>6.2f} {op / np_:>9.2f}",
            flush=True,
        )
    if not args.no_rss:
        for label, sigma in (("non-private", float("inf")), ("book-keeping DP", 1.0)):
            gib = peak_rss_gib(sigma, args.iterations)
            print(
                f"peak RSS, paper width (96, P=96, batch 32), {args.iterations} generator iterations, "
                f"{label}: {gib:.2f} GiB"
            )


if __name__ == "__main__":
    main()
