"""One source for each default: the config schema's defaults equal the code's, wherever the code writes one.

The schema (workflow/schemas/config.schema.yaml, with its descriptions) is the source. In code a default is
written once: in a torch-free params module (`GanParams`, `UnetParams` and the prediction constants,
`ReleaseParams`, `Validation`), which the command line reads its defaults from, or, for an option without a
params class, once in `dpmra.cli`. `CODE` below names, for every schema key with a default, each place in code
that has one: a dataclass field, a command's option, a function's parameter. The test fails when any two of them
disagree, when a schema default is in neither `CODE` nor `WORKFLOW_ONLY`, and when a params field or an option
with a default is in none of the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from dpmra.cli import build_parser
from dpmra.data.patches import training_set
from dpmra.evaluation.quality import tsne_embedding
from dpmra.generators.params import GanParams, PeParams
from dpmra.release.params import ReleaseParams, Validation
from dpmra.segmentation.params import UnetParams
from dpmra.segmentation.predict import predict_patients, predict_probability, predict_volume

SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def field(params: type, name: str) -> tuple[str, object]:
    """A dataclass field's default."""
    (found,) = [f for f in dataclasses.fields(params) if f.name == name]
    return f"{params.__name__}.{name}", found.default


def parameter(function, name: str) -> tuple[str, object]:
    """A function parameter's default."""
    return f"{function.__module__}.{function.__name__}({name}=)", inspect.signature(function).parameters[name].default


def option(command: str, flag: str) -> tuple[str, object]:
    """A command's option default (`audit-dp run` for a subcommand's subcommand)."""
    return f"dpmra {command} {flag}", options()[(command, flag)]


