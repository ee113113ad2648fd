"""kNN retrieval metrics at every Matryoshka prefix size, following the MRL reference protocol.

The database and query embeddings are truncated to their first ``m`` coordinates for each size
``m`` (re-normalised to unit length for ``metric="cosine"``), the neighbours are found once per size
with an exact FAISS flat index at the largest ``k`` needed, and every metric is read off that list.
Relevance is label equality: database item ``j`` is relevant to query ``i`` iff
``db_labels[j] == query_labels[i]``.

Metric definitions (per query, then averaged over queries; all values are fractions in [0, 1]).
They follow RAIVNLab/MRL ``retrieval/compute_metrics`` (function ``compute_mAP_recall_at_k``):

* ``knn_top1@{m}``: label of the nearest neighbour equals the query label (1-NN accuracy).
* ``map@{map_k}@{m}``: the reference's AP@k, ``AP@k = (1/k) * sum_{j<=k, rel_j} P@j`` where ``P@j`` is
  the fraction of relevant items among the first ``j``. Note the normaliser is ``k`` itself, not the
  number of relevant items retrieved (``hits``) nor ``min(k, n_relevant)``: a query whose top-k
  holds a single relevant item at rank 1 scores ``1/k``, and AP@k equals 1 only when all k
  retrieved items are relevant. `average_precision_at_k` with ``n_relevant`` gives the textbook
  ``min(k, n_relevant)`` normalisation instead, for comparison.
* ``precision@{k}@{m}``: ``hits / k``.
* ``recall@{k}@{m}``: ``hits / n_relevant``, where ``n_relevant`` is the number of database items
  sharing the query's label (the reference divides by the constant 1300, the number of images per
  ImageNet-1K training class; we use the actual class count so the metric is correct for any
  database; queries whose class is absent from the database score 0). This is *not* "at least one
  relevant in the top k": that quantity, the reference's ``top{k}``, is reported as ``hit@{k}@{m}``.

Degenerate prefixes are scored honestly. A query whose ``m``-prefix is all zeros (a ReLU network's short prefix
can be) carries no information: every cosine score (and inner product) is 0 and its "neighbours" would be
whichever items the search lists first, so with ``cosine`` and ``ip`` it counts as a miss at that size in every
metric (under ``l2`` the origin is a point like any other: it ranks items by their norm) (`zero_prefix_rows`;
`zero_prefix_counts` gives the numbers per size, reported as ``zero_prefix_db@{m}`` and
``zero_prefix_queries@{m}``). Equal scores are broken by the lowest database id in every search
(:mod:`mrl.retrieval.ties`), so ``knn_top1@m`` does not depend on how many neighbours are asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from mrl.retrieval.nearest import knn_search


# --------------------------------------------------------------------------- degenerate prefixes
def zero_prefix_rows(x: np.ndarray, size: int, block: int = 65536) -> np.ndarray:
    """``[N]`` booleans: rows of ``x`` whose first ``size`` coordinates are all zero (no information)."""
    x = np.asarray(x)
    out = np.empty(len(x), dtype=bool)
    for i in range(0, len(x), block):
        out[i : i + block] = ~np.any(x[i : i + block, :size] != 0, axis=1)
    return out


def zero_prefix_counts(db: np.ndarray, queries: np.ndarray, sizes: Sequence[int]) -> dict[str, int]:
    """``zero_prefix_db@{m}`` and ``zero_prefix_queries@{m}``: how many database and query prefixes of each size
    are all zeros."""
    out: dict[str, int] = {}
    for m in sizes:
        out[f"zero_prefix_db@{m}"] = int(zero_prefix_rows(db, int(m)).sum())
        out[f"zero_prefix_queries@{m}"] = int(zero_prefix_rows(queries, int(m)).sum())
    return out


# --------------------------------------------------------------------------- per-query helpers
def relevance_matrix(neighbor_ids: np.ndarray, db_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """``rel[Q, k]`` booleans: is the j-th neighbour of query i of the query's label. Ids < 0 are misses."""
    ids = np.asarray(neighbor_ids)
    db_labels = np.asarray(db_labels)
    rel = db_labels[np.where(ids < 0, 0, ids)] == np.asarray(query_labels)[:, None]
    return rel & (ids >= 0)


def hits_at_k(relevance: np.ndarray, k: int) -> np.ndarray:
    """Number of relevant items in the first ``k`` positions, per query."""
    return np.asarray(relevance, dtype=bool)[:, :k].sum(axis=1)


def precision_at_k(relevance: np.ndarray, k: int) -> np.ndarray:
    """``hits@k / k`` per query (the reference's precision@k)."""
    return hits_at_k(relevance, k) / float(k)


def recall_at_k(relevance: np.ndarray, k: int, n_relevant: np.ndarray) -> np.ndarray:
    """``hits@k / n_relevant`` per query (0 where ``n_relevant == 0``)."""
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    hits = hits_at_k(relevance, k).astype(np.float64)
    return np.divide(hits, n_rel, out=np.zeros_like(hits), where=n_rel > 0)


