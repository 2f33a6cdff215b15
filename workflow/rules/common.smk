import os
import re

import pandas as pd
from snakemake.utils import validate

from dpmra.data.manifest import check_manifest, phantom_table, read_manifest
from dpmra.shared.environment import use_this_environment
from dpmra.privacy.plan import (
    epsilon_sigmas,
    gan_sigmas,
    parse_sigma,
    pe_placebo_sigmas,
    pe_sigmas,
    placebo_sigmas,
    sampling,
    sigma_label,
    unet_settings,
)

validate(config, schema="../schemas/config.schema.yaml", set_default=True)
# Every job runs `dpmra`: this Python's scripts folder (a venv's bin/) goes first on PATH, which local and SLURM
# jobs inherit, so `.venv/bin/snakemake` works without activating; with conda, each job's environment has its own.
use_this_environment(
    check="conda"
    not in {str(m) for m in workflow.deployment_settings.deployment_method}
)
# A run asking for the paper's FID stops here, before any job, when pytorch-fid or its weights are missing.
if config["quality"]["backbone"] == "inception-v3":
    from dpmra.features.backbones import require_backbone

    require_backbone(config["quality"]["backbone"], config["quality"]["weights"])


def public_cohorts(n_train: int) -> dict[str, dict | None]:
    """The phantom's public cohorts this config renders: the warm start's, and the placebo's stand-in (as many
    patients as the train split, so the placebo trains on as many pairs)."""
    data, gan = config["data"], config["gan"]
    phantom = data.get("phantom") or {}
    warm = data["source"] == "phantom" or gan["pretrain"]["set"] == "phantom"
    cohorts = {"public": phantom.get("public") if warm else None, "placebo": None}
    if gan["placebo"] or config["pe"]["placebo"]:
        if not phantom.get("placebo"):
            raise ValueError(
                "gan.placebo or pe.placebo asks for placebo runs but data.phantom.placebo is null: set it to a "
                "public site no split uses (e.g. {site: C}), or gan.placebo and pe.placebo to []"
            )
        cohorts["placebo"] = {"site": phantom["placebo"]["site"], "patients": n_train}
    return cohorts


def load_patients() -> pd.DataFrame:
    """The cohort: phantom patients from the config, or the validated manifest, plus the phantom's public cohorts.

    The public cohorts (synthetic, public by construction) feed the default warm start (gan.pretrain.set phantom)
    and the placebo runs (gan.placebo) whatever data.source is, so a manifest runs on the defaults.
    """
    data = config["data"]
    phantom = data.get("phantom") or {}
    if data["source"] == "phantom":
        n_train = phantom["splits"]["train"]["patients"]
        return phantom_table(
            phantom["splits"], phantom["seed"], **public_cohorts(n_train)
        )
    table = read_manifest(data["manifest"])
    validate(table, schema="../schemas/samples.schema.yaml")
    table = check_manifest(table, data["manifest"])
    public = phantom_table(
        {},
        phantom.get("seed", 0),
        **public_cohorts(int((table["split"] == "train").sum())),
    )
    if public.empty:
        return table
    clash = sorted(set(public.index) & set(table.index))
    if clash:
        raise ValueError(
            f"{data['manifest']}: patient id(s) {', '.join(clash)} are the phantom's public cohorts' "
            "(data.phantom.public, data.phantom.placebo); rename them, or set gan.pretrain.set: null and "
            "gan.placebo: []"
        )
    return pd.concat([table, public])


patients = load_patients()


def patients_in(*splits: str) -> list[str]:
    """Patient identifiers of the given splits, in table order."""
    return patients.index[patients["split"].isin(splits)].tolist()


