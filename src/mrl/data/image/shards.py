"""Prepared shards (``data=image_shards``, ``data=imagenet_shards``): training from what ``mrl-prepare`` wrote
(:mod:`mrl.data.image.shard_writer`).

:class:`ImageShardsDataModule` trains with litdata's ``StreamingDataset`` / ``StreamingDataLoader`` (local disk or
object storage; the shards split across ranks and nodes; the loader's state in every checkpoint, so a resumed run
continues its epoch), decoding only what each crop needs and leaving float conversion, normalisation and flip to
the device (:mod:`mrl.data.image.decode`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fsspec
import torch
from torch.utils.data import DataLoader, Dataset

from mrl.common.errors import ConfigError, InputError
from mrl.data.image.base import ImageDataModule, check_preprocessing_keys
from mrl.data.image.decode import PIL_INTERPOLATIONS, EvalDecode, TrainDecode, open_item, pil_part
from mrl.data.image.device_decode import (
    DECODE_PLACES,
    DEVICE_INTERPOLATIONS,
    EncodedCrop,
    collate_encoded,
    decode_batch,
    is_encoded,
)
from mrl.data.image.folder import ImageFolderDataModule, folder_transform_config
from mrl.data.image.shard_writer import CLASSES_FILE


class _Decoded(Dataset):
    """Map-style view of a split's shards through a decode function: evaluation (ordered, sharded over
    DDP ranks by Lightning's DistributedSampler) and anything that wants ``dataset[i]``."""

    def __init__(self, streaming: Any, decode: Callable) -> None:
        self.streaming, self.decode = streaming, decode

    def __len__(self) -> int:
        return len(self.streaming)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.decode(self.streaming[index])


