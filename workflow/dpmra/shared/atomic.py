"""Atomic file writes (any file, JSON, TSV): write under a temporary name beside the target, then rename onto it.

A run killed while writing leaves the previous file (or none), never a truncated one with the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd


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


def write_json(data: dict, path: Path) -> None:
    """Write one JSON object (indented, newline-terminated) atomically."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


def write_tsv(table: pd.DataFrame, path: Path) -> None:
    """Write a tab-separated table with a header row and 6 significant digits, atomically."""
    write_atomic(path, lambda tmp: table.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
