"""Reading an embeddings file (``.npz``, as ``make embed`` and ``make eval`` write it), with numpy alone.

It lives here, below every layer, because search and the vector databases (:mod:`mrl.retrieval`) read these files
as much as evaluation does, and nothing in retrieval may import evaluation (which needs torch).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mrl.common.door import require_finite
from mrl.common.errors import InputError

__all__ = ["read_embeddings"]


def read_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """(embeddings as float32, row ids, labels, meta) of an ``.npz``. A file without ``ids`` names its rows
    0..N-1; labels are None where the file has none (``make embed`` marks its unlabelled rows -1).

    Pickled arrays are never loaded (a file cannot run code when read); a file that is not an ``.npz``, a
    truncated one, or one whose embeddings hold NaN or inf is an :class:`InputError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings={str(path)!r}: no such file (make embed or make eval writes them)")
    with open(path, "rb") as handle:
        if handle.read(2) != b"PK":  # every zip archive (and so every .npz) starts with these two bytes
            raise InputError("embeddings", path, "not an .npz archive; write it with make embed or numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "embeddings" not in data:
                raise InputError("embeddings", path, f"no 'embeddings' array in it (keys: {', '.join(data)})")
            embeddings = np.asarray(data["embeddings"], dtype=np.float32)
            ids = data["ids"] if "ids" in data else np.arange(len(embeddings))
            meta = json.loads(str(data["meta"])) if "meta" in data else {}
            labels = data["labels"] if "labels" in data and (data["labels"] >= 0).any() else None
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        reason = "it holds pickled objects, never loaded" if "pickle" in str(error) else type(error).__name__
        raise InputError(
            "embeddings", path, f"not a readable .npz ({reason}); write it again with make embed or make eval"
        ) from None
    if embeddings.ndim != 2:
        raise InputError("embeddings", path, f"embeddings of shape {embeddings.shape}; expected (items, dims)")
    require_finite(embeddings, "embeddings", path)
    return embeddings, ids, labels, meta
