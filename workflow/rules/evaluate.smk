rule score:
    input:
        predictions="results/predictions/{source}/{setting}/{split}",
        prepared=split_files(PREPARED),
    output:
        "results/metrics/{source}/{setting}/{split}.tsv",
    log:
        "results/logs/score/{source}/{setting}/{split}.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        patients=lambda wildcards: patients_in(wildcards.split),
    shell:
        "dpmra score --patients {params.patients} --data results/data "
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
    shell:
        "dpmra tables --metrics results/metrics --gan results/gan --sources {params.sources} "
        "--settings {params.settings} --splits {params.splits} --out results/tables > {log} 2>&1"
