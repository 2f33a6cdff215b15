rule release_bundle:
    input:
        dataset="results/synth/{kind}~{sigma}/seed~{seed}/dataset.npz",
        images="results/synth/{kind}~{sigma}/seed~{seed}/images.nii.gz",
        labels="results/synth/{kind}~{sigma}/seed~{seed}/labels.nii.gz",
        gallery="results/synth/{kind}~{sigma}/seed~{seed}/gallery.png",
        card="results/synth/{kind}~{sigma}/seed~{seed}/privacy_card.json",
        quality="results/quality/{kind}~{sigma}/seed~{seed}/quality.json",
        summary="results/tables/summary.tsv",
        selection="results/tables/selection.tsv",
    output:
        dataset="results/release/{kind}~{sigma}/seed~{seed}/dataset.npz",
        images="results/release/{kind}~{sigma}/seed~{seed}/images.nii.gz",
        labels="results/release/{kind}~{sigma}/seed~{seed}/labels.nii.gz",
        gallery="results/release/{kind}~{sigma}/seed~{seed}/gallery.png",
        card="results/release/{kind}~{sigma}/seed~{seed}/privacy_card.json",
        quality="results/release/{kind}~{sigma}/seed~{seed}/quality.json",
        readme="results/release/{kind}~{sigma}/seed~{seed}/README.md",
        manifest="results/release/{kind}~{sigma}/seed~{seed}/MANIFEST.tsv",
        zip="results/release/{kind}~{sigma}/seed~{seed}.zip",
    log:
        "results/logs/release/{kind}~{sigma}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/release/{kind}~{sigma}/seed~{seed}.tsv"
    wildcard_constraints:
        kind=RELEASED_KINDS,
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
