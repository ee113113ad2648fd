"""Atomic file writes (a crash mid-write never leaves a half-written result behind), and the console the
tables are printed to."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def _atomic_file(path: str | os.PathLike, mode: str) -> Iterator[IO]:
    """A handle on a temporary file in ``path``'s directory; on success it is fsynced and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    with _atomic_file(path, "w") as handle:
        handle.write(text)
    return Path(path)


def atomic_savez(path: str | os.PathLike, **arrays: Any) -> Path:
    """``numpy.savez`` written as :func:`atomic_write_text` writes text (no ``.npz`` suffix is added)."""
    import numpy as np

    with _atomic_file(path, "wb") as handle:
        np.savez(handle, **arrays)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


LOG_WIDTH = 200


def console():
    """A rich Console. Written to a file or pipe (a job's log) it is ``LOG_WIDTH`` wide rather than rich's 80,
    so wide per-size tables keep one line per row; ``COLUMNS`` still decides where it is set."""
    from rich.console import Console

    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(width=LOG_WIDTH)
    return out
