"""Image folders in the ImageNet layout: root/{train,val[,test]}/<class>/<image>.

Transforms come from the backbone's timm data config (`timm.data.create_transform`). Unreadable or
truncated files are skipped and counted (or raise, with `skip_bad_images=False`).
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from mrl.common.errors import ConfigError
from mrl.data.image.base import ConvertThen, ImageDataModule, check_preprocessing_keys, config_size, fit_channels

BAD_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
_EVAL_OVERRIDES = ("crop_pct", "interpolation")  # the data set's settings that change evaluation preprocessing
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming", "random")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def iter_images(folder: str) -> Iterator[str]:
    for dirpath, _, files in os.walk(folder, followlinks=True):
        for f in sorted(files):
            if _is_image(f):
                yield os.path.join(dirpath, f)


def class_dirs(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


class SafeImageDataset(Dataset):
    """Map-style dataset over (path, label) samples that survives unreadable files.

    A file PIL cannot decode is marked bad (in a shared-memory mask, so the count also covers
    DataLoader workers) and the next valid sample is returned instead. With `skip_bad=False` it raises
    with the file's path.
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        transform: Callable | None = None,
        mode: str = "RGB",
        skip_bad: bool = True,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.mode = mode
        self.skip_bad = skip_bad
        self.bad = torch.zeros(len(samples), dtype=torch.bool).share_memory_()
        self._warned = False

    def __len__(self) -> int:
        return len(self.samples)

    def bad_paths(self) -> list[str]:
        return [self.samples[i][0] for i in self.bad.nonzero().flatten().tolist()]

    def _load(self, path: str) -> Image.Image:
        with open(path, "rb") as fh:
            img = Image.open(fh)
            return img.convert(self.mode)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        n = len(self.samples)
        for step in range(n):
            i = (index + step) % n
            if self.bad[i]:
                continue
            path, label = self.samples[i]
            try:
                img = self._load(path)
            except BAD_IMAGE_ERRORS as err:
                if not self.skip_bad:
                    raise RuntimeError(
                        f"unreadable image {path}: {err} (set data.skip_bad_images=true to skip such files)"
                    ) from err
                self.bad[i] = True
                if not self._warned:
                    self._warned = True
                    warnings.warn(f"skipping unreadable image {path} ({err}); further ones are counted", stacklevel=2)
                continue
            if self.transform is not None:
                img = self.transform(img)
            return img, label
        raise RuntimeError(f"no readable image among the {n} files of this split")


def folder_transform_config(
    data_config: Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
    image_size: int | None,
    in_chans: int,
    is_training: bool,
) -> dict[str, Any]:
    """Arguments for timm.data.create_transform: ImageNet defaults, then the backbone's data config, then
    the data set's overrides (crop_pct, interpolation, color_jitter), image_size and in_chans."""
    from timm.data import create_transform

    cfg: dict[str, Any] = {
        "input_size": (3, 224, 224),
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    }
    accepted = set(inspect.signature(create_transform).parameters) - {"is_training"}
    cfg.update({k: v for k, v in (data_config or {}).items() if k in accepted})
    cfg.update(overrides)
    h, w = config_size(None if image_size is None else int(image_size), data_config, default=224)
    cfg["input_size"] = (in_chans, h, w)
    cfg["mean"] = fit_channels(cfg["mean"], in_chans)
    cfg["std"] = fit_channels(cfg["std"], in_chans)
    cfg["is_training"] = is_training
    return cfg


class ResizableCrop:
    """A random-resized crop whose output size is read, at every image, from a shared-memory tensor.

    DataLoader workers hold copies of the transform, but the tensor is shared with them, so a size set
    in the main process (:meth:`ImageFolderDataModule.set_train_image_size`) reaches the batches they
    make next. A size of 0 leaves the crop's own size.
    """

    def __init__(self, crop: Callable, size: torch.Tensor) -> None:
        self.crop, self.size, self.default_size = crop, size, tuple(crop.size)

    def __call__(self, img: Image.Image) -> Image.Image:
        side = int(self.size[0])
        self.crop.size = (side, side) if side else self.default_size
        return self.crop(img)

    def __repr__(self) -> str:
        return f"ResizableCrop({self.crop!r})"


