"""Exact k-nearest-neighbour search at one prefix size, on the CPU (FAISS heaps) or a GPU (torch), with
leave-one-out search of a set against itself."""

from __future__ import annotations

import numpy as np
import torch

from mrl.retrieval.flat import FlatIndex, faiss, prefix
from mrl.retrieval.torch_search import torch_search

__all__ = ["knn_search"]


def _drop_self(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove query i's own id i from its row (leave-one-out), keeping the first ``k`` others."""
    own = ids == np.arange(ids.shape[0])[:, None]
    # Stable sort puts the non-self entries first, in their original (ranked) order.
    order = np.argsort(own, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


def knn_search(
    db: np.ndarray,
    queries: np.ndarray,
    size: int,
    k: int,
    metric: str = "cosine",
    exclude_self: bool = False,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` neighbours at prefix ``size``: ``(scores[Q, k], ids[Q, k])`` best first.

    ``device=None`` searches with FAISS on the CPU; a torch device (``"cuda"``) searches there with
    `mrl.retrieval.torch_search.torch_search` (same results up to float rounding; both keep the lowest ids
    among equal scores, listed by id).
    """
    if faiss is None:  # pragma: no cover
        raise ImportError("kNN metrics need FAISS: pip install 'mrl[retrieval]' (faiss-cpu)")
    if metric not in ("cosine", "l2", "ip"):
        raise ValueError(f"metric must be 'cosine', 'l2' or 'ip', got {metric!r}")
    normalize = metric == "cosine"
    x = prefix(db, size, normalize)
    kk = min(k + int(exclude_self), len(x))
    if device is None:
        scores, ids = FlatIndex(x, l2=metric == "l2").search(prefix(queries, size, normalize), kk)
    else:
        scores, ids = torch_search(x, prefix(queries, size, normalize), kk, l2=metric == "l2", device=device)
    if exclude_self:
        ids, scores = _drop_self(ids, scores, min(k, kk))
    return scores, ids
