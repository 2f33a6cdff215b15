"""Checking a bundle for private data: every training patch, patient id or key byte it might hold, searched for.

Used by the tests and for audits of small bundles: a plain substring search through every file of a bundle
(folder or zip), its gzip streams and zip members, for the byte forms a copied patch would take (float32 and
uint8, as stored and min-max scaled, row- and column-major), patient ids in text and NIfTI headers, and the key
in raw, hex and base64.
"""

from __future__ import annotations

import base64
import gzip
import io
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

MIN_DISTINCT_VALUES = 16


def byte_streams(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """A file's bytes, then recursively its gzip stream and its zip members (names and contents)."""
    yield name, data
    if data[:2] == b"\x1f\x8b":
        yield from byte_streams(f"{name}!gunzip", gzip.decompress(data))
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                yield f"{name}!{member} (name)", member.encode()
                yield from byte_streams(f"{name}!{member}", archive.read(member))


def bundle_streams(root: Path) -> Iterator[tuple[str, bytes]]:
    """Every file under `root` (a folder or one file) as byte streams, decompressed and unzipped."""
    root = Path(root)
    paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for path in paths:
        yield from byte_streams(str(path), path.read_bytes())


def patch_needles(patch: np.ndarray) -> dict[str, bytes]:
    """Byte forms a copied patch would take: float32 and uint8, as stored and min-max scaled, row- and column-major."""
    patch = np.asarray(patch, dtype=np.float32)
    span = float(patch.max() - patch.min())
    scaled = ((patch - patch.min()) * (255 / span)).astype(np.float32)
    forms = {
        "float32": patch,
        "uint8": np.clip(np.rint(patch), 0, 255).astype(np.uint8),
        "min-max float32": scaled,
        "min-max uint8": np.clip(np.rint(scaled), 0, 255).astype(np.uint8),
    }
    needles = {}
    for form, array in forms.items():
        needles[form] = array.tobytes()
        needles[f"{form}, transposed"] = np.ascontiguousarray(array.T).tobytes()
    return needles


def distinctive(patch: np.ndarray) -> bool:
    """Whether a patch has enough distinct values that its bytes cannot match by chance (flat ones could)."""
    return len(np.unique(np.clip(np.rint(patch), 0, 255))) >= MIN_DISTINCT_VALUES


def private_needles(
    patch_arrays: Iterable[np.ndarray], patient_ids: Iterable[str], secrets: Iterable[bytes]
) -> dict[str, bytes]:
    """{description: bytes} of every private string to look for: patches, patient ids, key bytes and encodings."""
    needles = {}
    for k, patches in enumerate(patch_arrays):
        for i, patch in enumerate(np.asarray(patches)):
            if distinctive(patch):
                needles |= {f"training patch {i} of array {k} ({f})": b for f, b in patch_needles(patch).items()}
    for patient in patient_ids:
        needles[f"patient id {patient}"] = patient.encode()
    for j, secret in enumerate(secrets):
        forms = {
            "raw": secret,
            "hex": secret.hex().encode(),
            "HEX": secret.hex().upper().encode(),
            "base64": base64.b64encode(secret),
        }
        needles |= {f"secret {j} ({form})": data for form, data in forms.items()}
    return needles


def find_leaks(
    bundle: Path, patch_arrays: Iterable[np.ndarray], patient_ids: Iterable[str], secrets: Iterable[bytes]
) -> list[str]:
    """Where any training patch, patient id or secret key occurs in a bundle (folder or zip), as 'stream: what'."""
    needles = private_needles(patch_arrays, [], secrets)
    ids = {f"patient id {patient}": patient.encode() for patient in patient_ids}
    leaks = []
    for name, data in bundle_streams(bundle):
        text = textual_part(name, data)
        leaks += [f"{name}: {what}" for what, needle in needles.items() if needle in data]
        leaks += [f"{name}: {what}" for what, needle in ids.items() if needle in text or needle in name.encode()]
    return leaks


TEXT_SUFFIXES = (".json", ".md", ".tsv", ".txt", "(name)")
NIFTI_HEADER_BYTES = 352


def textual_part(name: str, data: bytes) -> bytes:
    """Where a patient id would be text: text files, member names and NIfTI headers, not pixel arrays (in a
    uint8 stack any 4 bytes may spell an id by chance)."""
    if name.endswith(TEXT_SUFFIXES):
        return data
    if name.endswith((".nii", ".nii.gz!gunzip")):
        return data[:NIFTI_HEADER_BYTES]
    return b""
