"""Checkpoint writing that survives a kill.

Lightning's ``TorchCheckpointIO`` writes local files through an fsspec transaction: the bytes go to a
temporary file from ``tempfile.mkstemp()`` (the system temp folder, often another file system than
the run directory on a cluster), which is then ``shutil.move``-d into place without an fsync. Across
file systems that move is a copy, so a job killed during it leaves a truncated ``last.ckpt`` behind.
:class:`AtomicCheckpointIO` writes next to the target, fsyncs, then renames over it: a reader (or a
rerun) sees the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mrl.common.io import atomic_file


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the target's folder, fsync, then ``os.replace``."""
    with atomic_file(path, "wb", clean_stale=True) as handle:
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


def _protocols(path: Any) -> tuple[str, ...]:
    protocol = get_filesystem(path).protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
