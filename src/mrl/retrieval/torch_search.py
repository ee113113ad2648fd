"""Exact top-k search as torch matrix products on any device, for evaluation on a GPU.

FAISS's CPU flat search serves evaluation on the CPU. On ImageNet (1.28M database rows, 50,000 queries,
nine sizes, two metrics) that is hours of CPU time while the GPU that embedded the images sits idle, so
with ``device=cuda`` evaluation searches here instead: the database goes to the device a block of rows at
a time (once per size), every query block is scored against it with one matrix product, and a running
top-k per query is merged with ``torch.topk``. Scores follow FAISS's conventions (inner products, or
squared L2 distances clipped at 0), so the results are the same up to float rounding; among equal scores both
keep the lowest ids and list them by id (:mod:`mrl.retrieval.ties`).
Products run in full fp32 (TF32 is switched off for the search), as exact search needs.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from mrl.retrieval.ties import order_ties


@contextmanager
def _full_fp32():
    """Full-precision fp32 matrix products for the duration (TF32 would round scores to 10 mantissa bits)."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def torch_search(
    db: np.ndarray,
    queries: np.ndarray,
    k: int,
    l2: bool = False,
    device: str | torch.device = "cpu",
    q_block: int = 4096,
    db_block: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores[Q, k] float32, ids[Q, k] int64)``, best first: inner products (largest first) or, with
    ``l2``, squared L2 distances (smallest first) between ``queries[Q, m]`` and ``db[N, m]``; the lowest ids
    among equal scores.

    Memory on the device: the queries, one database block and one ``q_block x db_block`` score tile.
    """
    db = np.ascontiguousarray(db, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if db.ndim != 2 or queries.ndim != 2 or db.shape[1] != queries.shape[1] or len(db) == 0:
        raise ValueError(f"db and queries must be [N, m] and [Q, m] with N > 0, got {db.shape} and {queries.shape}")
    if isinstance(k, bool) or not 1 <= int(k) <= len(db):
        raise ValueError(f"k={k!r}: must be in 1..{len(db)} (the database size)")
    device = torch.device(device)
    k, nq = int(k), len(queries)
    q = torch.from_numpy(queries).to(device)
    best_s = torch.full((nq, k), float("inf") if l2 else float("-inf"), device=device)
    best_i = torch.full((nq, k), -1, dtype=torch.int64, device=device)
    with _full_fp32(), torch.no_grad():
        for start in range(0, len(db), db_block):
            x = torch.from_numpy(db[start : start + db_block]).to(device, non_blocking=True)
            x_sq = (x * x).sum(1) if l2 else None
            ids = torch.arange(start, start + len(x), device=device)
            for qs in range(0, nq, q_block):
                qb = q[qs : qs + q_block]
                scores = qb @ x.T
                if l2:  # |q|^2 + |x|^2 - 2 q.x, clipped at 0 like FAISS
                    scores = (scores.mul_(-2.0).add_(x_sq).add_((qb * qb).sum(1, keepdim=True))).clamp_(min=0.0)
                merged_s = torch.cat([best_s[qs : qs + q_block], scores], dim=1)
                merged_i = torch.cat([best_i[qs : qs + q_block], ids.expand(len(qb), -1)], dim=1)
                top_s, top_i = _top_k_lowest_ids(merged_s, merged_i, k, largest=not l2)
                best_s[qs : qs + q_block] = top_s
                best_i[qs : qs + q_block] = top_i
    return order_ties(best_s.cpu().numpy(), best_i.cpu().numpy(), descending=not l2)


def _top_k_lowest_ids(scores: torch.Tensor, ids: torch.Tensor, k: int, largest: bool):
    """The best ``k`` of each row, the lowest ids among equal scores at the cut (``torch.topk`` picks any).

    Rows whose k-th and (k+1)-th best scores differ have one answer, and topk gives it. The few rows where
    they are equal (a tie across the cut) are sorted by id, then stably by score, and cut at k; the order
    inside the k is settled once at the end (`order_ties`)."""
    kk = min(k + 1, scores.shape[1])
    top_s, pos = torch.topk(scores, kk, dim=1, largest=largest, sorted=True)
    top_i = torch.gather(ids, 1, pos)
    if kk == k:
        return top_s, top_i
    tied = torch.nonzero(top_s[:, k] == top_s[:, k - 1]).flatten()
    top_s, top_i = top_s[:, :k].clone(), top_i[:, :k].clone()
    if len(tied):
        s, i = scores[tied], ids[tied]
        by_id = torch.argsort(torch.where(i < 0, torch.iinfo(torch.int64).max, i), dim=1, stable=True)
        s, i = torch.gather(s, 1, by_id), torch.gather(i, 1, by_id)
        best = torch.argsort(s, dim=1, descending=largest, stable=True)[:, :k]
        top_s[tied], top_i[tied] = torch.gather(s, 1, best), torch.gather(i, 1, best)
    return top_s, top_i
