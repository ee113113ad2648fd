"""The shard writer behind ``mrl-prepare`` (``make prepare``): an ImageNet-layout folder written once into
litdata shards, and the check that reads them back.

For each split folder of SRC (``train``, ``val``, ...), :func:`prepare` writes ``OUT/<split>/`` in litdata's format
(``litdata.optimize``): one item per image, ``{"data": bytes, "raw": 0|1, "h": int, "w": int, "label": int}``.
Images whose longest side exceeds ``max_side`` are resized down and re-encoded as JPEG at ``quality``; smaller
JPEGs keep their original bytes; a ``raw_fraction`` share of the images (chosen by a hash of their path, so a rerun
picks the same) is stored as raw uint8 pixels, which skip decoding at the cost of disk, as FFCV's ImageNet files
do. ``OUT/classes.txt`` holds the class names in label order (the sorted class folders, as
:class:`~mrl.data.image.folder.ImageFolderDataModule` labels them), ``OUT/<split>/skipped.txt`` the unreadable
images (skipped, never fatal), ``OUT/<split>/prepared.json`` the counts that :func:`verify` checks. A finished
split is skipped by a rerun; an interrupted one starts over from litdata's checkpoints (``use_checkpoint``).

:class:`~mrl.data.image.shards.ImageShardsDataModule` trains from what this module writes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mrl.common.door import require_writable
from mrl.common.errors import ConfigError, InputError
from mrl.data.image.decode import open_item
from mrl.data.image.folder import BAD_IMAGE_ERRORS, class_dirs, iter_images
from mrl.data.loader_options import available_cores

CLASSES_FILE = "classes.txt"
DONE_FILE = "prepared.json"
SKIPPED_FILE = "skipped.txt"


class ShardEncoder:
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


@dataclass(frozen=True)
class EncodeSettings:
    """How each image is stored (see the module docstring); a finished split records them, and a rerun with other
    settings refuses to mix the two."""

    max_side: int = 512
    quality: int = 90
    raw_fraction: float = 0.0

    def __post_init__(self) -> None:
        if int(self.max_side) < 16:
            raise ConfigError(
                "max_side", self.max_side, "expected the longest side in pixels, at least 16 (512: FFCV's)"
            )
        if not 1 <= int(self.quality) <= 100:
            raise ConfigError("quality", self.quality, "expected a JPEG quality from 1 to 100 (90: FFCV's)")
        if not 0.0 <= float(self.raw_fraction) <= 1.0:
            raise ConfigError("raw_fraction", self.raw_fraction, "expected a share from 0 (all JPEG) to 1 (all raw)")
        object.__setattr__(self, "max_side", int(self.max_side))
        object.__setattr__(self, "quality", int(self.quality))
        object.__setattr__(self, "raw_fraction", float(self.raw_fraction))


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
    settings = EncodeSettings(max_side, quality, raw_fraction)
    if workers is not None and int(workers) < 1:
        raise ConfigError("workers", workers, "expected a positive number of processes")
    src, out = Path(os.path.expanduser(str(src))), Path(os.path.expanduser(str(out)))
    splits, classes = source_classes(src, splits)
    write_classes(out, classes)
    writer = SplitWriter(src, out, classes, settings, int(workers or available_cores()), chunk_bytes, progress)
    return {split: writer.write(split) for split in splits}


def source_classes(src: Path, splits: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """``(splits, classes)`` of an ImageNet-layout folder: the splits asked for (else those it has of train, val,
    test) and their class folders, the same in each split."""
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
    return list(splits), classes


def write_classes(out: Path, classes: Sequence[str]) -> None:
    """``OUT/classes.txt``; a folder that holds shards of other classes is refused."""
    require_writable(out, "out", folder=True)
    out.mkdir(parents=True, exist_ok=True)
    classes_file = out / CLASSES_FILE
    if classes_file.exists() and classes_file.read_text().split() != classes:
        raise ValueError(f"out={out} holds shards of other classes ({classes_file}); give an empty or new folder")
    classes_file.write_text("".join(f"{c}\n" for c in classes))


@dataclass(frozen=True)
class SplitWriter:
    """Writes ``OUT/<split>/`` for each split of ``src``: skipped when finished, resumed when interrupted."""

    src: Path
    out: Path
    classes: list[str]
    settings: EncodeSettings
    workers: int
    chunk_bytes: str
    progress: bool

    def write(self, split: str) -> dict[str, int]:
        from litdata import optimize

        finished = self.finished(split)
        if finished is not None:
            return finished
        samples = split_samples(self.src / split, self.classes)
        if not samples:
            raise InputError("src", self.src / split, "no image files in its class folders (.jpg, .png, ...)")
        skipped_dir = self.out / f".skipped-{split}"
        skipped_dir.mkdir(parents=True, exist_ok=True)
        encoder = ShardEncoder(str(self.src / split), skipped_dir=str(skipped_dir), **asdict(self.settings))
        optimize(
            fn=encoder,
            inputs=samples,
            output_dir=str(self.out / split),
            chunk_bytes=self.chunk_bytes,
            num_workers=self.resume_or_restart(split, samples),
            use_checkpoint=True,
            reorder_files=False,
            start_method="fork" if sys.platform == "linux" else None,
            verbose=self.progress,
        )
        return self.record(split, len(samples), self.collect_skipped(split, skipped_dir))

    def finished(self, split: str) -> dict[str, int] | None:
        """The counts of a split an earlier run finished with these settings; None when there is none."""
        done = self.out / split / DONE_FILE
        if not done.exists():
            return None
        previous = json.loads(done.read_text())
        settings = asdict(self.settings)
        if {k: previous.get(k) for k in settings} == settings and previous.get("images"):
            print(f"{split}: already prepared ({previous['images']} images), skipped", file=sys.stderr)
            return {"images": previous["images"], "skipped": previous["skipped"]}
        raise ValueError(
            f"out={self.out}: {split}/ was prepared with other settings ({ {k: previous.get(k) for k in settings} }); "
            "give a new folder"
        )

    def resume_or_restart(self, split: str, samples: list[list]) -> int:
        """The worker count to write with: an interrupted run's, which litdata resumes with the same split of the
        work, when it planned these very images; otherwise the split starts over."""
        split_out = self.out / split
        checkpoint = split_out / ".checkpoints" / "config.json"
        workers = max(1, min(self.workers, len(samples)))
        if checkpoint.is_file():
            previous = json.loads(checkpoint.read_text())
            planned = [item for worker_items in previous.get("workers_user_items", []) for item in worker_items]
            if sorted(map(tuple, planned)) == sorted(map(tuple, samples)):
                workers = int(previous["num_workers"])
                print(f"{split}: resuming an interrupted prepare ({workers} workers)", file=sys.stderr)
            else:
                shutil.rmtree(split_out)  # the images changed since: start the split over
        elif split_out.exists():
            shutil.rmtree(split_out)  # an earlier attempt that left no checkpoint to resume from
        return workers

    def collect_skipped(self, split: str, skipped_dir: Path) -> list[str]:
        """The unreadable images the workers noted, merged into ``OUT/<split>/skipped.txt``."""
        lines = sorted({line for f in skipped_dir.glob("*.txt") for line in f.read_text().splitlines() if line})
        (self.out / split / SKIPPED_FILE).write_text("".join(f"{line}\n" for line in lines))
        shutil.rmtree(skipped_dir, ignore_errors=True)
        return lines

    def record(self, split: str, samples: int, skipped: list[str]) -> dict[str, int]:
        """Check what was written against what was read, report the skipped images, and mark the split done."""
        split_out = self.out / split
        images = samples - len(skipped)
        if images == 0:  # nothing to train on: no shards that look prepared, and a rerun starts over
            shutil.rmtree(split_out, ignore_errors=True)
            raise InputError(
                "src",
                self.src / split,
                f"none of its {samples} images could be read (e.g. {skipped[0]}); no shards written",
            )
        written = _count(split_out)
        if written != images:
            raise RuntimeError(f"{split}: wrote {written} items for {images} readable images; rerun mrl-prepare")
        if skipped:
            print(
                f"{split}: skipped {len(skipped)} unreadable image(s), listed in {split_out / SKIPPED_FILE}:",
                file=sys.stderr,
            )
            for line in skipped[:10]:
                print(f"  {line}", file=sys.stderr)
        summary = {"images": images, "skipped": len(skipped)}
        (split_out / DONE_FILE).write_text(
            json.dumps({**asdict(self.settings), **summary, "classes": len(self.classes)})
        )
        return summary


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
