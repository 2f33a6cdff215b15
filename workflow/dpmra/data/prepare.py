"""Input stage: check one patient's volumes and write them canonical and normalised for the workflow."""

from __future__ import annotations

import logging
from pathlib import Path

from dpmra.data.volumes import check_patch_capacity, normalise_intensity, read_subject, save_json, save_nifti
from dpmra.shared.pictures import save_mip

log = logging.getLogger(__name__)


def prepare_subject(
    patient: str,
    image: Path,
    label: Path,
    brain_mask: Path | None,
    n_patches: int,
    patch_size: int,
    out_dir: Path,
) -> dict:
    """Validate a patient's image, label and mask, then write them RAS-oriented with 0..255 intensities.

    Writes image/label/brain_mask .nii.gz, mip.png and, last, volume.json (its presence marks success).
    """
    subject, provenance = read_subject(Path(image), Path(label), Path(brain_mask) if brain_mask else None)
    if brain_mask is None:
        log.info("%s: no brain mask given; %s", patient, provenance["mask_method"])
    if provenance["label_voxels_outside_mask"]:
        log.warning("%s: %d label voxels lie outside the brain mask", patient, provenance["label_voxels_outside_mask"])
    check_patch_capacity(subject, n_patches, patch_size, Path(label))
    normalised, rule = normalise_intensity(subject.image, subject.brain_mask)

    out_dir = Path(out_dir)
    save_nifti(normalised, subject.affine, out_dir / "image.nii.gz")
    save_nifti(subject.label, subject.affine, out_dir / "label.nii.gz")
    save_nifti(subject.brain_mask, subject.affine, out_dir / "brain_mask.nii.gz")
    save_mip(
        normalised, subject.label, subject.affine, out_dir / "mip.png", f"patient {patient}", subject.brain_mask
    )
    info = {
        "patient": patient,
        **provenance,
        "shape": list(subject.image.shape),
        "spacing_mm": list(subject.spacing),
        "affine": subject.affine.tolist(),
        "intensity_normalisation": rule,
        "vessel_voxels": int(subject.label.sum()),
        "brain_voxels": int(subject.brain_mask.sum()),
        "vessel_fraction": float(subject.label.sum() / subject.brain_mask.sum()),
    }
    save_json(info, out_dir / "volume.json")
    log.info(
        "%s: %s, spacing %s mm, %d brain voxels, %.2f %% vessel",
        patient,
        "x".join(map(str, subject.image.shape)),
        "x".join(f"{s:.2f}" for s in subject.spacing),
        info["brain_voxels"],
        100 * info["vessel_fraction"],
    )
    return info

