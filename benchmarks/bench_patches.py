"""Patch extraction of one 192 x 192 x 64 subject against reading its NIfTI files (budget: at most 2x).

Run: .venv/bin/python benchmarks/bench_patches.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from timing import median_seconds

from dpmra.data.patches import extract_patches, patient_rng, save_patches
from dpmra.data.phantom import make_subject, write_subject
from dpmra.data.prepare import prepare_subject
from dpmra.data.volumes import load_nifti

REPEATS = 7


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subject = make_subject("A", 0)
        raw = tmp / "raw"
        files = write_subject(subject, raw)
        prepare_subject("A000", files["image"], files["label"], files["brain_mask"], 1000, 96, tmp / "prepared")
        paths = [tmp / "prepared" / f"{name}.nii.gz" for name in ("image", "label", "brain_mask")]

        def read() -> list[np.ndarray]:
            return [np.asarray(load_nifti(p).dataobj) for p in paths]

        volumes = read()
        print(f"subject {'x'.join(map(str, volumes[0].shape))}, median of {REPEATS}")
        t_read = median_seconds(read, REPEATS)
        print(f"read 3 NIfTI files:                {t_read:7.3f} s")
        for n, size in ((200, 32), (1000, 96)):
            t_cut = median_seconds(lambda: extract_patches(*volumes, n, size, patient_rng(0, "A000")), REPEATS)
            patches = extract_patches(*volumes, n, size, patient_rng(0, "A000"))
            t_save = median_seconds(lambda: save_patches(patches, tmp / "p.npz"), REPEATS)
            print(
                f"extract {n:4d} patches of {size:2d} x {size:2d}: {t_cut:7.3f} s  ratio to read {t_cut / t_read:5.2f}"
                f"   (+ save {t_save:6.3f} s, {(tmp / 'p.npz').stat().st_size / 1e6:.1f} MB)"
            )


if __name__ == "__main__":
    main()
