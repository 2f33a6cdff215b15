"""Synthetic release: dataset post-processing, the privacy card against the accountant, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from dpmra.features.extract import RANDOM_CNN
from dpmra.generators.interface import generate
from dpmra.generators.params import GanParams
from dpmra.generators.train import train_gan
from dpmra.release.params import ReleaseParams, Validation
from dpmra.release.synth import release_dataset, to_dataset
from dpmra.shared import checkpoint

PATCH = 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread) -> Path:
    """A tiny private GAN trained for one epoch; its training set is deleted afterwards."""
    root = tmp_path_factory.mktemp("gan")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (40, 2, PATCH, PATCH)).astype(np.float32)
    x[:, 1] = np.sign(x[:, 1])
    np.savez(root / "train.npz", x=x, patient=np.arange(40) // 10)
    (root / "secret.key").write_bytes(bytes(32))
    params = GanParams(sigma=1.2, epochs=2, batch_size=8, width_g=4, width_d=4, latent_dim=8, seed=5)
    train_gan(root / "train.npz", root / "run", params, root / "secret.key")
    (root / "train.npz").unlink()  # release must not need the training data
    return root / "run"


def test_to_dataset_scales_image_and_thresholds_label():
    pairs = np.zeros((2, 2, 2, 2), np.float32)
    pairs[0, 0] = [[-1, 0], [0.5, 1]]
    pairs[1, 0] = 0.3  # constant patch
    pairs[0, 1] = [[0.59, 0.61], [-1, 1]]  # 0.6 on [-1, 1] is 0.8 on [0, 1]
    image, label = to_dataset(pairs, label_threshold=0.8, intensity="per_patch")
    assert image.dtype == np.float32 and label.dtype == np.uint8
    np.testing.assert_allclose(image[0], [[0, 127.5], [191.25, 255]])
    np.testing.assert_allclose(image[1], 127.5)
    np.testing.assert_array_equal(label[0], [[0, 1], [0, 1]])
    np.testing.assert_array_equal(label[1], 0)


def test_privacy_card_matches_the_accountant(trained: Path, tmp_path: Path):
    card = release_dataset(trained / "generator.pt", tmp_path, ReleaseParams(n=30, seed=1), "sigma~1.2/seed~5")
    assert json.loads((tmp_path / "privacy_card.json").read_text()) == card
    last = pd.read_csv(trained / "epochs.tsv", sep="\t").iloc[-1]
    assert card["epsilon"]["rdp"] == pytest.approx(last["epsilon_rdp"])
    assert card["epsilon"]["prv"] == pytest.approx(last["epsilon_prv"])
    assert card["critic_steps"] == last["critic_steps"] and card["epochs"] == last["epoch"] == 2
    assert card["sigma"] == 1.2 and card["mode"] == "fresh" and "seed" not in card
    assert card["sample_rate"] == pytest.approx(8 / 40) and card["training_set_size"] == 40
    assert card["delta"] == 0.002  # 1 / (10 N) = 0.0025, rounded down to one significant digit
    assert card["warnings"] == [] and card["privacy_unit"] == "patch" and card["max_patches_per_patient"] == 10
    assert card["release"]["n"] == 30 and card["release"]["label_threshold"] == 0.8
    assert len(card["config_digest"]) == 64 and card["code_version"].startswith("0.1.0")


def test_release_writes_dataset_and_stacks(trained: Path, tmp_path: Path):
    release_dataset(trained / "generator.pt", tmp_path, ReleaseParams(n=30, seed=1), "run")
    with np.load(tmp_path / "dataset.npz") as npz:
        image, label = npz["image"], npz["label"]
    assert image.shape == label.shape == (30, PATCH, PATCH)
    assert image.min() == 0 and image.max() == 255
    assert set(np.unique(label)) <= {0, 1}
    stack = nib.load(tmp_path / "images.nii.gz")
    assert stack.shape == (PATCH, PATCH, 30) and stack.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(stack.dataobj)[..., 3], np.rint(image[3]).astype(np.uint8))
    labels = np.asarray(nib.load(tmp_path / "labels.nii.gz").dataobj)
    np.testing.assert_array_equal(labels[..., 3], label[3] * 255)
    assert (tmp_path / "gallery.png").read_bytes()[:4] == b"\x89PNG"


def test_release_is_deterministic_in_its_seed(trained: Path, tmp_path: Path):
    arrays = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        release_dataset(trained / "generator.pt", tmp_path / name, ReleaseParams(n=10, seed=seed), name)
        with np.load(tmp_path / name / "dataset.npz") as npz:
            arrays.append(npz["image"])
    np.testing.assert_array_equal(arrays[0], arrays[1])
    assert not np.array_equal(arrays[0], arrays[2])


def test_incomplete_generator_file_is_rejected(tmp_path: Path):
    import torch

    torch.save({"state_dict": {}}, tmp_path / "generator.pt")
    with pytest.raises(ValueError, match="generator.pt: not a complete generator file"):
        release_dataset(tmp_path / "generator.pt", tmp_path / "out", ReleaseParams(n=1), "x")
    assert not (tmp_path / "out" / "privacy_card.json").exists()


def test_val_fd_releases_the_epoch_closest_to_validation(trained: Path, tmp_path: Path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "V1.npz", image=rng.uniform(0, 255, (25, PATCH, PATCH)).astype(np.float32))
    release = ReleaseParams(n=12, seed=4, checkpoint="val_fd", selection_samples=20)
    card = release_dataset(
        trained / "generator.pt", tmp_path / "out", release, "run", Validation([tmp_path / "V1.npz"], RANDOM_CNN)
    )
    chosen = card["release"]["checkpoint"]
    scores = chosen["scores"]
    assert [row["epoch"] for row in scores] == [1, 2] and all(row["n"] == 20 for row in scores)
    assert chosen["epoch"] == min(scores, key=lambda row: row["fd"])["epoch"]
    assert card["epochs"] == 2 and card["epsilon"]["rdp"] == pytest.approx(
        pd.read_csv(trained / "epochs.tsv", sep="\t")["epsilon_rdp"].iloc[-1]
    )
    state = checkpoint.load(trained / "checkpoints" / f"epoch_{chosen['epoch']:03d}.pt")
    expected, _ = to_dataset(
        generate({"config": state["generator_config"], "state_dict": state["generator"]}, 12, 4), 0.8, "per_patch"
    )
    with np.load(tmp_path / "out" / "dataset.npz") as npz:
        np.testing.assert_array_equal(npz["image"], expected)


def test_val_fd_needs_validation_patches(trained: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="needs the validation patients' patch files"):
        release_dataset(trained / "generator.pt", tmp_path, ReleaseParams(n=2, checkpoint="val_fd"), "run")


def test_card_states_the_patch_and_patient_guarantees(trained: Path, tmp_path: Path):
    """Per patch the mechanism's (eps, delta); per patient group privacy over the 10 patches one patient gave."""
    card = release_dataset(trained / "generator.pt", tmp_path, ReleaseParams(n=4, seed=1), "run")
    eps, delta = card["epsilon"]["rdp"], card["delta"]
    guarantee = card["guarantee"]
    assert guarantee["unit"] == "patch" and guarantee["per_patch"] == {"epsilon": eps, "delta": delta}
    patient = guarantee["per_patient"]
    assert patient["group_size"] == 10
    expected_delta = 10 * np.exp(9 * eps) * delta
    if expected_delta >= 1:
        assert patient["epsilon"] == patient["delta"] == "vacuous"
        assert "no formal guarantee for a patient" in guarantee["statement"]
    else:
        assert patient["epsilon"] == pytest.approx(10 * eps) and patient["delta"] == pytest.approx(expected_delta)
    assert "per training patch" in guarantee["statement"]
    assert "Gaussian noise of DP-SGD" in card["secret"]["secret_streams"]


