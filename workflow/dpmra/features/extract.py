"""Image features for Fréchet distances and t-SNE: the paper's Inception-v3 (optional) or a fixed random CNN (offline).

Backbones, by the name every output reports in its `fd_backbone` field:

- ``inception-v3``: the paper's FID features. pytorch-fid's Inception-v3 (the TensorFlow FID weights), pool3,
  2048-d; grayscale replicated to three channels, pixel values 0..255 divided by 255 (what pytorch-fid's
  ``ToTensor`` gives for 8-bit images, but without rounding to 8 bits), then pytorch-fid's own bilinear resize to
  299 x 299 and scaling to [-1, 1]. Used only when the optional ``pytorch-fid`` package (which needs torchvision)
  imports and its weights are on disk: a configured file, or pytorch-fid's torch hub cache file
  ``pt_inception-2015-12-05-*.pth``. Nothing is ever downloaded. Distances on it are FID.
- ``random-cnn-s0-d256``: the offline default, needing no download. See `random_cnn`. Distances on it are
  Fréchet distances on random features, never FID, and are not comparable to FID values in the literature.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import nn

from dpmra.features.backbones import BACKBONES, FID_INSTALL, INCEPTION, RANDOM_CNN, hub_weights, missing_weights_reason
from dpmra.shared.devices import default_device

log = logging.getLogger(__name__)

RANDOM_CNN_SEED = 0
RANDOM_CNN_WIDTHS = (32, 64, 128, 256)
INCEPTION_DIMS = 2048


def random_cnn() -> nn.Sequential:
    """The offline feature extractor: four 3x3 stride-2 conv + ReLU layers (32-64-128-256), global mean pool.

    Why random weights: a network initialised at random and never trained gives image embeddings that need no
    download and no training data, and Fréchet distances on such random embeddings still rank generative models
    sensibly (Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative models", random-init
    embeddings). Weights are drawn with numpy from a fixed seed (He-normal, no bias), so they are identical on every
    machine and torch version; the 256-d output is small enough for covariances from a few thousand patches.
    """
    rng = np.random.default_rng(RANDOM_CNN_SEED)
    layers: list[nn.Module] = []
    channels = 1
    for width in RANDOM_CNN_WIDTHS:
        conv = nn.Conv2d(channels, width, kernel_size=3, stride=2, padding=1, bias=False)
        std = np.sqrt(2.0 / (channels * 9))
        conv.weight.data = torch.from_numpy(rng.standard_normal(conv.weight.shape) * std).float()
        layers += [conv, nn.ReLU()]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = nn.Sequential(*layers).eval()
    model.requires_grad_(False)
    return model


def import_inception():
    """pytorch-fid's inception module; raises ImportError where pytorch-fid (or its torchvision) is missing."""
    import pytorch_fid.inception

    return pytorch_fid.inception


def inception_unavailable(weights: Path | None) -> str | None:
    """Why the Inception-v3 backbone cannot run here (None if it can): pytorch-fid missing, or no weights on disk."""
    try:
        import_inception()
    except (ImportError, RuntimeError, AttributeError) as err:  # a torchvision built for another torch fails so
        return f"pytorch-fid is not importable ({err}); run `{FID_INSTALL}`"
    if weights is None and hub_weights() is None:
        return missing_weights_reason()
    return None


def resolve_backbone(requested: str, weights: Path | None = None) -> str:
    """The backbone to use: `inception-v3` when requested and available (else an error), `auto` falls back to
    the random CNN with a log line when Inception cannot run. A configured weights file must exist."""
    if requested not in BACKBONES:
        raise ValueError(f"unknown feature backbone {requested!r}; choose one of {', '.join(BACKBONES)}")
    if weights is not None and not Path(weights).is_file():
        raise ValueError(f"{weights}: configured Inception weights file not found")
    if requested == RANDOM_CNN:
        return RANDOM_CNN
    reason = inception_unavailable(weights)
    if reason is None:
        return INCEPTION
    if requested == INCEPTION:
        raise ValueError(f"backbone {INCEPTION} requested but {reason}")
    log.info("Inception-v3 unavailable (%s): using %s; distances are not FID", reason, RANDOM_CNN)
    return RANDOM_CNN


