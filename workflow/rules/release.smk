rule release_bundle:
    input:
        dataset="results/synth/sigma~{sigma}/seed~{seed}/dataset.npz",
        images="results/synth/sigma~{sigma}/seed~{seed}/images.nii.gz",
        labels="results/synth/sigma~{sigma}/seed~{seed}/labels.nii.gz",
        gallery="results/synth/sigma~{sigma}/seed~{seed}/gallery.png",
        card="results/synth/sigma~{sigma}/seed~{seed}/privacy_card.json",
        quality="results/quality/sigma~{sigma}/seed~{seed}/quality.json",
        summary="results/tables/summary.tsv",
        selection="results/tables/selection.tsv",
    output:
        dataset="results/release/sigma~{sigma}/seed~{seed}/dataset.npz",
        images="results/release/sigma~{sigma}/seed~{seed}/images.nii.gz",
        labels="results/release/sigma~{sigma}/seed~{seed}/labels.nii.gz",
        gallery="results/release/sigma~{sigma}/seed~{seed}/gallery.png",
        card="results/release/sigma~{sigma}/seed~{seed}/privacy_card.json",
        quality="results/release/sigma~{sigma}/seed~{seed}/quality.json",
        readme="results/release/sigma~{sigma}/seed~{seed}/README.md",
        manifest="results/release/sigma~{sigma}/seed~{seed}/MANIFEST.tsv",
        zip="results/release/sigma~{sigma}/seed~{seed}.zip",
    log:
        "results/logs/release/sigma~{sigma}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/release/sigma~{sigma}/seed~{seed}.tsv"
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        synth_dir=lambda wildcards, input: os.path.dirname(input.card),
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
    shell:
        "dpmra release --synth {params.synth_dir} --quality {input.quality} --summary {input.summary} "
        "--selection {input.selection} --out {params.out_dir} --zip {output.zip} > {log} 2>&1"
