"""How a data module's loaders run: batch size, worker processes, pinned memory, the training order's seed.

Every data module takes these as flat keyword arguments (the ``data.batch_size=64`` of a run's config) and
keeps them as one :class:`LoaderOptions`. ``num_workers`` and ``pin_memory`` may be left to null (None): they are
then decided for the trainer each loader is built for (:meth:`LoaderOptions.for_trainer`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from mrl.common.errors import ConfigError


def available_cores() -> int:
    """CPU cores this process may run on (``os.sched_getaffinity``; a SLURM or cgroup limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def uses_gpu(trainer: Any) -> bool:
    """Whether batches go to a GPU: the trainer's device, or any visible GPU when no trainer is attached."""
    if trainer is None:
        return torch.cuda.is_available()
    return trainer.strategy.root_device.type == "cuda"


def loader_workers(local_processes: int = 1) -> int:
    """DataLoader workers for one training process: the cores it may use, shared among the processes of this
    machine when they all see every core (one per GPU under DDP); a process pinned to its own cores (SLURM's
    ``--cpus-per-task`` binding) keeps them all."""
    cores = available_cores()
    if cores >= (os.cpu_count() or cores):
        cores //= max(1, int(local_processes))
    return max(1, cores - 1) if cores > 2 else cores  # one core left for the training process itself


def local_processes(trainer: Any) -> int:
    """Training processes on this machine: torchrun's ``LOCAL_WORLD_SIZE``, else the trainer's devices."""
    return int(os.environ.get("LOCAL_WORLD_SIZE") or getattr(trainer, "num_devices", 1) or 1)


@dataclass(frozen=True)
class LoaderOptions:
    """The loader keys every data module accepts (``data.<field>``); a data module's own defaults are in its
    ``loader_defaults``.

    - ``batch_size``: examples per batch and process (the global batch is this times the devices).
    - ``num_workers``: DataLoader worker processes; 0 loads in the training process; null: the cores this process
      may use, shared among the machine's training processes (:func:`loader_workers`).
    - ``pin_memory``: page-locked batches, for faster copies to a GPU; null: pinned when batches go to a GPU.
    - ``persistent_workers``: keep the workers between epochs (only with ``num_workers`` > 0).
    - ``seed``: the training order's seed (:mod:`mrl.data.sampling`); the same seed gives the same batches.
    """

    batch_size: int = 64
    num_workers: int | None = 0
    pin_memory: bool | None = False
    persistent_workers: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise ConfigError("data.batch_size", self.batch_size, "use a positive integer")
        if self.num_workers is not None and (isinstance(self.num_workers, bool) or int(self.num_workers) < 0):
            raise ConfigError("data.num_workers", self.num_workers, "use 0 or a positive integer")
        set_field = object.__setattr__  # frozen: the checked values are stored in their types once, here
        set_field(self, "batch_size", int(self.batch_size))
        set_field(self, "num_workers", None if self.num_workers is None else int(self.num_workers))
        set_field(self, "pin_memory", None if self.pin_memory is None else bool(self.pin_memory))
        set_field(self, "persistent_workers", bool(self.persistent_workers))
        set_field(self, "seed", int(self.seed))

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def for_trainer(self, trainer: Any = None) -> LoaderOptions:
        """These options with null ``num_workers`` / ``pin_memory`` decided for ``trainer`` (None: no trainer
        attached yet)."""
        return replace(
            self,
            num_workers=loader_workers(local_processes(trainer)) if self.num_workers is None else self.num_workers,
            pin_memory=uses_gpu(trainer) if self.pin_memory is None else self.pin_memory,
        )

    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a ``DataLoader`` (call on options decided by :meth:`for_trainer`)."""
        return {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers and bool(self.num_workers),
        }
