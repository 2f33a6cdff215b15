# The warm start (gan.pretrain): a non-private WGAN on a training set declared public, whose weights start every
# GAN run; released alone as the source "public" so that pretraining is never mistaken for private learning.


rule public_set:
    input:
        expand("results/patches/{patient}.npz", patient=patients_in("public")),
    output:
        train_set="results/patches/public_set.npz",
        gallery=report(
            "results/patches/public_gallery.png",
            caption="../report/public_gallery.rst",
            category="GAN",
            subcategory="Public warm start",
        ),
    log:
        "results/logs/public_set.log",
    priority: PRIORITY["warm_start"]
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=8000,
        runtime=15,
    params:
        intensity=GAN["intensity"],
    shell:
        "dpmra training-set {input} --intensity {params.intensity} --out {output.train_set} "
        "--gallery {output.gallery} > {log} 2>&1"


rule gan_pretrain:
    input:
        train_set=PUBLIC_SET or [],
        secret=PRIVACY["secret"],
    output:
        generator="results/gan/public/generator.pt",
        epochs="results/gan/public/epochs.tsv",
        samples=report(
            "results/gan/public/samples.png",
            caption="../report/gan_public_samples.rst",
            category="GAN",
            subcategory="Public warm start",
        ),
    log:
        "results/logs/gan/public.log",
    benchmark:
        "results/benchmarks/gan/public.tsv"
    priority: PRIORITY["warm_start"]
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=2880,
        gpu=1,
    params:
        options=gan_options(PRETRAIN["epochs"], "patch"),
        out_dir=lambda wildcards, output: os.path.dirname(output.generator),
    shell:
        "dpmra train-gan --train-set {input.train_set} --secret {input.secret} --public --sigma inf --seed 0 "
        "{params.options} --threads {threads} --out {params.out_dir} > {log} 2>&1"


rule synth_public:
    input:
        generator="results/gan/public/generator.pt",
    output:
        dataset="results/synth/public/dataset.npz",
        images="results/synth/public/images.nii.gz",
        labels="results/synth/public/labels.nii.gz",
        card="results/synth/public/privacy_card.json",
        gallery="results/synth/public/gallery.png",
    log:
        "results/logs/synth/public.log",
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
        out_dir=lambda wildcards, output: os.path.dirname(output.dataset),
    shell:
        "dpmra synth --generator {input.generator} --name public --n {params.n} "
        "--label-threshold {params.label_threshold} --seed {params.seed} --checkpoint last "
        "--threads {threads} --out {params.out_dir} > {log} 2>&1"
