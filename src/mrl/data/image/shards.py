"""Prepared shards: an ImageNet-layout folder written once into litdata shards, then streamed to training.

``mrl-prepare SRC OUT`` (``make prepare``) writes, for each split folder of SRC (``train``, ``val``, ...),
``OUT/<split>/`` in litdata's format (``litdata.optimize``): one item per image, ``{"data": bytes, "raw": 0|1,
"h": int, "w": int, "label": int}``. Images whose longest side exceeds ``max_side`` are resized down and
re-encoded as JPEG at ``quality``; smaller JPEGs keep their original bytes; a ``raw_fraction`` share of
the images (chosen by a hash of their path, so a rerun picks the same) is stored as raw uint8 pixels,
which skip decoding at the cost of disk, as FFCV's ImageNet files do. ``OUT/classes.txt`` holds the class
names in label order (the sorted class folders, as :class:`ImageFolderDataModule` labels them),
``OUT/<split>/skipped.txt`` the unreadable images (skipped, never fatal), ``OUT/<split>/prepared.json``
the counts that ``--verify`` checks. A finished split is skipped by a rerun; an interrupted one starts
over from litdata's checkpoints (``use_checkpoint``).

:class:`ImageShardsDataModule` (``data=image_shards``, ``data=imagenet_shards``) trains from them with
litdata's ``StreamingDataset`` / ``StreamingDataLoader`` (local disk or object storage; the shards split
across ranks and nodes; the loader's state in every checkpoint, so a resumed run continues its epoch),
decoding only what each crop needs and leaving float conversion, normalisation and flip to the device
(:mod:`mrl.data.image.decode`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mrl.common.door import require_writable
from mrl.common.errors import InputError
from mrl.data.image.base import ImageDataModule
from mrl.data.image.decode import PIL_INTERPOLATIONS, EvalDecode, TrainDecode, open_item, pil_part
from mrl.data.image.device_decode import (
    DECODE_PLACES,
    DEVICE_INTERPOLATIONS,
    EncodedCrop,
    collate_encoded,
    decode_batch,
    is_encoded,
)
from mrl.data.image.folder import BAD_IMAGE_ERRORS, class_dirs, folder_transform_config, iter_images

CLASSES_FILE = "classes.txt"
DONE_FILE = "prepared.json"
SKIPPED_FILE = "skipped.txt"


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


# ----------------------------------------------------------------------------------------------- prepare
class _Encoder:
    """One source image -> one shard item (or nothing, its path noted in ``skipped_dir``). Picklable, so
    litdata's worker processes run it."""

    def __init__(self, root: str, max_side: int, quality: int, raw_fraction: float, skipped_dir: str) -> None:
        self.root, self.max_side, self.quality = root, int(max_side), int(quality)
        self.raw_fraction, self.skipped_dir = float(raw_fraction), skipped_dir

    def is_raw(self, rel: str) -> bool:
        return self.raw_fraction > 0 and zlib.crc32(rel.encode()) / 2**32 < self.raw_fraction

    def encode(self, path: str) -> dict[str, Any]:
        rel = os.path.relpath(path, self.root)
        with open(path, "rb") as fh:
            original = fh.read()
        img = Image.open(io.BytesIO(original))
        fmt = img.format
        img.load()
        keep = fmt == "JPEG" and img.mode == "RGB" and max(img.size) <= self.max_side
        if img.mode != "RGB":
            img = img.convert("RGB")
        if max(img.size) > self.max_side:
            scale = self.max_side / max(img.size)
            size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
            img = img.resize(size, resample=Image.LANCZOS)
        w, h = img.size
        if self.is_raw(rel):
            return {"data": img.tobytes(), "raw": 1, "h": h, "w": w}
        if keep:
            return {"data": original, "raw": 0, "h": h, "w": w}
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=self.quality)
        return {"data": buf.getvalue(), "raw": 0, "h": h, "w": w}

    def __call__(self, sample: tuple[str, int]) -> dict[str, Any] | None:
        path, label = sample
        try:
            item = self.encode(path)
        except (*BAD_IMAGE_ERRORS, Image.UnidentifiedImageError) as err:
            with open(os.path.join(self.skipped_dir, f"{os.getpid()}.txt"), "a") as fh:
                fh.write(f"{path}\t{type(err).__name__}: {err}".replace("\n", " ") + "\n")
            return None
        item["label"] = int(label)
        return item


def split_samples(split_dir: Path, classes: Sequence[str]) -> list[list]:
    """``(path, label)`` of every image of a split, sorted by class then path."""
    index = {c: i for i, c in enumerate(classes)}
    # lists, not tuples: litdata compares them with its checkpoint's JSON copy when it resumes
    return [[p, index[c]] for c in class_dirs(split_dir) for p in iter_images(str(split_dir / c))]