@functools.cache
def options() -> dict[tuple[str, str], object]:
    """{(command, --flag): default} of every option of every command."""
    found = {}

    def walk(parser: argparse.ArgumentParser, command: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{command} {name}".strip())
            elif action.option_strings and action.default is not argparse.SUPPRESS:
                found[(command, action.option_strings[-1])] = action.default

    walk(build_parser(), "")
    return found


# Every schema key with a default, and each place in code that writes one (names differ: gan.width is the width of
# both networks, privacy.* are GanParams fields, audit.bootstrap is --n-bootstrap).
CODE = {
    "gan.epochs": [field(GanParams, "epochs"), option("train-gan", "--epochs")],
    "gan.batch_size": [field(GanParams, "batch_size"), option("train-gan", "--batch-size")],
    "gan.n_critic": [field(GanParams, "n_critic"), option("train-gan", "--n-critic"), option("epsilon", "--n-critic")],
    "gan.lr": [field(GanParams, "lr"), option("train-gan", "--lr")],
    "gan.lr_generator": [field(GanParams, "lr_generator"), option("train-gan", "--lr-generator")],
    "gan.optimizer": [field(GanParams, "optimizer"), option("train-gan", "--optimizer")],
    "gan.beta1": [field(GanParams, "beta1"), option("train-gan", "--beta1")],
    "gan.ema": [field(GanParams, "ema"), option("train-gan", "--ema")],
    "gan.clipping": [field(GanParams, "clipping"), option("train-gan", "--clipping")],
    "gan.clip_weight": [field(GanParams, "clip_weight"), option("train-gan", "--clip-weight")],
    "gan.max_grad_norm": [field(GanParams, "max_grad_norm"), option("train-gan", "--max-grad-norm")],
    "gan.width": [field(GanParams, "width_g"), field(GanParams, "width_d"), option("train-gan", "--width")],
    "gan.latent_dim": [field(GanParams, "latent_dim"), option("train-gan", "--latent-dim")],
    "gan.mode": [field(GanParams, "mode"), option("train-gan", "--mode")],
    "gan.delta": [field(GanParams, "delta"), option("train-gan", "--delta"), field(PeParams, "delta")],
    "gan.private_blocks": [field(GanParams, "private_blocks"), option("train-gan", "--private-blocks")],
    "gan.intensity": [option("training-set", "--intensity"), parameter(training_set, "intensity")],
    "privacy.secret": [option("train-gan", "--secret"), option("train-pe", "--secret")],
    "privacy.unit": [
        field(GanParams, "unit"), option("train-gan", "--unit"), option("epsilon", "--unit"), field(PeParams, "unit"),
        option("train-pe", "--unit"),
    ],
    "privacy.patient_batch": [field(GanParams, "patient_batch"), option("train-gan", "--patient-batch")],
    "privacy.patient_patches": [field(GanParams, "patient_patches"), option("train-gan", "--patient-patches")],
    "unet.batch_size": [field(UnetParams, "batch_size"), option("train-unet", "--batch-size")],
    "unet.epochs": [field(UnetParams, "epochs"), option("train-unet", "--epochs")],
    "unet.base_width": [field(UnetParams, "base_width"), option("train-unet", "--base-width")],
    "unet.seed": [field(UnetParams, "seed"), option("train-unet", "--seed")],
    "unet.loss": [field(UnetParams, "loss"), option("train-unet", "--loss")],
    "unet.threshold": [
        option("predict", "--threshold"), parameter(predict_patients, "threshold"), parameter(predict_volume, "threshold")
    ],
    "unet.overlap": [
        option("predict", "--overlap"), parameter(predict_patients, "overlap"), parameter(predict_volume, "overlap"),
        parameter(predict_probability, "overlap"),
    ],
    "synth.label_threshold": [field(ReleaseParams, "label_threshold"), option("synth", "--label-threshold")],
    "synth.seed": [field(ReleaseParams, "seed"), option("synth", "--seed")],
    "synth.checkpoint": [field(ReleaseParams, "checkpoint"), option("synth", "--checkpoint")],
    "synth.selection_samples": [field(ReleaseParams, "selection_samples"), option("synth", "--selection-samples")],
    "quality.backbone": [
        field(Validation, "backbone"), option("synth", "--backbone"), option("quality", "--backbone"),
        option("tsne", "--backbone"), parameter(tsne_embedding, "backbone"),
    ],
    "quality.weights": [
        field(Validation, "weights"), option("synth", "--weights"), option("quality", "--weights"),
        option("tsne", "--weights"),
    ],
    "quality.ssim_images": [option("quality", "--ssim-images"), option("ssim", "--ssim-images")],
    "quality.seed": [option("quality", "--seed"), option("ssim", "--seed"), option("tsne", "--seed")],
    "audit.bootstrap": [option("audit", "--n-bootstrap")],
    "audit.seed": [option("audit", "--seed")],
    "audit.dp.canaries": [option("audit-dp run", "--canaries")],
    "pe.api": [field(PeParams, "api"), option("train-pe", "--api")],
    "pe.iterations": [field(PeParams, "iterations"), option("train-pe", "--iterations")],
    "pe.candidates": [field(PeParams, "candidates"), option("train-pe", "--candidates")],
    "pe.threshold": [field(PeParams, "threshold"), option("train-pe", "--threshold")],
    "pe.variation": [field(PeParams, "variation"), option("train-pe", "--variation")],
    "pe.widen": [field(PeParams, "widen"), option("train-pe", "--widen")],
}
# Schema defaults only the workflow reads (common.smk and the rules): no code default to agree with.
WORKFLOW_ONLY = {
    "data.source", "data.manifest", "data.phantom.seed", "data.phantom.shape", "data.phantom.public",  # the cohort
    "data.phantom.placebo", "gan.placebo",  # the placebo runs: their stand-in cohort and the kind wildcard
    "patches.per_patient", "patches.size", "patches.seed",  # required options of prepare and patches
    "gan.sigmas", "gan.epsilons", "gan.seeds",  # the study's runs: the sigma and seed wildcards
    "gan.pretrain.set", "gan.pretrain.epochs",  # the warm start: its rule passes --public and --epochs
    "unet.lr", "unet.dropout", "unet.augment",  # the grid of U-Net settings: the setting wildcard
    "synth.n",  # null: as many pairs as the training set (--n is required)
    "quality.fd_samples", "quality.tsne_per_group",  # required --n and --n-per-group
    "audit.dp.runs",  # which GAN runs the DP audit trains again
    "pe.epsilons", "pe.placebo",  # Private Evolution's runs: the sigma wildcard of kinds pe and pe-placebo
}
# The U-Net grid: lists in the schema (one U-Net per combination); a single run's default is one of their values.
GRID = {"unet.lr": field(UnetParams, "lr"), "unet.dropout": field(UnetParams, "dropout"),
        "unet.augment": field(UnetParams, "augment")}
# Params fields with a default and no config key: a run's wildcard, a flag its rule sets, or plotting.
FIELDS_WITHOUT_KEY = {
    "GanParams.sigma", "GanParams.seed", "GanParams.public", "GanParams.placebo_run", "GanParams.sample_every",
    "PeParams.sigma", "PeParams.seed", "PeParams.placebo_run",
}
# Options with a default and no config key (or a grid's, as above: the rule passes each setting's value).
OPTIONS_WITHOUT_KEY = {
    ("", "--verbose"), ("epsilon", "--accountant"), ("epsilon", "--json"), ("metrics", "--json"),
    ("train-gan", "--public"), ("train-gan", "--placebo-run"), ("train-pe", "--placebo-run"), ("train-unet", "--lr"), ("train-unet", "--dropout"), ("train-unet", "--augment"),
    ("predict", "--batch-size"), ("tsne", "--perplexity"),
    ("profiles", "--profiles"),  # `make profiles` links the repository's profiles/ folder
}


def schema_defaults(node: dict = SCHEMA, prefix: str = "") -> dict[str, object]:
    """Every leaf default of the schema by dotted key (gan.epochs, audit.dp.canaries)."""
    found = {}
    for name, spec in node.get("properties", {}).items():
        key = f"{prefix}{name}"
        if "properties" in spec:
            found |= schema_defaults(spec, f"{key}.")
        elif "default" in spec:
            found[key] = spec["default"]
    return found


def comparable(value: object) -> object:
    """Paths as the strings the config holds them as."""
    return str(value) if isinstance(value, Path) else value


def test_every_schema_default_is_in_code_or_read_by_the_workflow_only():
    defaults = schema_defaults()
    assert len(defaults) > 40  # the walk reached the nested sections
    assert set(defaults) == set(CODE) | WORKFLOW_ONLY
    assert not set(CODE) & WORKFLOW_ONLY


@pytest.mark.parametrize("key", sorted(CODE))
def test_schema_dataclasses_and_command_line_agree(key: str):
    expected = schema_defaults()[key]
    assert {place: comparable(value) for place, value in CODE[key]} == {place: expected for place, _ in CODE[key]}


@pytest.mark.parametrize("key", sorted(GRID))
def test_a_single_u_net_run_defaults_to_a_value_of_the_grid(key: str):
    place, value = GRID[key]
    assert value in schema_defaults()[key], place


def test_every_params_field_with_a_default_is_tabled():
    tabled = {place for places in [*CODE.values(), GRID.values()] for place, _ in places}
    for params in (GanParams, PeParams, UnetParams, ReleaseParams, Validation):
        for f in dataclasses.fields(params):
            if f.default is not dataclasses.MISSING:
                name = f"{params.__name__}.{f.name}"
                assert name in tabled or name in FIELDS_WITHOUT_KEY, name


def test_every_option_with_a_default_is_tabled():
    tabled = {place for places in CODE.values() for place, _ in places}
    for (command, flag), default in options().items():
        if default is not None and (command, flag) not in OPTIONS_WITHOUT_KEY and flag != "--threads":
            assert f"dpmra {command} {flag}" in tabled, (command, flag, default)


def test_every_params_field_is_the_option_of_its_name():
    """The command line builds a params class from the options named as its fields (`dpmra.cli.params_from`)."""
    commands = {GanParams: "train-gan", PeParams: "train-pe", UnetParams: "train-unet", ReleaseParams: "synth"}
    others = {"GanParams.width_g", "GanParams.width_d", "GanParams.sample_every"}  # --width; not an option
    found = options()
    for params, command in commands.items():
        for f in dataclasses.fields(params):
            flag = "--" + f.name.replace("_", "-")
            if f"{params.__name__}.{f.name}" not in others:
                assert (command, flag) in found, (command, flag)
                if f.default is not dataclasses.MISSING and f"{params.__name__}.{f.name}" not in FIELDS_WITHOUT_KEY:
                    assert found[(command, flag)] == f.default, (command, flag)
