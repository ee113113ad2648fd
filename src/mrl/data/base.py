"""The base every data module builds on: loader options checked once, the resumable training order, and the
split contract (``train/val/test_dataloader`` and an ordered ``eval_dataloader(split)`` for exporting
embeddings)."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import fields
from typing import Any, ClassVar

import lightning as L
from torch.utils.data import DataLoader, Dataset

from mrl.data.loader_options import LoaderOptions
from mrl.data.sampling import ResumableLoader, ResumableOrder

SPLITS = ("train", "val", "test")


def _signature_with_loader_keys(cls: type) -> inspect.Signature:
    """``cls(...)``'s signature: its ``__init__``'s own arguments, then each loader key with the class's default."""
    own = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
    own = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
    defaults = LoaderOptions(**cls.loader_defaults)
    loader = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, f.name), annotation=f.type)
        for f in fields(LoaderOptions)
        if f.name not in {p.name for p in own}
    ]
    return inspect.Signature([*own, *loader])


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not a data split; valid: {', '.join(SPLITS)}")
    return split


class MatryoshkaDataModule(ResumableOrder, L.LightningDataModule):
    """Loader options (checked here, once) and the loaders built from them.

    Every subclass takes the loader keys of :class:`~mrl.data.loader_options.LoaderOptions` (``batch_size``,
    ``num_workers``, ``pin_memory``, ``persistent_workers``, ``seed``) as keyword arguments, passed on to this
    class with ``**loader_options``; its own defaults for them are its ``loader_defaults``. The class's signature
    (``inspect.signature``) lists them after its own arguments, so config checks and ``help()`` see every key.

    Subclasses implement ``split_dataset(split, train)``: the map-style data set of a split, with training
    transforms when ``train``; and may give each split its own ``collate_fn(split)``.
    """

    loader_defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__signature__ = _signature_with_loader_keys(cls)

    def __init__(self, **loader_options: Any) -> None:
        super().__init__()
        unknown = [key for key in loader_options if key not in LoaderOptions.keys()]
        if unknown:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}")
        self.loader_options = LoaderOptions(**{**self.loader_defaults, **loader_options})

    def save_hyperparameters(self, *args: Any, ignore: Any = None, frame: Any = None, logger: bool = True) -> None:
        """Lightning's, with every loader option (given or default) after the module's own arguments."""
        frame = frame or inspect.currentframe().f_back  # the subclass's __init__, whose arguments are saved
        super().save_hyperparameters(*args, ignore=ignore, frame=frame, logger=logger)
        own = {k: v for k, v in self._hparams.items() if k not in LoaderOptions.keys()}
        loader = {k: self._hparams.get(k, getattr(self.loader_options, k)) for k in LoaderOptions.keys()}
        self._hparams.clear()
        self._hparams.update({**own, **loader})
        self._hparams_initial = copy.deepcopy(self._hparams)

    def current_loader_options(self) -> LoaderOptions:
        """The loader options with null ones decided for the trainer this module is attached to (if any)."""
        return self.loader_options.for_trainer(getattr(self, "trainer", None))

    @property
    def batch_size(self) -> int:
        return self.loader_options.batch_size

    @property
    def num_workers(self) -> int:
        return self.current_loader_options().num_workers

    @property
    def pin_memory(self) -> bool:
        return self.current_loader_options().pin_memory

    @property
    def persistent_workers(self) -> bool:
        return self.loader_options.persistent_workers

    @property
    def seed(self) -> int:
        return self.loader_options.seed

    def split_dataset(self, split: str, train: bool) -> Dataset:  # pragma: no cover - abstract
        raise NotImplementedError

    def collate_fn(self, split: str) -> Callable | None:
        return None

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        """``shuffle``: the training order of `mrl.data.sampling` (seeded per epoch, resumable mid-epoch)."""
        dataset = self.split_dataset(check_split(split), train=shuffle)
        return (ResumableLoader if shuffle else DataLoader)(
            dataset,
            sampler=self.training_sampler(dataset) if shuffle else None,
            collate_fn=self.collate_fn(split),
            drop_last=False,
            **self.current_loader_options().loader_kwargs(),
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


MatryoshkaDataModule.__signature__ = _signature_with_loader_keys(MatryoshkaDataModule)
