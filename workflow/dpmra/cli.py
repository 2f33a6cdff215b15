"""The `dpmra` command line: parses arguments and calls one stage; errors go to stderr with exit code 1."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("dpmra")


def cmd_phantom(args: argparse.Namespace) -> None:
    """Write one phantom subject."""
    from dpmra.phantom import make_subject, write_subject

    subject = make_subject(args.site, args.seed, tuple(args.shape) if args.shape else None)
    paths = write_subject(subject, args.out)
    log.info("phantom site %s seed %d -> %s", args.site, args.seed, ", ".join(str(p) for p in paths.values()))


def cmd_prepare(args: argparse.Namespace) -> None:
    """Validate one patient's volumes and write them canonical and normalised."""
    from dpmra.prepare import prepare_subject

    prepare_subject(
        args.patient, args.image, args.label, args.brain_mask, args.patches_per_patient, args.patch_size, args.out
    )


def cmd_patches(args: argparse.Namespace) -> None:
    """Cut one prepared patient's patches."""
    from dpmra.patches import patient_patches

    patient_patches(
        args.patient, args.image, args.label, args.brain_mask, args.patches_per_patient, args.patch_size, args.seed,
        args.out,
    )


def cmd_training_set(args: argparse.Namespace) -> None:
    """Assemble the GAN training set from the train split's patches."""
    from dpmra.patches import training_set

    training_set(args.patches, args.out, args.gallery)


def add_patch_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the commands that need to know the patch plan."""
    parser.add_argument("--patches-per-patient", type=int, required=True, help="patches per patient (paper: 1000)")
    parser.add_argument("--patch-size", type=int, required=True, help="patch side P in voxels (paper: 96)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per stage."""
    parser = argparse.ArgumentParser(prog="dpmra", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="write one synthetic TOF-MRA subject (image, label, brain mask, MIP)")
    p.add_argument("--site", required=True, help="A (internal) or B (external)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="override the site's matrix size")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("prepare", help="validate a patient's NIfTI volumes and write them canonical, 0..255")
    p.add_argument("--patient", required=True)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--label", type=Path, required=True)
    p.add_argument("--brain-mask", type=Path, help="omit to derive a mask from the image (see the log)")
    add_patch_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("patches", help="cut one prepared patient's axial patches")
    p.add_argument("--patient", required=True)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--label", type=Path, required=True)
    p.add_argument("--brain-mask", type=Path, required=True)
    add_patch_arguments(p)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="output .npz")
    p.set_defaults(func=cmd_patches)

    p = sub.add_parser("training-set", help="assemble the GAN training set from patch files")
    p.add_argument("patches", type=Path, nargs="+", help="per-patient patch .npz files of the train split")
    p.add_argument("--out", type=Path, required=True, help="output .npz with array x (N, 2, P, P)")
    p.add_argument("--gallery", type=Path, required=True, help="output PNG of example pairs")
    p.set_defaults(func=cmd_training_set)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user error prints one line naming the file or value and returns 1."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except (ValueError, OSError) as err:
        print(f"dpmra {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0
