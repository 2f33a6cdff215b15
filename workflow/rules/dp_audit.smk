from dpmra.plan import parse_sigma, sigma_label

DP_AUDIT = AUDIT["dp"]


def dp_audit_sigmas() -> list[str]:
    """Sigma labels of the audited GAN runs: `all` private ones (fresh loop), or those listed under audit.dp.runs."""
    private = [s for s in SIGMAS if s != "inf"]
    if DP_AUDIT["runs"] == "all":
        return private if GAN["mode"] == "fresh" else []
    listed = [sigma_label(parse_sigma(s)) for s in DP_AUDIT["runs"]]
    unknown = [s for s in listed if s not in private]
    if unknown:
        raise ValueError(
            f"audit.dp.runs: {', '.join(unknown)} not among the private GAN runs' sigmas ({', '.join(private)})"
        )
    return listed


def dp_audit_runs(pattern: str) -> list[str]:
    """`pattern` expanded over every audited (sigma, seed) GAN run."""
    return expand(pattern, sigma=dp_audit_sigmas(), seed=GAN["seeds"])


def dp_audit_targets() -> list[str]:
    """The DP audit's table and figure, where any run is audited."""
    if not dp_audit_sigmas():
        return []
    return [
        "results/tables/dp_audit.tsv",
        *expand("results/figures/dp_audit.{ext}", ext=("png", "pdf")),
    ]


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
