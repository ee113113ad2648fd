"""Atomic file writes (a crash mid-write never leaves a half-written result behind), and the console the
tables are printed to."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (where the platform and file system allow it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", clean_stale: bool = False) -> Iterator[IO]:
    """A handle on a temporary file beside ``path``; on success it is fsynced and renamed over ``path``, so a
    reader sees the old file or the new one, never half of one.

    The temporary file is created with the umask's permissions, as ``open`` would create ``path``.
    ``clean_stale`` first removes the temporary files of an earlier writer killed mid-write (only where one
    process writes ``path``: a checkpoint, written by rank 0).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    with atomic_file(path, "w") as handle:
        handle.write(text)
    return Path(path)


def atomic_savez(path: str | os.PathLike, **arrays: Any) -> Path:
    """``numpy.savez`` written as :func:`atomic_write_text` writes text (no ``.npz`` suffix is added)."""
    import numpy as np

    with atomic_file(path, "wb") as handle:
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