class _FloatEval:
    """Shard item -> ``(float[C, H, W], label)`` through the image folders' own evaluation transform."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, item: dict[str, Any]) -> tuple[torch.Tensor, int]:
        img = open_item(item["data"], bool(item["raw"]), int(item["h"]), int(item["w"])).convert("RGB")
        return self.transform(img), int(item["label"])


def streaming_dataset_class():
    from litdata import StreamingDataset

    class DecodedStreamingDataset(StreamingDataset):
        """The training stream: litdata's shuffled, rank- and worker-sharded items, decoded."""

        def __init__(self, *args: Any, decode: Callable, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.decode = decode

        def __getitem__(self, index: Any) -> Any:
            return self.decode(super().__getitem__(index))

    return DecodedStreamingDataset


def check_preprocessing(image_size: int | None, crop_pct: float | None, interpolation: str | None, decode: str) -> None:
    """The preprocessing keys (``data.image_size``, ``crop_pct``, ``interpolation``, ``decode``) are valid."""
    check_preprocessing_keys(image_size, crop_pct, interpolation, tuple(PIL_INTERPOLATIONS))
    if decode not in DECODE_PLACES:
        raise ConfigError("data.decode", decode, f"use one of {', '.join(DECODE_PLACES)}")
    if decode == "device" and interpolation is not None and interpolation not in DEVICE_INTERPOLATIONS:
        raise ConfigError(
            "data.interpolation",
            interpolation,
            f"with data.decode=device use one of {', '.join(DEVICE_INTERPOLATIONS)} or null",
        )


def crop_ranges(scale: Sequence[float], ratio: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(scale, ratio)`` of the training crops as float tuples, checked (``data.scale``, ``data.ratio``)."""
    scale, ratio = tuple(float(v) for v in scale), tuple(float(v) for v in ratio)
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError("data.scale", list(scale), "use [low, high] with 0 < low <= high <= 1")
    if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
        raise ConfigError("data.ratio", list(ratio), "use [low, high] with 0 < low <= high")
    return scale, ratio


def shards_root(root: str | None) -> tuple[str, bool]:
    """``(root, remote)``: ``data.root`` with ``~`` expanded (a URL kept as given); a local one must hold
    ``mrl-prepare``'s output."""
    if root is None or str(root).strip() in ("", "???"):
        raise ConfigError("data.root", root, "not set; point it at the folder mrl-prepare wrote (or its s3:// URL)")
    remote = "://" in str(root)
    location = str(root) if remote else os.path.expanduser(str(root))
    if not remote and not (Path(location) / CLASSES_FILE).is_file():
        raise InputError(
            "data.root",
            root,
            f"holds no prepared shards ({CLASSES_FILE} missing); run `mrl-prepare <image folder> {root}` first",
        )
    return location, remote


def prepared_splits(
    root: str, remote: bool, train_dir: str | None, val_dir: str | None, test_dir: str | None
) -> dict[str, str]:
    """``{split: sub-folder}`` of the splits configured (``data.<split>_dir``); a validation split is required,
    and each local one must be prepared."""
    split_dirs = {
        split: sub for split, sub in (("train", train_dir), ("val", val_dir), ("test", test_dir)) if sub is not None
    }
    if "val" not in split_dirs:
        raise ConfigError("data.val_dir", None, "a validation split is required")
    if not remote:
        for split, sub in split_dirs.items():
            if not (Path(root) / sub / "index.json").is_file():
                raise InputError(
                    f"data.{split}_dir",
                    sub,
                    f"{Path(root) / sub} is not a prepared split; run mrl-prepare on a folder with "
                    f"{sub}/<class>/<image>",
                )
    return split_dirs


class ImageShardsDataModule(ImageDataModule):
    """Trains from ``mrl-prepare`` shards at ``root`` (a local folder or an ``s3://``/``gs://`` URL that
    litdata streams from). Batches are ``uint8[B, C, H, W]``; the model's ``on_after_batch_transfer``
    turns them into normalised floats on the device (flipped in training), see :mod:`mrl.data.image.decode`.

    ``image_size``, ``crop_pct`` and ``interpolation`` override the backbone's data config as for image
    folders; the evaluation preprocessing is the image folders' one. ``num_workers`` and ``pin_memory`` default
    to null: the available cores, and pinned memory for a GPU, decided for the trainer each loader is built for
    (:class:`~mrl.data.loader_options.LoaderOptions`). ``cache_dir``: where litdata keeps downloaded
    chunks of a remote ``root``. ``decode="device"`` decodes the training JPEGs on the trainer's device instead
    of the loader's CPU workers (:mod:`mrl.data.image.device_decode`).
    """

    loader_defaults = {"batch_size": 256, "num_workers": None, "pin_memory": None, "persistent_workers": True}

    def __init__(
        self,
        root: str,
        train_dir: str | None = "train",
        val_dir: str = "val",
        test_dir: str | None = None,
        image_size: int | None = None,
        crop_pct: float | None = None,
        interpolation: str | None = None,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        draft: bool = True,
        decode: str = "cpu",
        cache_dir: str | None = None,
        **loader_options: Any,
    ) -> None:
        super().__init__(**loader_options)
        scale, ratio = [float(v) for v in scale], [float(v) for v in ratio]  # plain lists: weights_only checkpoints
        self.save_hyperparameters()
        check_preprocessing(image_size, crop_pct, interpolation, decode)
        self.scale, self.ratio = crop_ranges(scale, ratio)
        self.root, self.remote = shards_root(root)
        self.split_dirs = prepared_splits(self.root, self.remote, train_dir, val_dir, test_dir)
        self.name = Path(self.root.rstrip("/")).name or "image_shards"
        self.in_chans = 3
        self.image_size = None if image_size is None else int(image_size)
        self.overrides = {k: v for k, v in (("crop_pct", crop_pct), ("interpolation", interpolation)) if v is not None}
        self.overrides["color_jitter"] = 0.0
        self.draft, self.decode = bool(draft), decode
        self.cache_dir = cache_dir
        self.class_names = self._read_classes()
        self.num_classes = len(self.class_names)
        self.train_image_size = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._datasets: dict[tuple[str, bool], Any] = {}
        self._device_interpolation = "bilinear"  # the training crops' (data.decode=device), set with the stream
        self._train_loader = None

    def _read_classes(self) -> list[str]:
        path = f"{self.root.rstrip('/')}/{CLASSES_FILE}"
        if self.remote:
            with fsspec.open(path, "r") as fh:
                return fh.read().split()
        return Path(path).read_text().split()

    def _url(self, split: str) -> str:
        return f"{self.root.rstrip('/')}/{self.split_dirs[split]}"

    # ----------------------------------------------------------------- preprocessing
    def transform_config(self, is_training: bool) -> dict[str, Any]:
        return folder_transform_config(self.data_config, self.overrides, self.image_size, 3, is_training)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` the device applies to the uint8 batches."""
        cfg = self.transform_config(False)
        return tuple(cfg["mean"]), tuple(cfg["std"])

    @classmethod
    def file_transform(cls, settings, data_config=None) -> Callable:
        return ImageFolderDataModule.file_transform(settings, data_config)

    def train_decode(self) -> TrainDecode:
        cfg = self.transform_config(True)
        interpolation = cfg.get("interpolation", "bilinear")
        if interpolation not in PIL_INTERPOLATIONS:
            interpolation = "bilinear"
        return TrainDecode(
            cfg["input_size"][-1], self.train_image_size, self.scale, self.ratio, interpolation, draft=self.draft
        )

    def eval_decode(self) -> EvalDecode:
        from timm.data import create_transform

        return EvalDecode(pil_part(create_transform(**self.transform_config(False))))

    def eval_float_decode(self) -> Callable:
        from timm.data import create_transform

        return _FloatEval(create_transform(**self.transform_config(False)))

    def set_train_image_size(self, size: int | None) -> None:
        """Square side of the training crops from the next image on (None: back to the configured one)."""
        if size is not None and int(size) < 1:
            raise ValueError(f"train image size {size} is invalid; use a positive integer")
        self.train_image_size[0] = 0 if size is None else int(size)

    # ----------------------------------------------------------------- data
    def _build(self) -> None:
        pass

    def _streaming(self, split: str, shuffle: bool, decode: Callable | None = None):
        from litdata import StreamingDataset

        kwargs = {"cache_dir": self.cache_dir} if self.cache_dir else {}
        if decode is None:
            return StreamingDataset(self._url(split), **kwargs)
        return streaming_dataset_class()(
            self._url(split), shuffle=shuffle, seed=self.seed, drop_last=True, decode=decode, **kwargs
        )

    def _dataset(self, split: str, train: bool, uint8: bool = False) -> Dataset:
        """``train``: the shuffled training stream (uint8). Otherwise the split in order with the evaluation
        preprocessing: uint8 for the loaders Lightning runs (its ``on_after_batch_transfer`` normalises on the
        device), float and normalised, as image folders give, for ``eval_dataloader`` (``make eval``, embedding
        exports feed the model themselves)."""
        if split == "test" and "test" not in self.split_dirs:
            split = "val"
        if split not in self.split_dirs:
            raise ConfigError(f"data.{split}_dir", None, f"{self.root} has no {split} split")
        key = (split, train, uint8)
        if key not in self._datasets:
            if train:
                decode = self.train_decode()
                self._device_interpolation = decode.interpolation
                if self.decode == "device":
                    decode = EncodedCrop(decode)
                self._datasets[key] = self._streaming(split, shuffle=True, decode=decode)
            elif uint8:
                self._datasets[key] = _Decoded(self._streaming(split, shuffle=False), self.eval_decode())
            else:
                self._datasets[key] = _Decoded(self._streaming(split, shuffle=False), self.eval_float_decode())
        return self._datasets[key]

    def train_dataloader(self):
        from litdata import StreamingDataLoader

        self._datasets.pop(("train", True, False), None)  # a fresh stream each fit (its rank split is read at iter)
        loader = StreamingDataLoader(
            self.split_dataset("train", train=True),
            drop_last=True,
            collate_fn=collate_encoded if self.decode == "device" else None,
            **self.current_loader_options().loader_kwargs(),
        )
        if self._loader_state is not None:
            loader.load_state_dict(self._loader_state)
            self._loader_state = None
        self._train_loader = loader
        return loader

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``data.decode=device``: the training batch's JPEGs decoded, cropped and resized on the trainer's
        device; every other batch passes untouched."""
        if not is_encoded(batch):
            return batch
        trainer = getattr(self, "trainer", None)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        return decode_batch(batch, device, self._device_interpolation)

    def _eval_loader(self, split: str, uint8: bool) -> DataLoader:
        self.setup(split)
        return DataLoader(
            self._dataset(split, train=False, uint8=uint8), **self.current_loader_options().loader_kwargs()
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val", uint8=True)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test", uint8=True)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Float batches, normalised on the CPU exactly as image folders make them (for callers that feed the
        model themselves: ``make eval``, embedding exports)."""
        return self._eval_loader(split, uint8=False)

    # ----------------------------------------------------------------- resume
    _loader_state: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state = dict(super().state_dict())
        if self._train_loader is not None:
            state["streaming"] = self._train_loader.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._loader_state = state.get("streaming")