PATCHES = config["patches"]
GAN = config["gan"]
PRIVACY = config["privacy"]
N_TRAIN = len(patients_in("train")) * PATCHES["per_patient"]
SAMPLING = sampling(GAN, PRIVACY, len(patients_in("train")), PATCHES["per_patient"])
EPSILON_SIGMAS = epsilon_sigmas(GAN, SAMPLING)
SIGMAS = gan_sigmas(GAN, EPSILON_SIGMAS)
SYNTH = config["synth"]
N_SYNTH = SYNTH["n"] or N_TRAIN
GAN_SOURCES = expand("sigma~{sigma}/seed~{seed}", sigma=SIGMAS, seed=GAN["seeds"])
# A placebo run: a private run's recipe, sigma, seed and number of pairs on the public stand-in cohort.
PLACEBO_SIGMAS = placebo_sigmas(GAN, EPSILON_SIGMAS)
PLACEBO_SOURCES = expand(
    "placebo~{sigma}/seed~{seed}", sigma=PLACEBO_SIGMAS, seed=GAN["seeds"]
)
# Private Evolution runs (pe.epsilons, every gan seed) and their placebos, at the GAN runs' delta.
PE = config["pe"]
PE_SIGMAS = pe_sigmas(PE, SAMPLING.delta)
PE_SOURCES = expand(
    "pe~{sigma}/seed~{seed}", sigma=PE_SIGMAS.values(), seed=GAN["seeds"]
)
PE_PLACEBO_SOURCES = expand(
    "pe-placebo~{sigma}/seed~{seed}",
    sigma=pe_placebo_sigmas(PE, PE_SIGMAS),
    seed=GAN["seeds"],
)
QUALITY = config["quality"]
AUDIT = config["audit"]
# Frechet distances to held-out patients use the test split (the paper's), else validation.
QUALITY_TEST_PATIENTS = patients_in("test") or patients_in("val")
UNET = config["unet"]
SETTINGS = unet_settings(UNET)
PRETRAIN = GAN["pretrain"]
if PRETRAIN["set"] == "phantom" and not patients_in("public"):
    raise ValueError(
        "gan.pretrain.set is phantom (the warm start on the phantom's public cohort) but data.phantom.public "
        "lists no patients: set data.phantom.public (e.g. {site: C, patients: 3}), or gan.pretrain.set to "
        "null (no warm start) or to a public training-set .npz"
    )
# The warm start's public training set: built from the public phantom cohort, or a file the config names.
PUBLIC_SET = (
    "results/patches/public_set.npz"
    if PRETRAIN["set"] == "phantom"
    else PRETRAIN["set"]
)
WARM_START = "results/gan/public/generator.pt" if PUBLIC_SET else None
# Job priorities: the longest remaining path first. Every GAN run waits for the warm start, every U-Net on synthetic
# data for a GAN run and its release; quality, tables and figures fill in around them (without them, on 2 cores,
# the default ran its last GAN after most U-Nets: benchmarks/README.md, "The default run end to end").
PRIORITY = {"warm_start": 10, "gan": 5, "synth": 4, "unet": 3, "predict": 2}


def public_first(wildcards) -> int:
    """Job priority: a public patient's jobs go first, as every GAN run waits for the warm start they feed."""
    return PRIORITY["warm_start"] if wildcards.patient in patients_in("public") else 0


# U-Net training sources: the real train patches, every released synthetic dataset, the placebos, and the warm
# start alone.
UNET_SOURCES = [
    "real",
    *GAN_SOURCES,
    *PLACEBO_SOURCES,
    *PE_SOURCES,
    *PE_PLACEBO_SOURCES,
    *(["public"] if WARM_START else []),
]
EVAL_SPLITS = [s for s in ("val", "test", "external") if patients_in(s)]
# A prepared patient as an input: `dpmra prepare` writes volume.json last, after the image, label and
# brain mask next to it, so it stands for all four. One file per patient instead of four keeps the
# paper-scale DAG (328 U-Nets x 90 volumes) quick to build.
PREPARED = "results/data/{patient}/volume.json"


wildcard_constraints:
    patient="|".join(patients.index),
    sigma=r"inf|[0-9]+(\.[0-9]+)?",
    seed=r"[0-9]+",
    kind=r"sigma|placebo|pe|pe-placebo",
    source=r"real|public|(sigma|placebo|pe|pe-placebo)~(inf|[0-9]+(\.[0-9]+)?)/seed~[0-9]+",
    setting=r"lr-[^/]+_dropout-[^/]+_augment-(on|off)",
    split="|".join(EVAL_SPLITS),


