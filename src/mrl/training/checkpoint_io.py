"""Checkpoint writing that survives a kill.

Lightning's ``TorchCheckpointIO`` writes local files through an fsspec transaction: the bytes go to a
temporary file from ``tempfile.mkstemp()`` (the system temp folder, often another file system than
the run directory on a cluster), which is then ``shutil.move``-d into place without an fsync. Across
file systems that move is a copy, so a job killed during it leaves a truncated ``last.ckpt`` behind.
:class:`AtomicCheckpointIO` writes next to the target, fsyncs, then renames over it: a reader (or a
rerun) sees the old checkpoint or the new one, never half of one. Beside each checkpoint it writes
``<name>.sha256`` (hashed while writing), which :func:`mrl.runs.verify_checkpoint` checks before a resume or an
evaluation reads it. A save that runs out of space raises :class:`mrl.common.io.DiskFullError` (one line: which
file, how much space it needs) and leaves the previous checkpoint whole: the run stops, and rerunning it resumes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mrl.common.io import atomic_file, checksum_path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the target's folder, fsync, ``os.replace``, then its checksum file."""
    with atomic_file(path, "wb", clean_stale=True, checksum=True) as handle:
        torch.save(obj, handle)
    return Path(path)


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

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        if "file" in _protocols(path):
            checksum_path(path).unlink(missing_ok=True)


def _protocols(path: Any) -> tuple[str, ...]:
    protocol = get_filesystem(path).protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
