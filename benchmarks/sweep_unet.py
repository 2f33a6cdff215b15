"""U-Net loss, epochs and prediction overlap on a finished run's training sources, scored on the validation patients.

For each source (``real``, or a released dataset ``sigma~S/seed~N`` or ``public`` under ``--base``/synth) and each
variant ``LOSS:EPOCHS``, trains the default U-Net (``sweep_private.UNET`` with that loss and epochs), predicts the
validation patients at each ``--overlaps`` and prints one JSON row per (source, variant, overlap): validation DSC,
training and prediction seconds. Test and external patients are never read.

    python benchmarks/sweep_unet.py --base results --out /tmp/unet --sources real sigma~inf/seed~1 \\
        --variants dice:8 dice_bce:8 dice_bce:6 --overlaps 0.25 0
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from sweep_private import UNET, cohort

from dpmra.evaluation.tables import score_split
from dpmra.segmentation.predict import predict_patients
from dpmra.segmentation.training import train_unet

PATCH = 32


def training_files(base: Path, source: str, train: list[str]) -> list[Path]:
    """The patch files a U-Net of this source trains on: the train patients' patches, or one released dataset."""
    if source == "real":
        return [base / "patches" / f"{patient}.npz" for patient in train]
    return [base / "synth" / source / "dataset.npz"]


def main() -> None:
    """Train, predict and score every (source, variant, overlap); one JSON row each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="results/ of a finished default run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sources", nargs="+", required=True, help="real, public or sigma~S/seed~N")
    parser.add_argument("--variants", nargs="+", default=["dice:8", "dice_bce:8"], help="LOSS:EPOCHS")
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.25])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    patients = cohort(args.base)
    for source in args.sources:
        for variant in args.variants:
            loss, epochs = variant.split(":")
            run = args.out / source.replace("/", "_") / variant.replace(":", "-")
            start = time.perf_counter()
            train_unet(training_files(args.base, source, patients["train"]), run / "unet",
                       replace(UNET, loss=loss, epochs=int(epochs)))
            unet_seconds = time.perf_counter() - start
            for overlap in args.overlaps:
                start = time.perf_counter()
                predictions = run / f"val-overlap-{overlap:g}"
                predict_patients(run / "unet" / "model.pt", args.base / "data", patients["val"], predictions, PATCH,
                                 overlap=overlap)
                predict_seconds = time.perf_counter() - start
                scores = score_split(patients["val"], args.base / "data", predictions, predictions / "val.tsv")
                print(json.dumps({
                    "source": source, "variant": variant, "overlap": overlap,
                    "val_dsc": round(float(scores["dsc"].mean()), 4),
                    "unet_s": round(unet_seconds, 1), "predict_s": round(predict_seconds, 1),
                }), flush=True)


if __name__ == "__main__":
    main()
