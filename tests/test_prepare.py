"""Input validation: every bad input gives an error naming the file and the problem, and leaves no output."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import AFFINE, save, toy_subject
from test_brain_mask import yellow_pixels

from dpmra.data.phantom import FAT, make_subject
from dpmra.data.prepare import prepare_subject
from dpmra.data.volumes import VolumeError, derive_brain_mask, read_subject

N, P = 20, 16


def run(files: dict, out: Path, n: int = N, size: int = P, mask: bool = True) -> dict:
    """prepare_subject on the given files."""
    return prepare_subject("P1", files["image"], files["label"], files["brain_mask"] if mask else None, n, size, out)


def expect_error(files: dict, out: Path, *fragments: str, **kwargs) -> None:
    """prepare_subject must fail with every fragment in its message and leave `out` without outputs."""
    with pytest.raises(VolumeError) as err:
        run(files, out, **kwargs)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def test_valid_subject_is_written_normalised(subject_files, tmp_path):
    out = tmp_path / "out"
    info = run(subject_files, out)
    image = nib.load(out / "image.nii.gz")
    assert image.shape == (40, 36, 8)
    np.testing.assert_allclose(image.affine, AFFINE)
    data = image.get_fdata()
    mask = nib.load(out / "brain_mask.nii.gz").get_fdata() > 0
    assert data.min() >= 0 and data.max() <= 255
    low, high = np.percentile(data[mask], [0.5, 99.5])
    assert low == pytest.approx(0, abs=1e-3) and high == pytest.approx(255, abs=1e-3)
    assert json.loads((out / "volume.json").read_text()) == json.loads(json.dumps(info))
    assert info["vessel_voxels"] == toy_subject()[1].sum()
    assert info["intensity_normalisation"]["percentiles"] == [0.5, 99.5]
    assert info["mask_method"] == f"given: {subject_files['brain_mask']}" and info["scalp_voxels_removed"] is None
    assert (out / "mip.png").stat().st_size > 1000
    assert yellow_pixels(out / "mip.png") > 100, "the mask outline is drawn"


def test_label_stored_as_0_255_is_accepted(subject_files, tmp_path):
    _, label, _ = toy_subject()
    save(label * 255, subject_files["label"])
    info = run(subject_files, tmp_path / "out")
    assert np.unique(nib.load(tmp_path / "out" / "label.nii.gz").get_fdata()).tolist() == [0, 1]
    assert info["vessel_voxels"] == label.sum()


def test_missing_mask_is_derived_and_logged(subject_files, tmp_path, caplog):
    caplog.set_level("INFO")
    info = run(subject_files, tmp_path / "out", mask=False)
    assert info["mask_method"].startswith("derived: Otsu")
    assert info["mask_method"].endswith("no skull ring found, nothing removed as scalp")
    assert info["scalp_voxels_removed"] == 0
    assert "no brain mask given" in caplog.text
    derived = nib.load(tmp_path / "out" / "brain_mask.nii.gz").get_fdata() > 0
    _, label, true_mask = toy_subject()
    assert derived[label > 0].all()
    assert (derived == (true_mask > 0)).mean() > 0.95


def test_derived_mask_leaves_out_the_scalp_of_a_phantom_with_one(tmp_path, caplog):
    caplog.set_level("INFO")
    subject = make_subject("B", 0, (64, 64, 24))
    files = {
        name: save(getattr(subject, name), tmp_path / f"{name}.nii.gz", subject.affine)
        for name in ("image", "label", "brain_mask")
    }
    info = run(files, tmp_path / "out", mask=False)
    assert "skull ring found in 24 of 24 axial slices" in info["mask_method"]
    assert "skull ring found in 24 of 24 axial slices" in caplog.text
    fat = subject.scalp == FAT
    assert info["scalp_voxels_removed"] > 0.5 * fat.sum()
    assert info["label_voxels_outside_mask"] == 0
    derived = nib.load(tmp_path / "out" / "brain_mask.nii.gz").get_fdata() > 0
    assert (derived & fat).sum() < 0.01 * fat.sum()
    brain = subject.brain_mask > 0
    assert 2 * (derived & brain).sum() / (derived.sum() + brain.sum()) >= 0.95
    assert yellow_pixels(tmp_path / "out" / "mip.png") > 300


def test_derived_mask_keeps_largest_component():
    image = np.zeros((30, 30, 6), np.float32)
    image[5:20, 5:20] = 100
    image[26:28, 26:28] = 100
    mask = derive_brain_mask(image)
    assert mask[10, 10, 3] == 1 and mask[27, 27, 3] == 0


def labels_with_stray_vessels() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The toy label, the same with vessels added in the dark corner outside the brain, and that corner."""
    _, label, _ = toy_subject()
    stray = np.zeros_like(label)
    stray[0:2, 0:2, :] = 1
    return label, label | stray, stray


