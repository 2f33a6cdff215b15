from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/patches.smk"
include: "workflow/rules/gan.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/pe.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/release.smk"
include: "workflow/rules/quality.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/dp_audit.smk"
include: "workflow/rules/unet.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"


# Cheap aggregates run inside the Snakemake process, never as cluster jobs (on SLURM: on the login node, at most
# --local-cores at once): the secret key, the tables, the DP audit's table and figure, the release bundles.
# Every figure and HTML table of figures.smk is local too (`localrule: True` there).
localrules:
    all,
    release,
    secret_key,
    privacy_table,
    tables,
    quality_tables,
    dp_audit_table,
    dp_audit_figure,
    release_bundle,


rule all:
    default_target: True
    input:
        all_targets(),


# Not a default target: `snakemake --profile profiles/local release` after the main run writes every GAN run's
# shareable bundle (results/release/sigma~{sigma}/seed~{seed}/ and its .zip).
rule release:
    input:
        released_runs("results/release/{kind}~{sigma}/seed~{seed}.zip"),
