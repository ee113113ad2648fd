"""Training data order that survives a restart: a run resumed mid-epoch sees the rest of that epoch, once.

Lightning restores the model, the optimiser and the step count from a mid-epoch checkpoint (a SLURM
requeue, a crash after ``last.ckpt``), but a plain shuffled DataLoader starts the epoch over with a fresh
permutation: some images are seen twice in that epoch and others not at all. Here the training order is
a pure function of ``(seed, epoch)`` (:class:`torch.utils.data.DistributedSampler`, which also shards
it across DDP ranks, so Lightning keeps it instead of injecting its own). The data modules save where
training stood in every checkpoint (`ResumableOrder.state_dict`, Lightning's data-module state); a
resumed run loads it before it builds the training loader (Lightning restores data-module state before
``configure_optimizers`` first asks for the loader), and the sampler starts that epoch's permutation
after the batches the checkpoint already trained on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

_CHUNK = 65_536  # indices turned into Python ints at a time


class ResumableSampler(DistributedSampler):
    """A seeded per-epoch shuffle (sharded when ``num_replicas > 1``) whose first pass can start late.

    ``epoch`` is the epoch of the first pass (Lightning calls `set_epoch` only after a resumed run's first
    batches are drawn); ``skip`` leaves out the first ``skip`` indices of that pass, on this rank.
    """

    def __init__(
        self, dataset: Dataset, seed: int = 0, num_replicas: int = 1, rank: int = 0, epoch: int = 0, skip: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.epoch = int(epoch)
        self.skip = int(skip)

    def epoch_order(self) -> torch.Tensor:
        """This rank's indices for the epoch: `DistributedSampler`'s order (the same seeded permutation, padded
        by repeating it, every ``num_replicas``-th from ``rank``), kept in one tensor. A Python list of 10 million
        indices takes 360 MB; the tensor 80 MB."""
        count = len(self.dataset)
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(count, generator=generator)
        padding = self.total_size - count
        if padding > 0:
            order = torch.cat([order, order.repeat(math.ceil(padding / count))[:padding]])
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_order()
        skip, self.skip = self.skip, 0  # only the resumed pass starts late
        for chunk in order[skip:].split(_CHUNK):
            yield from chunk.tolist()


class ResumableLoader(DataLoader):
    """The training DataLoader. Its sampler resumes mid-epoch, and the position it resumes from travels in
    the data module's checkpoint state, so its own state is empty. Having Lightning's stateful-loader
    methods tells Lightning that it resumes, instead of warning that a mid-epoch resume is unreliable."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def resume_position(trainer: Any) -> tuple[int, int]:
    """``(epoch, batches already trained in it)`` where ``trainer``'s fit stands now: ``(0, 0)`` before any
    training, the running epoch and its processed batches mid-epoch, and the next epoch from its start once
    the running one has trained its last batch."""
    loop = getattr(trainer, "fit_loop", None)
    if loop is None or loop.epoch_progress.current.started == 0:
        return 0, 0
    epochs = loop.epoch_progress.current
    done = loop.epoch_loop.batch_progress.current.processed
    epoch = epochs.started - 1
    if epochs.processed > epoch or done >= trainer.num_training_batches:  # the epoch is over
        return epoch + 1, 0
    return epoch, done


class ResumableOrder:
    """Mixin for the data modules: the training sampler, and the training position in checkpoints.

    Needs ``batch_size``, ``seed`` and Lightning's ``trainer`` attribute on the class it is mixed into.
    """

    _resume_at: tuple[int, int] = (0, 0)

    def state_dict(self) -> dict[str, int]:
        epoch, batches = resume_position(getattr(self, "trainer", None))
        return {"train_epoch": epoch, "train_batches": batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_at = (int(state.get("train_epoch", 0)), int(state.get("train_batches", 0)))

    def training_sampler(self, dataset: Dataset) -> ResumableSampler:
        """Seeded per epoch, sharded over the trainer's ranks, and (once, after `load_state_dict`) starting
        after the batches the checkpoint trained on."""
        trainer = getattr(self, "trainer", None)
        replicas = int(getattr(trainer, "world_size", 1) or 1)
        rank = int(getattr(trainer, "global_rank", 0) or 0)
        (epoch, batches), self._resume_at = self._resume_at, (0, 0)
        per_rank = math.ceil(len(dataset) / replicas)
        return ResumableSampler(
            dataset,
            seed=self.seed,
            num_replicas=replicas,
            rank=rank,
            epoch=epoch,
            skip=min(batches * self.batch_size, per_rank),
        )