def test_volume_scale_release_shares_the_real_patches_scale(tmp_path: Path):
    """Real patches mapped by the training set's volume rule and released back land on their own 0..255 values."""
    from dpmra.data.patches import scale_volume_to_unit_range

    real = np.random.default_rng(3).uniform(0, 255, (5, 4, 4)).astype(np.float32)
    real[0] = 40.0  # a flat patch keeps its level (per-patch min-max would move it to the midpoint)
    pairs = np.stack([scale_volume_to_unit_range(real), np.ones_like(real)], axis=1)
    image, label = to_dataset(pairs, label_threshold=0.8, intensity="volume")
    np.testing.assert_allclose(image, real, atol=1e-3)
    assert (label == 1).all()
    paper, _ = to_dataset(pairs, label_threshold=0.8, intensity="per_patch")
    assert paper[1].min() == 0 and paper[1].max() == 255 and (paper[0] == 127.5).all()


def test_public_and_warm_started_cards(tmp_path: Path):
    """A public run's card says it saw no private data; a warm-started run's card states what was public."""
    from dpmra.release.cards import guarantee, public_pretraining

    stored = {"epsilon": {"epsilon_rdp": 0.0}, "delta": 1e-4, "unit": "patch", "max_patches_per_patient": 10,
              "params": {"public": True}}
    assert guarantee(stored)["per_patch"] == {"epsilon": 0.0, "delta": 0.0}
    assert "PUBLIC DATA ONLY" in guarantee(stored)["statement"] and public_pretraining(stored) is None
    stored["pretrained"] = {"training_set_size": 600, "epochs": 10, "weights_sha256": "ab"}
    assert "public training set of 600 pairs" in public_pretraining(stored)["statement"]
