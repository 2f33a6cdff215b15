"""The `dpmra` command line: parses arguments and calls one stage; errors go to stderr with exit code 1.

Long on purpose: the whole command line is one argparse table, so every command, option and default reads in one
place; the defaults come from the params modules (see `params_from`) and the stages are imported per command.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

# Defaults come from the torch-free params modules (each written once there); tests/test_defaults.py checks
# them, and the defaults written here for options without a params class, against the config schema.
from dpmra.features.backbones import AUTO
from dpmra.generators.params import GanParams, PeParams
from dpmra.release.params import CHECKPOINT_CHOICES, ReleaseParams, Validation
from dpmra.segmentation.params import LOSSES, OVERLAP, PREDICT_BATCH, THRESHOLD, UnetParams

log = logging.getLogger("dpmra")

SECRET = Path("results/private/secret.key")
"""Default key file (config privacy.secret)."""
SSIM_IMAGES = 1000
"""Default images for mean pairwise SSIM (config quality.ssim_images; the paper's 1000)."""
QUALITY_SEED = 0
"""Default seed of the image draws of quality, ssim and tsne (config quality.seed)."""


def params_from(params: type, args: argparse.Namespace, **given):
    """A params dataclass from the options named as its fields (`--batch-size` is batch_size), `given` first."""
    fields = {f.name for f in dataclasses.fields(params)} - set(given)
    return params(**{name: getattr(args, name) for name in fields if hasattr(args, name)}, **given)


def cmd_phantom(args: argparse.Namespace) -> None:
    """Write one phantom subject."""
    from dpmra.data.phantom import make_subject, write_subject

    subject = make_subject(args.site, args.seed, tuple(args.shape) if args.shape else None, args.scalp)
    paths = write_subject(subject, args.out)
    scalp = "with" if subject.scalp.any() else "without"
    log.info(
        "phantom site %s seed %d, %s scalp -> %s",
        args.site, args.seed, scalp, ", ".join(str(p) for p in paths.values()),
    )


def cmd_prepare(args: argparse.Namespace) -> None:
    """Validate one patient's volumes and write them canonical and normalised."""
    from dpmra.data.prepare import prepare_subject

    prepare_subject(
        args.patient, args.image, args.label, args.brain_mask, args.patches_per_patient, args.patch_size, args.out
    )


def cmd_patches(args: argparse.Namespace) -> None:
    """Cut one prepared patient's patches."""
    from dpmra.data.patches import patient_patches

    patient_patches(
        args.patient, args.image, args.label, args.brain_mask, args.patches_per_patient, args.patch_size, args.seed,
        args.out,
    )


def cmd_training_set(args: argparse.Namespace) -> None:
    """Assemble the GAN training set from the train split's patches."""
    from dpmra.data.patches import training_set

    training_set(args.patches, args.out, args.gallery, intensity=args.intensity)


def cmd_epsilon(args: argparse.Namespace) -> None:
    """Print epsilon for a planned sigma, or the sigma that meets a planned epsilon, per patch or per patient."""
    import json

    from dpmra.privacy.accountants import epsilon, solve_sigma
    from dpmra.privacy.delta import group_privacy
    from dpmra.privacy.plan import fresh_steps

    steps = args.steps if args.steps is not None else fresh_steps(args.epochs, args.sample_rate, args.n_critic)
    sigma = args.sigma
    if sigma is None:
        sigma = solve_sigma(args.epsilon, args.sample_rate, steps, args.delta, args.accountant)
    eps = epsilon(sigma, args.sample_rate, steps, args.delta, args.accountant)
    result = {
        "epsilon": eps,
        "target_epsilon": args.epsilon,
        "accountant": args.accountant,
        "unit": args.unit,
        "sigma": sigma,
        "sample_rate": args.sample_rate,
        "steps": steps,
        "delta": args.delta,
    }
    if args.unit == "patch" and args.patches_per_patient:
        group_eps, group_delta = group_privacy(eps, args.delta, args.patches_per_patient)
        result["patient"] = {"group_size": args.patches_per_patient, "epsilon": group_eps, "delta": group_delta}
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"epsilon {eps:.4g} at delta {args.delta:.3g} ({args.accountant}) per {args.unit} for sigma {sigma:.4g}, "
        f"sample rate {args.sample_rate:.4g}, {steps} steps"
    )
    if "patient" in result:
        patient = result["patient"]
        shown = "vacuous (delta >= 1)" if patient["delta"] >= 1 else f"{patient['epsilon']:.4g} at delta {patient['delta']:.3g}"
        print(f"per patient of {args.patches_per_patient} patches (group privacy): {shown}")


