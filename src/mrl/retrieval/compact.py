"""A middle funnel stage kept in fewer bytes than float32: ``fp16`` (2 bytes per coordinate) or ``int8`` (1 byte,
per-dimension scales, `mrl.retrieval.int8.quantize_int8`).

A middle stage (between the first stage and the last) only narrows a shortlist for the last stage, which scores
the survivors at full precision: its scores need to rank, not to be exact, so it can read half or a quarter of the
bytes of a float32 prefix. `CompactStage.scores` gathers the listed rows (``np.take``), widens them to float32
and multiplies them with their query in one batched product (torch ``bmm``); a ``-1`` id (no candidate) gets the
worst score. Without a fused gather-and-product for these formats (FAISS has one for float32 only, the rerank's
``fvec_inner_products_by_idx``), a candidate costs more time than a float32 one: 83-99 us against 32 us per query
for 200 candidates at 256-d (100,000 items, one core); what they save is memory. The tuner
(`mrl.retrieval.tune_stages`) and `AdaptiveRetriever` both score through it, so a recall the tuner measures is the
recall the built funnel serves.
"""

from __future__ import annotations

import numpy as np
import torch

from mrl.retrieval.flat import torch_threads
from mrl.retrieval.int8 import quantize_int8

__all__ = ["COMPACT_FORMATS", "MIDDLE_FORMATS", "CompactStage", "compact_bytes"]

COMPACT_FORMATS = ("fp16", "int8")
MIDDLE_FORMATS = ("float", *COMPACT_FORMATS)  # number formats of a funnel's middle stages
QUERY_BLOCK = 64  # queries whose gathered rows are widened at once (64 x 200 candidates x 256-d: 13 MB)


def compact_bytes(m: int, fmt: str, l2: bool) -> int:
    """Bytes per item of an ``m``-wide compact stage: the codes, and the decoded squared norm (float32) for L2."""
    return int(m) * (2 if fmt == "fp16" else 1) + (4 if l2 else 0)


class CompactStage:
    """The ``[N, m]`` float32 rows ``x`` (already re-normalised where the metric wants it) kept as ``fmt`` codes,
    scored against queries by inner product (``l2=False``) or squared L2 distance of the decoded rows."""

    def __init__(self, x: np.ndarray, fmt: str, l2: bool) -> None:
        if fmt not in COMPACT_FORMATS:
            raise ValueError(f"format={fmt!r}: a compact middle stage is one of {', '.join(COMPACT_FORMATS)}")
        x = np.asarray(x, dtype=np.float32)
        self.format, self.l2 = fmt, bool(l2)
        self.n, self.m = x.shape
        if fmt == "fp16":
            codes, self.scale = x.astype(np.float16), None
            decoded = codes.astype(np.float32)
        else:
            codes, self.scale = quantize_int8(x)
            decoded = codes.astype(np.float32) * self.scale
        self.codes = np.ascontiguousarray(codes)
        self.sq_norms = torch.from_numpy(np.einsum("ij,ij->i", decoded, decoded)) if self.l2 else None

    @property
    def bytes_per_item(self) -> int:
        """Bytes held per item (`compact_bytes`)."""
        return compact_bytes(self.m, self.format, self.l2)

    def scores(self, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """``[Q, c]`` scores of the rows ``ids`` (``-1``: none, the worst score) against each query of ``q``
        (``[Q, m]`` float): inner products of the decoded rows, or squared L2 distances."""
        ids = np.asarray(ids, dtype=np.int64)
        nq, c = ids.shape
        q = np.ascontiguousarray(q, dtype=np.float32)
        q_sq = torch.from_numpy(np.einsum("ij,ij->i", q, q))[:, None] if self.l2 else None
        qt = torch.from_numpy(q)
        if self.scale is not None:
            qt = qt * torch.from_numpy(self.scale)  # the scales folded into the queries
        safe = np.where(ids < 0, 0, ids)
        out = torch.empty((nq, c), dtype=torch.float32)
        with torch_threads(1):  # measured: one thread 3x faster than two on these small products
            for i in range(0, nq, QUERY_BLOCK):
                rows = safe[i : i + QUERY_BLOCK]
                block = torch.from_numpy(np.take(self.codes, rows, axis=0)).float()  # numpy's gather: 2x torch's
                s = torch.bmm(block, qt[i : i + QUERY_BLOCK, :, None])[:, :, 0]
                if self.l2:  # |q|^2 + |x^|^2 - 2 q.x^
                    s = (self.sq_norms[torch.from_numpy(rows)] - 2 * s + q_sq[i : i + QUERY_BLOCK]).clamp_(min=0.0)
                out[i : i + QUERY_BLOCK] = s
        scores = out.numpy()
        scores[ids < 0] = np.inf if self.l2 else -np.inf
        return scores
