rule synth:
    input:
        generator="results/gan/sigma~{sigma}/seed~{seed}/generator.pt",
        validation=validation_patches,
        weights=selection_weights,
    output:
        dataset="results/synth/sigma~{sigma}/seed~{seed}/dataset.npz",
        images="results/synth/sigma~{sigma}/seed~{seed}/images.nii.gz",
        labels="results/synth/sigma~{sigma}/seed~{seed}/labels.nii.gz",
        card="results/synth/sigma~{sigma}/seed~{seed}/privacy_card.json",
        gallery=report(
            "results/synth/sigma~{sigma}/seed~{seed}/gallery.png",
            caption="../report/synth_gallery.rst",
            category="Synthetic data",
            subcategory="Released datasets",
            labels={"sigma": "{sigma}", "seed": "{seed}"},
        ),
    log:
        "results/logs/synth/sigma~{sigma}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/synth/sigma~{sigma}/seed~{seed}.tsv"
    priority: PRIORITY["synth"]
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        n=N_SYNTH,
        label_threshold=SYNTH["label_threshold"],
        seed=SYNTH["seed"],
        checkpoint=SYNTH["checkpoint"],
        selection=selection_arguments,
        out_dir=lambda wildcards, output: os.path.dirname(output.dataset),
    shell:
        "dpmra synth --generator {input.generator} --name sigma~{wildcards.sigma}/seed~{wildcards.seed} "
        "--n {params.n} --label-threshold {params.label_threshold} --seed {params.seed} "
        "--checkpoint {params.checkpoint} {params.selection} "
        "--threads {threads} --out {params.out_dir} > {log} 2>&1"