def backbone_name(backbone: str) -> str:
    """The name tables report in `fd_backbone` for a resolved backbone (`auto` is not a result)."""
    if backbone not in (INCEPTION, RANDOM_CNN):
        raise ValueError(f"{backbone!r} is not a resolved backbone; call resolve_backbone first")
    return f"{INCEPTION}-pool3" if backbone == INCEPTION else RANDOM_CNN


def inception_model(weights: Path | None) -> nn.Module:
    """pytorch-fid's pool3 Inception-v3 with weights read from a local file, never from the network."""
    fid_inception = import_inception()
    path = Path(weights) if weights is not None else hub_weights()
    if path is None:
        raise ValueError(inception_unavailable(None))
    state = torch.load(path, map_location="cpu", weights_only=True)
    # pytorch-fid fetches its weights inside the constructor with load_state_dict_from_url (downloading when not
    # cached); hand it the local file's weights instead so no configuration can trigger a download.
    original = fid_inception.load_state_dict_from_url
    fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[INCEPTION_DIMS]])
    finally:
        fid_inception.load_state_dict_from_url = original
    return model.eval()


@torch.no_grad()
def extract_features(
    images: np.ndarray,
    backbone: str,
    weights: Path | None = None,
    batch_size: int = 256,
    device: str | None = None,
) -> np.ndarray:
    """Features (n, d) float64 of images (n, P, P) on the 0..255 scale, with a resolved backbone."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, P, P), got {images.shape}")
    dev = default_device(device)
    if backbone == RANDOM_CNN:
        model = random_cnn().to(dev)

        def prepare(x: torch.Tensor) -> torch.Tensor:
            return x[:, None] / 127.5 - 1.0

        def embed(x: torch.Tensor) -> torch.Tensor:
            return model(x)

    elif backbone == INCEPTION:
        model = inception_model(weights).to(dev)

        def prepare(x: torch.Tensor) -> torch.Tensor:
            # pytorch-fid expects RGB in [0, 1] and resizes and rescales to [-1, 1] itself
            return (x / 255.0)[:, None].expand(-1, 3, -1, -1)

        def embed(x: torch.Tensor) -> torch.Tensor:
            return model(x)[0].flatten(1)

    else:
        raise ValueError(f"{backbone!r} is not a resolved backbone; call resolve_backbone first")
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).to(dev)
        out.append(embed(prepare(batch)).double().cpu().numpy())
    dims = INCEPTION_DIMS if backbone == INCEPTION else RANDOM_CNN_WIDTHS[-1]
    return np.concatenate(out) if out else np.zeros((0, dims))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample covariance (rows are samples) of a feature matrix, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need a (n >= 2, d) feature matrix, got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def image_statistics(
    images: np.ndarray, backbone: str, weights: Path | None = None, device: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the features of images (n, P, P) on the 0..255 scale: one side of a Fréchet distance."""
    return feature_statistics(extract_features(images, backbone, weights, device=device))


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)), the Fréchet distance of two Gaussians.

    Same numerical care as pytorch-fid's calculate_frechet_distance: when the product's square root is not
    finite (near-singular covariances) eps is added to both diagonals, and an imaginary part left by sqrtm is
    dropped only if the diagonal's is below 1e-3, else it is an error.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    cov1, cov2 = np.atleast_2d(cov1), np.atleast_2d(cov2)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"mismatched statistics: means {mu1.shape}, {mu2.shape}; covariances {cov1.shape}, {cov2.shape}"
        )
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # scipy warns on singular products; the finiteness check below is pytorch-fid's response to them
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(covmean).all():
            log.warning("Fréchet distance: singular covariance product; adding %g to the diagonals", eps)
            offset = np.eye(len(cov1)) * eps
            covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))
