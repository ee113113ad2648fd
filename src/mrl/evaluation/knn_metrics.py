"""kNN retrieval metrics at every Matryoshka prefix size, following the MRL reference protocol: the search, then
the metrics of :mod:`mrl.core.retrieval_metrics` (where they are defined) read off its neighbour lists.

The database and query embeddings are truncated to their first ``m`` coordinates for each size
``m`` (re-normalised to unit length for ``metric="cosine"``), the neighbours are found once per size
with an exact FAISS flat index at the largest ``k`` needed, and every metric is read off that list.
Relevance is label equality: database item ``j`` is relevant to query ``i`` iff
``db_labels[j] == query_labels[i]``.

The keys, per query then averaged over the queries (definitions and their relation to the reference's in
:mod:`mrl.core.retrieval_metrics`):

* ``knn_top1@{m}``: the label of the nearest neighbour equals the query label (1-NN accuracy);
* ``map@{map_k}@{m}``: the reference's AP@k, normalised by ``k`` (`average_precision_at_k`);
* ``precision@{k}@{m}``: ``hits / k``; ``recall@{k}@{m}``: ``hits / n_relevant``, the database's actual count of
  the query's class; ``hit@{k}@{m}``: at least one relevant item in the top k (the reference's ``top{k}``).

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

from mrl.core.retrieval_metrics import (
    average_precision_at_k,
    count_relevant,
    hit_at_k,
    precision_at_k,
    recall_at_k,
    relevance_matrix,
    zero_prefix_rows,
)
from mrl.retrieval.nearest import knn_search

__all__ = ["knn_metrics"]


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