class ImageFolderDataModule(ImageDataModule):
    """ImageNet-layout folders: `root/train/<class>/*`, `root/val/<class>/*`, optionally a test folder.

    Classes are the sub-folders of `train_dir` (sorted); `val_dir` (and `test_dir`) must hold the same
    ones. Test is val when `test_dir` is None. `image_size`, `crop_pct` (the share of the resized image
    an evaluation center crop keeps) and `interpolation` override the backbone's data config;
    `color_jitter` is the training colour jitter strength (None: timm's default, 0.4; 0: none).
    """

    def __init__(
        self,
        root: str,
        train_dir: str | None = "train",
        val_dir: str = "val",
        test_dir: str | None = None,
        classes: str | Sequence[str] | None = None,
        image_size: int | None = None,
        crop_pct: float | None = None,
        interpolation: str | None = None,
        color_jitter: float | None = None,
        in_chans: int = 3,
        skip_bad_images: bool = True,
        **loader_options: Any,
    ) -> None:
        super().__init__(**loader_options)
        self.save_hyperparameters()
        if in_chans not in (1, 3):
            raise ConfigError("data.in_chans", in_chans, "image folders give 1 (grayscale) or 3 (RGB)")
        check_preprocessing_keys(image_size, crop_pct, interpolation, _INTERPOLATIONS)
        if color_jitter is not None and float(color_jitter) < 0:
            raise ConfigError("data.color_jitter", color_jitter, "use 0 (none), a positive strength or null")
        if root is None or str(root).strip() in ("", "???"):
            raise ConfigError("data.root", root, "not set; point it at a folder holding train/ and val/ class folders")
        self.root = Path(os.path.expanduser(str(root)))
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data.root={root} does not exist or is not a folder; point it at a folder holding "
                f"{train_dir}/ and {val_dir}/ class folders (ImageNet layout)"
            )
        self.name = self.root.name or "image_folder"
        self.in_chans = int(in_chans)
        self.image_size = None if image_size is None else int(image_size)
        self.overrides: dict[str, Any] = {
            key: value
            for key, value in (("crop_pct", crop_pct), ("interpolation", interpolation), ("color_jitter", color_jitter))
            if value is not None
        }
        self.train_image_size = torch.zeros(1, dtype=torch.int64).share_memory_()  # 0: image_size
        self.skip_bad_images = bool(skip_bad_images)
        self.split_dirs: dict[str, Path] = {}
        for split, key, sub in (
            ("train", "train_dir", train_dir),
            ("val", "val_dir", val_dir),
            ("test", "test_dir", test_dir),
        ):
            if sub is not None:
                self.split_dirs[split] = self._split_dir(key, sub)
        if "val" not in self.split_dirs:
            raise ValueError(
                "data.val_dir=null: a validation folder is required (use '.' for class folders at the root)"
            )
        classes = self._resolve_classes(classes)
        self.class_names = classes
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.num_classes = len(classes)
        self._datasets: dict[tuple[str, bool], SafeImageDataset] = {}
        self._samples: dict[str, list[tuple[str, int]]] = {}
        self._reported_bad = 0

    def _resolve_classes(self, spec: str | Sequence[str] | None) -> list[str]:
        """The class names, in label order, checked against the class folders of every split.

        None: the sorted folders of the first split, which every split must match. Otherwise a fixed
        list, and each split may hold any subset of it: ``imagenet1k`` (the 1,000 ImageNet WordNet ids,
        the order a model trained on the sorted ImageNet folders uses; ImageNet-A, -R and -Sketch name
        their folders so), ``index`` (folders named by the label number, as ImageNetV2), a list of names,
        or a text file of names, one per line.
        """
        found = {split: class_dirs(path) for split, path in self.split_dirs.items()}
        first = next(iter(self.split_dirs))
        for split, folders in found.items():
            if not folders:
                sub = os.path.relpath(self.split_dirs[split], self.root)
                raise FileNotFoundError(
                    f"data.root={self.root}: {sub}/ has no class folders; expected {sub}/<class>/<image>"
                )
        if spec is None:
            names = found[first]
            for split, folders in found.items():
                if folders != names:
                    missing, extra = sorted(set(names) - set(folders))[:5], sorted(set(folders) - set(names))[:5]
                    raise ValueError(
                        f"data.{split}_dir={self.split_dirs[split]} has different classes from "
                        f"{self.split_dirs[first]}: missing {missing}, extra {extra}; both need the same class folders "
                        f"(or give data.classes)"
                    )
        else:
            names = self._class_list(spec, found)
            for split, folders in found.items():
                unknown = sorted(set(folders) - set(names))
                if unknown:
                    raise ValueError(
                        f"data.classes={spec if isinstance(spec, str) else '[...]'}: {self.split_dirs[split]} has "
                        f"folders that are not classes of it: {unknown[:5]}" + (" ..." if len(unknown) > 5 else "")
                    )
        for split, folders in found.items():
            for c in folders:
                if next(iter_images(str(self.split_dirs[split] / c)), None) is None:
                    raise FileNotFoundError(
                        f"data.root={self.root}: class folder {self.split_dirs[split] / c} has no images "
                        f"(extensions {', '.join(IMG_EXTENSIONS)}); add images or remove the folder"
                    )
        return names

    @staticmethod
    def _class_list(spec: str | Sequence[str], found: dict[str, list[str]]) -> list[str]:
        if not isinstance(spec, str):
            return [str(name) for name in spec]
        if spec == "imagenet1k":
            from timm.data import ImageNetInfo

            return list(ImageNetInfo().label_names())
        if spec == "index":
            folders = sorted({f for fs in found.values() for f in fs})
            bad = [f for f in folders if not f.isdigit()]
            if bad:
                raise ValueError(f"data.classes=index: folder names must be label numbers, found {bad[:5]}")
            return [str(i) for i in range(max(int(f) for f in folders) + 1)]
        path = Path(os.path.expanduser(spec))
        if not path.is_file():
            raise ValueError(
                f"data.classes={spec!r}: expected null, imagenet1k, index, a list of class names or a file of "
                f"them (one per line)"
            )
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]

    def _split_dir(self, key: str, sub: str) -> Path:
        path = self.root / sub
        if not path.is_dir():
            raise FileNotFoundError(
                f"data.{key}={sub} not found under data.root={self.root}; expected {path}/<class>/<image>"
            )
        return path

    # ----------------------------------------------------------------- transforms
    def transform_config(self, is_training: bool) -> dict[str, Any]:
        """Arguments for timm.data.create_transform: the data config, with image_size/in_chans applied."""
        return folder_transform_config(self.data_config, self.overrides, self.image_size, self.in_chans, is_training)

    @classmethod
    def file_transform(cls, settings: Mapping[str, Any], data_config: Mapping[str, Any] | None = None) -> Callable:
        """The evaluation preprocessing (see the base class); needs no image on disk."""
        from timm.data import create_transform

        in_chans = int(settings.get("in_chans", 3))
        overrides = {key: settings[key] for key in _EVAL_OVERRIDES if settings.get(key) is not None}
        config = folder_transform_config(data_config, overrides, settings.get("image_size"), in_chans, False)
        return ConvertThen("L" if in_chans == 1 else "RGB", create_transform(**config))

    def _transform(self, is_training: bool) -> Callable:
        from timm.data import create_transform
        from timm.data.transforms import RandomResizedCropAndInterpolation
        from torchvision.transforms import RandomResizedCrop

        transform = create_transform(**self.transform_config(is_training))
        first = transform.transforms[0]
        if is_training and isinstance(first, (RandomResizedCropAndInterpolation, RandomResizedCrop)):
            transform.transforms[0] = ResizableCrop(first, self.train_image_size)
        return transform

    def set_train_image_size(self, size: int | None) -> None:
        """Square size of the training crops from the next batch on (None: back to the configured one).

        Takes effect in running DataLoader workers too (:class:`ResizableCrop`); progressive resizing
        (:class:`mrl.training.callbacks.ProgressiveResizing`) calls it at the start of each epoch.
        """
        if size is not None and int(size) < 1:
            raise ValueError(f"train image size {size} is invalid; use a positive integer")
        self.train_image_size[0] = 0 if size is None else int(size)

    # ----------------------------------------------------------------- data
    def _build(self) -> None:
        for split, split_dir in self.split_dirs.items():
            samples = make_dataset(str(split_dir), self.class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
            if not samples:
                raise FileNotFoundError(f"data.root={self.root}: {split_dir} holds no images")
            self._samples[split] = samples

    def _dataset(self, split: str, train: bool) -> Dataset:
        if split == "test" and "test" not in self._samples:
            split = "val"
        if split not in self._samples:
            raise ValueError(
                f"data.{split}_dir=null: {self.root} has no {split} split (an evaluation-only set); to evaluate "
                f"on it, leave retrieval out with database_split=null"
            )
        key = (split, train)
        if key not in self._datasets:
            self._datasets[key] = SafeImageDataset(
                self._samples[split],
                transform=self._transform(is_training=train),
                mode="L" if self.in_chans == 1 else "RGB",
                skip_bad=self.skip_bad_images,
            )
        return self._datasets[key]

    @property
    def num_bad_images(self) -> int:
        """Distinct unreadable files met so far, over all splits."""
        return len(self.bad_image_paths())

    def bad_image_paths(self) -> list[str]:
        return sorted({p for ds in self._datasets.values() for p in ds.bad_paths()})

    def teardown(self, stage: str | None = None) -> None:
        bad = self.bad_image_paths()
        if len(bad) > self._reported_bad:
            self._reported_bad = len(bad)
            more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
            warnings.warn(
                f"skipped {len(bad)} unreadable image(s) under data.root={self.root}: {', '.join(bad[:5])}{more}; "
                "a run lists them all in its results.json (skipped_images)",
                stacklevel=2,
            )
