"""The recipient's README of a release bundle: what the data are, where the generator began, the guarantee, how
to load them, the aggregate quality numbers (with the private gain over the placebo, where one ran) and the files.
"""

from __future__ import annotations

import math

SYNTH_FILES = ("dataset.npz", "images.nii.gz", "labels.nii.gz", "gallery.png", "privacy_card.json")
MANIFEST = "MANIFEST.tsv"
BUNDLE_FILES = (*SYNTH_FILES, "quality.json", "README.md", MANIFEST)
SYNTHETIC_NOTE = "computed from the synthetic dataset alone, covered by epsilon as post-processing"


def number(value: float | None, digits: int = 4) -> str:
    """A number for the README: `digits` significant digits, 'n/a' for a missing one."""
    return "n/a" if value is None else f"{value:.{digits}g}"


def guarantee_statement(facts: dict) -> str:
    """The guarantee in plain words: the card's own statement, else one built from epsilon and delta."""
    if facts["statement"]:
        return facts["statement"]
    if math.isinf(facts["epsilon"]):
        return "None: the generator was trained without differential privacy (epsilon = inf)."
    return (
        f"The generator that produced these data was trained with differentially private SGD and satisfies "
        f"({number(facts['epsilon'])}, {number(facts['delta'], 3)})-differential privacy. The unit protected is one "
        f"training patch: whether any single training patch was used or not changes the probability of any result "
        f"computed from these data by at most a factor of e^{number(facts['epsilon'])}, except with probability "
        f"{number(facts['delta'], 3)}. A patient contributed many patches, so the guarantee for a whole patient is "
        f"weaker (group privacy)."
    )


NOT_PRIVATE = (
    "> **NOT PRIVATE.** epsilon = inf: the GAN behind this dataset was trained without differential privacy.\n"
    "> These data carry no privacy guarantee. Do not share them as private data.\n\n"
)

FILE_NOTES = {
    "dataset.npz": "the pairs as numpy arrays `image` (n, P, P) and `label` (n, P, P)",
    "images.nii.gz": "the images as one P x P x n uint8 NIfTI stack (1 mm voxels), for ITK-SNAP or 3D Slicer",
    "labels.nii.gz": "the labels as one P x P x n uint8 NIfTI stack, vessel 255, background 0",
    "gallery.png": "the first pairs, image above label",
    "privacy_card.json": "the privacy card: the DP mechanism, its accounting (epsilon, delta) and the release",
    "quality.json": "aggregate quality numbers (below), each with a note on what it was computed from",
    "README.md": "this file",
    MANIFEST: "size and SHA-256 of every other file",
}


PLACEBO_NOTE = (
    "the same recipe, sigma, seed and number of pairs with the private patients replaced by public stand-ins; "
    "private_gain = DSC(this dataset) - DSC(placebo) is what the private patients taught the segmenter"
)
NO_PLACEBO = (
    "- No placebo was run for this dataset, so the DSC above does not show how much of it the private patients "
    "taught: the public warm start and the recipe alone may reach as much."
)


def quality_lines(summary: dict) -> list[str]:
    """README bullet points for the aggregate quality numbers."""
    data, fd = summary["synthetic_dataset"], summary["frechet_distance_test"]
    lines = [
        f"- Synthetic set ({SYNTHETIC_NOTE}): {data['n_pairs']} pairs, vessel share of label pixels "
        f"{number(data['vessel_share'])}, image mean {number(data['image_mean'])}, SD {number(data['image_sd'])}; "
        f"mean pairwise SSIM {number(summary['diversity']['ssim_mean'])} over {summary['diversity']['n_images']} "
        "images (higher: less diverse).",
        f"- Frechet distance to held-out patients' patches ({fd['note']}): {number(fd['value'])} "
        f"(features `{fd['backbone']}`; comparable only with distances on the same features).",
    ]
    for split, row in summary["segmentation"]["splits"].items():
        gain = (
            f" Its placebo ({PLACEBO_NOTE.split(';')[0]}) reached {number(row['placebo_dsc_mean'], 3)}: a private "
            f"gain of {number(row['private_gain'], 2)}."
            if row.get("private_gain") is not None
            else ""
        )
        lines.append(
            f"- Vessel segmentation, {split} split ({row['note']}): a U-Net trained on this dataset alone reached "
            f"DSC {number(row['dsc_mean'], 3)} (SD {number(row['dsc_sd'], 3)}).{gain}"
        )
    if summary["segmentation"].get("placebo") is None:
        lines.append(NO_PLACEBO)
    return lines


