"""Exact flat search over a prefix: FAISS ``IndexFlat*`` for wide prefixes, torch product tiles into FAISS's
heaps for narrow ones, and the contiguous (re-normalised) prefix copies every search starts from."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from mrl.retrieval.ties import order_ties

try:  # FAISS is the `retrieval` extra; importing this module without it gives a clear error on use.
    import faiss
except ImportError:  # pragma: no cover - exercised only without the extra installed
    faiss = None

__all__ = ["SCAN_MAX_SIZE", "FlatIndex", "flat_search_blocks", "heap_scan", "prefix", "require_faiss", "torch_threads"]

SCAN_MAX_SIZE = 64  # exact flat search this narrow runs as torch GEMM tiles + FAISS heaps (see FlatIndex)


def require_faiss() -> None:
    if faiss is None:  # pragma: no cover
        raise ImportError("mrl.retrieval needs FAISS: pip install 'mrl[retrieval]' (faiss-cpu)")


@contextmanager
def flat_search_blocks(n_db: int, db_block: int = 32768, block_floats: int = 1 << 22):
    """Temporarily change FAISS's BLAS tiling for flat search (process-global FAISS settings).

    FAISS's flat search multiplies query blocks by database blocks (defaults 4096 x 1024) and runs
    an OpenMP region per tile. For short prefixes (e.g. 16 dims) each tile is cheap, so the per-tile
    synchronisation matters, most on a busy machine: for 1000 queries x 200k vectors at d=16, k=200
    we measured, quiet / busy, 0.14 / 0.41-1.7 s with the defaults, 0.13 / 0.2-0.4 s with tiles of
    128 x 32768 (16 MiB, fits the L3 cache) and 0.33 s quiet with one 800 MB tile. The 2048-d exact
    search was unaffected. Settings are restored on exit; not thread-safe.
    """
    cv = faiss.cvar
    old = (cv.distance_compute_blas_query_bs, cv.distance_compute_blas_database_bs)
    dbs = int(max(1, min(n_db, db_block)))
    cv.distance_compute_blas_database_bs = dbs
    cv.distance_compute_blas_query_bs = int(max(64, block_floats // dbs))
    try:
        yield
    finally:
        cv.distance_compute_blas_query_bs, cv.distance_compute_blas_database_bs = old


def prefix(x: np.ndarray, m: int, normalize: bool) -> np.ndarray:
    """Contiguous float32 copy of ``x[:, :m]``, L2 re-normalised row-wise if ``normalize``.

    Normalisation uses ``faiss.normalize_L2`` so that results match a FAISS index built the usual way;
    all-zero rows stay zero.
    """
    out = np.array(x[:, :m], dtype=np.float32, order="C", copy=True)
    if normalize:
        require_faiss()
        faiss.normalize_L2(out)
    return out


@contextmanager
def torch_threads(n: int):
    """Temporarily run torch ops on ``n`` threads (process-global; not thread-safe)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def heap_scan(
    xt: torch.Tensor,
    q: np.ndarray,
    k: int,
    l2: bool,
    x_sq: torch.Tensor | None = None,
    q_block: int = 128,
    db_block: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of ``q [Q, m]`` against the columns of ``xt [m, N]`` (``x_sq``: the columns' squared norms,
    for ``l2``): torch product tiles pushed into FAISS's max-heaps (inner products negated on the way in and
    out), which keep the lowest ids among equal scores. ``(scores, ids)`` best first, FAISS conventions."""
    nq, n = q.shape[0], xt.shape[1]
    scores = np.empty((nq, k), dtype=np.float32)
    ids = np.empty((nq, k), dtype=np.int64)
    heaps = faiss.float_maxheap_array_t()
    heaps.nh, heaps.k = nq, k
    heaps.val, heaps.ids = faiss.swig_ptr(scores), faiss.swig_ptr(ids)
    heaps.heapify()
    qt = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
    tile = torch.empty(min(q_block, nq) * min(db_block, n))
    with torch_threads(1):
        for i in range(0, nq, q_block):
            qb = qt[i : i + q_block]
            b = qb.shape[0]
            q_sq = (qb * qb).sum(1, keepdim=True) if l2 else None
            for j in range(0, n, db_block):
                xb = xt[:, j : j + db_block]
                s = tile[: b * xb.shape[1]].view(b, xb.shape[1])
                if l2:  # |q|^2 + |x|^2 - 2 q.x, clipped at 0 like FAISS
                    torch.addmm(x_sq[j : j + db_block], qb, xb, alpha=-2.0, out=s)
                    s.add_(q_sq).clamp_(min=0.0)
                else:
                    torch.mm(qb, xb, out=s).neg_()
                heaps.addn(xb.shape[1], faiss.swig_ptr(s.numpy()), j, i, b)
    heaps.reorder()
    if not l2:
        np.negative(scores, out=scores)
    return scores, ids


class FlatIndex:
    """Exact top-k search over a fixed ``[N, m]`` float32 array; ``l2`` selects squared L2 (else inner product).

    Arrays wider than `SCAN_MAX_SIZE` go to FAISS ``IndexFlatIP`` / ``IndexFlatL2`` (with the tiling of
    `flat_search_blocks`). Narrower ones are scanned in tiles: a torch (MKL) matrix product per tile of
    128 queries x 16384 rows, its scores pushed into FAISS's per-query heaps (``HeapArray.addn``), so
    the results are FAISS's own top-k selection over the same scores up to float rounding. The FAISS
    wheel's bundled BLAS is slow on such thin products: at 16 dimensions, 1000 queries x 200k rows, k=200,
    the scan took 0.20 s against 0.35 s for ``IndexFlatIP`` (0.69 s against 0.83 s at 64 dimensions;
    FAISS was faster from 256 on). The product runs single-threaded and the heaps on FAISS's threads:
    two OpenMP pools taking turns on the same cores spin against each other (0.9-3.5 s measured).
    """

    def __init__(self, x: np.ndarray, l2: bool) -> None:
        require_faiss()
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"FlatIndex needs a non-empty [N, m] array, got shape {x.shape}")
        self.ntotal, self.d = x.shape
        self.l2 = bool(l2)
        self.faiss_index = None
        if self.d > SCAN_MAX_SIZE:
            self.faiss_index = faiss.IndexFlatL2(self.d) if l2 else faiss.IndexFlatIP(self.d)
            self.faiss_index.add(x)
        else:
            self._xt = torch.from_numpy(np.ascontiguousarray(x.T))  # [m, N]: one column per row of x
            self._x_sq = torch.from_numpy(np.einsum("ij,ij->i", x, x)) if l2 else None

    def search(self, q: np.ndarray, k: int, q_block: int = 128, db_block: int = 16384) -> tuple[np.ndarray, np.ndarray]:
        """``(scores[Q, k], ids[Q, k])`` best first, FAISS conventions (``-1`` ids when ``k > N``); among equal
        scores the lowest ids, listed by id (:mod:`mrl.retrieval.ties`)."""
        q = np.ascontiguousarray(q, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.d:
            raise ValueError(f"queries must be [Q, {self.d}], got shape {q.shape}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if self.faiss_index is None:
            scores, ids = heap_scan(self._xt, q, k, self.l2, self._x_sq, q_block, db_block)
            return order_ties(scores, ids, descending=not self.l2)
        # FAISS keeps the lowest ids among equal scores at the cut only while nothing better evicts them (its
        # inner-product heaps evict the lowest first): one more result shows the rows tied across the cut,
        # and those few are scanned again here, where the lowest ids are kept.
        kk = min(k + 1, self.ntotal)
        with flat_search_blocks(self.ntotal):
            scores, ids = self.faiss_index.search(q, kk)
        if kk > k:
            tied = np.flatnonzero(scores[:, k] == scores[:, k - 1])
            scores, ids = np.ascontiguousarray(scores[:, :k]), np.ascontiguousarray(ids[:, :k])
            if tied.size:
                n, d = self.ntotal, self.d
                x = faiss.rev_swig_ptr(self.faiss_index.get_xb(), n * d).reshape(n, d)  # FAISS's copy, not copied
                x_sq = torch.from_numpy(np.einsum("ij,ij->i", x, x)) if self.l2 else None
                scores[tied], ids[tied] = heap_scan(torch.from_numpy(x).T, q[tied], k, self.l2, x_sq)
        return order_ties(scores, ids, descending=not self.l2)
