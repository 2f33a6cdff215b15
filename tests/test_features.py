"""Feature backbones: the offline random CNN, the choice between it and Inception-v3, and the shared image loader."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from dpmra.data.intensity import load_image_files, load_images
from dpmra.features import extract as features
from dpmra.features.extract import (
    INCEPTION,
    RANDOM_CNN,
    backbone_name,
    extract_features,
    resolve_backbone,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def images(n: int = 20, size: int = 32, seed: int = 0) -> np.ndarray:
    """Random patches on the 0..255 scale."""
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size)).astype(np.float32)


def test_random_cnn_features_are_deterministic_and_batch_independent():
    x = images()
    a = extract_features(x, RANDOM_CNN, batch_size=256)
    b = extract_features(x, RANDOM_CNN, batch_size=3)
    assert a.shape == (20, 256) and a.dtype == np.float64
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a, extract_features(x, RANDOM_CNN, batch_size=256))
    assert np.abs(a[0] - a[1]).max() > 1e-3  # different images, different features


def test_random_cnn_weights_are_fixed_by_the_seed():
    first, second = features.random_cnn(), features.random_cnn()
    for p, q in zip(first.parameters(), second.parameters()):
        assert torch.equal(p, q)
    assert extract_features(images(4, 96), RANDOM_CNN).shape == (4, 256)


def no_pytorch_fid():
    raise ImportError("No module named 'pytorch_fid'")


def test_auto_falls_back_to_the_random_cnn_without_pytorch_fid(monkeypatch, caplog):
    monkeypatch.setattr(features, "import_inception", no_pytorch_fid)
    with caplog.at_level(logging.INFO, logger="dpmra.features.extract"):
        assert resolve_backbone("auto") == RANDOM_CNN
    assert "not FID" in caplog.text and "pytorch-fid" in caplog.text
    with pytest.raises(ValueError, match="pytorch-fid"):
        resolve_backbone(INCEPTION)
    assert resolve_backbone(RANDOM_CNN) == RANDOM_CNN


def test_inception_needs_weights_on_disk(monkeypatch, tmp_path):
    monkeypatch.setattr(features, "import_inception", lambda: types.SimpleNamespace())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert resolve_backbone("auto") == RANDOM_CNN
    with pytest.raises(ValueError, match="no Inception weights"):
        resolve_backbone(INCEPTION)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth").touch()
    assert resolve_backbone("auto") == INCEPTION
    assert resolve_backbone(INCEPTION) == INCEPTION


def test_configured_weights_must_exist_and_names_are_checked(monkeypatch, tmp_path):
    monkeypatch.setattr(features, "import_inception", lambda: types.SimpleNamespace())
    with pytest.raises(ValueError, match="missing.pth"):
        resolve_backbone("auto", tmp_path / "missing.pth")
    (tmp_path / "w.pth").touch()
    assert resolve_backbone(INCEPTION, tmp_path / "w.pth") == INCEPTION
    with pytest.raises(ValueError, match="unknown feature backbone"):
        resolve_backbone("vgg16")
    assert backbone_name(RANDOM_CNN) == RANDOM_CNN
    assert backbone_name(INCEPTION) == "inception-v3-pool3"
    with pytest.raises(ValueError):
        backbone_name("auto")


def fake_pytorch_fid_inception() -> types.ModuleType:
    """A stand-in for pytorch_fid.inception: its network records the weights it got and returns channel means."""
    module = types.ModuleType("pytorch_fid.inception")

    def download(*args, **kwargs):
        raise AssertionError("must not download")

    class InceptionV3(torch.nn.Module):
        BLOCK_INDEX_BY_DIM = {2048: 3}

        def __init__(self, blocks):
            super().__init__()
            assert blocks == [3]
            self.state = module.load_state_dict_from_url("https://example.invalid/pt_inception.pth")

        def forward(self, x):
            return [x.mean(dim=(2, 3), keepdim=True).repeat(1, 2048 // 3 + 1, 1, 1)[:, :2048]]

    module.load_state_dict_from_url = download
    module.InceptionV3 = InceptionV3
    return module


def test_inception_path_uses_the_local_weights_and_pytorch_fid_input_range(monkeypatch, tmp_path):
    module = fake_pytorch_fid_inception()
    monkeypatch.setattr(features, "import_inception", lambda: module)
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pth")
    x = images(5)
    out = extract_features(x, INCEPTION, weights=tmp_path / "w.pth")
    assert out.shape == (5, 2048)
    # grayscale replicated to three channels, 0..255 -> 0..1 (pytorch-fid resizes and maps to [-1, 1] itself)
    np.testing.assert_allclose(out[:, :3], np.repeat(x.mean(axis=(1, 2))[:, None] / 255, 3, axis=1), rtol=1e-5)
    assert module.load_state_dict_from_url.__name__ == "download"  # restored after use


def write_patches(path: Path, image: np.ndarray) -> Path:
    """A patch file with an image array (and a label, as the workflow writes)."""
    np.savez(path, image=image, label=np.zeros(image.shape, np.uint8))
    return path


def test_load_images_scales_each_patch_to_0_255_and_checks_files(tmp_path):
    a = write_patches(tmp_path / "a.npz", images(3, 16) * 0.1 + 40)
    b = write_patches(tmp_path / "b.npz", images(2, 16, seed=1))
    loaded = load_images([a, b])
    assert loaded.shape == (5, 16, 16)
    np.testing.assert_allclose(loaded.min(axis=(1, 2)), 0)
    np.testing.assert_allclose(loaded.max(axis=(1, 2)), 255, rtol=1e-6)
    np.testing.assert_allclose(load_images([tmp_path / "b.npz"]), load_images([b]))  # idempotent on 0..255 data
    assert [len(part) for part in load_image_files([a, b])] == [3, 2]
    with pytest.raises(ValueError, match="missing.npz"):
        load_images([tmp_path / "missing.npz"])
    np.savez(tmp_path / "c.npz", label=np.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match="c.npz: no array 'image'"):
        load_images([tmp_path / "c.npz"])
    d = write_patches(tmp_path / "d.npz", images(2, 8))
    with pytest.raises(ValueError, match="d.npz: patches of"):
        load_images([a, d])
