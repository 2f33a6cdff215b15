rule privacy_table:
    input:
        gan_runs("results/synth/sigma~{sigma}/seed~{seed}/privacy_card.json"),
    output:
        tsv="results/tables/privacy.tsv",
        html=report(
            "results/tables/privacy.html",
            caption="../report/table_privacy.rst",
            category="Privacy",
            subcategory="Tables",
            labels={"table": "privacy accounting per GAN run"},
        ),
    log:
        "results/logs/figures/privacy_table.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        mode=GAN["mode"],
    shell:
        "dpmra privacy-table {input} --out {output.tsv} --html {output.html} > {log} 2>&1"


rule fig2_samples:
    input:
        train_set="results/patches/train_set.npz",
        datasets=gan_runs("results/synth/sigma~{sigma}/seed~{seed}/dataset.npz"),
        privacy="results/tables/privacy.tsv",
    output:
        png=report(
            "results/figures/fig2_samples.png",
            caption="../report/fig2_samples.rst",
            category="Contains patient data",
            subcategory="Synthetic data: figures",
            labels={"figure": "Fig. 2: generated pairs per epsilon"},
        ),
        pdf="results/figures/fig2_samples.pdf",
    log:
        "results/logs/figures/fig2_samples.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        label_threshold=SYNTH["label_threshold"],
    shell:
        "dpmra figure samples --train-set {input.train_set} --synth results/synth "
        "--privacy {input.privacy} --out {output} > {log} 2>&1"


rule fig3_test_utility:
    input:
        summary="results/tables/summary.tsv",
        selection="results/tables/selection.tsv",
        privacy="results/tables/privacy.tsv",
    output:
        png=report(
            "results/figures/fig3_test_utility.png",
            caption="../report/fig3_test_utility.rst",
            category="Contains patient data",
            subcategory="Segmentation: figures",
            labels={"figure": "Fig. 3: test DSC and bAHD against epsilon"},
        ),
        pdf="results/figures/fig3_test_utility.pdf",
    log:
        "results/logs/figures/fig3_test_utility.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seeds=GAN["seeds"],
        settings=len(SETTINGS),
        patients=len(patients_in("test")),
    shell:
        "dpmra figure utility --summary {input.summary} --selection {input.selection} "
        "--privacy {input.privacy} --split test --out {output} > {log} 2>&1"


rule fig4_error_maps:
    input:
        selection="results/tables/selection.tsv",
        privacy="results/tables/privacy.tsv",
        image=lambda wildcards: f"results/data/{showcase_patient()}/image.nii.gz",
        predictions=showcase_predictions,
    output:
        png=report(
            "results/figures/fig4_error_maps.png",
            caption="../report/fig4_error_maps.rst",
            category="Contains patient data",
            subcategory="Segmentation: figures",
            labels={"figure": "Fig. 4: error maps of one test patient"},
        ),
        pdf="results/figures/fig4_error_maps.pdf",
    log:
        "results/logs/figures/fig4_error_maps.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        patient=showcase_patient,
        threshold=UNET["threshold"],
    shell:
        "dpmra figure error-maps --selection {input.selection} --privacy {input.privacy} "
        "--predictions results/predictions --data results/data --patient {params.patient} "
        "--out {output} > {log} 2>&1"


rule fig5_external_utility:
    input:
        summary="results/tables/summary.tsv",
        selection="results/tables/selection.tsv",
        privacy="results/tables/privacy.tsv",
    output:
        png=report(
            "results/figures/fig5_external_utility.png",
            caption="../report/fig5_external_utility.rst",
            category="Contains patient data",
            subcategory="Segmentation: figures",
            labels={"figure": "Fig. 5: external DSC and bAHD against epsilon"},
        ),
        pdf="results/figures/fig5_external_utility.pdf",
    log:
        "results/logs/figures/fig5_external_utility.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seeds=GAN["seeds"],
        patients=len(patients_in("external")),
    shell:
        "dpmra figure utility --summary {input.summary} --selection {input.selection} "
        "--privacy {input.privacy} --split external --out {output} > {log} 2>&1"


rule fig6_fid:
    input:
        quality="results/tables/quality.tsv",
        privacy="results/tables/privacy.tsv",
    output:
        png=report(
            "results/figures/fig6_fid.png",
            caption="../report/fig6_fid.rst",
            category="Contains patient data",
            subcategory="Synthetic data: figures",
            labels={"figure": "Fig. 6: Fréchet distance to train and test"},
        ),
        pdf="results/figures/fig6_fid.pdf",
    log:
        "results/logs/figures/fig6_fid.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        backbone=QUALITY["backbone"],
        fd_samples=QUALITY["fd_samples"],
    shell:
        "dpmra figure fid --quality {input.quality} --privacy {input.privacy} --out {output} > {log} 2>&1"


rule fig7_segmentation:
    input:
        selection="results/tables/selection.tsv",
        privacy="results/tables/privacy.tsv",
        image=lambda wildcards: f"results/data/{showcase_patient()}/image.nii.gz",
        label=lambda wildcards: f"results/data/{showcase_patient()}/label.nii.gz",
        predictions=showcase_predictions,
        metrics=expand(
            "results/metrics/{source}/{setting}/test.tsv",
            source=UNET_SOURCES,
            setting=SETTINGS,
        ),
    output:
        png=report(
            "results/figures/fig7_segmentation.png",
            caption="../report/fig7_segmentation.rst",
            category="Contains patient data",
            subcategory="Segmentation: figures",
            labels={"figure": "Fig. 7: segmentation against ground truth"},
        ),
        pdf="results/figures/fig7_segmentation.pdf",
    log:
        "results/logs/figures/fig7_segmentation.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        patient=showcase_patient,
        threshold=UNET["threshold"],
    shell:
        "dpmra figure segmentation --selection {input.selection} --privacy {input.privacy} "
        "--predictions results/predictions --data results/data --metrics results/metrics "
        "--patient {params.patient} --out {output} > {log} 2>&1"


