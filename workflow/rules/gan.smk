rule secret_key:
    output:
        protected(PRIVACY["secret"]),
    log:
        "results/logs/secret_key.log",
    conda:
        "../../envs/base.yaml"
    shell:
        "dpmra secret-key --out {output} > {log} 2>&1"


rule gan:
    input:
        train_set="results/patches/train_set.npz",
        secret=PRIVACY["secret"],
    output:
        generator="results/gan/sigma~{sigma}/seed~{seed}/generator.pt",
        epochs="results/gan/sigma~{sigma}/seed~{seed}/epochs.tsv",
        loss=report(
            "results/gan/sigma~{sigma}/seed~{seed}/loss.png",
            caption="../report/gan_loss.rst",
            category="Contains patient data",
            subcategory="GAN: training curves",
            labels={"sigma": "{sigma}", "seed": "{seed}", "figure": "losses"},
        ),
        epsilon=report(
            "results/gan/sigma~{sigma}/seed~{seed}/epsilon.png",
            caption="../report/gan_epsilon.rst",
            category="GAN",
            subcategory="Training curves",
            labels={"sigma": "{sigma}", "seed": "{seed}", "figure": "epsilon"},
        ),
        samples=report(
            "results/gan/sigma~{sigma}/seed~{seed}/samples.png",
            caption="../report/gan_samples.rst",
            category="GAN",
            subcategory="Samples",
            labels={"sigma": "{sigma}", "seed": "{seed}"},
        ),
    log:
        "results/logs/gan/sigma~{sigma}/seed~{seed}.log",
    benchmark:
        "results/benchmarks/gan/sigma~{sigma}/seed~{seed}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=2880,
        gpu=1,
    params:
        epochs=GAN["epochs"],
        batch_size=GAN["batch_size"],
        n_critic=GAN["n_critic"],
        lr=GAN["lr"],
        clip_weight=GAN["clip_weight"],
        max_grad_norm=GAN["max_grad_norm"],
        width=GAN["width"],
        latent_dim=GAN["latent_dim"],
        mode=GAN["mode"],
        delta=delta_argument,
        unit=PRIVACY["unit"],
        patient_batch=PRIVACY["patient_batch"],
        patient_patches=PRIVACY["patient_patches"],
        out_dir=lambda wildcards, output: os.path.dirname(output.generator),
    shell:
        "dpmra train-gan --train-set {input.train_set} --secret {input.secret} --sigma {wildcards.sigma} --seed {wildcards.seed} "
        "--epochs {params.epochs} --batch-size {params.batch_size} --n-critic {params.n_critic} "
        "--lr {params.lr} --clip-weight {params.clip_weight} --max-grad-norm {params.max_grad_norm} "
        "--width {params.width} --latent-dim {params.latent_dim} --mode {params.mode} {params.delta} "
        "--unit {params.unit} --patient-batch {params.patient_batch} --patient-patches {params.patient_patches} "
        "--threads {threads} --out {params.out_dir} > {log} 2>&1"
