rule synth:
    input:
        generator="results/gan/{kind}~{sigma}/seed~{seed}/generator.pt",
        validation=validation_patches,
        weights=selection_weights,
    output:
        dataset="results/synth/{kind}~{sigma}/seed~{seed}/dataset.npz",
        images="results/synth/{kind}~{sigma}/seed~{seed}/images.nii.gz",
        labels="results/synth/{kind}~{sigma}/seed~{seed}/labels.nii.gz",
        card="results/synth/{kind}~{sigma}/seed~{seed}/privacy_card.json",
        gallery=report(
            "results/synth/{kind}~{sigma}/seed~{seed}/gallery.png",
            caption="../report/synth_gallery.rst",
            category="Synthetic data",
            subcategory="Released datasets",
            labels={"run": "{kind}", "sigma": "{sigma}", "seed": "{seed}"},
        ),
    log:
        "results/logs/synth/{kind}~{sigma}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/synth/{kind}~{sigma}/seed~{seed}.tsv"
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
        "dpmra synth --generator {input.generator} --name {wildcards.kind}~{wildcards.sigma}/seed~{wildcards.seed} "
        "--n {params.n} --label-threshold {params.label_threshold} --seed {params.seed} "
        "--checkpoint {params.checkpoint} {params.selection} "
        "--threads {threads} --out {params.out_dir} > {log} 2>&1"
