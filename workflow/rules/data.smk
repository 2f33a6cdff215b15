rule phantom:
    output:
        image="results/phantom/{patient}/image.nii.gz",
        label="results/phantom/{patient}/label.nii.gz",
        brain_mask="results/phantom/{patient}/brain_mask.nii.gz",
        mip="results/phantom/{patient}/mip.png",
    log:
        "results/logs/phantom/{patient}.log",
    benchmark:
        "results/benchmarks/phantom/{patient}.tsv"
    priority: public_first
    # A patient's phantom, prepare and patches jobs are one group: on a cluster, profiles/slurm packs several
    # patients into one submission (group-components) instead of three short submissions each.
    group:
        "patient"
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        site=lambda wildcards: patients.loc[wildcards.patient, "site"],
        seed=lambda wildcards: int(patients.loc[wildcards.patient, "seed"]),
        shape=phantom_shape_argument,
        out_dir=lambda wildcards, output: os.path.dirname(output.image),
    shell:
        "dpmra phantom --site {params.site} --seed {params.seed} {params.shape} "
        "--out {params.out_dir} > {log} 2>&1"


rule prepare:
    input:
        unpack(raw_volumes),
    output:
        image="results/data/{patient}/image.nii.gz",
        label="results/data/{patient}/label.nii.gz",
        brain_mask="results/data/{patient}/brain_mask.nii.gz",
        info="results/data/{patient}/volume.json",
        mip=report(
            "results/data/{patient}/mip.png",
            caption="../report/mip.rst",
            category="Contains patient data",
            subcategory="Data: patients",
            labels={"patient": "{patient}"},
        ),
    log:
        "results/logs/prepare/{patient}.log",
    benchmark:
        "results/benchmarks/prepare/{patient}.tsv"
    priority: public_first
    group:
        "patient"
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        brain_mask=brain_mask_argument,
        per_patient=PATCHES["per_patient"],
        size=PATCHES["size"],
        out_dir=lambda wildcards, output: os.path.dirname(output.info),
    shell:
        "dpmra prepare --patient {wildcards.patient} --image {input.image} --label {input.label} "
        "{params.brain_mask} --patches-per-patient {params.per_patient} --patch-size {params.size} "
        "--out {params.out_dir} > {log} 2>&1"
