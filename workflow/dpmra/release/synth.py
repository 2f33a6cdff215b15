"""Synthetic release: a trained generator sampled into a labelled patch dataset, with its privacy card.

Sampling is post-processing of the trained generator: this stage reads ``generator.pt``
(weights, accountant output, run parameters) and never the training data, so everything
it writes is covered by the run's (epsilon, delta). The card (`dpmra.release.cards`) states what that guarantee is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from dpmra.data.intensity import load_images, rescale_patches
from dpmra.features.extract import backbone_name, frechet_distance, image_statistics, resolve_backbone
from dpmra.generators.interface import epoch_generators, generate, load_release
from dpmra.release.cards import IMAGE_SCALING, privacy_card
from dpmra.release.params import ReleaseParams, Validation
from dpmra.shared.atomic import write_atomic, write_json
from dpmra.shared.pictures import save_patch_gallery

log = logging.getLogger(__name__)

GALLERY_SIZE = 8


def to_dataset(pairs: np.ndarray, label_threshold: float, intensity: str = "volume") -> tuple[np.ndarray, np.ndarray]:
    """Image back on the scale the GAN was trained on (float32 0..255), label binarised (uint8).

    ``volume``: (x + 1) * 127.5, the inverse of the training map, so synthetic and real patches share one scale;
    ``per_patch``: the paper's per-patch min-max to 0..255.
    """
    if intensity not in IMAGE_SCALING:
        raise ValueError(f"intensity must be one of {', '.join(IMAGE_SCALING)}, got {intensity!r}")
    if intensity == "volume":
        image = ((pairs[:, 0] + 1.0) * 127.5).clip(0.0, 255.0).astype(np.float32)
    else:
        image = rescale_patches(pairs[:, 0], 0.0, 255.0)
    label = ((pairs[:, 1] + 1) / 2 > label_threshold).astype(np.uint8)
    return image, label


def choose_by_validation(run_dir: Path, release: ReleaseParams, validation: Validation) -> tuple[dict, list[dict]]:
    """The epoch generator whose samples have the lowest Frechet distance to the validation patients' patches,
    and every epoch's distance.

    Reads the run's checkpoints and held-out patches only: no training data outside the accounted training.
    """
    backbone = resolve_backbone(validation.backbone, validation.weights)
    intensity = load_release(run_dir / "generator.pt")["intensity"]
    real = load_images(validation.patches)
    real = real[np.random.default_rng(release.seed).permutation(len(real))[: release.selection_samples]]
    real_stats = image_statistics(real, backbone, validation.weights)
    scores, generators = [], {}
    for epoch, stored in epoch_generators(run_dir):
        image, _ = to_dataset(generate(stored, len(real), release.seed), release.label_threshold, intensity)
        fd = frechet_distance(*image_statistics(image, backbone, validation.weights), *real_stats)
        scores.append({"epoch": epoch, "fd": fd, "fd_backbone": backbone_name(backbone), "n": len(real)})
        generators[epoch] = stored
        log.info("epoch %d: Frechet distance to the validation patches %.4g", epoch, fd)
    best = min(scores, key=lambda row: row["fd"])["epoch"]
    return generators[best], scores


def write_stack(volume: np.ndarray, path: Path) -> None:
    """Patches (n, P, P) as one P x P x n uint8 NIfTI (1 mm voxels: patches carry no scanner geometry)."""
    stack = np.clip(np.rint(np.moveaxis(volume, 0, -1)), 0, 255).astype(np.uint8)
    write_atomic(path, lambda tmp: nib.save(nib.Nifti1Image(stack, np.eye(4)), str(tmp)))


def release_dataset(
    generator_path: Path,
    out_dir: Path,
    release: ReleaseParams,
    dataset_name: str,
    validation: Validation | None = None,
) -> dict:
    """Write dataset.npz, image and label stacks, a gallery and privacy_card.json; return the card.

    The last epoch's generator is released, or with ``release.checkpoint == "val_fd"`` the epoch chosen
    on ``validation``; the card's epsilon is always that of the whole run.
    """
    out_dir = Path(out_dir)
    stored = load_release(generator_path)
    generator, scores = stored, []
    if release.checkpoint == "val_fd" and stored.get("family") == "pe":
        log.info("%s: a Private Evolution run releases its last population; checkpoint val_fd does not apply", dataset_name)
    elif release.checkpoint == "val_fd":
        if validation is None or not validation.patches:
            raise ValueError("checkpoint 'val_fd' needs the validation patients' patch files")
        generator, scores = choose_by_validation(Path(generator_path).parent, release, validation)
    log.info("%s: sampling %d pairs (sampling seed %d)", dataset_name, release.n, release.seed)
    image, label = to_dataset(
        generate(generator, release.n, release.seed), release.label_threshold, stored["intensity"]
    )
    write_atomic(out_dir / "dataset.npz", lambda tmp: np.savez_compressed(tmp, image=image, label=label))
    write_stack(image, out_dir / "images.nii.gz")
    write_stack(label * 255, out_dir / "labels.nii.gz")
    card = privacy_card(stored, release, dataset_name, scores)
    eps = card["epsilon"]
    save_patch_gallery(
        image[:GALLERY_SIZE],
        label[:GALLERY_SIZE],
        out_dir / "gallery.png",
        title=f"{dataset_name}: epsilon {eps.get('gdp', eps.get('rdp'))} ({'GDP' if 'gdp' in eps else 'RDP'}), "
        f"delta {card['delta']:.3g}",
    )
    write_json(card, out_dir / "privacy_card.json")
    log.info(
        "%s: %d pairs, vessel share %.4f, epsilon %s -> %s", dataset_name, release.n, label.mean(), eps, out_dir
    )
    return card
