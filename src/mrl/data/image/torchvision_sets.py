"""Standard torchvision image sets (CIFAR, MNIST family, SVHN, STL-10) read from a local root.

Nothing downloads unless `download=True`. Grayscale sets are converted to `in_chans` channels; size,
interpolation, mean and std come from the backbone's data config, else from the set itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision import transforms as T

from mrl.data.image.base import ConvertThen, ImageDataModule, config_size, fit_channels


@dataclass(frozen=True)
class SetSpec:
    cls: str  # torchvision.datasets class name
    num_classes: int
    chans: int  # native channels
    size: int  # native side length
    mean: tuple[float, ...]
    std: tuple[float, ...]
    split_arg: bool  # True: constructor takes split="train"/"test"; False: train=True/False
    hflip: bool  # horizontal flips are label-preserving


SETS: dict[str, SetSpec] = {
    "cifar10": SetSpec("CIFAR10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), False, True),
    "cifar100": SetSpec("CIFAR100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), False, True),
    "mnist": SetSpec("MNIST", 10, 1, 28, (0.1307,), (0.3081,), False, False),
    "fashion_mnist": SetSpec("FashionMNIST", 10, 1, 28, (0.2860,), (0.3530,), False, True),
    "kmnist": SetSpec("KMNIST", 10, 1, 28, (0.1918,), (0.3483,), False, False),
    "svhn": SetSpec("SVHN", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), True, False),
    "stl10": SetSpec("STL10", 10, 3, 96, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), True, True),
}
_ALIASES = {
    "fashionmnist": "fashion_mnist",
    "cifar_10": "cifar10",
    "cifar_100": "cifar100",
    "stl_10": "stl10",
}


def canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in SETS:
        raise ValueError(f"data.name={name!r} is not a known torchvision set; valid: {', '.join(SETS)}")
    return key


class _Transformed(Dataset):
    """A view of `base` restricted to `indices` (all if None) with its own transform."""

    def __init__(self, base: Dataset, indices: list[int] | None, transform: Callable) -> None:
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, label = self.base[self.indices[index] if self.indices is not None else index]
        return self.transform(img), int(label)


def set_transform(
    spec: SetSpec,
    data_config: Mapping[str, Any] | None,
    in_chans: int,
    image_size: int | None,
    augment: bool,
    always_resize: bool = False,
) -> Callable:
    """A torchvision set's preprocessing: channels, resize to ``image_size`` (or the data config's input size),
    the training augmentation with ``augment``, then normalisation with the set's (or the data config's) stats.
    ``always_resize`` resizes even when the size is the set's own (for images that come from elsewhere)."""
    h, w = config_size(image_size, data_config, default=spec.size)
    cfg = data_config or {}
    try:
        mode = T.InterpolationMode(cfg.get("interpolation") or "bilinear")
    except ValueError:
        mode = T.InterpolationMode.BILINEAR
    steps: list[Callable] = []
    if in_chans != spec.chans:
        steps.append(T.Grayscale(num_output_channels=in_chans))
    if always_resize or (h, w) != (spec.size, spec.size):
        steps.append(T.Resize((h, w), interpolation=mode, antialias=True))
    if augment:
        steps.append(T.RandomCrop((h, w), padding=max(1, min(h, w) // 8), padding_mode="reflect"))
        if spec.hflip:
            steps.append(T.RandomHorizontalFlip())
    mean = fit_channels(cfg.get("mean") or spec.mean, in_chans)
    std = fit_channels(cfg.get("std") or spec.std, in_chans)
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


class TorchvisionDataModule(ImageDataModule):
    """A torchvision set from `root`; `val_split="test"` validates on the official test split, a float in
    (0, 1) holds out that seeded fraction of train instead (then test is the official test split)."""

    def __init__(
        self,
        name: str = "cifar10",
        root: str = "data",
        download: bool = False,
        image_size: int | None = None,
        in_chans: int = 3,
        val_split: str | float = "test",
        augment: bool = True,
        **loader_options: Any,
    ) -> None:
        super().__init__(**loader_options)
        self.save_hyperparameters()
        self.name = canonical_name(name)
        self.spec = SETS[self.name]
        if in_chans not in (1, 3):
            raise ValueError(f"data.in_chans={in_chans} is invalid; use 1 (grayscale) or 3 (RGB)")
        if image_size is not None and int(image_size) < 1:
            raise ValueError(f"data.image_size={image_size} is invalid; use a positive integer or null")
        if isinstance(val_split, str) and val_split != "test":
            try:
                val_split = float(val_split)
            except ValueError:
                raise ValueError(
                    f"data.val_split={val_split!r} is invalid; use 'test' or a fraction of train in (0, 1)"
                ) from None
        if not isinstance(val_split, str) and not 0.0 < float(val_split) < 1.0:
            raise ValueError(f"data.val_split={val_split} is invalid; use 'test' or a fraction of train in (0, 1)")
        if root is None or str(root).strip() in ("", "???"):
            raise ValueError(f"data.root is not set; point it at a folder holding {self.name}")
        self.root = Path(os.path.expanduser(str(root)))
        self.download = bool(download)
        if not self.download and not self.root.is_dir():
            raise FileNotFoundError(self._missing_message())
        self.num_classes = self.spec.num_classes
        self.in_chans = int(in_chans)
        self.image_size = None if image_size is None else int(image_size)
        self.val_split = val_split
        self.augment = bool(augment)
        self._base: dict[str, Dataset] = {}
        self._indices: dict[str, list[int] | None] = {}
        self._datasets: dict[tuple[str, bool], Dataset] = {}

    def _missing_message(self) -> str:
        return (
            f"data.root={self.root} does not hold {self.name} (torchvision {self.spec.cls}); "
            f"set data.download=true to fetch it there, or point data.root at a local copy"
        )

    def _make(self, train: bool, download: bool) -> Dataset:
        cls = getattr(datasets, self.spec.cls)
        split_kw: dict[str, Any] = {"split": "train" if train else "test"} if self.spec.split_arg else {"train": train}
        try:
            return cls(root=str(self.root), download=download, **split_kw)
        except RuntimeError as err:
            if download:
                raise
            raise FileNotFoundError(self._missing_message()) from err

    def prepare_data(self) -> None:
        if self.download:
            self.root.mkdir(parents=True, exist_ok=True)
            self._make(train=True, download=True)
            self._make(train=False, download=True)

    # ----------------------------------------------------------------- transforms
    def build_transform(self, is_training: bool) -> Callable:
        return set_transform(
            self.spec, self.data_config, self.in_chans, self.image_size, augment=is_training and self.augment
        )

    @classmethod
    def file_transform(cls, settings: Mapping[str, Any], data_config: Mapping[str, Any] | None = None) -> Callable:
        """The evaluation preprocessing (see the base class): a new image of any size is resized to the
        set's input size, then prepared as the set's own; needs no data on disk."""
        spec = SETS[canonical_name(settings.get("name", "cifar10"))]
        image_size = settings.get("image_size")
        transform = set_transform(
            spec,
            data_config,
            int(settings.get("in_chans", 3)),
            None if image_size is None else int(image_size),
            augment=False,
            always_resize=True,
        )
        return ConvertThen("L" if spec.chans == 1 else "RGB", transform)

    # ----------------------------------------------------------------- data
    def _build(self) -> None:
        train, test = self._make(train=True, download=False), self._make(train=False, download=False)
        self._base = {"train": train, "test": test}
        if self.val_split == "test":
            self._indices = {"train": None, "test": None}
            self._split_base = {"train": "train", "val": "test", "test": "test"}
        else:
            n = len(train)  # type: ignore[arg-type]
            n_val = max(1, round(float(self.val_split) * n))
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
            self._indices = {"train": sorted(perm[n_val:]), "val": sorted(perm[:n_val]), "test": None}
            self._split_base = {"train": "train", "val": "train", "test": "test"}
        classes = getattr(train, "classes", None)
        self.class_names = (
            [str(c) for c in classes]
            if classes and len(classes) == self.num_classes
            else [str(i) for i in range(self.num_classes)]
        )

    def _dataset(self, split: str, train: bool) -> Dataset:
        key = (split, train)
        if key not in self._datasets:
            base = self._base[self._split_base[split]]
            indices = self._indices.get(split) if self.val_split != "test" else None
            self._datasets[key] = _Transformed(base, indices, self.build_transform(is_training=train))
        return self._datasets[key]
