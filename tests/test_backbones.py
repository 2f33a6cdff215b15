"""The start check for the paper's FID backbone: what is missing, named, with the file and where to put it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpmra.features import backbones
from dpmra.features.backbones import INCEPTION_WEIGHTS_FILE, hub_dir, require_backbone


def installed(monkeypatch, present: bool) -> None:
    """Pretend pytorch-fid and torchvision are (or are not) installed."""
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name in ("pytorch_fid", "torchvision"):
            return object() if present else None
        return real(name, *args)

    monkeypatch.setattr(backbones.importlib.util, "find_spec", find_spec)


@pytest.fixture
def torch_home(monkeypatch, tmp_path) -> Path:
    """An empty TORCH_HOME, so no real cache is seen."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def message(requested: str = "inception-v3", weights: Path | None = None) -> str:
    """require_backbone's error message."""
    with pytest.raises(ValueError) as err:
        require_backbone(requested, weights)
    return str(err.value)


def test_missing_pytorch_fid_says_how_to_install(monkeypatch, torch_home):
    installed(monkeypatch, False)
    text = message()
    assert "quality.backbone is inception-v3" in text
    assert "pytorch-fid (with torchvision) is not installed; run `pip install -e .[fid]`" in text


def test_missing_weights_name_the_file_and_the_directory(monkeypatch, torch_home):
    installed(monkeypatch, True)
    text = message()
    assert "pip install" not in text
    assert f"place pytorch-fid's {INCEPTION_WEIGHTS_FILE}" in text
    assert f"in {torch_home / 'hub' / 'checkpoints'}" in text
    assert "set quality.weights: PATH" in text


def test_configured_weights_that_are_missing_are_named(monkeypatch, torch_home, tmp_path):
    installed(monkeypatch, True)
    text = message(weights=tmp_path / "inception.pth")
    assert f"quality.weights: {tmp_path / 'inception.pth'}: Inception weights file not found" in text


def test_everything_in_place_passes(monkeypatch, torch_home, tmp_path):
    installed(monkeypatch, True)
    (tmp_path / "inception.pth").touch()
    require_backbone("inception-v3", tmp_path / "inception.pth")
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    (torch_home / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE).touch()
    require_backbone("inception-v3", None)


def test_other_backbones_are_not_checked(monkeypatch, torch_home):
    installed(monkeypatch, False)
    require_backbone("auto", None)
    require_backbone("random-cnn-s0-d256", None)


@pytest.mark.parametrize(
    "env", [{}, {"XDG_CACHE_HOME": "/tmp/xdg"}, {"TORCH_HOME": "/tmp/th"}, {"TORCH_HOME": "~/th", "XDG_CACHE_HOME": "/x"}]
)
def test_hub_dir_is_torch_hub_get_dir(monkeypatch, env):
    for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert hub_dir() == Path(torch.hub.get_dir())


def test_the_start_check_does_not_import_torch():
    code = "import sys, dpmra.features.backbones; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
