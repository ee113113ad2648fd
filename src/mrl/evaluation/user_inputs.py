"""Embeddings of your own images or texts from a trained run, at the size you choose (``make embed``).

INPUT for an image model: a folder (every image below it, in sorted path order) or a ``.txt`` file that
lists image paths, one per line (relative ones are read from the list's folder). The images go through
the run's own evaluation preprocessing, rebuilt from its data config, so the training data need not be on
this machine. An unreadable image is left out, and its path is named in the output's ``meta``.

INPUT for a text model: a ``.txt`` file (one text per line) or a table (``.csv``, ``.tsv``, ``.jsonl``,
``.json``, ``.parquet``) whose ``column`` (default ``text``) holds the texts, tokenized as in training.

``reference``: RUN_OR_CKPT is an official RAIVNLab/MRL ResNet-50 file, and the images are prepared as the
reference evaluates ImageNet (``conf/data/imagenet.yaml``: resize to 256, center 224, bilinear).

The ``.npz`` it writes holds ``embeddings [N, dim]`` (the first ``dim`` coordinates; re-normalised with
``normalize``), ``ids [N]`` (image paths relative to INPUT, or the texts), ``labels [N]`` (-1: the
inputs carry no label) and ``meta`` (JSON: checkpoint, input, sizes, dim, normalised, skipped), so
:func:`mrl.load_embeddings` reads it and :class:`mrl.AdaptiveRetriever` searches it as it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mrl.common.door import require_writable
from mrl.common.io import atomic_savez

__all__ = ["embed_image_files", "embed_inputs", "embed_texts", "image_transform", "list_images", "read_texts"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ inputs
def list_images(source: str | Path) -> tuple[list[Path], list[str]]:
    """(paths, ids) of the images in a folder (recursively, sorted) or named by a list file."""
    from mrl.data.image.folder import iter_images

    source = Path(source).expanduser()
    if source.is_dir():
        paths = sorted(Path(p) for p in iter_images(str(source)))
        ids = [p.relative_to(source).as_posix() for p in paths]
    elif source.is_file():
        lines = [line.strip() for line in source.read_text().splitlines() if line.strip()]
        paths = [
            Path(line).expanduser() if Path(line).expanduser().is_absolute() else source.parent / line for line in lines
        ]
        ids = lines
        missing = [line for line, path in zip(lines, paths) if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"input={str(source)!r}: {len(missing)} listed file(s) do not exist, "
                f"e.g. {missing[0]!r} (relative paths are read from the list's folder)"
            )
    else:
        raise FileNotFoundError(f"input={str(source)!r}: no such folder or list file")
    if not paths:
        raise FileNotFoundError(f"input={str(source)!r}: no image files in it (.jpg, .png, .webp, ...)")
    return paths, ids


def read_texts(source: str | Path, column: str = "text") -> list[str]:
    """The texts of a ``.txt`` file (one per non-empty line) or of a table's ``column``."""
    from mrl.data.text.tables import FILE_TYPES, read_table

    path = Path(source).expanduser()
    if path.is_dir():
        raise ValueError(
            f"input={str(source)!r}: a folder, but this run is a text model, which embeds a .txt file "
            "or a table; for images give an image model's run (RUN=...)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"input={str(source)!r}: no such file (a text model embeds a .txt file or a table)")
    suffix = path.suffix.lower()
    if suffix in FILE_TYPES:
        rows = read_table(str(path), key="input")
        if not rows:
            raise ValueError(f"input={str(source)!r}: the table has no rows")
        if column not in rows[0]:
            columns = ", ".join(map(str, rows[0]))
            raise ValueError(f"column={column!r}: not a column of {path.name}; its columns are {columns}")
        texts = [row[column] for row in rows]
        bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
        if bad is not None:
            raise ValueError(f"column={column!r}: row {bad} of {path.name} holds {texts[bad]!r}, not a text")
    else:
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError(f"input={str(source)!r}: no texts in it")
    return texts


def reference_transform(module: torch.nn.Module) -> Callable:
    """ImageNet's evaluation preprocessing as ``conf/data/imagenet.yaml`` sets it (the reference protocol: resize
    to 256, center 224, bilinear), for an official RAIVNLab/MRL checkpoint that comes without a run."""
    from omegaconf import OmegaConf

    from mrl.common.configs import config_dir
    from mrl.data.image.folder import ImageFolderDataModule

    imagenet = OmegaConf.load(config_dir() / "data" / "imagenet.yaml")
    settings = {key: imagenet[key] for key in ("image_size", "crop_pct", "interpolation")}
    return ImageFolderDataModule.file_transform(settings, getattr(module.backbone, "data_config", None))


def image_transform(run_dir: Path, module: torch.nn.Module) -> Callable:
    """The run's evaluation preprocessing for an image file, from its ``config.yaml``'s ``data`` section."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(
            f"run={str(run_dir)!r}: no config.yaml; images are prepared as the run prepared its "
            "own, so give the run directory (or a checkpoint inside its checkpoints/)"
        )
    data = OmegaConf.to_container(OmegaConf.load(config).data, resolve=True)
    cls = get_class(data.pop("_target_"))
    return cls.file_transform(data, getattr(module.backbone, "data_config", None))


class _ImageFiles(Dataset):
    """``(image, index)`` per file; an unreadable file gives ``(blank, -1)`` so it can be left out afterwards."""

    def __init__(self, paths: Sequence[Path], transform: Callable) -> None:
        from PIL import Image

        self.paths, self.transform = list(paths), transform
        self.blank = transform(Image.new("RGB", (32, 32)))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        from mrl.data.image.folder import BAD_IMAGE_ERRORS

        try:
            with open(self.paths[index], "rb") as handle:
                image = Image.open(handle)
                image.load()
            return self.transform(image), index
        except BAD_IMAGE_ERRORS:
            return self.blank, -1


class _Tokenize:
    """Collate ``(text, index)`` pairs into ``(tokenizer features, indices)``."""

    def __init__(self, tokenize: Callable) -> None:
        self.tokenize = tokenize

    def __call__(self, items: list[tuple[str, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        texts, indices = zip(*items)
        return self.tokenize(list(texts)), torch.tensor(indices)


# ------------------------------------------------------------------------------------------- embedding
def _embed(module, loader: DataLoader, precision: str) -> tuple[np.ndarray, np.ndarray]:
    from mrl.evaluation.embeddings import embed_split

    out = embed_split(module, loader, logits=False, precision=precision, name="input")
    return out["embeddings"], out["labels"] >= 0


def embed_image_files(
    module,
    paths: Sequence[Path],
    transform: Callable,
    batch_size: int = 64,
    num_workers: int = 0,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Full-width embeddings ``[N, D]`` of image files, and which of them could be read (``bool[N]``; the
    rows of the others are meaningless)."""
    loader = DataLoader(_ImageFiles(paths, transform), batch_size=batch_size, num_workers=num_workers)
    return _embed(module, loader, precision)


def embed_texts(module, texts: Sequence[str], batch_size: int = 64, precision: str = "fp32") -> np.ndarray:
    """Full-width embeddings ``[N, D]`` of texts, tokenized by the model's own tokenizer."""
    items = [(text, i) for i, text in enumerate(texts)]
    loader = DataLoader(items, batch_size=batch_size, collate_fn=_Tokenize(module.backbone.tokenize))
    return _embed(module, loader, precision)[0]


# ------------------------------------------------------------------------------------------------- run
def embed_inputs(
    target: str,
    source: str,
    out: str | None = None,
    dim: int | None = None,
    normalize: bool = False,
    dtype: str = "fp32",
    column: str = "text",
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "auto",
    precision: str = "fp32",
    reference: str | None = None,
) -> dict[str, Any]:
    """Embed ``source`` with the run or checkpoint ``target`` and write the ``.npz``; returns its meta.

    ``reference``: ``target`` is an official RAIVNLab/MRL ResNet-50 file (``"auto"``: the head kind read off the
    file, or one of :data:`mrl.interop.reference.REFERENCE_KINDS`), read with ImageNet's evaluation preprocessing.
    """
    from mrl.evaluation.device import check_precision, resolve_device
    from mrl.runs import find_checkpoint, load_module, run_dir_of

    if dtype not in ("fp32", "fp16"):
        raise ValueError(f"dtype={dtype!r}: expected fp32 or fp16")
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f"batch_size={batch_size}, num_workers={num_workers}: need batch_size >= 1, num_workers >= 0")
    check_precision(precision)
    torch_device = resolve_device(device)
    ckpt = find_checkpoint(target)
    run_dir = run_dir_of(target if Path(target).is_dir() else ckpt)
    if out:  # the output is checked before the model loads and the inputs are embedded
        require_writable(out)
    else:
        require_writable(run_dir / "embed", "out", folder=True)
    if reference:
        from mrl.interop.reference import load_reference_resnet50

        module = load_reference_resnet50(ckpt, kind=None if reference == "auto" else reference)
    else:
        module = load_module(ckpt)
    width, sizes = int(module.embed_dim), [int(m) for m in module.sizes]
    dim = width if dim is None else int(dim)
    if not 1 <= dim <= width:
        raise ValueError(f"dim={dim}: the embedding is {width} wide; give 1..{width} (trained sizes: {sizes})")
    if dim not in sizes:
        log.warning("dim=%d is not one of the trained sizes %s: its prefix was never trained on its own", dim, sizes)
    is_text = hasattr(module.backbone, "tokenize")
    if is_text:
        ids = read_texts(source, column)
    else:
        paths, ids = list_images(source)
        transform = reference_transform(module) if reference else image_transform(run_dir, module)
    module.to(torch_device).eval()
    log.info(
        "Embedding %d %s from %s with %s (%s, %s)",
        len(ids),
        "texts" if is_text else "images",
        source,
        ckpt,
        torch_device,
        precision,
    )
    if is_text:
        embeddings, readable = embed_texts(module, ids, batch_size, precision), np.ones(len(ids), dtype=bool)
    else:
        embeddings, readable = embed_image_files(module, paths, transform, batch_size, num_workers, precision)
    embeddings = np.ascontiguousarray(embeddings[readable, :dim])
    if normalize:
        embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    if not readable.any():
        raise ValueError(f"input={str(source)!r}: none of its {len(ids)} images could be read, e.g. {ids[0]!r}")
    kept = [name for name, ok in zip(ids, readable) if ok]
    skipped = [name for name, ok in zip(ids, readable) if not ok]
    if skipped:
        log.warning("%d unreadable image(s) left out, e.g. %s", len(skipped), skipped[0])
    default_name = Path(source).name if Path(source).is_dir() else Path(source).stem
    path = Path(out) if out else run_dir / "embed" / f"{default_name}_{dim}d.npz"
    meta = {
        "checkpoint": str(ckpt.resolve()),
        "input": str(Path(source).resolve()),
        "kind": "text" if is_text else "image",
        "head": (module.hparams.get("head") or {}).get("kind"),
        "sizes": sizes,
        "reference": bool(reference),
        "width": width,
        "dim": dim,
        "normalized": bool(normalize),
        "dtype": dtype,
        "count": len(kept),
        "skipped": skipped,
        "precision": precision,
    }
    atomic_savez(
        path,
        embeddings=embeddings.astype(np.float16 if dtype == "fp16" else np.float32),
        ids=np.array(kept, dtype=str),
        labels=np.full(len(kept), -1, dtype=np.int64),
        meta=np.array(json.dumps(meta)),
    )
    return {**meta, "output": str(path)}
