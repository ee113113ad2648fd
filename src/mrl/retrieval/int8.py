"""An int8 first stage: each prefix stored as one signed byte per coordinate, 4x less than float32, searched exactly.

The codes are symmetric per-dimension quantisation fitted on the database (``scale[j] = max_i |x[i, j]| / 127``,
``code = round(x / scale)``, `quantize_int8`, the project's one int8 codec: the storage evaluation and the
quantised retrieval metrics use it too); queries stay in float. A query ``q`` scores an item by the inner product
with its decoded vector, ``sum_j q[j] scale[j] code[j]``: the scales are folded into the query once, and the
database is read as bytes. Squared L2 distances are
``|q|^2 + |x^|^2 - 2 q.x^`` with the decoded norms ``|x^|^2`` kept per item (4 more bytes).

The scan is `mrl.retrieval.flat.FlatIndex`'s: tiles of 16384 items are widened to float32 once per search and
multiplied with every block of queries (torch, one thread), their scores pushed into FAISS's per-query heaps, so
ties keep the lowest ids (:mod:`mrl.retrieval.ties`).
"""

from __future__ import annotations

import numpy as np
import torch

from mrl.retrieval.flat import faiss, require_faiss, torch_threads
from mrl.retrieval.ties import order_ties

__all__ = ["Int8Index", "dequantize_int8", "int8_scale", "quantize_int8"]


def int8_scale(x: np.ndarray) -> np.ndarray:
    """Per-dimension scales ``max_i |x[i, j]| / 127`` (1 where a dimension is all zeros), float32."""
    scale = np.abs(np.asarray(x, dtype=np.float32)).max(axis=0) / 127.0
    return np.where(scale > 0, scale, 1.0).astype(np.float32)


def quantize_int8(x: np.ndarray, scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-dimension int8 quantisation: ``(codes int8 [N, m], scale float32 [m])``, ``round(x / scale)``
    clipped to [-127, 127], the scales fitted on ``x`` (`int8_scale`) unless given (pass the database's scales
    when quantising queries)."""
    x = np.asarray(x, dtype=np.float32)
    scale = int8_scale(x) if scale is None else np.asarray(scale, dtype=np.float32)
    return np.clip(np.rint(x / scale), -127, 127).astype(np.int8), scale


def dequantize_int8(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The inverse of `quantize_int8` (up to rounding): ``codes * scale`` in float32."""
    return np.asarray(codes, dtype=np.float32) * np.asarray(scale, dtype=np.float32)


class Int8Index:
    """Exact top-k over the int8 codes of a fixed ``[N, m]`` float32 array (``l2``: squared L2, else inner
    product), scores those of the decoded vectors."""

    def __init__(self, x: np.ndarray, l2: bool) -> None:
        require_faiss()
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"Int8Index needs a non-empty [N, m] array, got shape {x.shape}")
        self.ntotal, self.d = x.shape
        self.l2 = bool(l2)
        codes, self.scale = quantize_int8(x)
        self.codes = torch.from_numpy(codes)
        self._sq = None
        if self.l2:
            decoded = codes.astype(np.float32) * self.scale
            self._sq = torch.from_numpy(np.einsum("ij,ij->i", decoded, decoded))

    @property
    def bytes_per_item(self) -> int:
        """Stored bytes per item: one per coordinate, and the decoded norm (float32) for L2."""
        return self.d + (4 if self.l2 else 0)

    def search(self, q: np.ndarray, k: int, q_block: int = 256, db_block: int = 16384) -> tuple[np.ndarray, np.ndarray]:
        """``(scores[Q, k], ids[Q, k])`` best first (``-1`` ids when ``k > N``), the lowest ids among equals."""
        q = np.ascontiguousarray(q, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.d:
            raise ValueError(f"queries must be [Q, {self.d}], got shape {q.shape}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        nq, n = q.shape[0], self.ntotal
        scores = np.empty((nq, k), dtype=np.float32)
        ids = np.empty((nq, k), dtype=np.int64)
        heaps = faiss.float_maxheap_array_t()  # keeps the lowest ids among equals; inner products go in negated
        heaps.nh, heaps.k = nq, k
        heaps.val, heaps.ids = faiss.swig_ptr(scores), faiss.swig_ptr(ids)
        heaps.heapify()
        qt = torch.from_numpy(q * self.scale)  # the scales folded into the queries
        q_sq = torch.from_numpy(np.einsum("ij,ij->i", q, q))[:, None] if self.l2 else None
        tile = torch.empty(min(q_block, nq) * min(db_block, n))
        with torch_threads(1):
            for j in range(0, n, db_block):
                xb = self.codes[j : j + db_block].to(torch.float32).T  # widened once per search
                nj = xb.shape[1]
                for i in range(0, nq, q_block):
                    qb = qt[i : i + q_block]
                    s = tile[: qb.shape[0] * nj].view(qb.shape[0], nj)
                    if self.l2:  # |q|^2 + |x^|^2 - 2 q.x^, clipped at 0 like FAISS
                        torch.addmm(self._sq[j : j + db_block], qb, xb, alpha=-2.0, out=s)
                        s.add_(q_sq[i : i + q_block]).clamp_(min=0.0)
                    else:
                        torch.mm(qb, xb, out=s).neg_()
                    heaps.addn(nj, faiss.swig_ptr(s.numpy()), j, i, qb.shape[0])
        heaps.reorder()
        if not self.l2:
            np.negative(scores, out=scores)
        return order_ties(scores, ids, descending=not self.l2)
