"""AdANNS-IVF with two prefixes: the inverted lists are assigned on one prefix (``coarse_size`` coordinates) and
scanned on another (the first stage's size).

With Matryoshka embeddings the two jobs of an IVF index need not share a width: choosing which lists to probe
compares a query with every centroid (``nlist`` of them), scanning a list compares it with every item there. A
wider coarse prefix partitions the items better, so fewer probes reach the same recall; a narrower scan prefix
makes each scanned item cheaper. `PrefixIVF` trains its centroids on the coarse prefix (k-means as FAISS's
``IndexIVFFlat`` trains them), files each item's scan prefix under its coarse list (``add_core`` with the
assignment precomputed) and searches with ``search_preassigned``: the coarse prefix picks the ``nprobe`` lists,
the scan prefix ranks what they hold, exactly, inside FAISS.

FAISS's own ``search`` runs each thread's slice of the queries through ``search_preassigned`` serially; called
directly on the whole batch, ``search_preassigned`` parallelises far worse (100,000 x 32-d lists, 1,050 queries,
nprobe 32, 2 cores: 0.024 ms/query against 0.015 sliced). So `PrefixIVF.search` slices the batch the same way, one
slice per OpenMP thread, each searched by a worker thread whose own FAISS calls run on one thread.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mrl.retrieval.flat import faiss, require_faiss

__all__ = ["PrefixIVF"]

_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (the process it belongs to, the pool)
MIN_SLICE = 16  # queries per worker at least: fewer are searched in the calling thread


def _one_faiss_thread() -> None:
    faiss.omp_set_num_threads(1)  # this worker's own OpenMP setting: its slice runs serially, as in FAISS's search


def _pool() -> ThreadPoolExecutor:
    """The worker threads, made once per process (a forked child has none of its parent's threads)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        pool = ThreadPoolExecutor(faiss.omp_get_max_threads(), "prefix-ivf", initializer=_one_faiss_thread)
        _POOL = (os.getpid(), pool)
    return _POOL[1]


class PrefixIVF:
    """Inverted lists assigned on ``coarse`` (``[N, coarse_size]``) holding ``scan`` (``[N, d]``) rows; inner product
    (cosine, ip) or squared L2 (``l2``). ``nprobe`` is set per search by the caller, as on a FAISS IVF index."""

    def __init__(self, scan: np.ndarray, coarse: np.ndarray, nlist: int, l2: bool, seed: int = 0) -> None:
        require_faiss()
        n, self.d = scan.shape
        self.coarse_size, self.nlist, self.ntotal, self.nprobe = coarse.shape[1], int(nlist), n, 1
        metric = faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT
        self.quantizer = faiss.IndexFlatL2(self.coarse_size) if l2 else faiss.IndexFlatIP(self.coarse_size)
        trainer = faiss.IndexIVFFlat(self.quantizer, self.coarse_size, self.nlist, metric)
        n_train = min(n, 256 * self.nlist)
        rows = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False)) if n_train < n else None
        trainer.train(coarse if rows is None else coarse[rows])  # the centroids land in self.quantizer
        self.lists = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.d), self.d, self.nlist, metric)
        self.lists.is_trained = True  # its own quantizer is never used: every assignment is given
        _, assign = self.quantizer.search(np.ascontiguousarray(coarse, dtype=np.float32), 1)
        scan = np.ascontiguousarray(scan, dtype=np.float32)
        self.lists.add_core(n, faiss.swig_ptr(scan), None, faiss.swig_ptr(np.ascontiguousarray(assign[:, 0])))

    def search(self, q_scan: np.ndarray, q_coarse: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of the best ``k`` items of each query's ``nprobe`` nearest lists (by the coarse prefix),
        ranked by the scan prefix; ``-1`` ids where the lists hold fewer."""
        self.lists.nprobe = min(self.nprobe, self.nlist)
        q_scan = np.ascontiguousarray(q_scan, dtype=np.float32)
        q_coarse = np.ascontiguousarray(q_coarse, dtype=np.float32)
        nq, workers = len(q_scan), faiss.omp_get_max_threads()
        if workers < 2 or nq < 2 * MIN_SLICE:
            return self._search_slice(q_scan, q_coarse, k)
        bounds = np.linspace(0, nq, min(workers, nq // MIN_SLICE) + 1).astype(int)
        slices = [
            _pool().submit(self._search_slice, q_scan[a:b], q_coarse[a:b], k) for a, b in zip(bounds[:-1], bounds[1:])
        ]
        parts = [s.result() for s in slices]
        return np.concatenate([d for d, _ in parts]), np.concatenate([i for _, i in parts])

    def _search_slice(self, q_scan: np.ndarray, q_coarse: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        coarse_scores, lists = self.quantizer.search(q_coarse, self.lists.nprobe)
        return self.lists.search_preassigned(q_scan, k, lists, coarse_scores)
