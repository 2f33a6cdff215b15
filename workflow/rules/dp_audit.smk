rule dp_audit:
    input:
        unpack(gan_inputs),
        generator="results/gan/sigma~{sigma}/seed~{seed}/generator.pt",
    output:
        summary="results/dp_audit/sigma~{sigma}/seed~{seed}/dp_audit.json",
        canaries="results/dp_audit/sigma~{sigma}/seed~{seed}/canaries.tsv",
    log:
        "results/logs/dp_audit/sigma~{sigma}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/dp_audit/sigma~{sigma}/seed~{seed}.tsv"
    priority: PRIORITY["gan"]
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=2880,
        gpu=1,
    params:
        canaries=DP_AUDIT["canaries"],
        warm_start=lambda wildcards, input: (
            f"--pretrained {input.warm_start}" if "warm_start" in input.keys() else ""
        ),
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "dpmra audit-dp run --generator {input.generator} --train-set {input.train_set} --secret {input.secret} "
        "{params.warm_start} --canaries {params.canaries} --threads {threads} --out {params.out_dir} > {log} 2>&1"


rule dp_audit_table:
    input:
        dp_audit_runs("results/dp_audit/sigma~{sigma}/seed~{seed}/dp_audit.json"),
    output:
        "results/tables/dp_audit.tsv",
    log:
        "results/logs/dp_audit/table.log",
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "dpmra audit-dp table {input} --out {output} > {log} 2>&1"


rule dp_audit_figure:
    input:
        "results/tables/dp_audit.tsv",
    output:
        png=report(
            "results/figures/dp_audit.png",
            caption="../report/fig_dp_audit.rst",
            category="Privacy",
            subcategory="Figures",
            labels={"figure": "DP audit: claimed against audited epsilon"},
        ),
        pdf="results/figures/dp_audit.pdf",
    log:
        "results/logs/dp_audit/figure.log",
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        canaries=DP_AUDIT["canaries"],
    shell:
        "dpmra audit-dp figure --table {input} --out {output} > {log} 2>&1"
