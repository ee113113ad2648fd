"""Adaptive (funnel) retrieval over Matryoshka embeddings: shortlist with a short prefix, rerank with longer ones.

A funnel is a list of ``(size, candidates)`` stages, sizes increasing, candidates non-increasing::

    retriever = AdaptiveRetriever(db, funnel=[(16, 200), (2048, 10)], metric="cosine")
    scores, ids = retriever.search(queries, k=10)

Stage 1 searches the whole database with the first ``size`` coordinates of every vector and keeps
``candidates`` ids. Every later stage scores only the ids the previous stage kept, with its own
(longer) prefix, and keeps its own ``candidates``. With ``metric="cosine"`` each prefix is
re-normalised to unit length after truncation (queries and database alike), so the score at size m
is the cosine similarity of the m-dimensional prefixes.

Implementation notes (measured on 200k x 2048 float32, 1000 queries, 2 CPU cores, see
``benchmarks/retrieval.py``):

* Stage 1 uses `FlatIndex` for ``index="flat"`` (exact), ``IndexHNSWFlat`` for ``"hnsw"``, ``IndexIVFFlat``
  for ``"ivf"``, over a contiguous copy of the (re-normalised) prefix. At 16 dimensions FAISS's
  ``IndexFlatIP`` took 0.35 s for the 1000 queries (its bundled BLAS is slow on thin products), a
  numpy matmul + ``argpartition`` 3.8 s, torch matmul + ``topk`` 0.5 s; `FlatIndex` scans torch product
  tiles into FAISS's heaps in 0.20 s.
* Rerank stages never materialise the gathered candidate matrix: they call FAISS's
  ``knn_inner_products_by_idx`` / ``knn_L2sqr_by_idx``, which compute the dot products of each query
  with the listed database rows in place (OpenMP over queries) and keep the top ``candidates`` in a
  heap. Reranking 200 candidates at 2048 dimensions took 0.10 s for 1000 queries (memory bound:
  1.6 GB of rows read), against 0.5-1.0 s for torch fancy-index gather + ``bmm``.
* Rerank stages of size m >= 128 first score the candidates on their first m/8 coordinates and drop
  those that provably cannot make the stage's top list (Cauchy-Schwarz bound on the remaining
  coordinates, see `AdaptiveRetriever._rerank`); the survivors are then scored exactly as before,
  so results are unchanged. On MRL-like data (little energy in the tail) under 1% of the 200
  candidates survived for k=1, and the 2048-d rerank fell from 0.10 s to 0.027 s; on isotropic
  Gaussian data nothing is pruned and the extra pass costs about 1/8 of the rerank.
* Every stage's prefix array is precomputed in ``__init__`` as a contiguous float32 array
  (re-normalised for cosine), so a rerank reads ``size * 4`` contiguous bytes per candidate.
* ``index="int8"`` keeps the first-stage prefix as int8 codes (per-dimension scales fitted on the database,
  `mrl.retrieval.int8.Int8Index`; ``m`` bytes per item, 4x less than float32) and scans them exactly.
* ``index="binary"`` keeps one bit per coordinate of the first-stage prefix, set where the coordinate is
  above the database's mean (`bit_center`; ``m / 8`` bytes per item, rounded up; 32x less than its float32
  prefix) and shortlists by Hamming distance with FAISS's
  ``IndexBinaryFlat`` (XOR + popcount). Hamming distances are not scores of any metric, so a binary
  first stage always needs a float stage after it. On the synthetic 200k x 2048 set a 128-bit
  shortlist of 200 reranked at 2048 ran 25.5x faster than exact search, against 14.7x for the 16-d
  float shortlist in the same run (``benchmarks/retrieval.py``).
* ``middle="fp16"`` / ``"int8"`` keeps the stages between the first and the last as fp16 or int8 codes
  (`mrl.retrieval.compact.CompactStage`: 2 or 1 bytes per coordinate) to narrow the shortlist; the last stage
  scores its survivors in float32, so the returned scores are exact.
* ``shortlist_gap`` sizes each query's shortlist from its own scores: of the first stage's candidates it keeps
  those scoring within ``shortlist_gap`` of the query's k-th best first-stage score (`cut_by_gap`). A query whose
  neighbours stand out keeps few candidates, one in a crowd keeps up to the first stage's count.
* Equal scores are broken the same way in every stage: the lowest database id wins and comes first
  (:mod:`mrl.retrieval.ties`), so a top-1 never depends on how many neighbours were asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrl.retrieval.binary import binary_index, bit_center, threshold_bits
from mrl.retrieval.compact import MIDDLE_FORMATS, CompactStage, compact_bytes
from mrl.retrieval.flat import FlatIndex, faiss, prefix, require_faiss
from mrl.retrieval.int8 import Int8Index
from mrl.retrieval.prefix_ivf import PrefixIVF
from mrl.retrieval.tiered import advise_random_access
from mrl.retrieval.ties import order_ties, sort_candidates

METRICS = ("cosine", "l2", "ip")
PRUNE_MIN_SIZE = 128  # rerank stages at least this wide use bound pruning
PRUNE_HEAD_FRACTION = 8  # ... scoring the first m/8 coordinates first
INDEXES = ("flat", "int8", "hnsw", "ivf", "binary")


def validate_funnel(funnel: Sequence[Sequence[int]], dim: int) -> list[tuple[int, int]]:
    """Check a funnel against an embedding width and return it as a list of int pairs.

    Rules: at least one stage; every stage is ``(size, candidates)``; sizes strictly increase and lie
    in ``[1, dim]``; candidates are positive and never increase from one stage to the next.
    Raises ``ValueError`` with a one-line message naming ``funnel`` and the offending value.
    """
    if isinstance(funnel, (str, bytes)) or not isinstance(funnel, Sequence) or len(funnel) == 0:
        raise ValueError(f"funnel must be a non-empty list of (size, candidates) pairs, got {funnel!r}")
    stages: list[tuple[int, int]] = []
    for i, stage in enumerate(funnel):
        if isinstance(stage, (str, bytes)) or not isinstance(stage, Sequence) or len(stage) != 2:
            raise ValueError(f"funnel[{i}] must be a (size, candidates) pair, got {stage!r}")
        size, cand = stage
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (size, cand)):
            raise ValueError(f"funnel[{i}] must hold two integers, got {stage!r}")
        size, cand = int(size), int(cand)
        if not 1 <= size <= dim:
            raise ValueError(f"funnel[{i}] size {size} must be in [1, {dim}] (the embedding width)")
        if cand < 1:
            raise ValueError(f"funnel[{i}] candidates {cand} must be positive")
        if stages and size <= stages[-1][0]:
            raise ValueError(
                f"funnel sizes must strictly increase: funnel[{i}] size {size} <= previous {stages[-1][0]}"
            )
        if stages and cand > stages[-1][1]:
            raise ValueError(
                f"funnel candidates must not increase: funnel[{i}] candidates {cand} > previous {stages[-1][1]}"
            )
        stages.append((size, cand))
    return stages


def check_middle(middle: str, funnel: Sequence[tuple[int, int]]) -> str:
    """A middle stages' number format: one of `MIDDLE_FORMATS`, and other than float only with a middle stage."""
    if middle not in MIDDLE_FORMATS:
        raise ValueError(f"middle={middle!r}: expected one of {', '.join(MIDDLE_FORMATS)}")
    if middle != "float" and len(funnel) < 3:
        raise ValueError(
            f"middle={middle!r}: the funnel {list(funnel)} has no middle stage; give three stages, e.g. "
            f"[(32, 200), (256, 50), (<full width>, 10)]"
        )
    return middle


