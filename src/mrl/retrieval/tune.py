"""Funnel tuning: the cheapest funnel whose recall@k against exact search meets a target, measured, not guessed.

    from mrl import tune_funnel
    tuned = tune_funnel(database, queries, target=0.99, k=10)
    print(tuned)                              # the funnel, its recall (tuning and held-out), speed, bytes
    scores, ids = tuned.retriever.search(new_queries, k=10)
    tuned.funnel                              # Funnel(stages=((16, 200), (2048, 10)), format='int8', index='int8')
    tuned.table                               # every funnel tried: recall, ms/query, MFLOPs, bytes per item

How (`tune_funnels` does the work; `tune_funnel` is it for one target):

1. The queries are split: a held-out share (``holdout``, seeded) is kept aside to confirm the choice; the rest
   tune it. The ground truth is exact search at full width (`exact_search`) for every query.
2. Every funnel of the grid is scored on the tuning queries: one stage at each size in each number format
   (``float``; ``int8``, per-dimension scales; ``bits`` need a float stage after them), and two stages, a
   shortlist of ``c`` candidates at size ``m_1`` in each format reranked at each of ``rerank_sizes`` (default:
   full width). One first-stage search with the largest shortlist serves every ``c`` (its first ``c`` results
   are the top-``c`` search, :mod:`mrl.retrieval.ties`), and a structure stops growing ``c`` once it meets the
   highest target. Sizes are tried smallest first; a first stage whose scan alone costs over `COST_SLACK` (4)
   times the MFLOPs of a funnel already meeting the highest target is not tried (the notes count them).
   HNSW first stages (``approximate``; by default from `HNSW_MIN_ITEMS`, 20,000, items on) on float prefixes up to
   `HNSW_MAX_SIZE` (32) wide, shortlist reranked: the graph is built once per size (the notes give the build
   times), and each shortlist ``c`` is its own search with ``efSearch = c``, as the built funnel searches (a
   graph's top ``c`` is not the start of its top ``2c``); sizes stop growing once one meets the highest target
   with a shortlist of at most ``5 k`` (`HNSW_ENOUGH`).
   Their MFLOPs count the distance computations the searches made (they do not feed the skip rule above).
   Recall is counted as ann-benchmarks counts it: a returned item is a hit when its full-width score is at
   least the k-th exact score (within float rounding, 1e-5 of the scores' scale), so an item that ties the
   k-th neighbour is not a miss.
3. Among the funnels that meet a target (and, with ``max_first_stage_bytes``, fit that budget), only the
   cheapest of each structure can win: the smallest shortlist of each (format, first size, rerank size), the
   smallest size of each one-stage format. Those are built (sharing every prefix array) and timed on the
   tuning queries, interleaved with exact search round after round, best of ``repeats``; the fastest wins.
4. The winner searches the held-out queries: the result says whether it meets the target there, and by how
   much it misses if it does not.

Latency is measured on this machine, in this process: another machine, a busier one or another batch size can
rank two close funnels the other way. MFLOPs (one multiply-add as one FLOP, the MRL paper's accounting) and
bytes per item are reported beside it, machine-independent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mrl.retrieval.flat import faiss, prefix, require_faiss
from mrl.retrieval.funnel import (
    METRICS,
    AdaptiveRetriever,
    _row_sq_norms,
    first_stage_bytes,
    funnel_bytes,
    funnel_mflops,
)

__all__ = ["FORMATS", "Funnel", "TunedFunnel", "recall_against_exact", "tune_funnel", "tune_funnels"]

FORMATS = {"float": "flat", "int8": "int8", "bits": "binary"}  # number format of a first stage -> its index
INDEX_FORMATS = {index: name for name, index in FORMATS.items()}
FORMAT_INDEXES = {"float": ("flat", "hnsw"), "int8": ("int8",), "bits": ("binary",)}  # first-stage indexes per format
APPROXIMATE = ("hnsw",)  # approximate first stages the tuner can try (float prefixes)
HNSW_MIN_ITEMS = 20_000  # approximate="auto" tries HNSW from this many items (below, a flat prefix scan is cheap)
HNSW_MAX_SIZE = 32  # ... on prefixes up to this wide (a wider graph costs more to build than it saves)
HNSW_ENOUGH = 5  # ... and no wider once a graph reaches every target with a shortlist of at most k times this
SHORTLIST_FACTORS = (1, 2, 5, 10, 20, 50, 100)  # default shortlists: k times these
RECALL_TOLERANCE = 1e-5  # of the scores' scale: a returned item this close to the k-th exact score is a hit
COST_SLACK = 4.0  # a first stage whose scan alone costs this many times a funnel meeting every target is skipped


# --------------------------------------------------------------------------------------------- the funnel
@dataclass(frozen=True)
class Funnel:
    """A funnel as data: ``stages`` ``((size, candidates), ...)``, the first stage's number ``format`` (``float``,
    ``int8`` or ``bits``; later stages are float), the ``metric`` and the first stage's `AdaptiveRetriever`
    ``index``: by default the format's exact scan (``flat``, ``int8``, ``binary``); ``hnsw`` for a float first
    stage searched through an HNSW graph (`AdaptiveRetriever`'s defaults: M 32, efConstruction 64, efSearch the
    first stage's candidates). Printable, comparable, reusable: ``Funnel(...).build(database)`` is the
    `AdaptiveRetriever`; `to_dict` / `from_dict` round-trip through JSON (a dict without ``index``, as saved
    before HNSW first stages, is the exact scan); `spec` and `cli_args` are what ``make search`` takes."""

    stages: tuple[tuple[int, int], ...]
    format: str = "float"
    metric: str = "cosine"
    index: str | None = None  # None: the format's exact scan (FORMATS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple((int(m), int(c)) for m, c in self.stages))
        if self.format not in FORMATS:
            raise ValueError(f"format={self.format!r}: expected one of {', '.join(FORMATS)}")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r}: expected one of {', '.join(METRICS)}")
        if self.index is None:
            object.__setattr__(self, "index", FORMATS[self.format])
        if self.index not in FORMAT_INDEXES[self.format]:
            valid = " or ".join(FORMAT_INDEXES[self.format])
            raise ValueError(f"index={self.index!r}: expected {valid} with format={self.format!r}")

    @property
    def k(self) -> int:
        """The most results a search can ask for: the last stage's candidates."""
        return self.stages[-1][1]

    @property
    def spec(self) -> str:
        """``"16:200,2048:10"``, the ``--funnel`` text of ``make search``."""
        return ",".join(f"{m}:{c}" for m, c in self.stages)

    def cli_args(self) -> list[str]:
        """The ``make search`` arguments that run this funnel."""
        return ["--funnel", self.spec, "--index", self.index, "--metric", self.metric]

    def build(self, database: np.ndarray, **kwargs: Any) -> AdaptiveRetriever:
        """The `AdaptiveRetriever` of this funnel over ``database`` (``kwargs`` passed on)."""
        return AdaptiveRetriever(database, list(self.stages), metric=self.metric, index=self.index, **kwargs)

    def mflops_per_query(self, n: int) -> float:
        """MFLOPs per query over ``n`` items (`funnel_mflops`); for an HNSW first stage the flat scan's count, an
        upper bound (the searched count depends on the graph: `AdaptiveRetriever.mflops_per_query`, the table's)."""
        return funnel_mflops(n, self.stages, self.index)

    def first_stage_bytes(self) -> int:
        return first_stage_bytes(self.stages[0][0], self.index, self.metric)

    def bytes_per_item(self) -> int:
        return funnel_bytes(self.stages, self.index, self.metric)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": [list(s) for s in self.stages],
            "format": self.format,
            "metric": self.metric,
            "index": self.index,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Funnel:
        return cls(
            tuple(tuple(s) for s in data["stages"]),
            data.get("format", "float"),
            data.get("metric", "cosine"),
            data.get("index"),
        )

    def __str__(self) -> str:
        (m1, c1), rest = self.stages[0], self.stages[1:]
        first = f"{m1}-d {self.format}" + (" HNSW" if self.index == "hnsw" else "")
        if not rest:
            return f"{first} top {c1}"
        return f"{first} shortlist of {c1} -> " + " -> ".join(f"{m}-d float top {c}" for m, c in rest)


# --------------------------------------------------------------------------------------------- recall
def _scores_by_idx(q: np.ndarray, arr: np.ndarray, ids: np.ndarray, l2: bool) -> np.ndarray:
    """``[Q, c]`` scores of the listed rows of ``arr`` against each query (``-1`` ids: the worst score)."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    q = np.ascontiguousarray(q, dtype=np.float32)
    out = np.empty(ids.shape, dtype=np.float32)
    sp = faiss.swig_ptr
    fn = faiss.fvec_L2sqr_by_idx if l2 else faiss.fvec_inner_products_by_idx
    fn(sp(out), sp(q), sp(arr), sp(ids), q.shape[1], ids.shape[0], ids.shape[1])
    out[ids < 0] = np.inf if l2 else -np.inf
    return out


@dataclass
class _Truth:
    """Exact search of a query set: the full-width arrays, and per query the k-th score and the tolerance."""

    full: np.ndarray  # [N, D] (re-normalised for cosine)
    queries: np.ndarray  # [Q, D], same
    kth: np.ndarray  # [Q] k-th exact score (the fvec numerics of `_scores_by_idx`)
    tol: np.ndarray  # [Q]
    l2: bool
    k: int

    def hits(self, rows: np.ndarray, found_ids: np.ndarray, found_full_scores: np.ndarray | None = None) -> np.ndarray:
        """Per query, the share of the first ``k`` found items that are hits (see the module docstring)."""
        found_ids = found_ids[:, : self.k]
        scores = found_full_scores
        if scores is None:
            scores = _scores_by_idx(self.queries[rows], self.full, found_ids, self.l2)
        if self.l2:
            good = scores <= (self.kth[rows] + self.tol[rows])[:, None]
        else:
            good = scores >= (self.kth[rows] - self.tol[rows])[:, None]
        return np.minimum((good & (found_ids >= 0)).sum(axis=1), self.k) / self.k


def _truth(database: np.ndarray, queries: np.ndarray, exact_ids: np.ndarray, metric: str, cache: dict) -> _Truth:
    normalize = metric == "cosine"
    dim = database.shape[1]
    if (dim, normalize) not in cache:
        cache[(dim, normalize)] = prefix(database, dim, normalize)
    full = cache[(dim, normalize)]
    q = prefix(queries, dim, normalize)
    l2 = metric == "l2"
    exact = _scores_by_idx(q, full, exact_ids, l2)
    kth = exact.max(axis=1) if l2 else exact.min(axis=1)
    q_norm = np.sqrt(_row_sq_norms(q, 0))
    x_norm = float(np.sqrt(_row_sq_norms(full, 0).max()))
    scale = (q_norm + x_norm) ** 2 if l2 else q_norm * x_norm
    return _Truth(full, q, kth, RECALL_TOLERANCE * np.maximum(scale, 1e-12), l2, exact_ids.shape[1])


def recall_against_exact(
    database: np.ndarray, queries: np.ndarray, found_ids: np.ndarray, k: int, metric: str = "cosine"
) -> float:
    """Mean recall@k of ``found_ids`` (``[Q, >=k]`` database rows per query) against exact full-width search,
    ties with the k-th neighbour counted as hits (see the module docstring)."""
    from mrl.retrieval.funnel import exact_search

    _, exact_ids = exact_search(database, queries, k, metric=metric)
    truth = _truth(np.asarray(database), np.asarray(queries), exact_ids, metric, {})
    return float(truth.hits(np.arange(len(queries)), np.asarray(found_ids)).mean())


# --------------------------------------------------------------------------------------------- the result
@dataclass
class TunedFunnel:
    """What `tune_funnel` chose for one target, and everything it measured on the way.

    ``funnel`` and ``retriever`` are the choice; ``table`` holds every funnel tried (one dict each: ``funnel``,
    ``format``, ``index``, ``stages``, ``recall``, ``mflops_per_query``, ``first_stage_bytes``, ``bytes_per_item``,
    ``ms_per_query`` where timed, else None, and ``chosen``). ``recall`` is the chosen funnel's on the tuning
    queries, ``holdout_recall`` on the held-out ones (None without any); ``met`` says whether the target holds on
    the held-out queries (on the tuning ones without held-out queries), ``shortfall`` by how much it misses.
    """

    target: float
    k: int
    metric: str
    funnel: Funnel
    retriever: AdaptiveRetriever
    table: list[dict[str, Any]]
    recall: float
    holdout_recall: float | None
    tuning_queries: int
    holdout_queries: int
    ms_per_query: float
    exact_ms_per_query: float
    mflops_per_query: float
    first_stage_bytes: int
    bytes_per_item: int
    max_first_stage_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        """Exact full-width search time over the chosen funnel's, measured side by side."""
        return self.exact_ms_per_query / self.ms_per_query if self.ms_per_query > 0 else float("nan")

    @property
    def confirmed_recall(self) -> float:
        return self.recall if self.holdout_recall is None else self.holdout_recall

    @property
    def met(self) -> bool:
        return self.confirmed_recall >= self.target

    @property
    def shortfall(self) -> float:
        """How far the confirmed recall (held-out, else tuning) falls below the target; 0 when it meets it."""
        return max(0.0, self.target - self.confirmed_recall)

    def summary(self) -> dict[str, Any]:
        """One flat row: the target, the funnel, its recall, speed and bytes (for tables and JSON)."""
        return {
            "target": self.target,
            "k": self.k,
            "funnel": str(self.funnel),
            "spec": self.funnel.spec,
            "format": self.funnel.format,
            "index": self.funnel.index,
            "recall": self.recall,
            "holdout_recall": self.holdout_recall,
            "met": self.met,
            "shortfall": self.shortfall,
            "ms_per_query": self.ms_per_query,
            "exact_ms_per_query": self.exact_ms_per_query,
            "speedup": self.speedup,
            "mflops_per_query": self.mflops_per_query,
            "first_stage_bytes": self.first_stage_bytes,
            "bytes_per_item": self.bytes_per_item,
            "tuning_queries": self.tuning_queries,
            "holdout_queries": self.holdout_queries,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary, the funnel as data, the notes and the whole table."""
        return {**self.summary(), "funnel_data": self.funnel.to_dict(), "notes": list(self.notes), "table": self.table}

    def __str__(self) -> str:
        held = (
            f", {self.holdout_recall:.4f} on {self.holdout_queries} held-out queries"
            if self.holdout_recall is not None
            else " (no held-out queries)"
        )
        verdict = "target met" if self.met else f"target MISSED by {self.shortfall:.4f}"
        lines = [
            f"recall@{self.k} >= {self.target}: {self.funnel}",
            f"  recall {self.recall:.4f} on {self.tuning_queries} tuning queries{held}: {verdict}",
            f"  {self.ms_per_query:.4f} ms/query against {self.exact_ms_per_query:.4f} for exact search "
            f"({self.speedup:.1f}x), {self.mflops_per_query:.3g} MFLOPs/query, "
            f"{self.first_stage_bytes} bytes/item scanned, {self.bytes_per_item} held",
            f'  make search ARGS="{" ".join(self.funnel.cli_args())}"',
        ]
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])


# --------------------------------------------------------------------------------------------- tuning
def _approximate(value: Any, n: int) -> tuple[str, ...]:
    """The approximate first-stage indexes to try: ``"auto"`` is HNSW from `HNSW_MIN_ITEMS` items on."""
    if isinstance(value, str) and value == "auto":
        return ("hnsw",) if n >= HNSW_MIN_ITEMS else ()
    names = [value] if isinstance(value, str) else value
    ok = names is None or (
        isinstance(names, (list, tuple)) and all(isinstance(a, str) and a in APPROXIMATE for a in names)
    )
    if not ok:
        shown = list(value) if isinstance(value, (list, tuple)) else value
        raise ValueError(
            f"approximate={shown!r}: expected 'auto' (hnsw from {HNSW_MIN_ITEMS} items), () for none, or some of "
            f"{', '.join(APPROXIMATE)}"
        )
    return tuple(dict.fromkeys(names or ()))


def _check_settings(db, q, targets, k, metric, sizes, shortlists, formats, rerank_sizes, holdout, budget, repeats):
    if db.ndim != 2 or db.shape[0] == 0:
        raise ValueError(f"database.shape={db.shape}: expected a non-empty [N, D] array")
    if q.ndim != 2 or q.shape[1] != db.shape[1] or q.shape[0] == 0:
        raise ValueError(f"queries.shape={q.shape}: expected [Q, {db.shape[1]}] with Q > 0 (the database's width)")
    n, dim = db.shape
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
            raise ValueError(f"target={t!r}: a recall@k to reach, in (0, 1], e.g. 0.99")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k={k!r}: must be an integer in 1..{n} (the database size)")
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {', '.join(METRICS)}")
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats={list(formats)!r}: expected some of {', '.join(FORMATS)}")
    for name, values in (("sizes", sizes), ("rerank_sizes", rerank_sizes)):
        wrong = [m for m in values if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= dim]
        if wrong or not values:
            raise ValueError(f"{name}={list(values)!r}: prefix sizes in 1..{dim} (the embedding width)")
    wrong = [c for c in shortlists if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not k <= c <= n]
    if wrong or not shortlists:
        raise ValueError(f"shortlists={list(shortlists)!r}: candidate counts in {k}..{n} (k to the database size)")
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout < 1:
        raise ValueError(f"holdout={holdout!r}: the share of the queries kept aside to confirm the choice, in [0, 1)")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1):
        raise ValueError(f"max_first_stage_bytes={budget!r}: a positive number of bytes per item, or None")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats={repeats!r}: a positive number of timed rounds")


def _time(retrievers: dict, queries: np.ndarray, k: int, repeats: int) -> dict:
    """Fastest of ``repeats`` full-batch searches per retriever, all of them interleaved in every round."""
    best = {key: float("inf") for key in retrievers}
    warm = queries[: min(len(queries), 16)]
    for r in retrievers.values():
        r.search(warm, k)
    for _ in range(repeats):
        for key, r in retrievers.items():
            start = time.perf_counter()
            r.search(queries, k)
            best[key] = min(best[key], time.perf_counter() - start)
    return {key: 1e3 * seconds / len(queries) for key, seconds in best.items()}


def _row(funnel: Funnel, n: int, recall: float, mflops: float | None = None) -> dict[str, Any]:
    return {
        "funnel": str(funnel),
        "format": funnel.format,
        "index": funnel.index,
        "metric": funnel.metric,
        "stages": [list(s) for s in funnel.stages],
        "recall": float(recall),
        "mflops_per_query": funnel.mflops_per_query(n) if mflops is None else float(mflops),
        "first_stage_bytes": funnel.first_stage_bytes(),
        "bytes_per_item": funnel.bytes_per_item(),
        "ms_per_query": None,
        "chosen": False,
    }


def _structure(row: dict) -> tuple:
    """What a funnel is apart from its shortlist (and, for one stage, its size): the larger of two such is slower."""
    stages, kind = row["stages"], (row["format"], row.get("index"))
    if len(stages) == 1:
        return kind
    return (*kind, stages[0][0], tuple(m for m, _ in stages[1:]))


def _cost_key(row: dict) -> tuple:
    stages = row["stages"]
    return (stages[0][1], stages[0][0]) if len(stages) > 1 else (stages[0][0],)


def _hnsw_rows(db, q_tune, tune_idx, truth, sizes, shortlists, rerank_sizes, k, metric, cache, add, top, budget):
    """HNSW first stages (float prefixes of at most `HNSW_MAX_SIZE`, below the width, within the bytes budget),
    smallest first: the graph is built once per size (shared through ``cache``), then every shortlist ``c`` is
    searched as the built funnel will search it, with ``efSearch = c``, reranked, and counted (no shortlist is
    read off a larger search: HNSW's top ``c`` depends on its beam). Stops at the first size meeting ``top`` with
    a shortlist of at most `HNSW_ENOUGH` ``* k``.
    Returns the notes (build times)."""
    n, dim = db.shape
    built = []
    for m1 in [m for m in sizes if m <= HNSW_MAX_SIZE and m < dim]:
        if budget is not None and first_stage_bytes(m1, "hnsw", metric) > budget:
            continue
        met = False
        for m2 in [m for m in rerank_sizes if m > m1]:
            for c in shortlists:
                funnel = Funnel(((m1, c), (m2, k)), "float", metric, "hnsw")
                start = time.perf_counter()
                retriever = funnel.build(db, prefix_cache=cache)
                if len(built) == 0 or built[-1][0] != m1:
                    built.append((m1, time.perf_counter() - start))
                _, found = retriever.search(q_tune, k)
                recall = truth.hits(tune_idx, found).mean()
                add(_row(funnel, n, recall, retriever.mflops_per_query()))
                if recall >= top:
                    met = met or c <= HNSW_ENOUGH * k
                    break  # larger shortlists of this structure only cost more
        if met:
            break  # a short shortlist is enough: a wider graph costs more to build and to walk
    if not built:
        return []
    sizes_built = ", ".join(f"{m}-d in {seconds:.1f}s" for m, seconds in built)
    return [f"HNSW first stages (M 32, efConstruction 64, efSearch = the shortlist) built at {sizes_built}"]


def tune_funnels(
    database: np.ndarray,
    queries: np.ndarray,
    targets: Sequence[float] = (0.99,),
    k: int = 10,
    metric: str = "cosine",
    sizes: Sequence[int] | None = None,
    shortlists: Sequence[int] | None = None,
    formats: Sequence[str] = ("float", "int8", "bits"),
    rerank_sizes: Sequence[int] | None = None,
    holdout: float = 0.3,
    max_first_stage_bytes: int | None = None,
    repeats: int = 3,
    seed: int = 0,
    max_queries: int | None = 2000,
    approximate: str | Sequence[str] | None = "auto",
) -> list[TunedFunnel]:
    """`tune_funnel` for several targets at once: the grid is scored and timed once, one `TunedFunnel` per target
    (in the order given; they share the table)."""
    require_faiss()
    db = np.asarray(database)
    q_all = np.asarray(queries)
    if q_all.ndim == 1:
        q_all = q_all[None, :]
    targets = list(targets)
    if not targets:
        raise ValueError("targets=[]: give at least one recall target, e.g. [0.99]")
    dim = db.shape[1] if db.ndim == 2 else 0
    n = db.shape[0] if db.ndim == 2 else 0
    if sizes is None:
        sizes = sorted({*(m for m in (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if m < dim), dim})
    if rerank_sizes is None:
        rerank_sizes = [dim]
    if shortlists is None:
        shortlists = sorted({min(k * f, n) for f in SHORTLIST_FACTORS})
    _check_settings(
        db, q_all, targets, k, metric, sizes, shortlists, formats, rerank_sizes, holdout, max_first_stage_bytes, repeats
    )
    approximate = _approximate(approximate, n)
    targets = [float(t) for t in targets]
    sizes = sorted({int(m) for m in sizes})
    rerank_sizes = sorted({int(m) for m in rerank_sizes})
    shortlists = sorted({int(c) for c in shortlists})
    l2 = metric == "l2"
    normalize = metric == "cosine"
    notes: list[str] = []

    # 1. tuning / held-out split, exact ground truth
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(q_all))
    if max_queries is not None and len(order) > max_queries:
        notes.append(f"{max_queries} of the {len(order)} queries used (max_queries)")
        order = order[:max_queries]
    n_hold = int(round(len(order) * holdout))
    if len(order) - n_hold < 1:
        n_hold = len(order) - 1
    hold_rows, tune_rows = np.sort(order[:n_hold]), np.sort(order[n_hold:])
    if n_hold == 0:
        notes.append("no held-out queries: the target is confirmed on the tuning queries only")
    q = np.ascontiguousarray(q_all[np.concatenate([tune_rows, hold_rows])], dtype=np.float32)
    tune_idx = np.arange(len(tune_rows))
    hold_idx = np.arange(len(tune_rows), len(q))
    cache: dict = {}
    exact_funnel = Funnel(((dim, k),), "float", metric)
    exact = exact_funnel.build(db, prefix_cache=cache)
    _, exact_ids = exact.search(q, k)
    truth = _truth(db, q, exact_ids, metric, cache)
    q_tune = q[tune_idx]

    # 2. every funnel of the grid, scored on the tuning queries
    rows: list[dict[str, Any]] = [_row(exact_funnel, n, truth.hits(tune_idx, exact_ids[tune_idx]).mean())]
    top_target = max(targets)
    for m in rerank_sizes:
        if (m, normalize) not in cache:
            cache[(m, normalize)] = prefix(db, m, normalize)
    stage_arrays = {m: cache[(m, normalize)] for m in rerank_sizes}
    q_stage = {m: prefix(q_tune, m, normalize) for m in rerank_sizes}
    cmax = max(shortlists)

    def fits(row: dict) -> bool:
        return max_first_stage_bytes is None or row["first_stage_bytes"] <= max_first_stage_bytes

    def add(row: dict) -> None:
        nonlocal best_mflops
        rows.append(row)
        if row["recall"] >= top_target and fits(row) and row["index"] != "hnsw":
            # a graph's few distance computations are random reads: its MFLOPs say little of its time
            best_mflops = min(best_mflops, row["mflops_per_query"])

    best_mflops, skipped = float("inf"), 0  # the cheapest funnel meeting the highest target so far
    for fmt in formats:
        for m1 in sizes:
            if fmt == "bits" and m1 == dim:
                continue  # bits need a float stage after them
            if funnel_mflops(n, ((m1, k),), FORMATS[fmt]) > COST_SLACK * best_mflops:
                skipped += 1  # its scan alone costs several times a funnel that already meets every target
                continue
            if fmt == "float" and m1 == dim:
                first = exact
            else:
                stages = ((m1, cmax), (dim, k)) if m1 < dim else ((m1, cmax),)
                first = Funnel(stages, fmt, metric).build(db, prefix_cache=cache)
            _, cand = first.shortlist(q_tune, cmax)
            if fmt != "bits" and not (fmt == "float" and m1 == dim):
                add(_row(Funnel(((m1, k),), fmt, metric), n, truth.hits(tune_idx, cand).mean()))
            for m2 in rerank_sizes:
                if m2 <= m1:
                    continue
                scores = np.empty((len(tune_idx), 0), dtype=np.float32)
                for c in shortlists:
                    new = _scores_by_idx(q_stage[m2], stage_arrays[m2], cand[:, scores.shape[1] : c], l2)
                    scores = np.concatenate([scores, new], axis=1)
                    top = np.argpartition(scores if l2 else -scores, k - 1, axis=1)[:, :k]
                    found = np.take_along_axis(cand[:, :c], top, axis=1)
                    found_scores = np.take_along_axis(scores, top, axis=1) if m2 == dim else None
                    recall = truth.hits(tune_idx, found, found_scores).mean()
                    add(_row(Funnel(((m1, c), (m2, k)), fmt, metric), n, recall))
                    if recall >= top_target:
                        break  # larger shortlists of this structure only cost more

    if skipped:
        notes.append(
            f"{skipped} first stages not tried: their scan alone costs over {COST_SLACK:g}x the MFLOPs of a funnel "
            f"already reaching recall {top_target}"
        )
    if "hnsw" in approximate:
        notes.extend(_hnsw_rows(db, q_tune, tune_idx, truth, sizes, shortlists, rerank_sizes, k, metric, cache, add,
                                top_target, max_first_stage_bytes))  # fmt: skip

    # 3. the cheapest candidates of each structure that meet a target, timed side by side with exact search
    def candidates(target: float) -> list[int]:
        best: dict[tuple, int] = {}
        for i, row in enumerate(rows):
            if row["recall"] >= target and fits(row):
                key = _structure(row)
                if key not in best or _cost_key(row) < _cost_key(rows[best[key]]):
                    best[key] = i
        return sorted(best.values())

    chosen_sets = {t: candidates(t) for t in targets}
    for t, chosen in chosen_sets.items():
        if not chosen:  # nothing fits the budget and meets the target: the best recall within the budget
            within = [i for i, row in enumerate(rows) if fits(row)]
            if not within:
                raise ValueError(
                    f"max_first_stage_bytes={max_first_stage_bytes}: no funnel tried fits it (the smallest first "
                    f"stage takes {min(r['first_stage_bytes'] for r in rows)} bytes per item)"
                )
            top = max(rows[i]["recall"] for i in within)
            chosen_sets[t] = [i for i in within if rows[i]["recall"] == top]
    to_time = sorted({i for chosen in chosen_sets.values() for i in chosen} | {0})
    retrievers = {i: exact if i == 0 else Funnel.from_dict(rows[i]).build(db, prefix_cache=cache) for i in to_time}
    ms = _time(retrievers, q_tune, k, repeats)
    for i, value in ms.items():
        rows[i]["ms_per_query"] = value

    # 4. per target, the fastest; confirmed on the held-out queries
    results = []
    for t in targets:
        # every funnel timed that meets the target (exact search too) can win, not only those timed for it
        eligible = [i for i in to_time if rows[i]["recall"] >= t and fits(rows[i])] or chosen_sets[t]
        pick = min(eligible, key=lambda i: (rows[i]["ms_per_query"], rows[i]["mflops_per_query"]))
        funnel = Funnel.from_dict(rows[pick])
        retriever = retrievers[pick]
        _, ids = retriever.search(q, k)
        recall = float(truth.hits(tune_idx, ids[tune_idx]).mean())
        held = float(truth.hits(hold_idx, ids[hold_idx]).mean()) if len(hold_idx) else None
        own = list(notes)
        if recall < t:
            own.append(
                f"no funnel tried reaches recall {t} within max_first_stage_bytes={max_first_stage_bytes}; "
                f"the best within it is {recall:.4f}"
            )
        results.append(
            TunedFunnel(
                target=t,
                k=k,
                metric=metric,
                funnel=funnel,
                retriever=retriever,
                table=[{**row, "chosen": i == pick} for i, row in enumerate(rows)],
                recall=recall,
                holdout_recall=held,
                tuning_queries=len(tune_idx),
                holdout_queries=len(hold_idx),
                ms_per_query=rows[pick]["ms_per_query"],
                exact_ms_per_query=rows[0]["ms_per_query"],
                mflops_per_query=rows[pick]["mflops_per_query"],
                first_stage_bytes=rows[pick]["first_stage_bytes"],
                bytes_per_item=rows[pick]["bytes_per_item"],
                max_first_stage_bytes=max_first_stage_bytes,
                notes=own,
            )
        )
    return results


def tune_funnel(
    database: np.ndarray,
    queries: np.ndarray,
    target: float = 0.99,
    k: int = 10,
    metric: str = "cosine",
    sizes: Sequence[int] | None = None,
    shortlists: Sequence[int] | None = None,
    formats: Sequence[str] = ("float", "int8", "bits"),
    rerank_sizes: Sequence[int] | None = None,
    holdout: float = 0.3,
    max_first_stage_bytes: int | None = None,
    repeats: int = 3,
    seed: int = 0,
    max_queries: int | None = 2000,
    approximate: str | Sequence[str] | None = "auto",
) -> TunedFunnel:
    """The fastest funnel (measured) whose recall@k against exact full-width search reaches ``target``.

    Args:
        database: ``[N, D]`` embeddings to search (float; never modified).
        queries: ``[Q, D]`` sample queries, of the kind the funnel will serve; a ``holdout`` share of them (seeded
            by ``seed``; at most ``max_queries`` in all) only confirms the choice.
        target: recall@k to reach, in (0, 1]. ``k``: neighbours per query.
        metric: ``cosine`` (prefixes re-normalised), ``ip`` or ``l2``.
        sizes: first-stage prefix sizes to try (default: 8, 16, 32, ... below D, and D).
        shortlists: first-stage candidate counts (default: k x 1, 2, 5, 10, 20, 50, 100, capped at N).
        formats: first-stage number formats: ``float``, ``int8``, ``bits``.
        rerank_sizes: sizes a shortlist is reranked at (default: D alone).
        max_first_stage_bytes: only funnels whose first stage takes at most this many bytes per item (e.g. 16:
            what fits in memory); without any that meets the target, the best recall within it (and a note).
        repeats: timed rounds per funnel (the fastest counts).
        approximate: approximate first stages to try besides the exact scans: ``"auto"`` (default) tries HNSW on
            float prefixes (`HNSW_MAX_SIZE`, 32, wide at most) when the database holds at least `HNSW_MIN_ITEMS`
            (20,000) items; ``("hnsw",)`` tries it whatever the size; ``()`` or None never.

    Returns a `TunedFunnel`: ``.retriever`` ready to ``.search(queries, k)``, ``.funnel``, ``.table``. See the
    module docstring for how it is chosen.
    """
    return tune_funnels(
        database,
        queries,
        [target],
        k=k,
        metric=metric,
        sizes=sizes,
        shortlists=shortlists,
        formats=formats,
        rerank_sizes=rerank_sizes,
        holdout=holdout,
        max_first_stage_bytes=max_first_stage_bytes,
        repeats=repeats,
        seed=seed,
        max_queries=max_queries,
        approximate=approximate,
    )[0]