def set_torch_threads(threads: int) -> None:
    """Use as many torch threads as the job was given: more than the cores makes OpenMP threads spin."""
    import torch

    torch.set_num_threads(threads)


def cmd_train_gan(args: argparse.Namespace) -> None:
    """Train (or resume) one GAN."""
    from dpmra.generators.train import train_gan
    from dpmra.privacy.delta import PAPER_DELTA

    set_torch_threads(args.threads)
    delta = args.delta if args.delta in (None, PAPER_DELTA) else float(args.delta)
    if args.public and args.private_blocks is not None:
        log.info("--private-blocks ignored: the public warm start trains every critic block")
    private_blocks = None if args.public else args.private_blocks
    params = params_from(
        GanParams, args, width_g=args.width, width_d=args.width, delta=delta, private_blocks=private_blocks
    )
    train_gan(args.train_set, args.out, params, args.secret, args.pretrained)


def cmd_train_pe(args: argparse.Namespace) -> None:
    """Run Private Evolution on a training set."""
    from dpmra.generators.pe import train_pe
    from dpmra.privacy.delta import PAPER_DELTA

    set_torch_threads(args.threads)
    delta = args.delta if args.delta in (None, PAPER_DELTA) else float(args.delta)
    params = params_from(PeParams, args, delta=delta)
    train_pe(args.train_set, args.out, params, args.secret, args.generator)


def cmd_secret_key(args: argparse.Namespace) -> None:
    """Create the secret key file once; never print it."""
    from dpmra.privacy.secret import create_key, read_key

    created = create_key(args.out)
    read_key(args.out)
    log.info("%s secret key %s (keep it private; losing it only stops runs from being replayed)",
             "created" if created else "kept the existing", args.out)


def cmd_profiles(args: argparse.Namespace) -> None:
    """Link the workflow's profiles where `snakemake --profile NAME` finds them by name."""
    from dpmra.shared.environment import link_profiles, snakemake_profile_folder

    folder = args.into or snakemake_profile_folder()
    for link, source in link_profiles(args.profiles, folder):
        print(f"{link} -> {source}")
    print(f"`snakemake --profile NAME` now finds these by name (run it in {Path.cwd()}, where the Snakefile is)")


def cmd_synth(args: argparse.Namespace) -> None:
    """Sample one trained generator into a released dataset with its privacy card."""
    from dpmra.release.synth import release_dataset

    set_torch_threads(args.threads)
    release = params_from(ReleaseParams, args)
    validation = Validation(args.validation or [], args.backbone, args.weights)
    release_dataset(args.generator, args.out, release, args.name, validation)


def cmd_metrics(args: argparse.Namespace) -> None:
    """Print the segmentation metrics of one prediction against its ground truth."""
    import json

    from dpmra.segmentation.metrics import score_files

    scores = score_files(args.truth, args.prediction, args.mask)
    if args.json:
        print(json.dumps(scores))
    else:
        print("\n".join(f"{name}\t{value:.6g}" for name, value in scores.items()))


def cmd_train_unet(args: argparse.Namespace) -> None:
    """Train (or resume) one U-Net."""
    from dpmra.segmentation.training import train_unet

    set_torch_threads(args.threads)
    params = params_from(UnetParams, args)
    train_unet(args.sources, args.out, params)


def cmd_predict(args: argparse.Namespace) -> None:
    """Segment prepared patients with one trained U-Net."""
    from dpmra.segmentation.predict import predict_patients

    set_torch_threads(args.threads)
    predict_patients(
        args.model, args.data, args.patients, args.out, args.patch_size, args.threshold, args.batch_size, args.overlap
    )


def cmd_score(args: argparse.Namespace) -> None:
    """Score one split's segmentations."""
    from dpmra.evaluation.tables import score_split

    score_split(args.patients, args.data, args.predictions, args.out)


def cmd_tables(args: argparse.Namespace) -> None:
    """Select the best U-Net setting per source and write the summary tables."""
    from dpmra.evaluation.tables import write_tables

    write_tables(args.metrics, args.gan, args.sources, args.settings, args.splits, args.out)


