"""The base every data module builds on: loader options checked once, the resumable training order, and the
split contract (``train/val/test_dataloader`` and an ordered ``eval_dataloader(split)`` for exporting
embeddings)."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from torch.utils.data import DataLoader, Dataset

from mrl.data.sampling import ResumableLoader, ResumableOrder

SPLITS = ("train", "val", "test")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not a data split; valid: {', '.join(SPLITS)}")
    return split


class MatryoshkaDataModule(ResumableOrder, L.LightningDataModule):
    """Loader options (checked here, once) and the loaders built from them.

    Subclasses implement ``split_dataset(split, train)``: the map-style data set of a split, with training
    transforms when ``train``; and may give each split its own ``collate_fn(split)``.
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ValueError(f"data.batch_size={batch_size} is invalid; use a positive integer")
        if isinstance(num_workers, bool) or int(num_workers) < 0:
            raise ValueError(f"data.num_workers={num_workers} is invalid; use 0 or a positive integer")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.seed = int(seed)

    def split_dataset(self, split: str, train: bool) -> Dataset:  # pragma: no cover - abstract
        raise NotImplementedError

    def collate_fn(self, split: str) -> Callable | None:
        return None

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        """``shuffle``: the training order of `mrl.data.sampling` (seeded per epoch, resumable mid-epoch)."""
        dataset = self.split_dataset(check_split(split), train=shuffle)
        return (ResumableLoader if shuffle else DataLoader)(
            dataset,
            batch_size=self.batch_size,
            sampler=self.training_sampler(dataset) if shuffle else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=self.collate_fn(split),
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def eval_dataloader(self, split: str) -> DataLoader:
        """Non-shuffled loader with evaluation transforms over ``split`` (train, val or test)."""
        return self._loader(split, shuffle=False)