def check_gap(gap: float | None, funnel: Sequence[tuple[int, int]], key: str = "shortlist_gap") -> float | None:
    """A shortlist gap (named ``key`` in the message): None, or a finite score difference >= 0 for a funnel that
    reranks its shortlist."""
    if gap is None:
        return None
    if isinstance(gap, bool) or not isinstance(gap, (int, float, np.floating)) or not 0 <= gap < float("inf"):
        raise ValueError(f"{key}={gap!r}: a score difference >= 0 (in the first stage's scores), or None")
    if len(funnel) < 2:
        raise ValueError(f"{key}={gap!r}: the funnel {list(funnel)} has no stage after its shortlist")
    return float(gap)


def check_binary_funnel(funnel: Sequence[tuple[int, int]]) -> None:
    """A binary first stage ranks by Hamming distance, which is no metric's score: a float stage must follow."""
    m1, c1 = funnel[0]
    if len(funnel) < 2:
        raise ValueError(
            f"funnel={list(funnel)}: index='binary' shortlists by Hamming distance and needs a float "
            f"stage after it to score the shortlist, e.g. [({m1}, {c1}), (<full width>, 10)]"
        )


def rerank(q: np.ndarray, arr: np.ndarray, cand_ids: np.ndarray, k: int, l2: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of each row of ``cand_ids`` (ids into ``arr``, ``-1`` for none), scored against ``q`` (its rows
    as wide as ``arr``'s) without gathering the candidates: FAISS's ``fvec_inner_products_by_idx`` /
    ``fvec_L2sqr_by_idx`` (OpenMP over queries; a ``-1`` is not read), then the best ``k`` of each row, the
    lowest ids among equal scores (`top_k_lowest_ids`). Where a row has fewer than ``k`` candidates the rest
    are ``-1`` ids with FAISS's sentinel scores."""
    cand_ids = sort_candidates(np.ascontiguousarray(cand_ids, dtype=np.int64))
    scores = scores_by_idx(q, arr, cand_ids, l2)
    return top_k_lowest_ids(scores, cand_ids, min(k, cand_ids.shape[1]), descending=not l2)


def scores_by_idx(q: np.ndarray, arr: np.ndarray, ids: np.ndarray, l2: bool) -> np.ndarray:
    """``[Q, c]`` scores of the listed rows of ``arr`` against each query (``-1`` ids: the worst score)."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    q = np.ascontiguousarray(q, dtype=np.float32)
    out = np.empty(ids.shape, dtype=np.float32)
    sp = faiss.swig_ptr
    fn = faiss.fvec_L2sqr_by_idx if l2 else faiss.fvec_inner_products_by_idx
    fn(sp(out), sp(q), sp(arr), sp(ids), q.shape[1], ids.shape[0], ids.shape[1])
    out[ids < 0] = np.inf if l2 else -np.inf
    return out


def best_by_score(q: np.ndarray, arr: np.ndarray, ids: np.ndarray, k: int, l2: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, scores)``: the best ``k`` of each row of ``ids`` by their scores on ``arr`` (`scores_by_idx`), in no
    particular order and with ties taken as they come: the tuner's quick count of a rerank's recall, where `rerank`
    serves (ordered, the lowest ids among equals)."""
    scores = scores_by_idx(q, arr, ids, l2)
    top = np.argpartition(scores if l2 else -scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(ids, top, axis=1), np.take_along_axis(scores, top, axis=1)


def top_k_lowest_ids(scores: np.ndarray, ids: np.ndarray, k: int, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of each row of ``scores [Q, c]``, whose ``ids`` increase along the row (``-1``, none,
    last): the k-th best value by partition, everything better, then the first (lowest-id) of those equal to
    it; ordered best first, equal scores by id. ``-1`` ids come last with FAISS's sentinel score."""
    worst = np.float32(np.finfo(np.float32).max)
    key = np.where(ids < 0, np.inf, -scores if descending else scores)  # lower is better
    nq, c = key.shape
    if k < c:
        kth = np.partition(key, k - 1, axis=1)[:, k - 1 : k]
        better, equal = key < kth, key == kth
        need = k - better.sum(axis=1, keepdims=True)
        take = better | (equal & (np.cumsum(equal, axis=1) <= need))
        pos = np.argsort(~take, axis=1, kind="stable")[:, :k]  # the k taken, in id order
        key, ids = np.take_along_axis(key, pos, axis=1), np.take_along_axis(ids, pos, axis=1)
    order = np.argsort(key, axis=1, kind="stable")  # best first; equal keys keep id order
    key, ids = np.take_along_axis(key, order, axis=1), np.take_along_axis(ids, order, axis=1)
    missing = ids < 0
    out = np.where(missing, worst, key).astype(np.float32)
    if descending:
        out = np.where(missing, -worst, -out).astype(np.float32)
    return out, ids


def funnel_mflops(n: int, funnel: Sequence[tuple[int, int]], index: str = "flat", first: float | None = None) -> float:
    """MFLOPs per query of a funnel over ``n`` items, one multiply-add counted as one FLOP (the MRL paper's
    accounting): the first stage ``n * m_1`` (``n * m_1 / 64`` for binary codes: one 64-bit XOR + popcount per
    64 coordinates; ``first`` replaces it for a graph or inverted-list index), then each later stage
    ``candidates_{i-1} * m_i``."""
    m1 = funnel[0][0]
    if first is None:
        first = n * m1 / 64 if index == "binary" else n * m1
    rest = sum(funnel[i - 1][1] * funnel[i][0] for i in range(1, len(funnel)))
    return (first + rest) / 1e6


def first_stage_bytes(m: int, index: str = "flat", metric: str = "cosine") -> int:
    """Bytes per item of a first stage's codes, read for every query: ``4 m`` (float32), ``m`` (int8, plus a
    float32 norm for L2), ``ceil(m / 8)`` (bits)."""
    if index == "binary":
        return -(-int(m) // 8)
    if index == "int8":
        return int(m) + (4 if metric == "l2" else 0)
    return 4 * int(m)


def funnel_bytes(
    funnel: Sequence[tuple[int, int]],
    index: str = "flat",
    metric: str = "cosine",
    prune: bool = True,
    middle: str = "float",
) -> int:
    """Bytes per item a funnel holds in memory: the first stage's codes (`first_stage_bytes`; an HNSW graph's
    links and IVF's list ids not counted), then each rerank stage's float32 prefix, and for a stage of size
    >= `PRUNE_MIN_SIZE` with ``prune`` the head copy and tail norm its pruning reads; middle stages in ``fp16`` /
    ``int8`` hold 2 / 1 bytes per coordinate (and a float32 norm for L2), unpruned."""
    total = first_stage_bytes(funnel[0][0], index, metric)
    for stage, (m, _) in enumerate(funnel[1:], start=1):
        if middle != "float" and stage < len(funnel) - 1:
            total += compact_bytes(m, middle, metric == "l2")
            continue
        total += 4 * m + (4 * (m // PRUNE_HEAD_FRACTION) + 4 if prune and m >= PRUNE_MIN_SIZE else 0)
    return total


def cut_by_gap(scores: np.ndarray, ids: np.ndarray, k: int, gap: float, descending: bool) -> np.ndarray:
    """A shortlist sized per query: of each row's candidates (best first), those whose first-stage score is within
    ``gap`` of the row's ``k``-th best (ties and better always kept), the rest ``-1``; the columns after the
    longest kept row dropped. Rows with fewer than ``k`` candidates are kept whole."""
    if ids.shape[1] <= k:
        return ids
    kth = scores[:, k - 1 : k]
    keep = scores >= kth - gap if descending else scores <= kth + gap
    keep &= ids >= 0
    keep[:, :k] |= ids[:, :k] >= 0  # the k best stay whatever their scores' rounding
    width = int(keep.sum(axis=1).max())
    return np.where(keep, ids, -1)[:, :width]


def row_sq_norms(x: np.ndarray, start: int, block: int = 8192) -> np.ndarray:
    """Squared L2 norms of ``x[:, start:]`` per row, accumulated in float64 a block of rows at a time."""
    out = np.empty(x.shape[0], dtype=np.float64)
    for i in range(0, x.shape[0], block):
        part = x[i : i + block, start:].astype(np.float64)
        out[i : i + block] = np.einsum("ij,ij->i", part, part)
    return out


class AdaptiveRetriever:
    """Funnel retrieval over a fixed database of Matryoshka embeddings.

    Args:
        database: ``[N, D]`` array of full-width embeddings (converted to float32; never modified).
        funnel: ``[(size, candidates), ...]`` stages, see `validate_funnel`.
        metric: ``"cosine"`` (prefixes re-normalised, scores are cosine similarities, higher is better),
            ``"ip"`` (raw inner products, higher is better) or ``"l2"`` (squared Euclidean distances,
            lower is better).
        index: first-stage index: ``"flat"`` (exact), ``"int8"`` (exact over int8 codes of the prefix,
            `mrl.retrieval.int8.Int8Index`; one stage alone returns the codes' scores), ``"hnsw"``
            (``faiss.IndexHNSWFlat``, inner product for cosine/ip), ``"ivf"`` (``faiss.IndexIVFFlat``) or
            ``"binary"`` (sign bits of the prefix, Hamming distance, ``faiss.IndexBinaryFlat``; a float stage
            must follow). Later stages are always exact.
        hnsw_m: HNSW graph degree. ``ef_search``: HNSW search beam, raised to the stage-1 candidates if
            smaller (FAISS HNSW returns at most efSearch results). ``ef_construction``: HNSW build beam.
        nlist, nprobe: IVF lists (default ``4 * sqrt(N)``, capped so every list gets ~39 training points)
            and lists probed per query (default ``max(1, nlist // 16)``).
        coarse_size: the prefix the IVF lists are assigned on (AdANNS-IVF, `mrl.retrieval.prefix_ivf.PrefixIVF`),
            when it is not the first stage's size, which then only scans the probed lists; default: the same.
        middle: number format of the stages between the first and the last: ``"float"`` (float32, pruned as
            below), ``"fp16"`` or ``"int8"`` (`mrl.retrieval.compact.CompactStage`); needs three stages or more.
        shortlist_gap: keep, of the first stage's candidates, only those within this much of each query's k-th
            best first-stage score (`cut_by_gap`; in the first stage's own scores: cosine, inner product, squared
            L2, Hamming distance); None keeps them all.
        seed: seed for IVF training-sample selection.
        prune: skip, inside a rerank stage of size >= 128, the candidates that provably cannot reach
            that stage's top list (see `_rerank`); results are the same as without it.
        rerank_arrays: ``{size: [N, size] float32 array}`` read by the rerank stage of that size instead of an
            in-memory copy: memory-tiered serving, e.g. a ``np.memmap`` of the (re-normalised) full vectors on disk
            (`write_rerank_memmap`), of which a query reads its shortlist's rows only. Such a stage is not pruned
            (its bounds would read every row) and is not counted in `resident_bytes`.
        prefix_cache: a dict shared by retrievers built over the same database (`mrl.retrieval.tune_funnel`
            builds dozens): each (re-normalised) prefix array is computed once and kept there, and so is each
            HNSW graph (per size, metric, ``hnsw_m`` and ``ef_construction``; every retriever searches it with
            its own ``efSearch``).

    All indexes and prefix arrays are built here; `search` does no allocation proportional to N.
    """

    def __init__(  # noqa: PLR0913 - one keyword per funnel option (docs/retrieval.md)
        self,
        database: np.ndarray,
        funnel: Sequence[Sequence[int]],
        metric: str = "cosine",
        index: str = "flat",
        hnsw_m: int = 32,
        ef_search: int | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        coarse_size: int | None = None,
        ef_construction: int = 64,
        seed: int = 0,
        prune: bool = True,
        prefix_cache: dict | None = None,
        rerank_arrays: dict[int, np.ndarray] | None = None,
        middle: str = "float",
        shortlist_gap: float | None = None,
    ) -> None:
        require_faiss()
        db = np.asarray(database)
        self._check_arguments(db, metric, index)
        self.n, self.dim = db.shape
        self.funnel = validate_funnel(funnel, self.dim)
        self.middle, self.shortlist_gap = check_middle(middle, self.funnel), check_gap(shortlist_gap, self.funnel)
        self._last_kept_per_query: float | None = None
        self._kept = 0  # candidates the gap kept, counted over a `search`
        self.metric = metric
        self.index_type = index
        self._prune_enabled = bool(prune)
        self._normalize = metric == "cosine"
        self._faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self._last_ndis_per_query: float | None = None
        cache = {} if prefix_cache is None else prefix_cache
        if index == "binary":
            check_binary_funnel(self.funnel)
        first = self._prefix(db, self.funnel[0][0], cache)
        if index == "hnsw":
            self.index = self._build_hnsw(first, cache, hnsw_m, ef_search, ef_construction, prefix_cache is not None)
        elif index == "ivf":
            self.index = self._build_ivf(db, first, (nlist, nprobe, coarse_size), seed, cache)
        else:
            self.index = self._FIRST_STAGE_BUILDERS[index](self, first, cache)
        del first
        # Contiguous (re-normalised) prefix arrays for the rerank stages, and for bound pruning the first m/8
        # coordinates of each and the norms of the rest.
        self._external = self._check_rerank_arrays(rerank_arrays or {})
        last = len(self.funnel) - 1
        self._stage_arrays = [
            self._external[m] if m in self._external else self._stage_array(db, m, cache, stage < last)
            for stage, (m, _) in enumerate(self.funnel[1:], start=1)
        ]
        self._stage_bounds = [
            self._pruning_bounds(arr, cache)
            if prune and m not in self._external and isinstance(arr, np.ndarray)
            else None
            for (m, _), arr in zip(self.funnel[1:], self._stage_arrays)
        ]

    # ------------------------------------------------------------------ building
    @staticmethod
    def _check_arguments(db: np.ndarray, metric: str, index: str) -> None:
        if db.ndim != 2 or db.shape[0] == 0:
            raise ValueError(f"database must be a non-empty [N, D] array, got shape {db.shape}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if index not in INDEXES:
            raise ValueError(f"index must be one of {INDEXES}, got {index!r}")

    def _check_rerank_arrays(self, arrays: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        sizes = {m for m, _ in self.funnel[1:]}
        for m, arr in arrays.items():
            ok = m in sizes and arr.shape == (self.n, m) and arr.dtype == np.float32 and arr.flags.c_contiguous
            if not ok:
                raise ValueError(
                    f"rerank_arrays[{m}]: expected a C-contiguous float32 [{self.n}, {m}] array for one of the rerank "
                    f"sizes {sorted(sizes)}, got {getattr(arr, 'dtype', None)} {getattr(arr, 'shape', None)}"
                )
        return dict(arrays)

    def _stage_array(self, db: np.ndarray, m: int, cache: dict, middle: bool) -> np.ndarray | CompactStage:
        """A rerank stage's data: the float32 prefix, or a middle stage's fp16 / int8 codes (cached per format)."""
        if not middle or self.middle == "float":
            return self._prefix(db, m, cache)
        key = (self.middle, int(m), self._normalize, self.metric == "l2")
        if key not in cache:
            cache[key] = CompactStage(self._prefix(db, m, cache), self.middle, l2=self.metric == "l2")
        return cache[key]

    def _prefix(self, db: np.ndarray, m: int, cache: dict) -> np.ndarray:
        """The (re-normalised) contiguous prefix of size ``m``, computed once per cache."""
        key = (int(m), self._normalize)
        if key not in cache:
            cache[key] = prefix(db, m, self._normalize)
        return cache[key]

    def _build_flat(self, first: np.ndarray, cache: dict) -> FlatIndex:
        key = ("flat", first.shape[1], self.metric == "l2")
        if key not in cache:
            cache[key] = FlatIndex(first, l2=self.metric == "l2")
        return cache[key]

    def _build_int8(self, first: np.ndarray, cache: dict) -> Int8Index:
        key = ("int8", first.shape[1], self.metric == "l2")
        if key not in cache:
            cache[key] = Int8Index(first, l2=self.metric == "l2")
        return cache[key]

    def _build_binary(self, first: np.ndarray, cache: dict):
        """``IndexBinaryFlat`` over the prefix's bits, thresholded at the database's mean (kept as `_bit_center`)."""
        key = ("binary", first.shape[1])
        if key not in cache:
            center = bit_center(first)
            codes = binary_index(first.shape[1])
            codes.add(threshold_bits(first, center))
            cache[key] = (codes, center)
        codes, self._bit_center = cache[key]
        return codes

    _FIRST_STAGE_BUILDERS = {"flat": _build_flat, "int8": _build_int8, "binary": _build_binary}

    def _build_hnsw(
        self, first: np.ndarray, cache: dict, hnsw_m: int, ef_search: int | None, ef_construction: int, shared: bool
    ):
        if hnsw_m < 2:
            raise ValueError(f"hnsw_m must be >= 2, got {hnsw_m}")
        m1, c1 = self.funnel[0]
        # FAISS HNSW returns at most efSearch results, so the beam is never narrower than c1.
        self._ef_search = max(int(ef_search if ef_search is not None else c1), c1)
        # With a shared prefix_cache the graph is built once per (size, metric, M, efConstruction) and shared:
        # each retriever then sets its own efSearch before every search (`shortlist`).
        self._hnsw_shared = shared
        key = ("hnsw", m1, self.metric, int(hnsw_m), int(ef_construction))
        if key not in cache:
            graph = faiss.IndexHNSWFlat(m1, int(hnsw_m), self._faiss_metric)
            graph.hnsw.efConstruction = int(ef_construction)
            graph.add(first)
            cache[key] = graph
        graph = cache[key]
        graph.hnsw.efSearch = self._ef_search
        return graph

    def _build_ivf(self, db: np.ndarray, first: np.ndarray, settings: tuple, seed: int, cache: dict):
        """``IndexIVFFlat`` over the prefix (or a `PrefixIVF` whose lists are assigned on the ``coarse_size``
        prefix), trained once per (sizes, metric, nlist, seed) in ``cache`` and shared: each retriever sets its own
        nprobe before every search (`shortlist`)."""
        nlist, nprobe, coarse_size = settings
        m1 = self.funnel[0][0]
        if nlist is None:
            nlist = int(np.clip(round(4 * np.sqrt(self.n)), 1, max(1, self.n // 39)))
        if not 1 <= nlist <= self.n:
            raise ValueError(f"nlist must be in [1, {self.n}] (database size), got {nlist}")
        coarse = m1 if coarse_size is None else int(coarse_size)
        if not 1 <= coarse <= self.dim:
            raise ValueError(f"coarse_size must be in [1, {self.dim}] (the embedding width), got {coarse_size}")
        self._nprobe = int(nprobe if nprobe is not None else max(1, nlist // 16))
        self._coarse_size = coarse
        key = ("ivf", m1, self.metric, int(nlist), int(seed)) + (() if coarse == m1 else (coarse,))
        if key not in cache:
            if coarse == m1:
                cache[key] = self._train_ivf(first, int(nlist), seed)
            else:
                scan_coarse = self._prefix(db, coarse, cache)
                cache[key] = PrefixIVF(first, scan_coarse, int(nlist), l2=self.metric == "l2", seed=seed)
        ivf = cache[key]
        ivf.nprobe = self._nprobe
        return ivf

    def _train_ivf(self, first: np.ndarray, nlist: int, seed: int):
        m1 = first.shape[1]
        quantizer = faiss.IndexFlatL2(m1) if self.metric == "l2" else faiss.IndexFlatIP(m1)
        ivf = faiss.IndexIVFFlat(quantizer, m1, int(nlist), self._faiss_metric)
        n_train = min(self.n, 256 * nlist)
        rng = np.random.default_rng(seed)
        sample = first if n_train == self.n else first[np.sort(rng.choice(self.n, n_train, replace=False))]
        ivf.train(sample)
        ivf.add(first)
        return ivf

    def _pruning_bounds(self, arr: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, float] | None:
        """``(head, tail norms, max norm)`` of a rerank stage's array for bound pruning (None below
        `PRUNE_MIN_SIZE`)."""
        m = arr.shape[1]
        if m < PRUNE_MIN_SIZE:
            return None
        key = ("bounds", m, self._normalize)
        if key not in cache:
            h = m // PRUNE_HEAD_FRACTION
            head = np.ascontiguousarray(arr[:, :h])
            tail = np.sqrt(row_sq_norms(arr, h)).astype(np.float32)
            max_norm = float(np.sqrt((row_sq_norms(arr, 0)).max()))
            cache[key] = (head, tail, max_norm)
        return cache[key]

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores[Q, k] float32, ids[Q, k] int64)``, best first.

        Scores are those of the last stage: cosine similarities, inner products, or squared L2
        distances (ascending) depending on ``metric``. ``k`` may not exceed the last stage's
        candidates. Ids are ``-1`` (and scores +-inf-like FAISS sentinels) only where an approximate
        first stage returned fewer results than asked.
        """
        q = np.asarray(queries)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}], got shape {np.shape(queries)}")
        last_c = self.funnel[-1][1]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= last_c:
            raise ValueError(f"k must be an integer in [1, {last_c}] (the last funnel stage's candidates), got {k!r}")
        k = int(k)
        nq = q.shape[0]
        scores = np.empty((nq, k), dtype=np.float32)
        ids = np.empty((nq, k), dtype=np.int64)
        track = self.index_type == "hnsw"
        if track:
            faiss.cvar.hnsw_stats.reset()
        self._kept = 0
        for start in range(0, nq, batch_size):
            stop = min(start + batch_size, nq)
            s, i = self._search_batch(q[start:stop], k)
            scores[start:stop], ids[start:stop] = s, i
        if track and nq:
            self._last_ndis_per_query = faiss.cvar.hnsw_stats.ndis / nq
        if self.shortlist_gap is not None and nq:
            self._last_kept_per_query = self._kept / nq
        return scores, ids

    def shortlist(self, queries: np.ndarray, candidates: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first stage alone: ``(scores, ids)`` of its best ``candidates`` (default: the first stage's) per
        query, best first, the lowest ids among equal scores. Scores are those of the first stage's index
        (Hamming distances for ``"binary"``, scores of the int8 codes for ``"int8"``)."""
        m1, c1 = self.funnel[0]
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}], got shape {np.shape(queries)}")
        c = c1 if candidates is None else int(candidates)
        qp = prefix(q, m1, self._normalize)
        if self.index_type == "binary":
            qp = threshold_bits(qp, self._bit_center)
        elif self.index_type == "hnsw" and self._hnsw_shared:
            self.index.hnsw.efSearch = self._ef_search  # the graph is shared: this retriever's own beam
        elif self.index_type == "ivf":
            self.index.nprobe = self._nprobe  # the lists may be shared: this retriever's own probes
        if isinstance(self.index, PrefixIVF):  # the lists probed chosen on the coarse prefix
            scores, ids = self.index.search(qp, prefix(q, self._coarse_size, self._normalize), c)
        else:
            scores, ids = self.index.search(qp, c)
        if self.index_type in ("hnsw", "ivf", "binary"):  # flat and int8 order their ties already
            scores, ids = order_ties(scores, ids, descending=self.index_type != "binary" and self.metric != "l2")
        return scores, ids

    def _search_batch(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # With one stage, ask for exactly k: the result is a plain exact search.
        scores, ids = self.shortlist(q, k if len(self.funnel) == 1 else None)
        if self.shortlist_gap is not None:
            descending = self.index_type != "binary" and self.metric != "l2"
            ids = cut_by_gap(scores, ids, k, self.shortlist_gap, descending)
            self._kept += int((ids >= 0).sum())
        last = len(self.funnel) - 1
        for stage in range(1, last + 1):
            m, cand = self.funnel[stage]
            keep = k if stage == last else cand
            scores, ids = self._rerank(prefix(q, m, self._normalize), stage - 1, ids, keep)
        return scores, ids

    def _rerank(self, q: np.ndarray, stage: int, cand_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of ``cand_ids`` (a row of database ids per query) scored at rerank ``stage``'s size.

        With pruning, the first ``h = m/8`` coordinates are scored first and the rest is bounded by
        Cauchy-Schwarz: for inner products ``|<q_t, x_t>| <= |q_t| |x_t|`` (tails after ``h``), for
        squared L2 ``(|q_t| - |x_t|)^2 <= |q_t - x_t|^2 <= (|q_t| + |x_t|)^2``. A candidate whose
        best possible full score is worse than the k-th best guaranteed score (minus a float
        tolerance) cannot be in the top k and is not read at full size. Survivors are rescored
        exactly as without pruning, so ids and scores are the same.
        """
        arr = self._stage_arrays[stage]
        bounds = self._stage_bounds[stage]
        cand_ids = np.ascontiguousarray(cand_ids, dtype=np.int64)
        l2 = self.metric == "l2"
        if isinstance(arr, CompactStage):
            cand_ids = sort_candidates(cand_ids)
            return top_k_lowest_ids(arr.scores(q, cand_ids), cand_ids, min(k, cand_ids.shape[1]), descending=not l2)
        if bounds is not None and cand_ids.shape[1] > 2 * k:
            cand_ids = self._prune(q, bounds, cand_ids, min(k, cand_ids.shape[1]), l2)
        return rerank(q, arr, cand_ids, k, l2)

    @staticmethod
    def _prune(q: np.ndarray, bounds, cand_ids: np.ndarray, k: int, l2: bool) -> np.ndarray:
        """Candidate ids with the provably-out ones replaced by -1 and the survivors moved first."""
        head, tail, max_norm = bounds
        h = head.shape[1]
        nq, ncand = cand_ids.shape
        qh = np.ascontiguousarray(q[:, :h])
        q_tail = np.sqrt(row_sq_norms(q, h))[:, None]
        q_norm = np.sqrt(row_sq_norms(q, 0))[:, None]
        part = np.empty((nq, ncand), dtype=np.float32)
        sp = faiss.swig_ptr
        fn = faiss.fvec_L2sqr_by_idx if l2 else faiss.fvec_inner_products_by_idx
        fn(sp(part), sp(qh), sp(head), sp(cand_ids), h, nq, ncand)  # -1 ids give +-inf
        valid = cand_ids >= 0
        x_tail = np.where(valid, tail[np.where(valid, cand_ids, 0)], 0.0)
        part = part.astype(np.float64)
        if l2:
            lower = part + (q_tail - x_tail) ** 2
            upper = part + (q_tail + x_tail) ** 2
            tau = np.partition(upper, k - 1, axis=1)[:, k - 1 : k]  # k-th smallest guaranteed distance
            tol = 1e-4 * (q_norm + max_norm) ** 2
            keep = valid & (lower <= tau + tol)
        else:
            lower = part - q_tail * x_tail
            upper = part + q_tail * x_tail
            tau = -np.partition(-lower, k - 1, axis=1)[:, k - 1 : k]  # k-th largest guaranteed score
            tol = 1e-4 * q_norm * max_norm
            keep = valid & (upper >= tau - tol)
        order = np.argsort(~keep, axis=1, kind="stable")
        out = np.take_along_axis(cand_ids, order, axis=1)
        out[~np.take_along_axis(keep, order, axis=1)] = -1
        return out

    # ------------------------------------------------------------------ cost model
    def mflops_per_query(self, count_multiply_add_as: int = 1) -> float:
        """Theoretical MFLOPs per query, counting one multiply-add as ``count_multiply_add_as`` FLOPs.

        The default (1) follows the MRL paper's accounting (exact search over N vectors of size m costs
        ``N * m``); pass 2 to count the multiply and the add separately.

        * flat or int8 first stage: ``N * m_1``;
        * ivf first stage: ``nlist * m_c + nprobe * (N / nlist) * m_1`` (expected, balanced lists; ``m_c`` the
          coarse size, by default ``m_1``);
        * binary first stage: ``N * m_1 / 64``, one 64-bit XOR + popcount counted as one multiply-add;
        * hnsw first stage: ``(mean distance computations per query in the last `search`) * m_1``
          (from ``faiss.cvar.hnsw_stats``), NaN before the first search;
        * each later stage i: ``candidates_{i-1} * m_i`` (it scores the previous stage's survivors); with
          ``shortlist_gap`` the second stage's count is the mean kept per query in the last `search` (the first
          stage's candidates before any).
        """
        m1, c1 = self.funnel[0]
        stages = list(self.funnel)
        if self.shortlist_gap is not None and self._last_kept_per_query is not None:
            stages[0] = (m1, self._last_kept_per_query)
        first = None
        if self.index_type == "ivf":
            nlist, nprobe = self.index.nlist, self._nprobe
            first = nlist * self._coarse_size + min(nprobe, nlist) * (self.n / nlist) * m1
        elif self.index_type == "hnsw":
            first = float("nan") if self._last_ndis_per_query is None else self._last_ndis_per_query * m1
        return count_multiply_add_as * funnel_mflops(self.n, stages, self.index_type, first)

    # ------------------------------------------------------------------ memory
    def first_stage_bytes(self) -> int:
        """Bytes per item of the first stage's codes, the part every query reads (see `first_stage_bytes`); the
        HNSW graph's links and IVF's list ids are not counted."""
        return first_stage_bytes(self.funnel[0][0], self.index_type, self.metric)

    def bytes_per_item(self) -> int:
        """Bytes per item held in memory (see `funnel_bytes`)."""
        return funnel_bytes(self.funnel, self.index_type, self.metric, prune=self._prune_enabled, middle=self.middle)

    def resident_bytes(self) -> int:
        """Bytes held in memory for the whole database: `bytes_per_item` per item (less the ``rerank_arrays``
        stages, on disk), and an HNSW graph's links
        (int32, with its levels and offsets) or IVF's list ids (int64) and centroids."""
        per_item = self.first_stage_bytes()
        for (m, _), arr, bounds in zip(self.funnel[1:], self._stage_arrays, self._stage_bounds):
            if isinstance(arr, CompactStage):
                per_item += arr.bytes_per_item
            elif m not in self._external:  # a memmap stage is read from disk, and never pruned
                per_item += 4 * m + (4 * (m // PRUNE_HEAD_FRACTION) + 4 if bounds is not None else 0)
        total = self.n * per_item
        if self.index_type == "hnsw":
            h = self.index.hnsw
            total += h.neighbors.size() * 4 + h.levels.size() * 4 + h.offsets.size() * 8
        elif self.index_type == "ivf":
            total += self.n * 8 + self.index.nlist * self._coarse_size * 4
        return int(total)

    def __repr__(self) -> str:
        return (
            f"AdaptiveRetriever(n={self.n}, dim={self.dim}, funnel={self.funnel}, metric={self.metric!r}, "
            f"index={self.index_type!r}"
            + (f", middle={self.middle!r}" if self.middle != "float" else "")
            + (f", shortlist_gap={self.shortlist_gap:g}" if self.shortlist_gap is not None else "")
            + ")"
        )


def write_rerank_memmap(
    database: np.ndarray,
    path,
    metric: str = "cosine",
    size: int | None = None,
    block: int = 65536,
    random_access: bool = True,
) -> np.ndarray:
    """The first ``size`` (default: all) coordinates of ``database``, re-normalised for cosine, written to ``path``
    as a float32 ``.npy`` a block of rows at a time, and opened read-only as a memmap: an `AdaptiveRetriever`'s
    ``rerank_arrays`` entry, read for the shortlist only. ``random_access``: advised ``MADV_RANDOM``, so a cold row
    is read without the kernel's read-ahead around it (`mrl.retrieval.tiered`: 4.2x faster one query at a time
    from a cold page cache at 1,000,000 x 1024, the same warm)."""
    db = np.asarray(database)
    m = db.shape[1] if size is None else int(size)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(db.shape[0], m))
    for start in range(0, db.shape[0], block):
        out[start : start + block] = prefix(db[start : start + block], m, metric == "cosine")
    out.flush()
    del out
    mapped = np.load(path, mmap_mode="r")
    return advise_random_access(mapped) if random_access else mapped


def exact_search(
    database: np.ndarray, queries: np.ndarray, k: int, metric: str = "cosine", size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact FAISS flat search at prefix ``size`` (default: full width), same conventions as `search`."""
    m = np.shape(database)[1] if size is None else size
    return AdaptiveRetriever(database, [(m, k)], metric=metric).search(queries, k)