def cmd_quality(args: argparse.Namespace) -> None:
    """Fréchet distances and SSIM diversity of one synthetic dataset."""
    from dpmra.evaluation.quality import run_quality

    set_torch_threads(args.threads)
    run_quality(
        args.synthetic, args.train, args.test, args.out, args.backbone, args.weights, args.n, args.ssim_images, args.seed
    )


def cmd_ssim(args: argparse.Namespace) -> None:
    """SSIM diversity of real patches, the quality table's reference row."""
    from dpmra.evaluation.quality import run_ssim_real

    set_torch_threads(args.threads)
    run_ssim_real(args.patches, args.out, args.ssim_images, args.seed)


def cmd_tsne(args: argparse.Namespace) -> None:
    """t-SNE table of real and synthetic patches."""
    from dpmra.evaluation.quality import run_tsne

    groups = {}
    for name, *files in args.group:
        if not files or name in groups:
            raise ValueError(f"--group {name}: give a new group name followed by at least one file")
        groups[name] = [Path(f) for f in files]
    set_torch_threads(args.threads)
    run_tsne(groups, args.out, args.n_per_group, args.seed, args.backbone, args.weights, args.perplexity)


def cmd_audit(args: argparse.Namespace) -> None:
    """Memorisation / distance-to-closest-record check of one synthetic dataset."""
    from dpmra.evaluation.memorisation import run_audit

    run_audit(args.synthetic, args.train, args.holdout, args.out, args.seed, args.n_bootstrap)


def cmd_quality_table(args: argparse.Namespace) -> None:
    """Collect quality JSONs and privacy cards into quality.tsv."""
    from dpmra.evaluation.quality import write_quality_table

    write_quality_table(args.quality, args.cards, args.real_ssim, args.out)


def cmd_audit_table(args: argparse.Namespace) -> None:
    """Collect audit JSONs and privacy cards into audit.tsv."""
    from dpmra.evaluation.memorisation import write_audit_table

    write_audit_table(args.audit, args.cards, args.out)


def cmd_audit_dp(args: argparse.Namespace) -> None:
    """One-run canary audit of a GAN run's DP mechanism (run), the table of every audit (table), its figure."""
    from dpmra.evaluation.dp_audit import plot_audit, run_dp_audit, write_audit_table

    if args.step == "run":
        set_torch_threads(args.threads)
        run_dp_audit(
            args.generator, args.train_set, args.secret, args.canaries, args.guesses_per_side, args.out,
            args.pretrained,
        )
    elif args.step == "table":
        write_audit_table(args.audits, args.out)
    else:
        plot_audit(args.table, args.out)


def cmd_release(args: argparse.Namespace) -> None:
    """Write the shareable bundle (folder and zip) of one synthetic dataset."""
    from dpmra.release.bundle import build_bundle

    build_bundle(args.synth, args.quality, args.summary, args.selection, args.out, args.zip)


def cmd_privacy_table(args: argparse.Namespace) -> None:
    """Gather every GAN run's privacy card into privacy.tsv and its HTML page."""
    from dpmra.evaluation.tables import write_privacy_table

    write_privacy_table(args.cards, args.out, args.html)


def cmd_figure(args: argparse.Namespace) -> None:
    """Draw one report figure from files under results/ (one file per --out, format by suffix)."""
    from dpmra.evaluation.figures.images import plot_error_maps, plot_samples, plot_segmentation
    from dpmra.evaluation.figures.quality import plot_audit, plot_fid, plot_ssim, plot_tsne
    from dpmra.evaluation.figures.training import plot_gan_curves
    from dpmra.evaluation.figures.utility import plot_accounting, plot_utility

    draw = {
        "samples": lambda: plot_samples(args.train_set, args.synth, args.privacy, args.out),
        "utility": lambda: plot_utility(args.summary, args.selection, args.privacy, args.split, args.out),
        "accounting": lambda: plot_accounting(args.summary, args.selection, args.privacy, args.out),
        "error-maps": lambda: plot_error_maps(
            args.selection, args.privacy, args.predictions, args.data / args.patient / "image.nii.gz", args.patient,
            args.out,
        ),
        "segmentation": lambda: plot_segmentation(
            args.selection, args.privacy, args.predictions, args.data, args.metrics, args.patient, args.out
        ),
        "fid": lambda: plot_fid(args.quality, args.privacy, args.out),
        "ssim": lambda: plot_ssim(args.quality, args.privacy, args.out),
        "tsne": lambda: plot_tsne(args.tsne, args.privacy, args.out),
        "audit": lambda: plot_audit(args.audit, args.privacy, args.out),
        "gan-curves": lambda: plot_gan_curves(args.epochs, args.out),
    }
    draw[args.figure]()


