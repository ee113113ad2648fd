"""Training images per second per CPU core: a PIL ImageFolder with timm's transforms against prepared shards.

Run: ``python benchmarks/data.py [--images DIR] [--n 400] [--size 176] [--batch 64] [--rounds 5]``
(``make bench-data``).

Without ``--images`` it builds a folder of ImageNet-like JPEGs at run time (in a temporary folder, never
committed) from real photographs shipped by installed packages (scikit-learn's sample images, matplotlib's
Grace Hopper): random crops rescaled to ImageNet's typical sizes (longest side 400-500, aspect 3:4..4:3),
saved at JPEG quality 90. ``--images`` takes any folder of images (``DIR/<class>/<image>``, or ``DIR/train/...``).

Both pipelines produce the recipe's training batches (random-resized crop scale (0.08, 1), ratio (3/4, 4/3),
flip) at ``--size`` (the recipe trains at 160-192) in one process and one thread, so images/s is per core:

- ``ImageFolder``: today's ``data=imagenet``: PIL decodes the whole JPEG, timm's train transform crops,
  flips, converts to float and normalises on the CPU.
- ``shards``: ``mrl-prepare``'s shards read through litdata: the crop box is chosen first, PIL's JPEG draft
  mode decodes at 1/2..1/8 scale where the crop allows, the crop is resized to uint8; float conversion,
  normalisation and flip happen on the GPU (``on_after_batch_transfer``), so they are not CPU work here.
  Two rows: every image stored as JPEG (``--raw-fraction 0``), and the reference recipe's FFCV files' trade,
  about half stored as raw pixels (``--raw-fraction 0.5``), which the last line reports.

The pipelines run interleaved, round after round, and the ratio is taken per round (median over rounds), so a
noisy machine slows both alike. The last line: ``data: <B> img/s per core (new) vs <A> img/s per core
(ImageFolder): <R>x``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def photographs() -> list[Path]:
    """Real photographs that installed packages ship (no download)."""
    found = []
    try:
        import sklearn.datasets

        folder = Path(sklearn.datasets.__file__).parent / "images"
        found += sorted(folder.glob("*.jpg"))
    except ImportError:  # pragma: no cover
        pass
    try:
        import matplotlib

        found += sorted((Path(matplotlib.__file__).parent / "mpl-data" / "sample_data").glob("*.jpg"))
    except ImportError:  # pragma: no cover
        pass
    if not found:
        raise SystemExit("images=: no photographs found in installed packages; give --images DIR")
    return found


def build_folder(root: Path, n: int, classes: int = 10, seed: int = 0) -> Path:
    """``root/train/<class>/<i>.jpg``: n ImageNet-like JPEGs (longest side 400-500, quality 90)."""
    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in photographs()]
    for i in range(n):
        src = sources[i % len(sources)]
        W, H = src.size
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw = int(rng.uniform(0.5, 1.0) * W)
        ch = min(H, int(cw / aspect))
        cw = min(W, int(ch * aspect))
        left, top = int(rng.integers(0, W - cw + 1)), int(rng.integers(0, H - ch + 1))
        side = int(rng.integers(400, 501))
        scale = side / max(cw, ch)
        img = src.crop((left, top, left + cw, top + ch)).resize((round(cw * scale), round(ch * scale)), Image.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        folder = root / "train" / f"class{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{i:05d}.jpg", quality=90)
    return root


def image_folder_batches(root: Path, size: int, batch: int):
    """Today's path: torchvision ImageFolder semantics (SafeImageDataset) + timm's train transform."""
    from timm.data import create_transform
    from torch.utils.data import DataLoader
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    from mrl.data.image.folder import SafeImageDataset

    split = root / "train"
    classes = sorted(d.name for d in split.iterdir() if d.is_dir())
    samples = make_dataset(str(split), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS)
    transform = create_transform(size, is_training=True, color_jitter=0.0, interpolation="bilinear")
    dataset = SafeImageDataset(samples, transform=transform)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0, drop_last=True)
    return loader, len(dataset) // batch * batch


def shard_batches(out: Path, size: int, batch: int):
    """The new path: litdata shards -> draft decode -> uint8 batches (normalisation and flip on the GPU)."""
    from litdata import StreamingDataLoader

    from mrl.data.image.decode import TrainDecode
    from mrl.data.image.shards import streaming_dataset_class

    dataset = streaming_dataset_class()(
        str(out / "train"), shuffle=True, seed=0, drop_last=True, decode=TrainDecode(size)
    )
    loader = StreamingDataLoader(dataset, batch_size=batch, num_workers=0, drop_last=True)
    return loader, len(dataset) // batch * batch


def time_epoch(loader) -> tuple[float, int]:
    start = time.process_time()
    n = 0
    for x, _ in loader:
        n += x.shape[0]
    return time.process_time() - start, n


def ffcv_note() -> str:
    try:
        import ffcv  # noqa: F401

        return "ffcv: installed (not benchmarked here)"
    except ImportError:
        return (
            "ffcv: not installed (PyPI has only its source package; building it needs OpenCV 4 and libturbojpeg found "
            "by pkg-config); the FFCV loader figure quoted for comparison is about 300+ img/s per core from JPEG"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", help="a folder of images (DIR/<class>/*, or DIR/train/<class>/*); default: built")
    p.add_argument("--n", type=int, default=400, help="images to build when --images is not given")
    p.add_argument("--size", type=int, default=176, help="training crop side (the recipe: 160-192)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    if not 16 <= args.size <= 1024:
        raise SystemExit(f"size={args.size}: give a crop side from 16 to 1024")
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from mrl.data.image.shard_writer import prepare

    with tempfile.TemporaryDirectory(prefix="mrl-bench-data-") as tmp:
        tmp = Path(tmp)
        if args.images:
            root = Path(args.images)
            if not (root / "train").is_dir():
                (tmp / "src").mkdir()
                os.symlink(root.resolve(), tmp / "src" / "train")
                root = tmp / "src"
        else:
            root = build_folder(tmp / "src", args.n)
        print(f"images: {root}; crops {args.size}px, batches of {args.batch}, one core", file=sys.stderr)
        rows = {"ImageFolder + timm": None}
        for fraction in (0.0, 0.5):
            out = tmp / f"shards-{fraction}"
            prepare(root, out, splits=["train"], raw_fraction=fraction, workers=1, progress=False)
            rows[f"shards, raw {fraction:.0%}"] = out
        loaders = {
            name: (
                image_folder_batches(root, args.size, args.batch)
                if out is None
                else shard_batches(out, args.size, args.batch)
            )
            for name, out in rows.items()
        }
        for loader, _ in loaders.values():  # warm-up: first reads, imports
            for i, _ in enumerate(loader):
                if i == 1:
                    break
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(args.rounds):
            for name, (loader, _) in loaders.items():
                seconds, n = time_epoch(loader)
                rates[name].append(n / seconds)
        base = rates["ImageFolder + timm"]
        print(f"{'pipeline':<22} {'img/s/core (median)':>20} {'ratio (median over rounds)':>28}")
        for name, r in rates.items():
            ratio = statistics.median(a / b for a, b in zip(r, base))
            print(f"{name:<22} {statistics.median(r):>20.0f} {ratio:>27.2f}x")
        print(ffcv_note())
        new, old = rates["shards, raw 50%"], base
        ratio = statistics.median(a / b for a, b in zip(new, old))
        print(
            f"data: {statistics.median(new):.0f} img/s per core (new) vs {statistics.median(old):.0f} img/s per core "
            f"(ImageFolder): {ratio:.2f}x"
        )


if __name__ == "__main__":
    main()
