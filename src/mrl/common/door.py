"""Checks at the door: an output that cannot be written, or an array that is not finite, is named in one line
before any work starts (rather than a traceback after it)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mrl.common.errors import InputError

__all__ = ["require_finite", "require_writable"]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def require_writable(path: str | os.PathLike, key: str = "out", folder: bool = False) -> Path:
    """``path`` (a file, or with ``folder=True`` a folder) can be created or replaced: its nearest existing
    ancestor is a folder this process can write in. Probed with a real temporary file (permission bits say
    nothing for root or on a read-only mount); nothing is left behind."""
    path = Path(path)
    if path.exists() and (path.is_dir() != folder):
        raise InputError(key, path, f"is a {'file' if folder else 'folder'}; give a {'folder' if folder else 'file'}")
    base = _nearest_existing(path if folder else path.parent)
    if not base.is_dir():
        raise InputError(key, path, f"cannot be created: {str(base)!r} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=base, prefix=".mrl-write-probe-"):
            pass
    except OSError as error:
        raise InputError(key, path, f"cannot be written ({error.strerror or error}); choose a writable place") from None
    return path


def require_finite(array: Any, key: str, where: str | os.PathLike) -> None:
    """Every value of ``array`` is finite; NaN or inf names the file and the first bad row."""
    values = np.asarray(array)
    if values.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(values).reshape(len(values), -1).all(axis=1) if values.ndim else ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) if values.ndim else 0
        raise InputError(
            key, where, f"{int(bad.sum())} row(s) hold NaN or inf (the first: row {row}); embed them again"
        )
