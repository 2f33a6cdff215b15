rule audit:
    input:
        synthetic="results/synth/{kind}~{sigma}/seed~{seed}/dataset.npz",
        train=expand("results/patches/{patient}.npz", patient=patients_in("train")),
        holdout=expand(
            "results/patches/{patient}.npz", patient=patients_in("val", "test")
        ),
    output:
        summary="results/audit/{kind}~{sigma}/seed~{seed}/audit.json",
        dcr="results/audit/{kind}~{sigma}/seed~{seed}/dcr.tsv",
        near_copies="results/audit/{kind}~{sigma}/seed~{seed}/near_copies.tsv",
    log:
        "results/logs/audit/{kind}~{sigma}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/audit/{kind}~{sigma}/seed~{seed}.tsv"
    wildcard_constraints:
        kind=RELEASED_KINDS,
    conda:
        "../../envs/base.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        seed=AUDIT["seed"],
        bootstrap=AUDIT["bootstrap"],
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "dpmra audit --synthetic {input.synthetic} --train {input.train} --holdout {input.holdout} "
        "--seed {params.seed} --n-bootstrap {params.bootstrap} --out {params.out_dir} > {log} 2>&1"
