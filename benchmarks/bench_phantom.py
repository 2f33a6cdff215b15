"""Phantom generation and writing time per subject (budget: make_subject under 5 s at 192 x 192 x 64).

Run: .venv/bin/python benchmarks/bench_phantom.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from timing import median_seconds

from dpmra.data.phantom import SITES, make_subject, write_subject

REPEATS = 3
BUDGET_S = 5.0


def main() -> None:
    print(f"median of {REPEATS}")
    with tempfile.TemporaryDirectory() as tmp:
        for site in ("A", "B"):
            shape = "x".join(map(str, SITES[site].shape))
            t_make = median_seconds(lambda: make_subject(site, 0), REPEATS)
            subject = make_subject(site, 0)
            t_write = median_seconds(lambda: write_subject(subject, Path(tmp) / site), REPEATS)
            fraction = subject.label.sum() / subject.brain_mask.sum()
            verdict = "ok" if t_make < BUDGET_S else f"OVER the {BUDGET_S:.0f} s budget"
            print(
                f"site {site} {shape}: make_subject {t_make:6.3f} s ({verdict}), "
                f"write_subject {t_write:6.3f} s, {len(subject.segments)} segments, vessel fraction {fraction:.4f}"
            )


if __name__ == "__main__":
    main()