def from_phantom(patient: str) -> bool:
    """Whether a patient is rendered by the phantom: every one with data.source phantom, else the public cohorts."""
    return config["data"]["source"] == "phantom" or patients.loc[patient, "split"] in (
        "public",
        "placebo",
    )


def raw_volumes(wildcards) -> dict[str, str]:
    """A patient's input NIfTI files: the phantom's outputs or the manifest's paths (mask only if given)."""
    if from_phantom(wildcards.patient):
        return {
            name: f"results/phantom/{wildcards.patient}/{name}.nii.gz"
            for name in ("image", "label", "brain_mask")
        }
    row = patients.loc[wildcards.patient]
    files = {"image": row["image"], "label": row["label"]}
    if row["brain_mask"]:
        files["brain_mask"] = row["brain_mask"]
    return files


def brain_mask_argument(wildcards, input) -> str:
    """`--brain-mask FILE` where the patient has a mask; none lets dpmra derive one."""
    return f"--brain-mask {input.brain_mask}" if "brain_mask" in input.keys() else ""


def phantom_shape_argument(wildcards) -> str:
    """`--shape X Y Z` where the config overrides the sites' matrix size."""
    shape = config["data"]["phantom"]["shape"]
    return "--shape " + " ".join(map(str, shape)) if shape else ""


def gan_options(epochs: int, unit: str) -> str:
    """The `dpmra train-gan` options every GAN run shares: the config's gan section and the privacy unit."""
    options = (
        f"--epochs {epochs} --batch-size {GAN['batch_size']} --n-critic {GAN['n_critic']} --lr {GAN['lr']} "
        f"--optimizer {GAN['optimizer']} --beta1 {GAN['beta1']} --ema {GAN['ema']} --clipping {GAN['clipping']} "
        f"--clip-weight {GAN['clip_weight']} --max-grad-norm {GAN['max_grad_norm']} --width {GAN['width']} "
        f"--latent-dim {GAN['latent_dim']} --mode {GAN['mode']} --unit {unit} "
        f"--patient-batch {PRIVACY['patient_batch']} --patient-patches {PRIVACY['patient_patches']}"
    )
    if GAN["lr_generator"]:
        options += f" --lr-generator {GAN['lr_generator']}"
    if GAN["delta"]:  # a number or 1/N; none lets training use 1 / (10 N) rounded down
        options += f" --delta {GAN['delta']}"
    return options


def private_blocks_option() -> str:
    """`--private-blocks N` of the runs after the warm start (never the warm start's own, which trains every block
    and would otherwise rerun when the key changes)."""
    if not GAN["private_blocks"]:
        return ""
    if not WARM_START:
        raise ValueError(
            "gan.private_blocks keeps critic blocks at the warm start's public weights: set gan.pretrain.set, "
            "or gan.private_blocks: null"
        )
    return f"--private-blocks {GAN['private_blocks']}"


def gan_inputs(wildcards) -> dict[str, str]:
    """A GAN run's training set (the private one, or the public stand-in of a placebo run) and key, and the public
    run it warm-starts from where the config has one."""
    cohort = "placebo" if wildcards.get("kind") == "placebo" else "train"
    inputs = {
        "train_set": f"results/patches/{cohort}_set.npz",
        "secret": PRIVACY["secret"],
    }
    if WARM_START:
        inputs["warm_start"] = WARM_START
    return inputs


def pe_inputs(wildcards) -> dict[str, str]:
    """A PE run's training set (the private one, or the public stand-in of its placebo), the key, and the public
    warm-start generator its generator API proposes from."""
    cohort = "placebo" if wildcards.kind == "pe-placebo" else "train"
    inputs = {
        "train_set": f"results/patches/{cohort}_set.npz",
        "secret": PRIVACY["secret"],
    }
    if PE["api"] == "generator":
        if not WARM_START:
            raise ValueError(
                "pe.api generator proposes from the public warm start: set gan.pretrain.set, or pe.api: simulator"
            )
        inputs["generator"] = WARM_START
    return inputs


# The released runs' source prefixes: the DP-WGAN's sigma~ and Private Evolution's pe~ (placebos are never released).
RELEASED_KINDS = r"sigma|pe"


