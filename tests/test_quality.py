"""Quality stage: Fréchet distance, SSIM diversity against scikit-image, t-SNE, and the stage's files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage.metrics import structural_similarity

from dpmra.evaluation.quality import (
    QUALITY_COLUMNS,
    fd_scores,
    quality_table,
    run_quality,
    run_ssim_real,
    run_tsne,
    ssim_diversity,
    tsne_embedding,
    write_quality_table,
)
from dpmra.features.extract import RANDOM_CNN, feature_statistics, frechet_distance

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_frechet_distance_is_zero_for_identical_sets():
    features = np.random.default_rng(0).normal(size=(300, 16)) @ np.random.default_rng(1).normal(size=(16, 16))
    stats = feature_statistics(features)
    assert abs(frechet_distance(*stats, *stats)) < 1e-8


def test_frechet_distance_of_two_diagonal_gaussians_is_analytic():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_survives_singular_covariances():
    rng = np.random.default_rng(0)
    a, b = feature_statistics(rng.normal(size=(5, 12))), feature_statistics(rng.normal(size=(5, 12)))
    assert np.isfinite(frechet_distance(*a, *b))
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(a[0], a[1], b[0][:3], b[1][:3, :3])


def test_frechet_distance_agrees_with_pytorch_fid():
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    rng = np.random.default_rng(0)
    a, b = feature_statistics(rng.normal(size=(200, 10))), feature_statistics(rng.normal(1, 2, size=(200, 10)))
    assert frechet_distance(*a, *b) == pytest.approx(fid_score.calculate_frechet_distance(*a, *b), rel=1e-9)


def ssim_images(n: int = 12, size: int = 32) -> np.ndarray:
    """Textured patches on 0..255 with an identical pair and a constant patch among them."""
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 1, size)
    x = rng.uniform(0, 255, (n, size, size)) * ramp[None, :, None] + 60 * ramp[None, None, :]
    x[1] = x[0]
    x[2] = 128.0
    return x.astype(np.float32)


def ssim_loop(images: np.ndarray) -> float:
    """Mean of scikit-image's SSIM over all unordered pairs (float64 inputs, data range 255)."""
    x = images.astype(np.float64)
    return float(
        np.mean(
            [
                structural_similarity(x[i], x[j], data_range=255.0)
                for i in range(len(x))
                for j in range(i + 1, len(x))
            ]
        )
    )


@pytest.mark.parametrize("size", [16, 33])
def test_ssim_diversity_equals_a_loop_over_scikit_image(size):
    x = ssim_images(size=size)
    assert ssim_diversity(x, data_range=255.0) == pytest.approx(ssim_loop(x), abs=1e-7)


def test_ssim_diversity_draws_max_images_with_the_seed():
    x = ssim_images()
    drawn = x[np.random.default_rng(7).permutation(len(x))[:5]]
    assert ssim_diversity(x, max_images=5, seed=7) == pytest.approx(ssim_loop(drawn), abs=1e-7)
    assert ssim_diversity(x[:2]) == pytest.approx(ssim_loop(x[:2]), abs=1e-7)  # one identical pair
    with pytest.raises(ValueError, match="at least 2"):
        ssim_diversity(x[:1])
    with pytest.raises(ValueError, match="7 x 7"):
        ssim_diversity(x[:, :6, :6])


