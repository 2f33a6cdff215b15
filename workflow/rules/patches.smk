rule patches:
    input:
        image="results/data/{patient}/image.nii.gz",
        label="results/data/{patient}/label.nii.gz",
        brain_mask="results/data/{patient}/brain_mask.nii.gz",
    output:
        "results/patches/{patient}.npz",
    log:
        "results/logs/patches/{patient}.log",
    benchmark:
        "results/benchmarks/patches/{patient}.tsv"
    priority: public_first
    group:
        "patient"
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        per_patient=PATCHES["per_patient"],
        size=PATCHES["size"],
        seed=PATCHES["seed"],
    shell:
        "dpmra patches --patient {wildcards.patient} --image {input.image} --label {input.label} "
        "--brain-mask {input.brain_mask} --patches-per-patient {params.per_patient} "
        "--patch-size {params.size} --seed {params.seed} --out {output} > {log} 2>&1"


rule training_set:
    input:
        expand("results/patches/{patient}.npz", patient=patients_in("train")),
    output:
        train_set="results/patches/train_set.npz",
        gallery=report(
            "results/patches/gallery.png",
            caption="../report/gallery.rst",
            category="Contains patient data",
            subcategory="Data: patches",
        ),
    log:
        "results/logs/training_set.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=8000,
        runtime=15,
    params:
        size=PATCHES["size"],
        per_patient=PATCHES["per_patient"],
        intensity=GAN["intensity"],
    shell:
        "dpmra training-set {input} --intensity {params.intensity} --out {output.train_set} "
        "--gallery {output.gallery} > {log} 2>&1"


# The placebo's training set (gan.placebo): the public stand-in cohort's patches, as many pairs as train_set.npz.
rule placebo_set:
    input:
        expand("results/patches/{patient}.npz", patient=patients_in("placebo")),
    output:
        train_set="results/patches/placebo_set.npz",
        gallery="results/patches/placebo_gallery.png",
    log:
        "results/logs/placebo_set.log",
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
