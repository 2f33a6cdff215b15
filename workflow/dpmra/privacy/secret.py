"""The secret key behind the DP randomness: created once, never written into any output.

Differential privacy holds only against someone who cannot recompute the noise. Every
random stream the guarantee relies on (Poisson sampling, Gaussian noise) is seeded from
HMAC-SHA256(key, run name | stream name): the same key and run reproduce a run bit for
bit, and without the key the streams are unpredictable. The key file is 32 bytes from the
operating system's CSPRNG (``secrets``), mode 0600; losing it costs nothing but the
ability to replay a run.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def create_key(path: Path) -> bool:
    """Write a new key to ``path`` unless one exists; True if this call created it.

    Race-safe for parallel jobs: the key is written to a private temporary file and
    hard-linked into place, which fails if another job got there first.
    """
    path = Path(path)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def read_key(path: Path) -> bytes:
    """The key bytes, with a ValueError naming the file if it is missing or not a key."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: secret key file not found")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path}: a secret key is {KEY_BYTES} bytes, this file has {len(key)}")
    return key


def load_key(path: Path) -> bytes:
    """The key at ``path``, created on first use."""
    create_key(path)
    return read_key(path)


def derive_seed(key: bytes, run: str, stream: str) -> int:
    """A 63-bit seed for one random stream of one run: HMAC-SHA256(key, run | stream)."""
    message = f"{run}\x00{stream}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % 2**63
