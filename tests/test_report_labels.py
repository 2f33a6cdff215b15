"""Honest labels on the internal report, read from the rule files (no run): patient data are marked as such.

An item "contains patient data" when it shows real patients' pixels or a statistic of the training patients computed
outside the DP mechanism (losses on private batches, distances to training patches, U-Nets trained on real patches).
Such items sit in one category, keep their former place as the subcategory, and their captions say first that they
must not be shared; the report's front page says what may be shared instead.
"""

from __future__ import annotations

import re

from conftest import ROOT

PATIENT_DATA = "Contains patient data"
# Caption of every report item that contains patient data, and why.
EXPECTED = {
    "mip.rst": "a prepared patient's MIP",
    "gallery.rst": "real training patches",
    "gan_loss.rst": "losses on private batches without noise",
    "fig_gan_curves.rst": "losses on private batches without noise",
    "fig2_samples.rst": "real training patches beside synthetic ones",
    "fig3_test_utility.rst": "the real-data U-Net's reference",
    "fig4_error_maps.rst": "a real test patient",
    "fig5_external_utility.rst": "the real-data U-Net's reference",
    "fig6_fid.rst": "Frechet distance to the training patches",
    "fig7_segmentation.rst": "a real test patient",
    "fig8_ssim.rst": "SSIM of real training patches",
    "fig9_tsne.rst": "embeddings of real training patches",
    "fig_audit.rst": "distances to training patches",
    "table_audit.rst": "distances to training patches",
    "table_quality.rst": "fd_train, fd_gap and the real SSIM row",
    "table1.rst": "the real-data U-Net's rows",
    "private_gain.rst": "scores of the test and external patients, beside Table 1's",
    "table1_html.rst": "the real-data U-Net's rows",
    "table_summary.rst": "the real-data U-Nets' rows",
}
REPORT_ITEM = re.compile(
    r'report\(\s*f?"[^"]+",\s*caption="\.\./report/(?P<caption>[\w.]+)",\s*category="(?P<category>[^"]+)",'
    r'\s*subcategory="(?P<subcategory>[^"]+)"'
)


def report_items() -> list[dict[str, str]]:
    """caption, category and subcategory of every report() output in the rule files."""
    items = []
    for path in sorted((ROOT / "workflow/rules").glob("*.smk")):
        text = path.read_text()
        found = [m.groupdict() for m in REPORT_ITEM.finditer(text)]
        assert len(found) == text.count("report("), f"{path}: a report() item this test cannot read"
        items += found
    return items


def test_patient_data_items_are_in_their_own_category():
    items = report_items()
    marked = {item["caption"] for item in items if item["category"] == PATIENT_DATA}
    assert marked == set(EXPECTED)
    for item in items:
        if item["category"] == PATIENT_DATA:
            former, _, place = item["subcategory"].partition(": ")
            assert former in {"Data", "GAN", "Synthetic data", "Segmentation", "Privacy"} and place, item


def test_patient_data_captions_say_so_first():
    for item in report_items():
        caption = (ROOT / "workflow/report" / item["caption"]).read_text()
        first_line = caption.splitlines()[0]
        if item["category"] == PATIENT_DATA:
            assert first_line.startswith(f"**{PATIENT_DATA}") and "must not be shared" in first_line, item
        else:
            assert PATIENT_DATA not in caption, item


def test_front_page_says_the_report_is_internal_and_what_may_be_shared():
    text = " ".join((ROOT / "workflow/report/workflow.rst").read_text().split())
    assert "This report is internal." in text and f'"{PATIENT_DATA}"' in text
    assert "``results/release/``" in text and "release``" in text