def prepare(
    src: str | os.PathLike,
    out: str | os.PathLike,
    splits: Sequence[str] | None = None,
    max_side: int = 512,
    quality: int = 90,
    raw_fraction: float = 0.0,
    workers: int | None = None,
    chunk_bytes: str = "64MB",
    progress: bool = True,
) -> dict[str, dict[str, int]]:
    """Write the shards (see the module docstring); returns ``{split: {"images", "skipped"}}``."""
    if int(max_side) < 16:
        raise ValueError(f"max_side={max_side} is invalid; use the longest side in pixels, at least 16 (512: FFCV's)")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality={quality} is invalid; use a JPEG quality from 1 to 100 (90: FFCV's)")
    if not 0.0 <= float(raw_fraction) <= 1.0:
        raise ValueError(f"raw_fraction={raw_fraction} is invalid; use a share from 0 (all JPEG) to 1 (all raw)")
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers={workers} is invalid; use a positive number of processes")
    src, out = Path(os.path.expanduser(str(src))), Path(os.path.expanduser(str(out)))
    if not src.is_dir():
        raise FileNotFoundError(f"src={src} is not a folder; give one holding train/<class>/<image> (ImageNet layout)")
    if splits is None:
        splits = [s for s in ("train", "val", "test") if (src / s).is_dir()]
    if not splits:
        raise FileNotFoundError(f"src={src} has no train/, val/ or test/ folder (ImageNet layout: train/<class>/*)")
    found = {s: class_dirs(src / s) for s in splits}
    classes = found[splits[0]]
    for split, names in found.items():
        if not names:
            raise FileNotFoundError(f"src={src}: {split}/ has no class folders; expected {split}/<class>/<image>")
        if split != splits[0] and names != classes:
            missing, extra = sorted(set(classes) - set(names))[:5], sorted(set(names) - set(classes))[:5]
            raise ValueError(
                f"src={src}: {split}/ has different classes from {splits[0]}/: missing {missing}, extra {extra}"
            )
    require_writable(out, "out", folder=True)
    out.mkdir(parents=True, exist_ok=True)
    classes_file = out / CLASSES_FILE
    if classes_file.exists() and classes_file.read_text().split() != classes:
        raise ValueError(f"out={out} holds shards of other classes ({classes_file}); give an empty or new folder")
    classes_file.write_text("".join(f"{c}\n" for c in classes))
    workers = int(workers or available_cores())
    settings = {"max_side": int(max_side), "quality": int(quality), "raw_fraction": float(raw_fraction)}
    summary = {}
    for split in splits:
        summary[split] = _prepare_split(src, out, split, classes, settings, workers, chunk_bytes, progress)
    return summary


def _prepare_split(src, out, split, classes, settings, workers, chunk_bytes, progress) -> dict[str, int]:
    from litdata import optimize

    split_out = out / split
    done = split_out / DONE_FILE
    if done.exists():
        previous = json.loads(done.read_text())
        if {k: previous.get(k) for k in settings} == settings and previous.get("images"):
            print(f"{split}: already prepared ({previous['images']} images), skipped", file=sys.stderr)
            return {"images": previous["images"], "skipped": previous["skipped"]}
        raise ValueError(
            f"out={out}: {split}/ was prepared with other settings ({ {k: previous.get(k) for k in settings} }); "
            "give a new folder"
        )
    samples = split_samples(src / split, classes)
    if not samples:
        raise InputError("src", src / split, "no image files in its class folders (.jpg, .png, ...)")
    skipped_dir = out / f".skipped-{split}"
    skipped_dir.mkdir(parents=True, exist_ok=True)
    encoder = _Encoder(str(src / split), skipped_dir=str(skipped_dir), **settings)
    checkpoint = split_out / ".checkpoints" / "config.json"
    workers = max(1, min(workers, len(samples)))
    if checkpoint.is_file():  # an interrupted run: litdata resumes it with the same split of the work
        previous = json.loads(checkpoint.read_text())
        planned = [item for worker_items in previous.get("workers_user_items", []) for item in worker_items]
        if sorted(map(tuple, planned)) == sorted(map(tuple, samples)):
            workers = int(previous["num_workers"])
            print(f"{split}: resuming an interrupted prepare ({workers} workers)", file=sys.stderr)
        else:
            shutil.rmtree(split_out)  # the images changed since: start the split over
    elif split_out.exists():
        shutil.rmtree(split_out)  # an earlier attempt that left no checkpoint to resume from
    optimize(
        fn=encoder,
        inputs=samples,
        output_dir=str(split_out),
        chunk_bytes=chunk_bytes,
        num_workers=workers,
        use_checkpoint=True,
        reorder_files=False,
        start_method="fork" if sys.platform == "linux" else None,
        verbose=progress,
    )
    lines = sorted({line for f in skipped_dir.glob("*.txt") for line in f.read_text().splitlines() if line})
    (split_out / SKIPPED_FILE).write_text("".join(f"{line}\n" for line in lines))
    shutil.rmtree(skipped_dir, ignore_errors=True)
    images = len(samples) - len(lines)
    if images == 0:  # nothing to train on: no shards that look prepared, and a rerun starts over
        shutil.rmtree(split_out, ignore_errors=True)
        raise InputError(
            "src", src / split, f"none of its {len(samples)} images could be read (e.g. {lines[0]}); no shards written"
        )
    written = _count(split_out)
    if written != images:
        raise RuntimeError(f"{split}: wrote {written} items for {images} readable images; rerun mrl-prepare")
    if lines:
        print(
            f"{split}: skipped {len(lines)} unreadable image(s), listed in {split_out / SKIPPED_FILE}:", file=sys.stderr
        )
        for line in lines[:10]:
            print(f"  {line}", file=sys.stderr)
    done.write_text(json.dumps({**settings, "images": images, "skipped": len(lines), "classes": len(classes)}))
    return {"images": images, "skipped": len(lines)}


def _count(split_out: Path) -> int:
    index = json.loads((split_out / "index.json").read_text())
    return sum(int(chunk["chunk_size"]) for chunk in index["chunks"])


def verify(out: str | os.PathLike, progress: bool = True) -> dict[str, dict[str, int]]:
    """Decode every item of every prepared split and check the counts; raises on the first mismatch.
    Returns ``{split: {"images", "skipped", "bad"}}`` (bad: items that do not decode or have a wrong label)."""
    from litdata import StreamingDataset

    out = Path(os.path.expanduser(str(out)))
    classes_file = out / CLASSES_FILE
    if not classes_file.is_file():
        raise FileNotFoundError(f"out={out} holds no prepared shards ({CLASSES_FILE} missing); run mrl-prepare first")
    num_classes = len(classes_file.read_text().split())
    report = {}
    for split_out in sorted(p for p in out.iterdir() if (p / DONE_FILE).is_file()):
        meta = json.loads((split_out / DONE_FILE).read_text())
        dataset = StreamingDataset(str(split_out))
        bad = 0
        for i in range(len(dataset)):
            item = dataset[i]
            try:
                img = open_item(item["data"], bool(item["raw"]), int(item["h"]), int(item["w"]))
                img.load()
                ok = img.size == (int(item["w"]), int(item["h"])) and 0 <= int(item["label"]) < num_classes
            except (*BAD_IMAGE_ERRORS, Image.UnidentifiedImageError):
                ok = False
            bad += not ok
        if len(dataset) != meta["images"]:
            raise RuntimeError(f"{split_out.name}: {len(dataset)} items, but {meta['images']} were written")
        report[split_out.name] = {"images": len(dataset), "skipped": meta["skipped"], "bad": bad}
    if not report:
        raise FileNotFoundError(f"out={out} has no finished split ({DONE_FILE} missing); rerun mrl-prepare")
    return report


# --------------------------------------------------------------------------------------------- data module
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


def _streaming_dataset_class():
    from litdata import StreamingDataset

    class DecodedStreamingDataset(StreamingDataset):
        """The training stream: litdata's shuffled, rank- and worker-sharded items, decoded."""

        def __init__(self, *args: Any, decode: Callable, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.decode = decode

        def __getitem__(self, index: Any) -> Any:
            return self.decode(super().__getitem__(index))

    return DecodedStreamingDataset


class ImageShardsDataModule(ImageDataModule):
    """Trains from ``mrl-prepare`` shards at ``root`` (a local folder or an ``s3://``/``gs://`` URL that
    litdata streams from). Batches are ``uint8[B, C, H, W]``; the model's ``on_after_batch_transfer``
    turns them into normalised floats on the device (flipped in training), see :mod:`mrl.data.image.decode`.

    ``image_size``, ``crop_pct`` and ``interpolation`` override the backbone's data config as for image
    folders; the evaluation preprocessing is the image folders' one. ``num_workers=null`` uses the available
    cores (``os.sched_getaffinity``), shared among the training processes of the machine
    (:func:`loader_workers`); ``pin_memory=null`` pins batches when they go to a GPU (:func:`uses_gpu`), both
    decided when a loader is built, once the trainer is known. ``cache_dir``: where litdata keeps downloaded
    chunks of a remote ``root``. ``decode="device"`` decodes the training JPEGs on the trainer's device instead
    of the loader's CPU workers (:mod:`mrl.data.image.device_decode`).
    """

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
        batch_size: int = 256,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        seed: int = 0,
    ) -> None:
        self.auto_workers, self.auto_pin = num_workers is None, pin_memory is None
        super().__init__(
            batch_size,
            loader_workers() if num_workers is None else num_workers,
            uses_gpu(None) if pin_memory is None else pin_memory,
            persistent_workers,
            seed,
        )
        scale, ratio = [float(v) for v in scale], [float(v) for v in ratio]  # plain lists: weights_only checkpoints
        self.save_hyperparameters()
        if image_size is not None and int(image_size) < 1:
            raise ValueError(f"data.image_size={image_size} is invalid; use a positive integer or null")
        if crop_pct is not None and not 0 < float(crop_pct) <= 1:
            raise ValueError(f"data.crop_pct={crop_pct} is invalid; use a fraction in (0, 1] or null")
        if interpolation is not None and interpolation not in PIL_INTERPOLATIONS:
            raise ValueError(
                f"data.interpolation={interpolation!r} is invalid; use one of {', '.join(PIL_INTERPOLATIONS)} or null"
            )
        if decode not in DECODE_PLACES:
            raise ValueError(f"data.decode={decode!r} is invalid; use one of {', '.join(DECODE_PLACES)}")
        if decode == "device" and interpolation is not None and interpolation not in DEVICE_INTERPOLATIONS:
            raise ValueError(
                f"data.interpolation={interpolation!r} is invalid with data.decode=device; "
                f"use one of {', '.join(DEVICE_INTERPOLATIONS)} or null"
            )
        scale, ratio = tuple(float(v) for v in scale), tuple(float(v) for v in ratio)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"data.scale={list(scale)} is invalid; use [low, high] with 0 < low <= high <= 1")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"data.ratio={list(ratio)} is invalid; use [low, high] with 0 < low <= high")
        if root is None or str(root).strip() in ("", "???"):
            raise ValueError("data.root is not set; point it at the folder mrl-prepare wrote (or its s3:// URL)")
        self.root = str(root) if "://" in str(root) else os.path.expanduser(str(root))
        self.remote = "://" in self.root
        if not self.remote and not (Path(self.root) / CLASSES_FILE).is_file():
            raise FileNotFoundError(
                f"data.root={root} holds no prepared shards ({CLASSES_FILE} missing); run "
                f"`mrl-prepare <image folder> {root}` (make prepare) first"
            )
        self.split_dirs = {
            split: sub for split, sub in (("train", train_dir), ("val", val_dir), ("test", test_dir)) if sub is not None
        }
        if "val" not in self.split_dirs:
            raise ValueError("data.val_dir=null: a validation split is required")
        if not self.remote:
            for split, sub in self.split_dirs.items():
                if not (Path(self.root) / sub / "index.json").is_file():
                    raise FileNotFoundError(
                        f"data.{split}_dir={sub}: {Path(self.root) / sub} is not a prepared split; "
                        f"run mrl-prepare on a folder with {sub}/<class>/<image>"
                    )
        self.name = Path(self.root.rstrip("/")).name or "image_shards"
        self.in_chans = 3
        self.image_size = None if image_size is None else int(image_size)
        self.overrides = {k: v for k, v in (("crop_pct", crop_pct), ("interpolation", interpolation)) if v is not None}
        self.overrides["color_jitter"] = 0.0
        self.scale, self.ratio, self.draft, self.decode = scale, ratio, bool(draft), decode
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
            import fsspec

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
        from mrl.data.image.folder import ImageFolderDataModule

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
        return _streaming_dataset_class()(
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
            raise ValueError(f"data.{split}_dir=null: {self.root} has no {split} split")
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

    def _set_loader_options(self) -> None:
        """``num_workers`` and ``pin_memory`` left to null: decided for the trainer this module is attached to."""
        trainer = getattr(self, "trainer", None)
        if self.auto_workers:
            local = os.environ.get("LOCAL_WORLD_SIZE") or getattr(trainer, "num_devices", 1) or 1
            self.num_workers = loader_workers(int(local))
        if self.auto_pin:
            self.pin_memory = uses_gpu(trainer)

    def train_dataloader(self):
        from litdata import StreamingDataLoader

        self._set_loader_options()

        self._datasets.pop(("train", True, False), None)  # a fresh stream each fit (its rank split is read at iter)
        loader = StreamingDataLoader(
            self.split_dataset("train", train=True),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            drop_last=True,
            collate_fn=collate_encoded if self.decode == "device" else None,
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
        self._set_loader_options()
        return DataLoader(
            self._dataset(split, train=False, uint8=uint8),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
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