rule fig8_ssim:
    input:
        quality="results/tables/quality.tsv",
        privacy="results/tables/privacy.tsv",
    output:
        png=report(
            "results/figures/fig8_ssim.png",
            caption="../report/fig8_ssim.rst",
            category="Contains patient data",
            subcategory="Synthetic data: figures",
            labels={"figure": "Fig. 8: SSIM diversity against epsilon"},
        ),
        pdf="results/figures/fig8_ssim.pdf",
    log:
        "results/logs/figures/fig8_ssim.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        ssim_images=QUALITY["ssim_images"],
    shell:
        "dpmra figure ssim --quality {input.quality} --privacy {input.privacy} --out {output} > {log} 2>&1"


rule fig9_tsne:
    input:
        tsne="results/quality/tsne.tsv",
        privacy="results/tables/privacy.tsv",
    output:
        png=report(
            "results/figures/fig9_tsne.png",
            caption="../report/fig9_tsne.rst",
            category="Contains patient data",
            subcategory="Synthetic data: figures",
            labels={"figure": "Fig. 9: t-SNE embedding"},
        ),
        pdf="results/figures/fig9_tsne.pdf",
    log:
        "results/logs/figures/fig9_tsne.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        per_group=QUALITY["tsne_per_group"],
        backbone=QUALITY["backbone"],
    shell:
        "dpmra figure tsne --tsne {input.tsne} --privacy {input.privacy} --out {output} > {log} 2>&1"


rule privacy_utility_figure:
    input:
        summary="results/tables/summary.tsv",
        selection="results/tables/selection.tsv",
        privacy="results/tables/privacy.tsv",
    output:
        png=report(
            "results/figures/privacy_utility.png",
            caption="../report/fig_privacy_utility.rst",
            category="Privacy",
            subcategory="Figures",
            labels={"figure": "utility against epsilon under each accountant"},
        ),
        pdf="results/figures/privacy_utility.pdf",
    log:
        "results/logs/figures/privacy_utility.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        mode=GAN["mode"],
    shell:
        "dpmra figure accounting --summary {input.summary} --selection {input.selection} "
        "--privacy {input.privacy} --out {output} > {log} 2>&1"


rule audit_figure:
    input:
        audit="results/tables/audit.tsv",
        privacy="results/tables/privacy.tsv",
    output:
        png=report(
            "results/figures/audit.png",
            caption="../report/fig_audit.rst",
            category="Contains patient data",
            subcategory="Privacy: figures",
            labels={"figure": "memorisation check against epsilon"},
        ),
        pdf="results/figures/audit.pdf",
    log:
        "results/logs/figures/audit.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "dpmra figure audit --audit {input.audit} --privacy {input.privacy} --out {output} > {log} 2>&1"


rule gan_curves_figure:
    input:
        gan_runs("results/gan/sigma~{sigma}/seed~{seed}/epochs.tsv"),
    output:
        png=report(
            "results/figures/gan_curves.png",
            caption="../report/fig_gan_curves.rst",
            category="Contains patient data",
            subcategory="GAN: all runs",
            labels={"figure": "training curves of every run"},
        ),
        pdf="results/figures/gan_curves.pdf",
    log:
        "results/logs/figures/gan_curves.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        epochs=GAN["epochs"],
        n_critic=GAN["n_critic"],
        mode=GAN["mode"],
    shell:
        "dpmra figure gan-curves --epochs {input} --out {output} > {log} 2>&1"


rule table1_html:
    input:
        table1="results/tables/table1.tsv",
        selection="results/tables/selection.tsv",
    output:
        report(
            "results/tables/table1.html",
            caption="../report/table1_html.rst",
            category="Contains patient data",
            subcategory="Segmentation: tables",
        ),
    log:
        "results/logs/figures/table1_html.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        settings=len(SETTINGS),
    shell:
        "dpmra table-html table1 --table1 {input.table1} --selection {input.selection} "
        "--out {output} > {log} 2>&1"


rule summary_html:
    input:
        summary="results/tables/summary.tsv",
        selection="results/tables/selection.tsv",
    output:
        report(
            "results/tables/summary.html",
            caption="../report/table_summary.rst",
            category="Contains patient data",
            subcategory="Segmentation: tables",
        ),
    log:
        "results/logs/figures/summary_html.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        settings=list(SETTINGS),
        splits=EVAL_SPLITS,
    shell:
        "dpmra table-html summary --summary {input.summary} --selection {input.selection} "
        "--out {output} > {log} 2>&1"


rule quality_html:
    input:
        "results/tables/quality.tsv",
    output:
        report(
            "results/tables/quality.html",
            caption="../report/table_quality.rst",
            category="Contains patient data",
            subcategory="Synthetic data: tables",
            labels={"table": "quality per synthetic dataset"},
        ),
    log:
        "results/logs/figures/quality_html.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        backbone=QUALITY["backbone"],
        fd_samples=QUALITY["fd_samples"],
        ssim_images=QUALITY["ssim_images"],
    shell:
        "dpmra table-html quality --quality {input} --out {output} > {log} 2>&1"


rule audit_html:
    input:
        "results/tables/audit.tsv",
    output:
        report(
            "results/tables/audit.html",
            caption="../report/table_audit.rst",
            category="Contains patient data",
            subcategory="Privacy: tables",
            labels={"table": "memorisation check per synthetic dataset"},
        ),
    log:
        "results/logs/figures/audit_html.log",
    conda:
        "../../envs/base.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "dpmra table-html audit --audit {input} --out {output} > {log} 2>&1"
