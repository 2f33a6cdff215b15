rule unet:
    input:
        unet_training_data,
    output:
        model="results/unet/{source}/{setting}/model.pt",
        training="results/unet/{source}/{setting}/training.tsv",
    log:
        "results/logs/unet/{source}/{setting}.log",
    benchmark:
        "results/benchmarks/unet/{source}/{setting}.tsv"
    priority: PRIORITY["unet"]
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=1,
    params:
        lr=lambda wildcards: SETTINGS[wildcards.setting]["lr"],
        dropout=lambda wildcards: SETTINGS[wildcards.setting]["dropout"],
        augment=lambda wildcards: (
            "--augment" if SETTINGS[wildcards.setting]["augment"] else ""
        ),
        batch_size=UNET["batch_size"],
        epochs=UNET["epochs"],
        base_width=UNET["base_width"],
        seed=UNET["seed"],
        loss=UNET["loss"],
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "dpmra train-unet {input} --lr {params.lr} --dropout {params.dropout} {params.augment} "
        "--batch-size {params.batch_size} --epochs {params.epochs} --base-width {params.base_width} "
        "--seed {params.seed} --loss {params.loss} --threads {threads} --out {params.out_dir} > {log} 2>&1"


# One prediction job per (source, setting, split): the model is loaded once for the split's patients, and
# the paper's DAG has 984 prediction jobs with one output each instead of 29,520 volumes x 4 files.
rule predict:
    input:
        model="results/unet/{source}/{setting}/model.pt",
        prepared=split_files(PREPARED),
    output:
        directory("results/predictions/{source}/{setting}/{split}"),
    log:
        "results/logs/predict/{source}/{setting}/{split}.log",
    benchmark:
        "results/benchmarks/predict/{source}/{setting}/{split}.tsv"
    priority: PRIORITY["predict"]
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=1,
    params:
        patients=lambda wildcards: patients_in(wildcards.split),
        size=PATCHES["size"],
        threshold=UNET["threshold"],
        overlap=UNET["overlap"],
        # the prepared patients' folder: their volumes beside each volume.json (as rule score reads it)
        data=lambda wildcards, input: folder_of(input.prepared, 2),
    shell:
        "dpmra predict --model {input.model} --data {params.data} --patients {params.patients} "
        "--patch-size {params.size} --threshold {params.threshold} --overlap {params.overlap} "
        "--threads {threads} --out {output} > {log} 2>&1"
