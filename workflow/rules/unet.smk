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
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "dpmra train-unet {input} --lr {params.lr} --dropout {params.dropout} {params.augment} "
        "--batch-size {params.batch_size} --epochs {params.epochs} --base-width {params.base_width} "
        "--seed {params.seed} --threads {threads} --out {params.out_dir} > {log} 2>&1"


rule predict:
    input:
        model="results/unet/{source}/{setting}/model.pt",
        image="results/data/{patient}/image.nii.gz",
        brain_mask="results/data/{patient}/brain_mask.nii.gz",
        label="results/data/{patient}/label.nii.gz",
        info="results/data/{patient}/volume.json",
    output:
        probability="results/predictions/{source}/{setting}/{patient}/probability.nii.gz",
        segmentation="results/predictions/{source}/{setting}/{patient}/segmentation.nii.gz",
        native="results/predictions/{source}/{setting}/{patient}/segmentation_native.nii.gz",
        error_map="results/predictions/{source}/{setting}/{patient}/error_map.nii.gz",
    log:
        "results/logs/predict/{source}/{setting}/{patient}.log",
    benchmark:
        "results/benchmarks/predict/{source}/{setting}/{patient}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=1,
    params:
        size=PATCHES["size"],
        threshold=UNET["threshold"],
        out_dir=lambda wildcards, output: os.path.dirname(output.segmentation),
    shell:
        "dpmra predict --model {input.model} --image {input.image} --brain-mask {input.brain_mask} "
        "--label {input.label} --volume-info {input.info} --patch-size {params.size} "
        "--threshold {params.threshold} --threads {threads} --out {params.out_dir} > {log} 2>&1"
