"""Atomic file writes (a crash mid-write never leaves a half-written result behind; a full disk leaves the previous
file and says so in one line), checksum files that let a reader verify what it reads, and the console the tables
are printed to."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from rich.console import Console


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


class DiskFullError(OSError):
    """A write that ran out of space. The previous version of the file is intact; the message is one line."""

    def __init__(self, path: Path, needed: int, free: int) -> None:
        mib = 1 << 20
        super().__init__(
            errno.ENOSPC,
            f"{path}: no space left on device: writing it needs about {needed / mib:.1f} MiB, "
            f"{free / mib:.1f} MiB are free in {path.parent}; the previous file is intact "
            "(free some space, then rerun the same command to resume)",
        )
        self.path, self.needed, self.free = path, needed, free

    def __str__(self) -> str:
        return self.strerror


class _Tracking:
    """A binary file wrapper that keeps the first OSError of a write (libraries such as torch.save turn it into
    their own error, losing the errno) and, with ``digest``, hashes the bytes as they go (no second read)."""

    def __init__(self, handle: IO, digest: bool) -> None:
        self.handle, self.error = handle, None
        self.sha256 = hashlib.sha256() if digest else None

    def write(self, data) -> int:
        try:
            written = self.handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise
        if self.sha256 is not None:
            self.sha256.update(data)
        return written

    def __getattr__(self, name: str) -> Any:  # flush, fileno, tell, seek...: the file's own
        return getattr(self.handle, name)


def _out_of_space(error: BaseException, tracking: _Tracking | None, folder: Path) -> bool:
    """Whether a failed write ran out of space: ENOSPC / EDQUOT, seen directly or by the file wrapper, or a
    library error raised while the file system was full (less than 1 MiB left)."""
    for candidate in (error, tracking.error if tracking else None, error.__cause__, error.__context__):
        if isinstance(candidate, OSError) and candidate.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
    return isinstance(error, (OSError, RuntimeError)) and shutil.disk_usage(folder).free < (1 << 20)


@contextmanager
def atomic_file(
    path: str | os.PathLike, mode: str = "w", clean_stale: bool = False, checksum: bool = False
) -> Iterator[IO]:
    """A handle on a temporary file beside ``path``; on success it is fsynced and renamed over ``path``, so a
    reader sees the old file or the new one, never half of one.

    The temporary file is created with the umask's permissions, as ``open`` would create ``path``.
    ``clean_stale`` first removes the temporary files of an earlier writer killed mid-write (only where one
    process writes ``path``: a checkpoint, written by rank 0). ``checksum`` (binary mode) hashes the bytes as
    they are written and then writes ``<path>.sha256`` (see :func:`write_checksum`). A write that runs out
    of space raises :class:`DiskFullError`, with the previous file untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    tracking = None
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, mode) as handle:
            tracking = _Tracking(handle, digest=checksum) if "b" in mode else None
            yield tracking or handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        written = tmp.stat().st_size if tmp.exists() else 0
        full = _out_of_space(error, tracking, path.parent)
        tmp.unlink(missing_ok=True)
        if full:
            # The file it replaces is the best guess of the size (checkpoints keep theirs from save to save).
            previous = path.stat().st_size if path.is_file() else 0
            raise DiskFullError(path, max(written, previous), shutil.disk_usage(path.parent).free) from error
        raise
    fsync_dir(path.parent)
    if checksum and tracking is not None:
        write_checksum(path, tracking.sha256.hexdigest())


def checksum_path(path: str | os.PathLike) -> Path:
    """``<path>.sha256``: the SHA-256 of ``path`` in ``sha256sum`` format, so ``sha256sum -c`` checks it too."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_checksum(path: str | os.PathLike, hexdigest: str) -> Path:
    return atomic_write_text(checksum_path(path), f"{hexdigest}  {Path(path).name}\n")


def read_checksum(path: str | os.PathLike) -> str | None:
    """The recorded SHA-256 of ``path``, or None when there is no (readable) checksum file."""
    try:
        return checksum_path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None


def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    sha256 = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            sha256.update(chunk)
    return sha256.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    with atomic_file(path, "w") as handle:
        handle.write(text)
    return Path(path)


def atomic_savez(path: str | os.PathLike, **arrays: Any) -> Path:
    """``numpy.savez`` written as :func:`atomic_write_text` writes text (no ``.npz`` suffix is added)."""
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
    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(width=LOG_WIDTH)
    return out