def accounting_line(facts: dict) -> str:
    """epsilon under both accountants and delta, and what follows from them."""
    if math.isinf(facts["epsilon"]):
        return f"epsilon inf, delta {number(facts['delta'], 3)}. Details: `privacy_card.json`."
    prv = facts["epsilon_prv"]
    tighter = f"; the PRV accountant's tighter estimate of the same mechanism: {number(prv)}" if prv is not None else ""
    return (
        f"epsilon {number(facts['epsilon'])} ({facts['accountant']}{tighter}), delta {number(facts['delta'], 3)}. Anything "
        "computed from these files alone keeps this guarantee. Details: `privacy_card.json`."
    )


def generator_words(facts: dict, private: bool) -> str:
    """Where the pairs came from, by DP family: a DP-WGAN, or Private Evolution over a public API."""
    if facts.get("family") == "pe":
        votes = "noisy votes (differentially private)" if private else "votes WITHOUT noise (not private)"
        return (
            "They were made by Private Evolution: a public generator proposed candidates and patches of real "
            f"TOF-MRA scans chose among them by {votes}; the public generator was {facts['api']}"
        )
    training = "with differentially private SGD" if private else "WITHOUT differential privacy"
    return (
        f"They were sampled from a generative adversarial network (a Wasserstein GAN) trained {training} on "
        "patches of real TOF-MRA scans"
    )


def readme_text(facts: dict, summary: dict) -> str:
    """The recipient's README: what the data are, the guarantee, how to load them, quality, files."""
    data = summary["synthetic_dataset"]
    p, n = data["patch_size"], data["n_pairs"]
    private = not math.isinf(facts["epsilon"])
    origin = generator_words(facts, private)
    files = "\n".join(f"| `{name}` | {FILE_NOTES[name]} |" for name in BUNDLE_FILES)
    return (
        f"# Synthetic TOF-MRA patches with vessel labels ({facts['dataset']})\n\n"
        + ("" if private else NOT_PRIVATE)
        + "## What the data are\n\n"
        f"{n} labelled synthetic 2D axial brain TOF-MRA patches of {p} x {p} pixels, each with a binary vessel label. "
        f"{origin}: the patches were generated, not cut from any scan. Images are "
        f"{data['image_dtype']}, {facts['image_scaling']} (values {number(data['image_min'])} to "
        f"{number(data['image_max'])}); labels are {data['label_dtype']}, 1 vessel and 0 background.\n\n"
        + (f"Where the generator began: {facts['warm_start']}.\n\n" if facts["warm_start"] else "")
        + "## Privacy guarantee\n\n"
        f"{guarantee_statement(facts)}\n\n"
        f"{accounting_line(facts)}\n\n"
        "## How to load\n\n"
        "```python\n"
        "import numpy as np\n\n"
        'data = np.load("dataset.npz")\n'
        f'images, labels = data["image"], data["label"]  # ({n}, {p}, {p}) each\n'
        "```\n\n"
        "```python\n"
        "import nibabel as nib\n\n"
        f'stack = nib.load("images.nii.gz").get_fdata()  # ({p}, {p}, {n}): pair i is stack[:, :, i]\n'
        "```\n\n"
        "## Quality (aggregate numbers, `quality.json`)\n\n"
        + "\n".join(quality_lines(summary))
        + "\n\nNumbers computed on held-out patients are not covered by epsilon; each is one aggregate, and no "
        "per-patient value is included.\n\n"
        "## Files\n\n"
        "| file | content |\n| --- | --- |\n"
        f"{files}\n\n"
        f"Check the files against `{MANIFEST}`, in this folder:\n\n"
        "```sh\n"
        f"awk -F'\\t' 'NR > 1 {{print $3 \"  \" $1}}' {MANIFEST} | sha256sum -c\n"
        "```\n"
    )
