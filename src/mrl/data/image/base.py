"""The contract every image data module follows: loaders for train/val/test, an ordered eval loader for
exporting embeddings, the backbone's timm data config received before setup, and the evaluation
preprocessing for image files of the user's own (``file_transform``, used by ``make embed``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import Dataset

from mrl.common.errors import ConfigError
from mrl.data.base import MatryoshkaDataModule


def fit_channels(values: Any, in_chans: int) -> tuple[float, ...]:
    """Per-channel stats (mean or std) for `in_chans` channels: kept if the length matches, averaged to
    one value for a single channel, a single value repeated otherwise."""
    vals = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values]))
    if len(vals) == in_chans:
        return vals
    if len(vals) == 1:
        return vals * in_chans
    avg = sum(vals) / len(vals)
    return (avg,) * in_chans


def check_preprocessing_keys(
    image_size: int | None, crop_pct: float | None, interpolation: str | None, interpolations: tuple[str, ...]
) -> None:
    """``data.image_size`` (a positive integer), ``data.crop_pct`` (a fraction in (0, 1]) and
    ``data.interpolation`` (one of ``interpolations``), each also null: the model's own setting."""
    if image_size is not None and int(image_size) < 1:
        raise ConfigError("data.image_size", image_size, "use a positive integer or null")
    if crop_pct is not None and not 0 < float(crop_pct) <= 1:
        raise ConfigError("data.crop_pct", crop_pct, "use a fraction in (0, 1] or null")
    if interpolation is not None and interpolation not in interpolations:
        raise ConfigError("data.interpolation", interpolation, f"use one of {', '.join(interpolations)} or null")


def config_size(
    image_size: int | tuple[int, int] | None, data_config: Mapping[str, Any] | None, default: int
) -> tuple[int, int]:
    """(H, W): the explicit image_size if given, else the data config's input size, else default."""
    if image_size is not None:
        if isinstance(image_size, int):
            return (image_size, image_size)
        h, w = image_size
        return (int(h), int(w))
    if data_config and data_config.get("input_size") is not None:
        size = data_config["input_size"]
        return (int(size[-2]), int(size[-1]))
    return (default, default)


class ConvertThen:
    """``transform(image.convert(mode))``: any PIL image (palette, RGBA, grayscale) into the mode a data set
    was trained in, then its own preprocessing. A class rather than a closure, so DataLoader workers can
    pickle it."""

    def __init__(self, mode: str, transform: Callable) -> None:
        self.mode, self.transform = mode, transform

    def __call__(self, image: Any) -> torch.Tensor:
        return self.transform(image.convert(self.mode))

    def __repr__(self) -> str:
        return f"ConvertThen(mode={self.mode!r}, transform={self.transform!r})"


class ImageDataModule(MatryoshkaDataModule):
    """Base class: loaders, data-config handling and the `eval_dataloader(split)` contract.

    Subclasses set `num_classes`, `in_chans` and `name` in `__init__`, implement `_build()` (called once
    by `setup`, fills `class_names`) and `_dataset(split, train)` returning a map-style dataset of
    `(float[C,H,W], int)` pairs for split in {"train", "val", "test"}.
    """

    num_classes: int
    in_chans: int
    name: str

    def __init__(self, **loader_options: Any) -> None:
        super().__init__(**loader_options)
        self.data_config: dict[str, Any] | None = None
        self.class_names: list[str] = []
        self._built = False

    # ----------------------------------------------------------------- configuration
    def set_data_config(self, cfg: dict[str, Any] | None) -> None:
        """Receive the backbone's resolved timm data config (input_size, mean, std, interpolation, crop_pct).

        Meant to be called before `setup`; a different config after it makes the next `setup` rebuild.
        """
        new = dict(cfg) if cfg is not None else None
        if self._built and new != self.data_config:
            self._built = False
            getattr(self, "_datasets", {}).clear()
        self.data_config = new

    def _config_size(self, image_size: int | tuple[int, int] | None, default: int) -> tuple[int, int]:
        return config_size(image_size, self.data_config, default)

    @classmethod
    def file_transform(cls, settings: Mapping[str, Any], data_config: Mapping[str, Any] | None = None) -> Callable:
        """PIL image -> the model's evaluation input ``float[C, H, W]``, as this data set prepares its own images.

        ``settings`` are the data module's keyword arguments (a run's ``data:`` config, ``_target_`` and
        unknown keys ignored), ``data_config`` the backbone's timm data config. Subclasses build it without
        reading their data where the preprocessing does not depend on it, so a trained model embeds new
        images on a machine that lacks its training set.
        """
        raise ValueError(
            f"data module {cls.__name__} is not made of image files, so there is no preprocessing to "
            "apply to new ones; train on an image folder, a torchvision set or the digits"
        )

    # ----------------------------------------------------------------- lifecycle
    def setup(self, stage: str | None = None) -> None:
        if not self._built:
            self._build()
            self._built = True

    def _build(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _dataset(self, split: str, train: bool) -> Dataset:  # pragma: no cover - abstract
        raise NotImplementedError

    def split_dataset(self, split: str, train: bool) -> Dataset:
        self.setup("fit" if train else split)
        return self._dataset(split, train=train)
