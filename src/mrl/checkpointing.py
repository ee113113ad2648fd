"""Checkpoint writing that survives a kill, and the choice of checkpoint a rerun resumes from.

Lightning's ``TorchCheckpointIO`` writes local files through an fsspec transaction: the bytes go to a
temporary file from ``tempfile.mkstemp()`` (the system temp folder, often another file system than
the run directory on a cluster), which is then ``shutil.move``-d into place without an fsync. Across
file systems that move is a copy, so a job killed during it leaves a truncated ``last.ckpt`` behind.
:class:`AtomicCheckpointIO` writes next to the target, fsyncs, then renames over it: a reader (or a
rerun) sees the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

HPC_PATTERN = "hpc_ckpt_*.ckpt"


def _fsync_dir(folder: Path) -> None:
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


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the target's folder, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of an earlier writer that was killed mid-write (one writer per file: rank 0).
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (temp file + fsync + rename).

    Remote paths (``s3://``, ``gs://``, ...) keep Lightning's own upload, which object stores make
    atomic. Loading and removal are unchanged. Wired in through ``conf/trainer/default.yaml``
    (``plugins``); every checkpoint goes through it, the SLURM requeue's ``hpc_ckpt_N.ckpt`` too.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "file" not in _protocols(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        atomic_torch_save(checkpoint, path)


def _protocols(path: Any) -> tuple[str, ...]:
    protocol = get_filesystem(path).protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def latest_resume_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint a rerun of ``run_dir`` should resume from, or None.

    Candidates: ``checkpoints/last.ckpt`` (saved at every validation and every N training steps) and
    the ``hpc_ckpt_N.ckpt`` files Lightning's SLURM auto-requeue writes into the run directory when
    SIGUSR1 arrives, which are newer than ``last.ckpt`` when the job was requeued mid-interval.
    """
    run_dir = Path(run_dir)
    candidates = [p for p in (run_dir / "checkpoints" / "last.ckpt", *run_dir.glob(HPC_PATTERN)) if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name != "last.ckpt"))
