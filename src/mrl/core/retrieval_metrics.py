"""Retrieval metrics, defined once: of documents for queries and STS-style Spearman correlation at every Matryoshka
size (in torch), and the per-query kNN metrics of label retrieval (numpy) that
:func:`mrl.evaluation.knn_metrics.knn_metrics` reads off its neighbour lists.

For each size m both sides are truncated to their first m coordinates and L2 re-normalised, so the score
is the cosine similarity of the prefixes (what a user of the truncated embedding computes).

Retrieval (:func:`retrieval_metrics`), per query then averaged over the queries that have at least one
relevant document, with binary relevance and ranks counted from 1:

* ``mrr@10@{m}``: 1 / rank of the first relevant document if it is in the top 10, else 0;
* ``ndcg@10@{m}``: ``sum_{relevant d in top 10} 1/log2(rank_d + 1)`` divided by the same sum for an
  ideal ranking, ``sum_{i=1}^{min(|rel|, 10)} 1/log2(i + 1)``;
* ``recall@{k}@{m}``: the fraction of the query's relevant documents found in its top k (with one relevant
  document per query: whether it is in the top k).

STS (:func:`sts_spearman`): ``spearman@{m}``, the Spearman rank correlation between the cosine similarity
of each pair and its gold score (``scipy.stats.spearmanr``), in [-1, 1].

kNN label retrieval (per query, from a ``[Q, k]`` relevance matrix, `relevance_matrix`: database item ``j`` is
relevant to query ``i`` iff ``db_labels[j] == query_labels[i]``; all values are fractions in [0, 1]). They follow
RAIVNLab/MRL ``retrieval/compute_metrics`` (function ``compute_mAP_recall_at_k``):

* 1-NN accuracy: the label of the nearest neighbour equals the query label (the first column).
* `average_precision_at_k`: the reference's AP@k, ``AP@k = (1/k) * sum_{j<=k, rel_j} P@j`` where ``P@j`` is the
  fraction of relevant items among the first ``j``. Note the normaliser is ``k`` itself, not the number of
  relevant items retrieved (``hits``) nor ``min(k, n_relevant)``: a query whose top-k holds a single relevant item
  at rank 1 scores ``1/k``, and AP@k equals 1 only when all k retrieved items are relevant. With ``n_relevant`` it
  gives the textbook ``min(k, n_relevant)`` normalisation instead, for comparison.
* `precision_at_k`: ``hits / k``.
* `recall_at_k`: ``hits / n_relevant``, where ``n_relevant`` is the number of database items sharing the query's
  label (`count_relevant`; the reference divides by the constant 1300, the number of images per ImageNet-1K
  training class; we use the actual class count so the metric is correct for any database; queries whose class is
  absent from the database score 0). This is *not* "at least one relevant in the top k": that quantity, the
  reference's ``top{k}``, is `hit_at_k`.

Degenerate prefixes: a prefix that is all zeros (`zero_prefix_rows`; `zero_prefix_counts` per size) carries no
information (a ReLU network's short prefix can be all zeros).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

__all__ = [
    "average_precision_at_k",
    "count_relevant",
    "hit_at_k",
    "hits_at_k",
    "precision_at_k",
    "recall_at_k",
    "relevance_matrix",
    "retrieval_metrics",
    "sts_spearman",
    "zero_prefix_counts",
    "zero_prefix_rows",
]


def _tensor(x: Any) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device="cpu", dtype=torch.float32)


def _prefix(x: torch.Tensor, m: int) -> torch.Tensor:
    return F.normalize(x[:, :m], p=2, dim=-1)


def _check_sizes(sizes: Iterable[int], width: int) -> list[int]:
    sizes = [int(m) for m in sizes]
    if not sizes or any(m <= 0 or m > width for m in sizes):
        raise ValueError(f"sizes={sizes}: need sizes in 1..{width} (the embedding width)")
    return sizes


def retrieval_metrics(
    queries: Any,
    corpus: Any,
    relevant: Sequence[Iterable[int]] | np.ndarray | torch.Tensor,
    sizes: Iterable[int],
    ks: Sequence[int] = (1, 10, 100),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """``mrr@10@{m}``, ``ndcg@10@{m}`` and ``recall@{k}@{m}`` of cosine search of ``queries[Q, D]`` over
    ``corpus[N, D]`` at each size m. ``relevant`` is one corpus index per query (int array ``[Q]``) or one
    set of indices per query."""
    q_all, c_all = _tensor(queries), _tensor(corpus)
    if q_all.ndim != 2 or c_all.ndim != 2 or q_all.shape[1] != c_all.shape[1]:
        raise ValueError(f"queries {list(q_all.shape)} and corpus {list(c_all.shape)} must be [Q, D] and [N, D]")
    n_queries, n_docs = q_all.shape[0], c_all.shape[0]
    single = len(relevant) and isinstance(relevant[0], (int, np.integer))
    if isinstance(relevant, (np.ndarray, torch.Tensor)) or single:
        single = torch.as_tensor(np.asarray(relevant), dtype=torch.long).view(-1)
        rel_sets = None
        if single.numel() != n_queries:
            raise ValueError(f"relevant has {single.numel()} entries for {n_queries} queries")
        if n_queries and (single.min() < 0 or single.max() >= n_docs):
            raise ValueError(f"relevant indices must lie in 0..{n_docs - 1}")
    else:
        rel_sets = [sorted({int(j) for j in r}) for r in relevant]
        if len(rel_sets) != n_queries:
            raise ValueError(f"relevant has {len(rel_sets)} entries for {n_queries} queries")
        if any(j < 0 or j >= n_docs for r in rel_sets for j in r):
            raise ValueError(f"relevant indices must lie in 0..{n_docs - 1}")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks={ks}: need positive cut-offs")
    n_rel = torch.ones(n_queries) if rel_sets is None else torch.tensor([len(r) for r in rel_sets], dtype=torch.float32)
    keep = n_rel > 0
    if not bool(keep.any()):
        raise ValueError("relevant: no query has a relevant document")
    depth = min(n_docs, max(10, ks[-1]))
    discounts = 1.0 / torch.log2(torch.arange(2, 12, dtype=torch.float32))  # ranks 1..10
    ideal = torch.cumsum(discounts, 0)[(n_rel.clamp(1, 10) - 1).long()]
    out: dict[str, float] = {}
    for m in _check_sizes(sizes, q_all.shape[1]):
        docs = _prefix(c_all, m)
        hits_rows = []
        for start in range(0, n_queries, chunk_size):
            q = _prefix(q_all[start : start + chunk_size], m)
            top = torch.topk(q @ docs.T, depth, dim=1).indices  # [chunk, depth]
            if rel_sets is None:
                hits_rows.append(top == single[start : start + chunk_size, None])
            else:
                mask = torch.zeros(q.shape[0], n_docs, dtype=torch.bool)
                for i, r in enumerate(rel_sets[start : start + chunk_size]):
                    mask[i, r] = True
                hits_rows.append(torch.gather(mask, 1, top))
        hits = torch.cat(hits_rows).float()[keep]  # [Q', depth]
        top10 = hits[:, :10]
        first = torch.where(top10.any(1), top10.argmax(1).float() + 1, torch.full((hits.shape[0],), math.inf))
        out[f"mrr@10@{m}"] = float((1.0 / first).mean())
        dcg = (top10 * discounts[: top10.shape[1]]).sum(1)
        out[f"ndcg@10@{m}"] = float((dcg / ideal[keep]).mean())
        for k in ks:
            out[f"recall@{k}@{m}"] = float((hits[:, :k].sum(1) / n_rel[keep]).mean())
    return out


def sts_spearman(a: Any, b: Any, scores: Any, sizes: Iterable[int]) -> dict[str, float]:
    """``spearman@{m}``: rank correlation of ``cos(a[:, :m], b[:, :m])`` with the gold ``scores[N]``."""
    a, b = _tensor(a), _tensor(b)
    gold = np.asarray(_tensor(scores)).reshape(-1)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != gold.shape[0]:
        raise ValueError(
            f"a {list(a.shape)}, b {list(b.shape)} and scores [{gold.shape[0]}] must be [N, D], [N, D], [N]"
        )
    if a.shape[0] < 2:
        raise ValueError("sts_spearman: need at least 2 pairs")
    out = {}
    for m in _check_sizes(sizes, a.shape[1]):
        cosine = (_prefix(a, m) * _prefix(b, m)).sum(1).numpy()
        out[f"spearman@{m}"] = float(spearmanr(cosine, gold).statistic)
    return out


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