def test_prepared_mask_is_the_same_for_two_labels(subject_files, tmp_path):
    """Same image, two labels: prepare writes identical derived masks and counts the label outside them."""
    masks, infos = [], []
    for name, vessels in zip(("inside", "stray"), labels_with_stray_vessels()[:2]):
        files = {**subject_files, "label": save(vessels, tmp_path / f"label_{name}.nii.gz")}
        infos.append(run(files, tmp_path / name, mask=False))
        masks.append(nib.load(tmp_path / name / "brain_mask.nii.gz").get_fdata())
    np.testing.assert_array_equal(masks[0], masks[1])
    assert infos[1]["label_voxels_outside_mask"] - infos[0]["label_voxels_outside_mask"] == 2 * 2 * 8
    assert infos[0]["brain_voxels"] == infos[1]["brain_voxels"]


def test_read_subject_derives_the_mask_without_the_label(subject_files, tmp_path):
    """Without a mask path, read_subject's mask is the image-only mask whatever the label holds."""
    image, _, _ = toy_subject()
    _, with_stray, stray = labels_with_stray_vessels()
    subject, provenance = read_subject(subject_files["image"], save(with_stray, tmp_path / "stray.nii.gz"), None)
    np.testing.assert_array_equal(subject.brain_mask, derive_brain_mask(image))
    assert not subject.brain_mask[stray > 0].any()
    assert provenance["label_voxels_outside_mask"] >= stray.sum()
    assert "vessel label is not read" in provenance["mask_method"]


def test_empty_derived_mask(subject_files, tmp_path):
    save(np.full((40, 36, 8), 5.0, np.float32), subject_files["image"])
    expect_error(subject_files, tmp_path / "out", "image.nii.gz: the brain mask derived", "empty", mask=False)


def test_lps_volume_is_brought_to_ras(subject_files, tmp_path):
    image, label, mask = toy_subject()
    lps = np.diag([-0.5, -0.5, 0.7, 1.0])
    for name, data in (("image", image), ("label", label), ("brain_mask", mask)):
        save(data, subject_files[name], affine=lps)
    info = run(subject_files, tmp_path / "out")
    out = nib.load(tmp_path / "out" / "image.nii.gz")
    assert "".join(nib.aff2axcodes(out.affine)) == "RAS"
    assert info["original_orientation"] == "LPS"
    np.testing.assert_allclose(info["original_affine"], lps)
    stored_label = nib.load(tmp_path / "out" / "label.nii.gz").get_fdata()
    np.testing.assert_array_equal(stored_label, label[::-1, ::-1, :])


def test_unreadable_file(subject_files, tmp_path):
    subject_files["image"].write_bytes(b"this is not a NIfTI file")
    expect_error(subject_files, tmp_path / "out", str(subject_files["image"]), "unreadable or not a NIfTI")


def test_missing_file(subject_files, tmp_path):
    subject_files["label"].unlink()
    expect_error(subject_files, tmp_path / "out", str(subject_files["label"]), "file not found")


def test_not_3d(subject_files, tmp_path):
    save(np.zeros((40, 36, 8, 2), np.float32), subject_files["image"])
    expect_error(subject_files, tmp_path / "out", str(subject_files["image"]), "expected a 3D volume")


def test_shape_mismatch(subject_files, tmp_path):
    save(np.zeros((40, 36, 9), np.uint8), subject_files["label"])
    expect_error(subject_files, tmp_path / "out", str(subject_files["label"]), "shape (40, 36, 9) differs")


def test_mask_affine_mismatch(subject_files, tmp_path):
    _, _, mask = toy_subject()
    save(mask, subject_files["brain_mask"], affine=np.diag([0.6, 0.5, 0.7, 1.0]))
    expect_error(subject_files, tmp_path / "out", str(subject_files["brain_mask"]), "affine differs")


def test_non_binary_label(subject_files, tmp_path):
    _, label, _ = toy_subject()
    label[0, 0, 0] = 2
    save(label, subject_files["label"])
    expect_error(subject_files, tmp_path / "out", str(subject_files["label"]), "not binary")


def test_non_finite_image(subject_files, tmp_path):
    image, _, _ = toy_subject()
    image[3, 3, 3] = np.nan
    save(image, subject_files["image"])
    expect_error(subject_files, tmp_path / "out", str(subject_files["image"]), "non-finite")


@pytest.mark.parametrize("name, what", [("label", "vessel label is empty"), ("brain_mask", "brain mask is empty")])
def test_empty_label_or_mask(subject_files, tmp_path, name, what):
    save(np.zeros((40, 36, 8), np.uint8), subject_files[name])
    expect_error(subject_files, tmp_path / "out", str(subject_files[name]), what)


def test_too_few_vessel_voxels(subject_files, tmp_path):
    expect_error(subject_files, tmp_path / "out", str(subject_files["label"]), "fewer than the 2000 vessel", n=4000)


def test_too_few_brain_voxels(subject_files, tmp_path):
    _, label, mask = toy_subject()
    label[:] = 0
    label[20, 18, :] = 1
    mask[:] = 0
    mask[0:4, 0:4, :] = 1
    mask[20, 18, :] = 1
    save(label, subject_files["label"])
    save(mask, subject_files["brain_mask"])
    expect_error(subject_files, tmp_path / "out", "brain voxels can centre", n=16)


def test_slice_narrower_than_patch(subject_files, tmp_path):
    expect_error(subject_files, tmp_path / "out", str(subject_files["label"]), "narrower than the 48 x 48", size=48)
