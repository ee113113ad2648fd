"""Reading an embeddings file (``.npz``, as ``make embed`` and ``make eval`` write it), with numpy alone.

One reader, two views: :func:`read_embeddings` (float32, row ids, labels or None, meta: what search and the
vector databases take) and :func:`load_embeddings` (embeddings as stored, labels, meta: the public
``mrl.load_embeddings``). It lives here, below every layer, because search and the vector databases
(:mod:`mrl.retrieval`) read these files as much as evaluation does, and nothing in retrieval may import evaluation
(which needs torch).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrl.common.door import require_finite
from mrl.common.errors import InputError

__all__ = ["EmbeddingsFile", "load_embeddings", "open_embeddings", "read_embeddings"]


@dataclass(frozen=True)
class EmbeddingsFile:
    """The arrays of an embeddings file: ``embeddings [N, D]`` as stored (fp32 or fp16), ``ids [N]`` (0..N-1 where
    the file has none), ``labels [N]`` (None where the file has none; -1 marks an unlabelled row) and ``meta``."""

    embeddings: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None
    meta: dict[str, Any]


def require_npz(path: Path) -> None:
    """A missing file is a FileNotFoundError, a file that is not a zip archive an InputError, both naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"embeddings={str(path)!r}: no such file (make embed or make eval writes them)")
    with open(path, "rb") as handle:
        if handle.read(2) != b"PK":  # every zip archive (and so every .npz) starts with these two bytes
            raise InputError("embeddings", path, "not an .npz archive; write it with make embed or numpy.savez")


def open_embeddings(path: str | Path) -> EmbeddingsFile:
    """The arrays of an ``.npz`` embeddings file, checked.

    Pickled arrays are never loaded (a file cannot run code when read); a file that is not an ``.npz``, a
    truncated one, one without an ``embeddings`` array, one whose embeddings are not a matrix or hold NaN or inf
    is an :class:`InputError` naming it."""
    path = Path(path)
    require_npz(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "embeddings" not in data:
                raise InputError("embeddings", path, f"no 'embeddings' array in it (keys: {', '.join(data)})")
            embeddings = data["embeddings"]
            ids = data["ids"] if "ids" in data else np.arange(len(embeddings))
            labels = data["labels"] if "labels" in data else None
            meta = json.loads(str(data["meta"])) if "meta" in data else {}
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        reason = "it holds pickled objects, never loaded" if "pickle" in str(error) else type(error).__name__
        raise InputError(
            "embeddings", path, f"not a readable .npz ({reason}); write it again with make embed or make eval"
        ) from None
    if embeddings.ndim != 2:
        raise InputError("embeddings", path, f"embeddings of shape {embeddings.shape}; expected (items, dims)")
    if embeddings.dtype.kind not in "fiu":
        raise InputError("embeddings", path, f"embeddings of dtype {embeddings.dtype}; expected numbers")
    require_finite(embeddings, "embeddings", path)
    return EmbeddingsFile(embeddings, ids, labels, meta)


def read_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """(embeddings as float32, row ids, labels, meta) of an ``.npz`` (:func:`open_embeddings`). A file without
    ``ids`` names its rows 0..N-1; labels are None where the file has none or marks every row unlabelled (-1, as
    ``make embed`` writes)."""
    found = open_embeddings(path)
    labels = found.labels if found.labels is not None and (found.labels >= 0).any() else None
    return np.asarray(found.embeddings, dtype=np.float32), found.ids, labels, found.meta


def load_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(embeddings, labels, meta) of an ``.npz`` written by ``make eval`` or ``make embed``, as stored (fp16 stays
    fp16; labels -1 where the inputs had none). A file without a ``labels`` array is an :class:`InputError` naming
    it (:func:`read_embeddings` reads such files)."""
    found = open_embeddings(path)
    if found.labels is None:
        raise InputError(
            "embeddings",
            Path(path),
            "no 'labels' array in it (make eval and make embed write one); read it with "
            "mrl.common.embeddings.read_embeddings",
        )
    return found.embeddings, found.labels, found.meta
