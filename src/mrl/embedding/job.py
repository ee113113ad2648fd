"""``make embed``'s job, step by step: check the options, find the run and check the output, load the model,
choose the size, read the inputs, embed them, keep the readable rows' prefixes, and write the ``.npz``
(:mod:`mrl.embedding` says what it holds)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrl.common.door import require_writable
from mrl.common.errors import ConfigError
from mrl.common.io import atomic_savez
from mrl.embedding.encode import embed_image_files, embed_texts
from mrl.embedding.inputs import list_images, read_texts
from mrl.embedding.preprocessing import image_transform, reference_transform
from mrl.evaluation.device import check_precision, resolve_device
from mrl.interop.reference import load_reference_resnet50
from mrl.runs import find_checkpoint, load_module, run_dir_of

__all__ = ["UserInputs", "embed_inputs"]

log = logging.getLogger(__name__)

DTYPES = {"fp32": np.float32, "fp16": np.float16}


@dataclass(frozen=True)
class UserInputs:
    """What is embedded: texts (``ids`` are the texts) or image files (``paths``, ``ids`` relative to the input,
    prepared by ``transform``)."""

    ids: list[str]
    paths: list[Path] | None = None
    transform: Callable | None = None

    @property
    def kind(self) -> str:
        return "text" if self.paths is None else "image"


def check_options(dtype: str, batch_size: int, num_workers: int, precision: str) -> None:
    """The settings that need neither the run nor the inputs, checked first."""
    if dtype not in DTYPES:
        raise ConfigError("dtype", dtype, "expected fp32 or fp16")
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f"batch_size={batch_size}, num_workers={num_workers}: need batch_size >= 1, num_workers >= 0")
    check_precision(precision)


def locate_run(target: str, out: str | None) -> tuple[Path, Path]:
    """(checkpoint, run directory) of ``target``; the output is checked to be writable before the model loads and
    the inputs are embedded."""
    ckpt = find_checkpoint(target)
    run_dir = run_dir_of(target if Path(target).is_dir() else ckpt)
    if out:
        require_writable(out)
    else:
        require_writable(run_dir / "embed", "out", folder=True)
    return ckpt, run_dir


def load_model(ckpt: Path, reference: str | None):
    """The trained module, or with ``reference`` an official RAIVNLab/MRL ResNet-50 (``"auto"``: the head kind read
    off the file, or one of :data:`mrl.interop.reference.REFERENCE_KINDS`)."""
    if reference:
        return load_reference_resnet50(ckpt, kind=None if reference == "auto" else reference)
    return load_module(ckpt)


def choose_dim(module, dim: int | None) -> int:
    """The prefix to keep: ``dim`` (1..width; a size that was not trained is warned about), or the full width."""
    width, sizes = int(module.embed_dim), [int(m) for m in module.sizes]
    dim = width if dim is None else int(dim)
    if not 1 <= dim <= width:
        raise ConfigError("dim", dim, f"the embedding is {width} wide; give 1..{width} (trained sizes: {sizes})")
    if dim not in sizes:
        log.warning("dim=%d is not one of the trained sizes %s: its prefix was never trained on its own", dim, sizes)
    return dim


def read_inputs(module, source: str, column: str, run_dir: Path, reference: str | None) -> UserInputs:
    """A text model's texts, or an image model's files with the preprocessing they go through."""
    if hasattr(module.backbone, "tokenize"):
        return UserInputs(read_texts(source, column))
    paths, ids = list_images(source)
    transform = reference_transform(module) if reference else image_transform(run_dir, module)
    return UserInputs(ids, paths, transform)


def embed_all(
    module, inputs: UserInputs, batch_size: int, num_workers: int, precision: str
) -> tuple[np.ndarray, np.ndarray]:
    """Full-width embeddings ``[N, D]`` of every input, and which of them could be read (``bool[N]``)."""
    if inputs.paths is None:
        return embed_texts(module, inputs.ids, batch_size, precision), np.ones(len(inputs.ids), dtype=bool)
    return embed_image_files(module, inputs.paths, inputs.transform, batch_size, num_workers, precision)


def keep_readable(
    embeddings: np.ndarray, readable: np.ndarray, inputs: UserInputs, dim: int, normalize: bool, source: str
) -> tuple[np.ndarray, list[str], list[str]]:
    """(the readable rows' ``dim``-prefixes, L2-normalised with ``normalize``; their ids; the unreadable ids)."""
    if not readable.any():
        ids = inputs.ids
        raise ValueError(f"input={str(source)!r}: none of its {len(ids)} images could be read, e.g. {ids[0]!r}")
    kept_rows = np.ascontiguousarray(embeddings[readable, :dim])
    if normalize:
        kept_rows /= np.maximum(np.linalg.norm(kept_rows, axis=1, keepdims=True), 1e-12)
    kept = [name for name, ok in zip(inputs.ids, readable) if ok]
    skipped = [name for name, ok in zip(inputs.ids, readable) if not ok]
    if skipped:
        log.warning("%d unreadable image(s) left out, e.g. %s", len(skipped), skipped[0])
    return kept_rows, kept, skipped


def output_path(out: str | None, run_dir: Path, source: str, dim: int) -> Path:
    """``out``, else ``<run>/embed/<input name>_<dim>d.npz``."""
    if out:
        return Path(out)
    name = Path(source).name if Path(source).is_dir() else Path(source).stem
    return run_dir / "embed" / f"{name}_{dim}d.npz"


def write_embeddings(path: Path, embeddings: np.ndarray, ids: list[str], meta: dict[str, Any]) -> None:
    """The ``.npz``: embeddings in ``meta["dtype"]``, ids, labels -1 (user inputs carry none) and meta as JSON."""
    atomic_savez(
        path,
        embeddings=embeddings.astype(DTYPES[meta["dtype"]]),
        ids=np.array(ids, dtype=str),
        labels=np.full(len(ids), -1, dtype=np.int64),
        meta=np.array(json.dumps(meta)),
    )


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
    check_options(dtype, batch_size, num_workers, precision)
    torch_device: torch.device = resolve_device(device)
    ckpt, run_dir = locate_run(target, out)
    module = load_model(ckpt, reference)
    dim = choose_dim(module, dim)
    inputs = read_inputs(module, source, column, run_dir, reference)
    module.to(torch_device).eval()
    log.info(
        "Embedding %d %ss from %s with %s (%s, %s)", len(inputs.ids), inputs.kind, source, ckpt, torch_device, precision
    )
    embeddings, readable = embed_all(module, inputs, batch_size, num_workers, precision)
    embeddings, kept, skipped = keep_readable(embeddings, readable, inputs, dim, normalize, source)
    path = output_path(out, run_dir, source, dim)
    meta = {
        "checkpoint": str(ckpt.resolve()),
        "input": str(Path(source).resolve()),
        "kind": inputs.kind,
        "head": (module.hparams.get("head") or {}).get("kind"),
        "sizes": [int(m) for m in module.sizes],
        "reference": bool(reference),
        "width": int(module.embed_dim),
        "dim": dim,
        "normalized": bool(normalize),
        "dtype": dtype,
        "count": len(kept),
        "skipped": skipped,
        "precision": precision,
    }
    write_embeddings(path, embeddings, kept, meta)
    return {**meta, "output": str(path)}
