# The report's figures and HTML tables. They differ only in what they read, so each is an entry of FIGURES or
# HTML_TABLES below, and one rule, named by its key, is made from each entry: `dpmra figure COMMAND --out PNG PDF`
# or `dpmra table-html COMMAND --out HTML`. An entry's png/html is its report item (caption, category), input
# every file the command reads, command its arguments as a function of those inputs (folder arguments such as
# --synth, --predictions, --data, --metrics read off them: source_folder, folder_of in common.smk), params the
# settings its result depends on beyond them (a change reruns it). The shell line is the same for every rule: a
# shell: expression is evaluated again when the job runs, when a loop variable holds the last entry. All are
# cheap and run in the Snakemake process (localrule).


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


# rule name: png (the report item; the PDF lies beside it), input, params (optional), command, memory (MB).
FIGURES = {
    "fig2_samples": dict(
        png=report(
            "results/figures/fig2_samples.png",
            caption="../report/fig2_samples.rst",
            category="Contains patient data",
            subcategory="Synthetic data: figures",
            labels={"figure": "Fig. 2: generated pairs per epsilon"},
        ),
        input=dict(
            train_set="results/patches/train_set.npz",
            datasets=gan_runs("results/synth/sigma~{sigma}/seed~{seed}/dataset.npz"),
            privacy="results/tables/privacy.tsv",
        ),
        params=dict(label_threshold=SYNTH["label_threshold"]),
        command=lambda wildcards, input: (
            f"samples --train-set {input.train_set} --synth {source_folder(input.datasets)} "
            f"--privacy {input.privacy}"
        ),
        mem_mb=4000,
    ),
    "fig3_test_utility": dict(
        png=report(
            "results/figures/fig3_test_utility.png",
            caption="../report/fig3_test_utility.rst",
            category="Contains patient data",
            subcategory="Segmentation: figures",
            labels={"figure": "Fig. 3: test DSC and bAHD against epsilon"},
        ),
        input=dict(
            summary="results/tables/summary.tsv",
            selection="results/tables/selection.tsv",
            privacy="results/tables/privacy.tsv",
        ),
        params=dict(
            seeds=GAN["seeds"],
            settings=len(SETTINGS),
            patients=len(patients_in("test")),
        ),
        command=lambda wildcards, input: (
            f"utility --summary {input.summary} --selection {input.selection} "
            f"--privacy {input.privacy} --split test"
        ),
        mem_mb=2000,
    ),
    "fig4_error_maps": dict(
        png=report(
            "results/figures/fig4_error_maps.png",
            caption="../report/fig4_error_maps.rst",
            category="Contains patient data",
            subcategory="Segmentation: figures",
            labels={"figure": "Fig. 4: error maps of one test patient"},
        ),
        input=dict(
            selection="results/tables/selection.tsv",
            privacy="results/tables/privacy.tsv",
            image=lambda wildcards: f"results/data/{showcase_patient()}/image.nii.gz",
            predictions=showcase_predictions,
        ),
        params=dict(threshold=UNET["threshold"]),
        command=lambda wildcards, input: (
            f"error-maps --selection {input.selection} --privacy {input.privacy} "
            f"--predictions {source_folder(input.predictions)} --data {folder_of([input.image], 2)} "
            f"--patient {showcase_patient()}"
        ),
        mem_mb=4000,
    ),
    "fig5_external_utility": dict(
        png=report(
            "results/figures/fig5_external_utility.png",
            caption="../report/fig5_external_utility.rst",
            category="Contains patient data",
            subcategory="Segmentation: figures",
            labels={"figure": "Fig. 5: external DSC and bAHD against epsilon"},
        ),
        input=dict(
            summary="results/tables/summary.tsv",
            selection="results/tables/selection.tsv",
            privacy="results/tables/privacy.tsv",
        ),
        params=dict(seeds=GAN["seeds"], patients=len(patients_in("external"))),
        command=lambda wildcards, input: (
            f"utility --summary {input.summary} --selection {input.selection} "
            f"--privacy {input.privacy} --split external"
        ),
        mem_mb=2000,
    ),
    "fig6_fid": dict(
        png=report(
            "results/figures/fig6_fid.png",
            caption="../report/fig6_fid.rst",
            category="Contains patient data",
            subcategory="Synthetic data: figures",
            labels={"figure": "Fig. 6: Fréchet distance to train and test"},
        ),
        input=dict(
            quality="results/tables/quality.tsv", privacy="results/tables/privacy.tsv"
        ),
        params=dict(backbone=QUALITY["backbone"], fd_samples=QUALITY["fd_samples"]),
        command=lambda wildcards, input: f"fid --quality {input.quality} --privacy {input.privacy}",
        mem_mb=2000,
    ),
    "fig7_segmentation": dict(
        png=report(
            "results/figures/fig7_segmentation.png",
            caption="../report/fig7_segmentation.rst",
            category="Contains patient data",
            subcategory="Segmentation: figures",
            labels={"figure": "Fig. 7: segmentation against ground truth"},
        ),
        input=dict(
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
        ),
        params=dict(threshold=UNET["threshold"]),
        command=lambda wildcards, input: (
            f"segmentation --selection {input.selection} --privacy {input.privacy} "
            f"--predictions {source_folder(input.predictions)} "
            f"--data {folder_of([input.image, input.label], 2)} --metrics {source_folder(input.metrics)} "
            f"--patient {showcase_patient()}"
        ),
        mem_mb=4000,
    ),
    "fig8_ssim": dict(
        png=report(
            "results/figures/fig8_ssim.png",
            caption="../report/fig8_ssim.rst",
            category="Contains patient data",
            subcategory="Synthetic data: figures",
            labels={"figure": "Fig. 8: SSIM diversity against epsilon"},
        ),
        input=dict(
            quality="results/tables/quality.tsv", privacy="results/tables/privacy.tsv"
        ),
        params=dict(ssim_images=QUALITY["ssim_images"]),
        command=lambda wildcards, input: f"ssim --quality {input.quality} --privacy {input.privacy}",
        mem_mb=2000,
    ),
    "fig9_tsne": dict(
        png=report(
            "results/figures/fig9_tsne.png",
            caption="../report/fig9_tsne.rst",
            category="Contains patient data",
            subcategory="Synthetic data: figures",
            labels={"figure": "Fig. 9: t-SNE embedding"},
        ),
        input=dict(
            tsne="results/quality/tsne.tsv", privacy="results/tables/privacy.tsv"
        ),
        params=dict(per_group=QUALITY["tsne_per_group"], backbone=QUALITY["backbone"]),
        command=lambda wildcards, input: f"tsne --tsne {input.tsne} --privacy {input.privacy}",
        mem_mb=2000,
    ),
    "privacy_utility_figure": dict(
        png=report(
            "results/figures/privacy_utility.png",
            caption="../report/fig_privacy_utility.rst",
            category="Privacy",
            subcategory="Figures",
            labels={"figure": "utility against epsilon under each accountant"},
        ),
        input=dict(
            summary="results/tables/summary.tsv",
            selection="results/tables/selection.tsv",
            privacy="results/tables/privacy.tsv",
        ),
        params=dict(mode=GAN["mode"]),
        command=lambda wildcards, input: (
            f"accounting --summary {input.summary} --selection {input.selection} "
            f"--privacy {input.privacy}"
        ),
        mem_mb=2000,
    ),
    "audit_figure": dict(
        png=report(
            "results/figures/audit.png",
            caption="../report/fig_audit.rst",
            category="Contains patient data",
            subcategory="Privacy: figures",
            labels={"figure": "memorisation check against epsilon"},
        ),
        input=dict(
            audit="results/tables/audit.tsv", privacy="results/tables/privacy.tsv"
        ),
        command=lambda wildcards, input: f"audit --audit {input.audit} --privacy {input.privacy}",
        mem_mb=2000,
    ),
    "gan_curves_figure": dict(
        png=report(
            "results/figures/gan_curves.png",
            caption="../report/fig_gan_curves.rst",
            category="Contains patient data",
            subcategory="GAN: all runs",
            labels={"figure": "training curves of every run"},
        ),
        input=dict(epochs=gan_runs("results/gan/sigma~{sigma}/seed~{seed}/epochs.tsv")),
        params=dict(epochs=GAN["epochs"], n_critic=GAN["n_critic"], mode=GAN["mode"]),
        command=lambda wildcards, input: f"gan-curves --epochs {input.epochs}",
        mem_mb=2000,
    ),
}
# rule name: html (the report item), input, params (optional), command.
HTML_TABLES = {
    "table1_html": dict(
        html=report(
            "results/tables/table1.html",
            caption="../report/table1_html.rst",
            category="Contains patient data",
            subcategory="Segmentation: tables",
        ),
        input=dict(
            table1="results/tables/table1.tsv", selection="results/tables/selection.tsv"
        ),
        params=dict(settings=len(SETTINGS)),
        command=lambda wildcards, input: (
            f"table1 --table1 {input.table1} --selection {input.selection}"
        ),
    ),
    "summary_html": dict(
        html=report(
            "results/tables/summary.html",
            caption="../report/table_summary.rst",
            category="Contains patient data",
            subcategory="Segmentation: tables",
        ),
        input=dict(
            summary="results/tables/summary.tsv",
            selection="results/tables/selection.tsv",
        ),
        params=dict(settings=list(SETTINGS), splits=EVAL_SPLITS),
        command=lambda wildcards, input: (
            f"summary --summary {input.summary} --selection {input.selection}"
        ),
    ),
    "quality_html": dict(
        html=report(
            "results/tables/quality.html",
            caption="../report/table_quality.rst",
            category="Contains patient data",
            subcategory="Synthetic data: tables",
            labels={"table": "quality per synthetic dataset"},
        ),
        input=dict(quality="results/tables/quality.tsv"),
        params=dict(
            backbone=QUALITY["backbone"],
            fd_samples=QUALITY["fd_samples"],
            ssim_images=QUALITY["ssim_images"],
        ),
        command=lambda wildcards, input: f"quality --quality {input.quality}",
    ),
    "audit_html": dict(
        html=report(
            "results/tables/audit.html",
            caption="../report/table_audit.rst",
            category="Contains patient data",
            subcategory="Privacy: tables",
            labels={"table": "memorisation check per synthetic dataset"},
        ),
        input=dict(audit="results/tables/audit.tsv"),
        command=lambda wildcards, input: f"audit --audit {input.audit}",
    ),
}


for figure_rule, figure in FIGURES.items():
    # results/figures/NAME: the PDF lies beside the PNG, its log is NAME.log
    stem = os.path.splitext(figure["png"])[0]

    rule:
        name:
            figure_rule
        input:
            **figure["input"],
        output:
            png=figure["png"],
            pdf=f"{stem}.pdf",
        log:
            f"results/logs/figures/{os.path.basename(stem)}.log",
        localrule: True
        conda:
            "../../envs/base.yaml"
        resources:
            mem_mb=figure["mem_mb"],
            runtime=10,
        params:
            **figure.get("params", {}),
            command=figure["command"],
        shell:
            "dpmra figure {params.command} --out {output} > {log} 2>&1"


for table_rule, table in HTML_TABLES.items():

    rule:
        name:
            table_rule
        input:
            **table["input"],
        output:
            html=table["html"],
        log:
            f"results/logs/figures/{table_rule}.log",
        localrule: True
        conda:
            "../../envs/base.yaml"
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            **table.get("params", {}),
            command=table["command"],
        shell:
            "dpmra table-html {params.command} --out {output} > {log} 2>&1"
