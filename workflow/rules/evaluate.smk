rule score:
    input:
        predictions="results/predictions/{source}/{setting}/{split}",
        prepared=split_files(PREPARED),
    output:
        "results/metrics/{source}/{setting}/{split}.tsv",
    log:
        "results/logs/score/{source}/{setting}/{split}.log",
    # One job per (source, setting, split), 984 at paper scale: on a cluster, profiles/slurm packs the jobs
    # of this group into a few submissions (group-components).
    group:
        "score"
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        patients=lambda wildcards: patients_in(wildcards.split),
        # the prepared patients' folder: labels and brain masks beside each volume.json
        data=lambda wildcards, input: folder_of(input.prepared, 2),
    shell:
        "dpmra score --patients {params.patients} --data {params.data} "
        "--predictions {input.predictions} "
        "--out {output} > {log} 2>&1"


rule tables:
    input:
        metrics=expand(
            "results/metrics/{source}/{setting}/{split}.tsv",
            source=UNET_SOURCES,
            setting=SETTINGS,
            split=EVAL_SPLITS,
        ),
        epochs=[f"results/gan/{s}/epochs.tsv" for s in UNET_SOURCES if s != "real"],
    output:
        selection="results/tables/selection.tsv",
        summary="results/tables/summary.tsv",
        table1=report(
            "results/tables/table1.tsv",
            caption="../report/table1.rst",
            category="Contains patient data",
            subcategory="Segmentation: tables",
        ),
        private_gain=report(
            "results/tables/private_gain.tsv",
            caption="../report/private_gain.rst",
            category="Contains patient data",
            subcategory="Segmentation: tables",
        ),
    log:
        "results/logs/tables.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        sources=UNET_SOURCES,
        settings=list(SETTINGS),
        splits=EVAL_SPLITS,
        metrics=lambda wildcards, input: source_folder(input.metrics),
        gan=lambda wildcards, input: source_folder(input.epochs),
        out_dir=lambda wildcards, output: folder_of(list(output), 1),
    shell:
        "dpmra tables --metrics {params.metrics} --gan {params.gan} --sources {params.sources} "
        "--settings {params.settings} --splits {params.splits} --out {params.out_dir} > {log} 2>&1"
