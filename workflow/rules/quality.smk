rule quality:
    input:
        synthetic="results/synth/{kind}~{sigma}/seed~{seed}/dataset.npz",
        train=expand("results/patches/{patient}.npz", patient=patients_in("train")),
        test=expand("results/patches/{patient}.npz", patient=QUALITY_TEST_PATIENTS),
        weights=QUALITY["weights"] or [],
    output:
        "results/quality/{kind}~{sigma}/seed~{seed}/quality.json",
    log:
        "results/logs/quality/{kind}~{sigma}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/quality/{kind}~{sigma}/seed~{seed}.tsv"
    wildcard_constraints:
        kind=RELEASED_KINDS,
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        backbone=QUALITY["backbone"],
        weights=weights_option,
        n=QUALITY["fd_samples"],
        ssim_images=QUALITY["ssim_images"],
        seed=QUALITY["seed"],
    shell:
        "dpmra quality --synthetic {input.synthetic} --train {input.train} --test {input.test} "
        "--backbone {params.backbone} {params.weights} --n {params.n} --ssim-images {params.ssim_images} "
        "--seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"


rule ssim_real:
    input:
        expand("results/patches/{patient}.npz", patient=patients_in("train")),
    output:
        "results/quality/real/ssim.json",
    log:
        "results/logs/quality/ssim_real.log",
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        ssim_images=QUALITY["ssim_images"],
        seed=QUALITY["seed"],
    shell:
        "dpmra ssim {input} --ssim-images {params.ssim_images} --seed {params.seed} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule tsne:
    input:
        real=expand("results/patches/{patient}.npz", patient=patients_in("train")),
        synthetic=released_runs("results/synth/{kind}~{sigma}/seed~{seed}/dataset.npz"),
        weights=QUALITY["weights"] or [],
    output:
        "results/quality/tsne.tsv",
    log:
        "results/logs/quality/tsne.log",
    benchmark:
        "results/benchmarks/quality/tsne.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        groups=tsne_groups,
        n=QUALITY["tsne_per_group"],
        backbone=QUALITY["backbone"],
        weights=weights_option,
        seed=QUALITY["seed"],
    shell:
        "dpmra tsne {params.groups} --n-per-group {params.n} --backbone {params.backbone} {params.weights} "
        "--seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"


rule quality_tables:
    input:
        quality=released_runs("results/quality/{kind}~{sigma}/seed~{seed}/quality.json"),
        audit=released_runs("results/audit/{kind}~{sigma}/seed~{seed}/audit.json"),
        cards=released_runs(
            "results/synth/{kind}~{sigma}/seed~{seed}/privacy_card.json"
        ),
        real_ssim="results/quality/real/ssim.json",
    output:
        quality="results/tables/quality.tsv",
        audit="results/tables/audit.tsv",
    log:
        "results/logs/quality/tables.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "(dpmra quality-table --quality {input.quality} --cards {input.cards} --real-ssim {input.real_ssim} "
        "--out {output.quality} && "
        "dpmra audit-table --audit {input.audit} --cards {input.cards} --out {output.audit}) > {log} 2>&1"
