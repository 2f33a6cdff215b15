"""The segmentation task is learnable: a U-Net trained briefly on real phantom patches beats all-background."""

from __future__ import annotations

import numpy as np
import torch

from dpmra.data.patches import extract_patches, patient_rng, save_patches
from dpmra.data.phantom import make_subject
from dpmra.data.volumes import normalise_intensity
from dpmra.segmentation.metrics import segmentation_metrics
from dpmra.segmentation.params import UnetParams
from dpmra.segmentation.predict import Segmenter, load_model, predict_probability
from dpmra.segmentation.training import train_unet

SHAPE, P = (64, 64, 24), 16


def prepared(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A site-A phantom subject normalised as the prepare stage does."""
    subject = make_subject("A", seed, SHAPE)
    image, _ = normalise_intensity(subject.image, subject.brain_mask)
    return image, subject.label, subject.brain_mask, subject.spacing


def test_unet_on_real_patches_beats_all_background(tmp_path):
    torch.set_num_threads(1)
    sources = []
    for seed in (0, 1, 2):
        image, label, mask, _ = prepared(seed)
        path = tmp_path / f"train{seed}.npz"
        save_patches(extract_patches(image, label, mask, 300, P, patient_rng(0, str(seed))), path)
        sources.append(path)
    train_unet(sources, tmp_path / "unet", UnetParams(lr=1e-3, batch_size=32, epochs=4, base_width=8, seed=0))

    image, label, mask, spacing = prepared(10)
    segmenter = Segmenter(*load_model(tmp_path / "unet" / "model.pt", torch.device("cpu")))
    probability = predict_probability(segmenter, image, mask, P, 64)
    learnt = segmentation_metrics(label, probability >= 0.5, spacing, mask)
    background = segmentation_metrics(label, np.zeros_like(label), spacing, mask)
    assert background["dsc"] == 0
    assert learnt["dsc"] > 0.5, learnt