def hit_at_k(relevance: np.ndarray, k: int) -> np.ndarray:
    """1.0 where at least one of the first ``k`` items is relevant (the reference's top-k accuracy)."""
    return (hits_at_k(relevance, k) > 0).astype(np.float64)


def average_precision_at_k(
    relevance: np.ndarray, n_relevant: np.ndarray | None = None, k: int | None = None
) -> np.ndarray:
    """AP@k per query from a ``[Q, >=k]`` relevance matrix (``k`` defaults to its width).

    ``sum_{j<=k, rel_j} P@j`` divided by ``k`` when ``n_relevant`` is None (the MRL reference's
    definition, used for ``map@k``), or by ``min(k, n_relevant)`` when the per-query number of relevant
    database items is given (textbook AP@k; 0 where ``n_relevant == 0``).
    """
    rel = np.asarray(relevance, dtype=bool)
    if rel.ndim != 2:
        raise ValueError(f"relevance must be [Q, k], got shape {rel.shape}")
    k = rel.shape[1] if k is None else int(k)
    rel = rel[:, :k]
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    prec = np.cumsum(rel, axis=1) / ranks
    total = (prec * rel).sum(axis=1)
    if n_relevant is None:
        return total / float(k)
    denom = np.minimum(float(k), np.asarray(n_relevant, dtype=np.float64))
    return np.divide(total, denom, out=np.zeros_like(total), where=denom > 0)


def count_relevant(db_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """Number of database items carrying each query's label."""
    classes, counts = np.unique(np.asarray(db_labels), return_counts=True)
    q = np.asarray(query_labels)
    pos = np.clip(np.searchsorted(classes, q), 0, len(classes) - 1)
    return np.where(classes[pos] == q, counts[pos], 0)


def knn_metrics(
    db: np.ndarray,
    db_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    sizes: Sequence[int],
    metric: str = "cosine",
    ks: Iterable[int] = (10, 25, 50, 100),
    map_k: int = 10,
    exclude_self: bool = False,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Retrieval metrics at each prefix size; see the module docstring for the exact definitions.

    Keys, for each ``m`` in ``sizes`` and ``k`` in ``ks``: ``knn_top1@{m}``, ``map@{map_k}@{m}``,
    ``precision@{k}@{m}``, ``recall@{k}@{m}``, ``hit@{k}@{m}``.

    ``exclude_self=True`` is leave-one-out retrieval of a set against itself: ``queries`` must be the
    database (query i is database item i); item i is removed from its own neighbour list and from
    its class count. A ``k`` larger than the database (minus one with ``exclude_self``) is an error.
    ``device`` is where the neighbours are searched (see `knn_search`). With ``cosine`` or ``ip``, a query whose
    ``m``-prefix is all zeros is a miss at size ``m`` (see the module docstring).
    """
    db = np.asarray(db)
    queries = np.asarray(queries)
    db_labels = np.asarray(db_labels).reshape(-1)
    query_labels = np.asarray(query_labels).reshape(-1)
    if db.ndim != 2 or queries.ndim != 2 or db.shape[1] != queries.shape[1]:
        raise ValueError(f"db and queries must be [N, D] and [Q, D], got {db.shape} and {queries.shape}")
    if len(db_labels) != len(db) or len(query_labels) != len(queries):
        raise ValueError("db_labels / query_labels must have one label per row of db / queries")
    if exclude_self and len(queries) != len(db):
        raise ValueError("exclude_self=True needs queries to be the database itself (same number of rows)")
    ks = sorted({int(k) for k in ks})
    sizes = [int(m) for m in sizes]
    bad = [m for m in sizes if not 1 <= m <= db.shape[1]]
    if bad:
        raise ValueError(f"sizes {bad} outside [1, {db.shape[1]}] (the embedding width)")
    kmax = max([1, map_k, *ks])
    available = len(db) - int(exclude_self)
    if kmax > available:
        raise ValueError(f"k={kmax} exceeds the {available} database items available per query")
    n_rel = count_relevant(db_labels, query_labels) - int(exclude_self)

    out: dict[str, float] = {}
    for m in sizes:
        _, ids = knn_search(db, queries, m, kmax, metric=metric, exclude_self=exclude_self, device=device)
        rel = relevance_matrix(ids, db_labels, query_labels)
        if metric != "l2":  # every score 0, no information: a miss, whatever the search listed first
            rel[zero_prefix_rows(queries, m)] = False
        out[f"knn_top1@{m}"] = float(rel[:, 0].mean())
        out[f"map@{map_k}@{m}"] = float(average_precision_at_k(rel, k=map_k).mean())
        for k in ks:
            out[f"precision@{k}@{m}"] = float(precision_at_k(rel, k).mean())
            out[f"recall@{k}@{m}"] = float(recall_at_k(rel, k, n_rel).mean())
            out[f"hit@{k}@{m}"] = float(hit_at_k(rel, k).mean())
    return out