def cmd_table_html(args: argparse.Namespace) -> None:
    """Render one result table as an HTML page for the report."""
    from dpmra.evaluation.figures.pages import (
        write_audit_html,
        write_quality_html,
        write_summary_html,
        write_table1_html,
    )

    render = {
        "table1": lambda: write_table1_html(args.table1, args.selection, args.out),
        "summary": lambda: write_summary_html(args.summary, args.selection, args.out),
        "quality": lambda: write_quality_html(args.quality, args.out),
        "audit": lambda: write_audit_html(args.audit, args.out),
    }
    render[args.table]()


FIGURE_INPUTS = {
    "samples": ("train_set", "synth", "privacy"),
    "utility": ("summary", "selection", "privacy", "split"),
    "accounting": ("summary", "selection", "privacy"),
    "error-maps": ("selection", "privacy", "predictions", "data", "patient"),
    "segmentation": ("selection", "privacy", "predictions", "data", "metrics", "patient"),
    "fid": ("quality", "privacy"),
    "ssim": ("quality", "privacy"),
    "tsne": ("tsne", "privacy"),
    "audit": ("audit", "privacy"),
    "gan-curves": ("epochs",),
}
TABLE_INPUTS = {
    "table1": ("table1", "selection"),
    "summary": ("summary", "selection"),
    "quality": ("quality",),
    "audit": ("audit",),
}
FIGURE_ARGUMENTS = {
    "train_set": dict(type=Path, help="results/patches/train_set.npz"),
    "synth": dict(type=Path, help="results/synth (one dataset.npz per run)"),
    "privacy": dict(type=Path, help="results/tables/privacy.tsv"),
    "summary": dict(type=Path, help="results/tables/summary.tsv"),
    "selection": dict(type=Path, help="results/tables/selection.tsv"),
    "table1": dict(type=Path, help="results/tables/table1.tsv"),
    "split": dict(choices=("test", "external"), help="evaluation split"),
    "predictions": dict(type=Path, help="results/predictions (the figures read <source>/<setting>/test/<patient>/)"),
    "data": dict(type=Path, help="results/data (prepared volumes)"),
    "metrics": dict(type=Path, help="results/metrics"),
    "patient": dict(help="the test patient to show"),
    "quality": dict(type=Path, help="results/tables/quality.tsv"),
    "tsne": dict(type=Path, help="results/quality/tsne.tsv"),
    "audit": dict(type=Path, help="results/tables/audit.tsv"),
    "epochs": dict(type=Path, nargs="+", help="epochs.tsv of every GAN run"),
}


def add_report_parsers(sub) -> None:
    """Subcommands of the figure stage: privacy-table, figure NAME, table-html NAME."""
    p = sub.add_parser("privacy-table", help="privacy.tsv and privacy.html from every run's privacy card")
    p.add_argument("cards", type=Path, nargs="+", help="privacy_card.json of every GAN run")
    p.add_argument("--out", type=Path, required=True, help="output TSV")
    p.add_argument("--html", type=Path, required=True, help="output HTML page")
    p.set_defaults(func=cmd_privacy_table)
    for command, choices, func in (("figure", FIGURE_INPUTS, cmd_figure), ("table-html", TABLE_INPUTS, cmd_table_html)):
        p = sub.add_parser(command, help=f"draw one report {'figure' if command == 'figure' else 'table as HTML'}")
        kinds = p.add_subparsers(dest="figure" if command == "figure" else "table", required=True)
        for name, inputs in choices.items():
            k = kinds.add_parser(name)
            for option in inputs:
                k.add_argument(f"--{option.replace('_', '-')}", required=True, **FIGURE_ARGUMENTS[option])
            out_help = "output files (.png, .pdf)" if command == "figure" else "output .html"
            k.add_argument("--out", type=Path, nargs="+" if command == "figure" else None, required=True, help=out_help)
        p.set_defaults(func=func)


