# The warm start needs the key too: made at once, so the longest path does not wait for it.
rule secret_key:
    output:
        protected(PRIVACY["secret"]),
    log:
        "results/logs/secret_key.log",
    priority: PRIORITY["warm_start"]
    conda:
        "../../envs/base.yaml"
    shell:
        "dpmra secret-key --out {output} > {log} 2>&1"


rule gan:
    input:
        unpack(gan_inputs),
    output:
        generator="results/gan/{kind}~{sigma}/seed~{seed}/generator.pt",
        epochs="results/gan/{kind}~{sigma}/seed~{seed}/epochs.tsv",
        loss=report(
            "results/gan/{kind}~{sigma}/seed~{seed}/loss.png",
            caption="../report/gan_loss.rst",
            category="Contains patient data",
            subcategory="GAN: training curves",
            labels={
                "run": "{kind}",
                "sigma": "{sigma}",
                "seed": "{seed}",
                "figure": "losses",
            },
        ),
        epsilon=report(
            "results/gan/{kind}~{sigma}/seed~{seed}/epsilon.png",
            caption="../report/gan_epsilon.rst",
            category="GAN",
            subcategory="Training curves",
            labels={
                "run": "{kind}",
                "sigma": "{sigma}",
                "seed": "{seed}",
                "figure": "epsilon",
            },
        ),
        samples=report(
            "results/gan/{kind}~{sigma}/seed~{seed}/samples.png",
            caption="../report/gan_samples.rst",
            category="GAN",
            subcategory="Samples",
            labels={"run": "{kind}", "sigma": "{sigma}", "seed": "{seed}"},
        ),
    log:
        "results/logs/gan/{kind}~{sigma}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/gan/{kind}~{sigma}/seed~{seed}.tsv"
    wildcard_constraints:
        kind=r"sigma|placebo",
    priority: PRIORITY["gan"]
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=2880,
        gpu=1,
    params:
        options=f"{gan_options(GAN['epochs'], PRIVACY['unit'])} {private_blocks_option()}".strip(),
        placebo=lambda wildcards: "--placebo-run" if wildcards.kind == "placebo" else "",
        warm_start=lambda wildcards, input: (
            f"--pretrained {input.warm_start}" if "warm_start" in input.keys() else ""
        ),
        out_dir=lambda wildcards, output: os.path.dirname(output.generator),
    shell:
        "dpmra train-gan --train-set {input.train_set} --secret {input.secret} {params.warm_start} "
        "--sigma {wildcards.sigma} --seed {wildcards.seed} {params.options} {params.placebo} "
        "--threads {threads} --out {params.out_dir} > {log} 2>&1"
