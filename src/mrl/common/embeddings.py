"""Reading an embeddings file (``.npz``, as ``make embed`` and ``make eval`` write it), with numpy alone.

It lives here, below every layer, because search and the vector databases (:mod:`mrl.retrieval`) read these files
as much as evaluation does, and nothing in retrieval may import evaluation (which needs torch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_embeddings"]


def read_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """(embeddings as float32, row ids, labels, meta) of an ``.npz``. A file without ``ids`` names its rows
    0..N-1; labels are None where the file has none (``make embed`` marks its unlabelled rows -1)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings={str(path)!r}: no such file (make embed or make eval writes them)")
    with np.load(path) as data:
        if "embeddings" not in data:
            raise ValueError(f"embeddings={str(path)!r}: no 'embeddings' array in it (keys: {', '.join(data)})")
        embeddings = np.asarray(data["embeddings"], dtype=np.float32)
        ids = data["ids"] if "ids" in data else np.arange(len(embeddings))
        meta = json.loads(str(data["meta"])) if "meta" in data else {}
        labels = data["labels"] if "labels" in data and (data["labels"] >= 0).any() else None
    return embeddings, ids, labels, meta
