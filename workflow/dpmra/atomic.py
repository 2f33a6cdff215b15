"""Atomic file writes: write under a temporary name beside the target, then rename onto it.

A run killed while writing leaves the previous file (or none), never a truncated one with the final name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_path(path: Path) -> Path:
    """A fresh temporary path beside `path`, to be renamed onto it once fully written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix="".join(path.suffixes))
    os.close(fd)
    return Path(tmp)


def write_atomic(path: Path, write) -> None:
    """Call `write(tmp_path)` and rename the result onto `path`, so no half-written file keeps the final name."""
    tmp = atomic_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
