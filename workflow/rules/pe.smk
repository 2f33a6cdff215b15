# Private Evolution (pe.*): noisy votes of the private units for a public API's candidates; the released
# population is sampled by the same synth rule as the GANs (source pe~{sigma}/seed~{seed}, placebo pe-placebo~...).


rule pe:
    input:
        unpack(pe_inputs),
    output:
        generator="results/gan/{kind}~{sigma}/seed~{seed}/generator.pt",
        epochs="results/gan/{kind}~{sigma}/seed~{seed}/epochs.tsv",
    log:
        "results/logs/pe/{kind}~{sigma}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/pe/{kind}~{sigma}/seed~{seed}.tsv"
    wildcard_constraints:
        kind=r"pe|pe-placebo",
    priority: PRIORITY["gan"]
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        options=(
            f"--api {PE['api']} --iterations {PE['iterations']} --candidates {PE['candidates']} "
            f"--threshold {PE['threshold']} --variation {PE['variation']} --widen {PE['widen']} "
            f"--unit {PRIVACY['unit']} --delta {SAMPLING.delta}"
        ),
        generator=lambda wildcards, input: (
            f"--generator {input.generator}" if "generator" in input.keys() else ""
        ),
        placebo=lambda wildcards: (
            "--placebo-run" if wildcards.kind == "pe-placebo" else ""
        ),
        out_dir=lambda wildcards, output: os.path.dirname(output.generator),
    shell:
        "dpmra train-pe --train-set {input.train_set} --secret {input.secret} {params.generator} "
        "--sigma {wildcards.sigma} --seed {wildcards.seed} {params.options} {params.placebo} "
        "--threads {threads} --out {params.out_dir} > {log} 2>&1"