def released_runs(pattern: str) -> list[str]:
    """`pattern` ({kind}, {sigma}, {seed}) over every released run, the DP-WGAN's (sigma~) and PE's (pe~)."""
    runs = [("sigma", s) for s in SIGMAS] + [("pe", s) for s in PE_SIGMAS.values()]
    return [
        pattern.format(kind=kind, sigma=sigma, seed=seed)
        for kind, sigma in runs
        for seed in GAN["seeds"]
    ]


def gan_runs(pattern: str) -> list[str]:
    """`pattern` expanded over every (sigma, seed) GAN run."""
    return expand(pattern, sigma=SIGMAS, seed=GAN["seeds"])


def weights_option(wildcards, input) -> str:
    """`--weights FILE` where the job's input `weights` holds the local Inception-v3 weights (quality.weights)."""
    return f"--weights {input.weights}" if input.weights else ""


def validation_patches(wildcards) -> list[str]:
    """The validation patients' patch files, an input of the release only when it chooses the epoch by val_fd."""
    if SYNTH["checkpoint"] != "val_fd":
        return []
    return expand("results/patches/{patient}.npz", patient=patients_in("val"))


def selection_weights(wildcards) -> list[str]:
    """The local Inception-v3 weights (quality.weights), an input of the release only when it chooses the epoch by
    val_fd with them."""
    if SYNTH["checkpoint"] != "val_fd" or not QUALITY["weights"]:
        return []
    return [QUALITY["weights"]]


def selection_arguments(wildcards, input) -> str:
    """The validation patches and feature extractor when the release checkpoint is chosen by val_fd."""
    if SYNTH["checkpoint"] != "val_fd":
        return ""
    return (
        f"--validation {' '.join(input.validation)} --selection-samples {SYNTH['selection_samples']} "
        f"--backbone {QUALITY['backbone']} {weights_option(wildcards, input)}"
    )


def tsne_groups(wildcards, input) -> str:
    """`--group NAME FILE...` per source: the real train patches and every released dataset (DP-WGAN, then PE)."""
    groups = [("real", input.real)]
    # The same expansion as the rule's input, so names and files pair by construction.
    sources = released_runs("{kind}~{sigma}/seed~{seed}")
    groups += [
        (source, [path]) for source, path in zip(sources, input.synthetic, strict=True)
    ]
    return " ".join(f"--group {name} {' '.join(files)}" for name, files in groups)


def unet_training_data(wildcards) -> list[str]:
    """Patch files a U-Net trains on: the train split's real patches, or one released synthetic dataset."""
    if wildcards.source == "real":
        return expand("results/patches/{patient}.npz", patient=patients_in("train"))
    return [f"results/synth/{wildcards.source}/dataset.npz"]


def split_files(pattern: str):
    """An input function: `pattern` expanded over the patients of the job's split."""
    return lambda wildcards: expand(
        pattern, patient=patients_in(wildcards.split), allow_missing=True
    )


def figure_targets() -> list[str]:
    """The report's figures (PNG and PDF) and HTML tables, for the evaluation splits this config has."""
    names = [
        "fig2_samples",
        "fig6_fid",
        "fig8_ssim",
        "fig9_tsne",
        "gan_curves",
        "audit",
    ]
    tables = ["privacy", "quality", "audit", "summary"]
    if "test" in EVAL_SPLITS:
        names += ["fig3_test_utility", "fig4_error_maps", "fig7_segmentation"]
    if "external" in EVAL_SPLITS:
        names.append("fig5_external_utility")
    if "test" in EVAL_SPLITS or "external" in EVAL_SPLITS:
        names.append("privacy_utility")
        tables.append("table1")
    return [
        *expand("results/figures/{name}.{ext}", name=names, ext=("png", "pdf")),
        *expand("results/tables/{table}.html", table=tables),
    ]


def showcase_patient(wildcards=None) -> str:
    """The test patient shown in Fig. 4 and Fig. 7: the first of the test split."""
    return patients_in("test")[0]