def blobs(n: int, seed: int, size: int = 16) -> np.ndarray:
    """Noise patches, half with a bright square, on 0..255."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 80, (n, size, size))
    x[: n // 2, 4:10, 4:10] += 150
    return x.astype(np.float32)


def test_fd_scores_use_equal_counts_and_gap_signals_memorisation():
    train, test = blobs(60, 1), blobs(35, 2)
    memorised = fd_scores(train[:40], train, test, RANDOM_CNN, n=50, seed=0)
    assert memorised["fd_backbone"] == RANDOM_CNN
    assert memorised["n_fd"] == 35 and memorised["n_fd_requested"] == 50  # the smallest set bounds every draw
    assert memorised["fd_gap"] == pytest.approx(memorised["fd_test"] - memorised["fd_train"])
    assert memorised["fd_gap"] > 0  # closer to the training patients than to unseen ones


def test_tsne_embedding_table():
    table = tsne_embedding({"real": blobs(30, 1), "sigma~inf/seed~0": blobs(20, 2)}, 25, perplexity=5, seed=0,
                           backbone=RANDOM_CNN)
    assert list(table.columns) == ["x", "y", "source", "index"]
    assert table["source"].value_counts().to_dict() == {"real": 25, "sigma~inf/seed~0": 20}
    assert np.isfinite(table[["x", "y"]].to_numpy()).all()
    with pytest.raises(ValueError, match="perplexity"):
        tsne_embedding({"real": blobs(10, 1)}, 10, perplexity=30, backbone=RANDOM_CNN)


def synthetic_release(root: Path, sigma: str, seed: int, images: np.ndarray, epsilon: float | None) -> Path:
    """A released dataset and its privacy card under root/sigma~{sigma}/seed~{seed}/, as the release stage writes."""
    folder = root / f"sigma~{sigma}" / f"seed~{seed}"
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "dataset.npz", image=images, label=(images > 200).astype(np.uint8))
    card = {"sigma": sigma if sigma == "inf" else float(sigma), "seed": seed,
            "epsilon": {"rdp": epsilon, "prv": epsilon}}
    (folder / "privacy_card.json").write_text(json.dumps(card))
    return folder


def test_stage_files_end_to_end(tmp_path):
    patches = {}
    for i, patient in enumerate(["p1", "p2", "p3"]):
        patches[patient] = tmp_path / f"{patient}.npz"
        image = blobs(40, i) * 0.5 + 20  # real units differ from 0..255: the stage rescales them
        np.savez(patches[patient], image=image, label=np.zeros(image.shape, np.uint8), kind=np.zeros(40, np.uint8))
    synth = tmp_path / "synth"
    private = synthetic_release(synth, "1.5", 0, blobs(40, 5) * 255 / 230, 2.5)
    public = synthetic_release(synth, "inf", 1, blobs(40, 6) * 255 / 230, None)
    train, test = [patches["p1"], patches["p2"]], [patches["p3"]]
    result = run_quality(private / "dataset.npz", train, test, tmp_path / "q1.json", "auto", None, 30, 20, 0)
    written = json.loads((tmp_path / "q1.json").read_text())
    assert written == pytest.approx(result)
    assert written["n_fd"] == 30 and written["n_ssim"] == 20 and written["ssim_data_range"] == 255.0
    assert written["fd_backbone"] == RANDOM_CNN  # no pytorch-fid here: the offline backbone, never "FID"
    run_quality(public / "dataset.npz", train, test, tmp_path / "q2.json", RANDOM_CNN, None, 30, 20, 0)
    real = run_ssim_real(train, tmp_path / "real.json", 20, 0)
    assert real["source"] == "real" and 0 < real["ssim_mean"] < 1

    out = tmp_path / "tables" / "quality.tsv"
    cards = [private / "privacy_card.json", public / "privacy_card.json"]
    write_quality_table([tmp_path / "q1.json", tmp_path / "q2.json"], cards, tmp_path / "real.json", out)
    table = pd.read_csv(out, sep="\t", keep_default_na=False)
    assert list(table.columns) == QUALITY_COLUMNS
    assert list(table["source"]) == ["sigma~1.5/seed~0", "sigma~inf/seed~1", "real"]
    assert table.loc[0, "epsilon"] == "2.5" and table.loc[1, "epsilon"] == "inf" and table.loc[1, "sigma"] == "inf"
    assert table.loc[2, "fd_train"] == ""
    assert float(table.loc[2, "ssim_mean"]) == pytest.approx(real["ssim_mean"], rel=1e-5)
    with pytest.raises(ValueError, match="not the dataset of"):
        quality_table([tmp_path / "q1.json"], cards[1:])

    tsne = run_tsne({"real": test, "sigma~1.5/seed~0": [private / "dataset.npz"]}, tmp_path / "tsne.tsv", 20, 0,
                    "auto", None, perplexity=5)
    assert pd.read_csv(tmp_path / "tsne.tsv", sep="\t").shape == (40, 4) and len(tsne) == 40