def positive_float(text: str) -> float:
    """An argparse type: a float > 0 (inf allowed)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


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
    p.add_argument("--site", required=True, help="A (internal), B (external) or C (public)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="override the site's matrix size")
    p.add_argument(
        "--scalp",
        action=argparse.BooleanOptionalAction,
        help="render a dark skull ring and bright subcutaneous fat around the brain, or not (default: the site's "
        "look: B with, A and C without)",
    )
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
    p.add_argument(
        "--intensity", choices=("volume", "per_patch"), default="volume",
        help="image channel: the volume's 0..255 scale mapped to [-1, 1], or per-patch min-max (the paper's)",
    )
    p.set_defaults(func=cmd_training_set)

    p = sub.add_parser("epsilon", help="epsilon of Poisson-subsampled Gaussian DP-SGD, or sigma for a target epsilon")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--sigma", type=positive_float, help="noise multiplier")
    target.add_argument("--epsilon", type=positive_float, help="target epsilon: solve for sigma")
    p.add_argument("--sample-rate", type=float, required=True, help="Poisson sampling rate q = batch / N")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="number of noisy steps (accountant charges)")
    length.add_argument("--epochs", type=int, help="epochs of the fresh loop: n_critic * round(1/q) steps each")
    p.add_argument(
        "--n-critic", type=int, default=GanParams.n_critic, help="critic updates per generator iteration (with --epochs)"
    )
    p.add_argument("--delta", type=float, required=True)
    p.add_argument("--accountant", choices=("rdp", "prv"), default="rdp")
    p.add_argument(
        "--unit", choices=("patch", "patient"), default=GanParams.unit,
        help="privacy unit the sample rate refers to: patches (q = batch / pairs) or patients (q = patients per "
        "batch / patients)",
    )
    p.add_argument(
        "--patches-per-patient", type=int,
        help="with --unit patch: also print the per-patient guarantee by group privacy over this many patches",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_epsilon)

    p = sub.add_parser("train-gan", help="train (or resume) one DP-WGAN on a training set")
    p.add_argument("--train-set", type=Path, required=True, help=".npz with x (N, 2, P, P)")
    p.add_argument("--sigma", type=positive_float, required=True, help="noise multiplier; inf = non-private")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--epochs", type=int, default=GanParams.epochs)
    p.add_argument("--batch-size", type=int, default=GanParams.batch_size, help="expected Poisson batch size")
    p.add_argument("--n-critic", type=int, default=GanParams.n_critic)
    p.add_argument("--lr", type=float, default=GanParams.lr, help="critic learning rate (and the generator's by default)")
    p.add_argument("--lr-generator", type=float, help="generator learning rate (default: --lr)")
    p.add_argument("--optimizer", choices=("rmsprop", "adam"), default=GanParams.optimizer, help="paper: rmsprop")
    p.add_argument("--beta1", type=float, default=GanParams.beta1, help="Adam's beta1")
    p.add_argument("--ema", type=float, default=GanParams.ema, help="decay of the released generator's weight average; 0 = off")
    p.add_argument(
        "--clipping", choices=("flat", "normalised"), default=GanParams.clipping,
        help="per-sample clipping: flat min(1, C/|g|) or normalised C/(|g| + 0.01 C)",
    )
    p.add_argument("--clip-weight", type=float, default=GanParams.clip_weight)
    p.add_argument("--max-grad-norm", type=float, default=GanParams.max_grad_norm, help="per-sample clipping norm C")
    p.add_argument("--width", type=int, default=GanParams.width_g, help="generator and critic filters")
    p.add_argument("--latent-dim", type=int, default=GanParams.latent_dim)
    p.add_argument("--mode", choices=("fresh", "paper"), default=GanParams.mode)
    p.add_argument("--delta", help="a number <= 1/N, or 1/N (the paper's); default: 1/(10 N) rounded down")
    p.add_argument("--unit", choices=("patch", "patient"), default=GanParams.unit, help="privacy unit")
    p.add_argument("--patient-batch", type=float, default=GanParams.patient_batch, help="expected patients per batch (unit patient)")
    p.add_argument(
        "--patient-patches", type=int, default=GanParams.patient_patches, help="pairs per sampled patient per critic update (unit patient)"
    )
    p.add_argument(
        "--public", action="store_true",
        help="declare the training set public (a warm start's): no noise, nothing charged, epsilon 0",
    )
    p.add_argument("--pretrained", type=Path, help="generator.pt of a --public run to start from (warm start)")
    p.add_argument(
        "--placebo-run", action="store_true",
        help="a placebo run on a public stand-in: secret streams of its own, never those of the private run",
    )
    p.add_argument(
        "--private-blocks", type=int,
        help="train only the critic's last N of 6 blocks (with --pretrained; the others keep the warm start's public "
        "weights); default: every block. Ignored with --public, which trains every block",
    )
    p.add_argument(
        "--secret", type=Path, default=SECRET,
        help="key file seeding the DP sampling and noise; created on first use (keep it private)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="output directory (checkpoints/ resume a killed run)")
    p.set_defaults(func=cmd_train_gan)

    p = sub.add_parser("train-pe", help="run Private Evolution (noisy votes for public candidates) on a training set")
    p.add_argument("--train-set", type=Path, required=True, help=".npz with x (N, 2, P, P) and patient (N,)")
    p.add_argument("--sigma", type=positive_float, required=True, help="noise std on every vote count; inf = none")
    p.add_argument("--seed", type=int, required=True, help="run index: seeds the public streams only")
    p.add_argument("--api", choices=("simulator", "generator"), default=PeParams.api, help="the public candidate maker")
    p.add_argument("--generator", type=Path, help="generator.pt of the public warm start (--api generator)")
    p.add_argument("--iterations", type=int, default=PeParams.iterations, help="T rounds of votes")
    p.add_argument("--candidates", type=int, default=PeParams.candidates, help="M candidates per round")
    p.add_argument("--threshold", type=float, default=PeParams.threshold, help="drop counts below this x sigma")
    p.add_argument("--variation", type=float, default=PeParams.variation, help="first round's variation scale")
    p.add_argument("--widen", type=float, default=PeParams.widen, help="simulator: the public site's ranges widened")
    p.add_argument("--unit", choices=("patch", "patient"), default=PeParams.unit, help="privacy unit")
    p.add_argument("--delta", help="a number <= 1/N, or 1/N; default: 1/(10 N) rounded down")
    p.add_argument("--placebo-run", action="store_true", help="a placebo on a public stand-in: noise of its own")
    p.add_argument("--secret", type=Path, default=SECRET, help="key file seeding the noise (keep it private)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="output directory: generator.pt, epochs.tsv")
    p.set_defaults(func=cmd_train_pe)

    p = sub.add_parser("secret-key", help="create the secret key file for the DP randomness (if it does not exist)")
    p.add_argument("--out", type=Path, required=True, help="key file (32 random bytes, mode 0600)")
    p.set_defaults(func=cmd_secret_key)

    p = sub.add_parser("profiles", help="link the workflow's Snakemake profiles (local, slurm) so they work by name")
    p.add_argument("--profiles", type=Path, default=Path("profiles"), help="folder of profile folders")
    p.add_argument("--into", type=Path, help="default: Snakemake's user profile folder (~/.config/snakemake)")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("synth", help="release a synthetic dataset and its privacy card from one generator.pt")
    p.add_argument("--generator", type=Path, required=True, help="generator.pt written by train-gan")
    p.add_argument("--name", required=True, help="dataset name on the card, e.g. sigma~1.5/seed~0")
    p.add_argument("--n", type=int, required=True, help="number of generated pairs (paper 41,000)")
    p.add_argument("--label-threshold", type=float, default=ReleaseParams.label_threshold, help="on the label channel mapped to [0, 1]")
    p.add_argument("--seed", type=int, default=ReleaseParams.seed, help="seed of the latent vectors (public randomness)")
    p.add_argument(
        "--checkpoint", choices=CHECKPOINT_CHOICES, default=ReleaseParams.checkpoint,
        help="release the last epoch, or the epoch closest (Frechet distance) to the validation patches",
    )
    p.add_argument("--validation", type=Path, nargs="+", help="validation patients' patch files (for val_fd)")
    p.add_argument("--selection-samples", type=int, default=ReleaseParams.selection_samples, help="patches per Frechet distance (val_fd)")
    p.add_argument("--backbone", default=Validation.backbone, help="feature extractor for val_fd (as for `dpmra quality`)")
    p.add_argument("--weights", type=Path, help="local Inception-v3 weights (.pth) for val_fd")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("metrics", help="DSC, bAHD, surface HD95, sensitivity, precision, AVD, ASSD of one segmentation")
    p.add_argument("truth", type=Path, help="ground-truth vessel label (NIfTI)")
    p.add_argument("prediction", type=Path, help="binary segmentation on the same grid (NIfTI)")
    p.add_argument("--mask", type=Path, help="brain mask: voxels outside are background in both")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("train-unet", help="train (or resume) one U-Net on patch files")
    p.add_argument("sources", type=Path, nargs="+", help=".npz files with image (n, P, P) and label (n, P, P)")
    p.add_argument("--lr", type=float, default=UnetParams.lr)
    p.add_argument("--dropout", type=float, default=UnetParams.dropout)
    p.add_argument("--augment", action="store_true", help="rotation 30, vertical flip, shear 20 degrees")
    p.add_argument("--batch-size", type=int, default=UnetParams.batch_size)
    p.add_argument("--epochs", type=int, default=UnetParams.epochs)
    p.add_argument("--base-width", type=int, default=UnetParams.base_width, help="filters of the first level (paper 32)")
    p.add_argument("--seed", type=int, default=UnetParams.seed)
    p.add_argument(
        "--loss", choices=LOSSES, default=UnetParams.loss, help="soft Dice (paper) or soft Dice + binary cross-entropy"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="output directory (checkpoints/ resume a killed run)")
    p.set_defaults(func=cmd_train_unet)

    p = sub.add_parser("predict", help="segment prepared patients slice by slice (sliding window) with one U-Net")
    p.add_argument("--model", type=Path, required=True, help="model.pt of dpmra train-unet")
    p.add_argument("--data", type=Path, required=True, help="directory of prepared patients (dpmra prepare)")
    p.add_argument("--patients", nargs="+", required=True)
    p.add_argument("--patch-size", type=int, required=True)
    p.add_argument("--threshold", type=float, default=THRESHOLD)
    p.add_argument("--batch-size", type=int, default=PREDICT_BATCH, help="patches per model call")
    p.add_argument("--overlap", type=float, default=OVERLAP, help="share of a window neighbouring windows overlap, in [0, 1)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="output directory: one folder per patient")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("score", help="per-patient metric table of one split")
    p.add_argument("--patients", nargs="+", required=True)
    p.add_argument("--data", type=Path, required=True, help="directory of prepared patients (label, brain_mask)")
    p.add_argument("--predictions", type=Path, required=True, help="directory of per-patient predictions")
    p.add_argument("--out", type=Path, required=True, help="output TSV")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("tables", help="best U-Net setting per source, summary and Table 1")
    p.add_argument("--metrics", type=Path, required=True, help="results/metrics")
    p.add_argument("--gan", type=Path, required=True, help="results/gan (for the epsilon of synthetic sources)")
    p.add_argument("--sources", nargs="+", required=True)
    p.add_argument("--settings", nargs="+", required=True)
    p.add_argument("--splits", nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=cmd_tables)
    add_report_parsers(sub)

    backbone_help = "auto (Inception-v3 if pytorch-fid and its weights are present, else random-cnn-s0-d256), "
    backbone_help += "inception-v3, or random-cnn-s0-d256"
    p = sub.add_parser("quality", help="Fréchet distances to real train/test patches and SSIM diversity (JSON)")
    p.add_argument("--synthetic", type=Path, required=True, help="released dataset .npz (image 0..255)")
    p.add_argument("--train", type=Path, nargs="+", required=True, help="patch files of the GAN's training patients")
    p.add_argument("--test", type=Path, nargs="+", required=True, help="patch files of the test patients")
    p.add_argument("--backbone", default=AUTO, help=backbone_help)
    p.add_argument("--weights", type=Path, help="local pytorch-fid Inception weights (.pth); never downloaded")
    p.add_argument("--n", type=int, required=True, help="images drawn from each set for the Fréchet distances")
    p.add_argument("--ssim-images", type=int, default=SSIM_IMAGES, help="images for mean pairwise SSIM (paper 1000)")
    p.add_argument("--seed", type=int, default=QUALITY_SEED)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="output JSON")
    p.set_defaults(func=cmd_quality)

    p = sub.add_parser("ssim", help="mean pairwise SSIM of real patches (JSON)")
    p.add_argument("patches", type=Path, nargs="+", help="patch files")
    p.add_argument("--ssim-images", type=int, default=SSIM_IMAGES, help="images for mean pairwise SSIM (paper 1000)")
    p.add_argument("--seed", type=int, default=QUALITY_SEED)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="output JSON")
    p.set_defaults(func=cmd_ssim)

    p = sub.add_parser("tsne", help="t-SNE of real and synthetic patches on the Fréchet backbone's features (TSV)")
    p.add_argument(
        "--group", nargs="+", action="append", required=True, metavar=("NAME", "FILE"),
        help="a source name and its .npz files; repeat per source",
    )
    p.add_argument("--n-per-group", type=int, required=True, help="images drawn from each group")
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--backbone", default=AUTO, help=backbone_help)
    p.add_argument("--weights", type=Path, help="local pytorch-fid Inception weights (.pth); never downloaded")
    p.add_argument("--seed", type=int, default=QUALITY_SEED)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="output TSV: x, y, source, index")
    p.set_defaults(func=cmd_tsne)

    p = sub.add_parser("audit", help="distance to closest record and membership attack on one synthetic dataset")
    p.add_argument("--synthetic", type=Path, required=True, help="released dataset .npz (image 0..255)")
    p.add_argument("--train", type=Path, nargs="+", required=True, help="patch files of the GAN's training patients")
    p.add_argument("--holdout", type=Path, nargs="+", required=True, help="patch files of patients it never saw")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the attack's intervals")
    p.add_argument("--out", type=Path, required=True, help="output directory: audit.json, dcr.tsv, near_copies.tsv")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("quality-table", help="quality.tsv from quality JSONs and privacy cards")
    p.add_argument("--quality", type=Path, nargs="+", required=True, help="quality JSONs")
    p.add_argument("--cards", type=Path, nargs="+", required=True, help="privacy cards, in the same order")
    p.add_argument("--real-ssim", type=Path, help="JSON of `dpmra ssim` on real patches (the `real` row)")
    p.add_argument("--out", type=Path, required=True, help="output TSV")
    p.set_defaults(func=cmd_quality_table)

    p = sub.add_parser("audit-table", help="audit.tsv from audit JSONs and privacy cards")
    p.add_argument("--audit", type=Path, nargs="+", required=True, help="audit.json files")
    p.add_argument("--cards", type=Path, nargs="+", required=True, help="privacy cards, in the same order")
    p.add_argument("--out", type=Path, required=True, help="output TSV")
    p.set_defaults(func=cmd_audit_table)

    p = sub.add_parser("audit-dp", help="one-run canary audit of the DP mechanism: an epsilon lower bound per GAN run")
    steps = p.add_subparsers(dest="step", required=True)
    s = steps.add_parser("run", help="train a GAN run once more, with gradient canaries, and bound its epsilon")
    s.add_argument("--generator", type=Path, required=True, help="generator.pt of the audited run (its settings)")
    s.add_argument("--train-set", type=Path, required=True, help="the run's training set .npz")
    s.add_argument("--secret", type=Path, required=True, help="the run's secret key file (never created here)")
    s.add_argument("--pretrained", type=Path, help="the public run's generator.pt the audited run started from")
    s.add_argument("--canaries", type=int, default=1000, help="m gradient canaries, each included with probability 1/2")
    s.add_argument(
        "--guesses-per-side", type=int,
        help="k: guess 'included' for the k highest scores and 'excluded' for the k lowest (default m / 10)",
    )
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    s.add_argument("--out", type=Path, required=True, help="output directory: dp_audit.json, canaries.tsv")
    s = steps.add_parser("table", help="dp_audit.tsv from every audited run's dp_audit.json")
    s.add_argument("audits", type=Path, nargs="+", help="dp_audit.json of every audited run")
    s.add_argument("--out", type=Path, required=True, help="output TSV")
    s = steps.add_parser("figure", help="claimed against audited epsilon of every audited run")
    s.add_argument("--table", type=Path, required=True, help="results/tables/dp_audit.tsv")
    s.add_argument("--out", type=Path, nargs="+", required=True, help="output files (.png, .pdf)")
    p.set_defaults(func=cmd_audit_dp)

    p = sub.add_parser("release", help="the shareable bundle of one synthetic dataset: files, README, checksums, zip")
    p.add_argument("--synth", type=Path, required=True, help="the run's results/synth folder (dataset, stacks, card)")
    p.add_argument("--quality", type=Path, required=True, help="the run's quality.json (only held-out numbers kept)")
    p.add_argument("--summary", type=Path, required=True, help="results/tables/summary.tsv")
    p.add_argument("--selection", type=Path, required=True, help="results/tables/selection.tsv")
    p.add_argument("--out", type=Path, required=True, help="bundle folder (empty or holding only bundle files)")
    p.add_argument("--zip", type=Path, required=True, help="output zip of the bundle folder")
    p.set_defaults(func=cmd_release)
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