def showcase_predictions(wildcards) -> list[str]:
    """The test split's prediction folders of every U-Net (the figure reads the selected ones' showcase patient)."""
    return expand(
        "results/predictions/{source}/{setting}/test",
        source=UNET_SOURCES,
        setting=SETTINGS,
    )


def all_targets() -> list[str]:
    """Everything the workflow builds so far."""
    return [
        "results/tables/table1.tsv",
        *figure_targets(),
        *gan_runs("results/gan/sigma~{sigma}/seed~{seed}/generator.pt"),
        *gan_runs("results/gan/sigma~{sigma}/seed~{seed}/epsilon.png"),
        *released_runs("results/synth/{kind}~{sigma}/seed~{seed}/privacy_card.json"),
        "results/tables/quality.tsv",
        "results/tables/audit.tsv",
        *dp_audit_targets(),
        "results/quality/tsne.tsv",
        "results/patches/train_set.npz",
        "results/patches/gallery.png",
        *expand("results/data/{patient}/mip.png", patient=patients.index),
        *expand("results/patches/{patient}.npz", patient=patients.index),
    ]


DP_AUDIT = AUDIT["dp"]


def dp_audit_sigmas() -> list[str]:
    """Sigma labels of the audited GAN runs: `all` private ones (fresh loop), the `strongest` claim (largest sigma,
    smallest epsilon), or those listed under audit.dp.runs."""
    private = [s for s in SIGMAS if s != "inf"]
    if DP_AUDIT["runs"] in ("all", "strongest"):
        if GAN["mode"] != "fresh" or not private:
            return []
        return private if DP_AUDIT["runs"] == "all" else [max(private, key=parse_sigma)]
    listed = [sigma_label(parse_sigma(s)) for s in DP_AUDIT["runs"]]
    unknown = [s for s in listed if s not in private]
    if unknown:
        raise ValueError(
            f"audit.dp.runs: {', '.join(unknown)} not among the private GAN runs' sigmas ({', '.join(private)})"
        )
    return listed


def dp_audit_runs(pattern: str) -> list[str]:
    """`pattern` expanded over every audited (sigma, seed) GAN run."""
    return expand(pattern, sigma=dp_audit_sigmas(), seed=GAN["seeds"])


def dp_audit_targets() -> list[str]:
    """The DP audit's table and figure, where any run is audited."""
    if not dp_audit_sigmas():
        return []
    return [
        "results/tables/dp_audit.tsv",
        *expand("results/figures/dp_audit.{ext}", ext=("png", "pdf")),
    ]


# Folder arguments. A command that takes a folder (--data results/data, --metrics results/metrics) reads files
# its job declares as inputs; the folder is read off those inputs, so each path is spelt once, in the input.
# A training source as components of a path: real, public, or {sigma,placebo,pe,pe-placebo}~S/seed~N ([/]: a slash).
SOURCE_IN_PATH = re.compile(
    r"[/](?:real|public|(?:sigma|placebo|pe|pe-placebo)~[^/]+/seed~[0-9]+)(?=/|$)"
)


def one_folder(folders: set[str], paths: list[str]) -> str:
    """The one folder that every path lies in, or an error naming them."""
    if len(folders) != 1 or "" in folders:
        raise ValueError(
            f"no single folder holds {', '.join(paths) or 'no file'}: {sorted(folders)}"
        )
    return folders.pop()


def folder_of(paths: list[str], levels: int) -> str:
    """The folder `levels` above every one of `paths`: 2 for results/data/{patient}/volume.json."""
    folders = set()
    for path in paths:
        for _ in range(levels):
            path = os.path.dirname(path)
        folders.add(path)
    return one_folder(folders, list(paths))


def source_folder(paths: list[str]) -> str:
    """The folder holding one subfolder per training source that every one of `paths` lies in:
    results/predictions for results/predictions/{source}/{setting}/{split}, results/gan for
    results/gan/{source}/epochs.tsv (a source is real, public, sigma~S/seed~N or placebo~S/seed~N).
    """
    folders = set()
    for path in paths:
        found = SOURCE_IN_PATH.search(path)
        folders.add(path[: found.start()] if found else "")
    return one_folder(folders, list(paths))
