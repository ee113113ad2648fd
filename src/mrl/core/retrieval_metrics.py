"""Metrics at every Matryoshka size, in torch: retrieval of documents for queries, and STS-style Spearman
correlation.

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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["retrieval_metrics", "sts_spearman"]


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
    from scipy.stats import spearmanr

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
