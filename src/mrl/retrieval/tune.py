"""Funnel tuning: the cheapest funnel whose recall@k against exact search meets a target, measured, not guessed.

    from mrl import tune_funnel
    tuned = tune_funnel(database, queries, target=0.99, k=10)
    print(tuned)                              # the funnel, its recall (tuning and held-out), speed, bytes
    scores, ids = tuned.retriever.search(new_queries, k=10)
    tuned.funnel                              # Funnel(stages=((16, 200), (2048, 10)), format='int8', index='int8')
    tuned.table                               # every funnel tried: recall, ms/query, MFLOPs, bytes per item

What to try is a `TuneSettings` (``tune_funnel(db, q, settings=TuneSettings(k=10, formats=("float",)))``, or the
same fields as keywords: ``tune_funnel(db, q, k=10, formats=("float",))``). How (`tune_funnels` does the work in
four steps, one function each; `tune_funnel` is it for one target):

1. `split_queries`, `exact_ground_truth`: the queries are split: a held-out share (``holdout``, seeded) is kept
   aside to confirm the choice; the rest tune it. The ground truth is exact search at full width (`exact_search`)
   for every query.
2. `score_grid`: every funnel of the grid is scored on the tuning queries, by each of `GRID_SCORERS` in turn.
   `score_exact_scans`: one stage at each size in each number format
   (``float``; ``int8``, per-dimension scales; ``bits`` need a float stage after them), and two stages, a
   shortlist of ``c`` candidates at size ``m_1`` in each format reranked at each of ``rerank_sizes`` (default:
   full width). One first-stage search with the largest shortlist serves every ``c`` (its first ``c`` results
   are the top-``c`` search, :mod:`mrl.retrieval.ties`), and a structure stops growing ``c`` once it meets the
   highest target. Sizes are tried smallest first; a first stage whose scan alone costs over `COST_SLACK` (4)
   times the MFLOPs of a funnel already meeting the highest target is not tried (the notes count them).
   `score_hnsw_first_stages`: HNSW first stages (``approximate``; by default from `HNSW_MIN_ITEMS`, 20,000, items
   on) on float prefixes up to `HNSW_MAX_SIZE` (32) wide, shortlist reranked: the graph is built once per size (the
   notes give the build times), and each shortlist ``c`` is its own search with ``efSearch = c``, as the built
   funnel searches (a graph's top ``c`` is not the start of its top ``2c``); sizes stop growing once one meets the
   highest target with a shortlist of at most ``5 k`` (`HNSW_ENOUGH`).
   Their MFLOPs count the distance computations the searches made (they do not feed the skip rule above).
   `score_ivf_first_stages`: IVF on a prefix (AdANNS-IVF), probes raised until a target is met. Then, grown from
   the two-stage funnels (exact scans and IVF) that meet the highest target (:mod:`mrl.retrieval.tune_stages`):
   `score_three_stages`, a float, fp16 or int8 middle stage (``middle_sizes``, ``middle_formats``) where two stages
   need a shortlist longer than 5 ``k``; `score_gap_shortlists`, the shortlist sized per query from its score gap
   (``score_gaps``).
   Recall is counted as ann-benchmarks counts it: a returned item is a hit when its full-width score is at
   least the k-th exact score (within float rounding, 1e-5 of the scores' scale), so an item that ties the
   k-th neighbour is not a miss.
3. `time_cheapest_candidates`: among the funnels that meet a target (and, with ``max_first_stage_bytes``, fit
   that budget), only the cheapest of each structure can win: the smallest shortlist of each (format, first size,
   rerank size), the smallest size of each one-stage format. Those are built (sharing every prefix array) and
   timed on the tuning queries, interleaved with exact search round after round, best of ``repeats``
   (`time_side_by_side`).
4. `confirm_fastest`: per target, the fastest wins; it searches the held-out queries: the result says whether it
   meets the target there, and by how much it misses if it does not.

A new kind of first stage joins the grid as one more scorer in `GRID_SCORERS`: a function of the `Tuning` (the
data, the settings, the ground truth) and the `ScoredGrid` (it adds one row per funnel scored, `funnel_row`) that
returns its notes; steps 3 and 4 time and confirm whatever rows it added.

Latency is measured on this machine, in this process: another machine, a busier one or another batch size can
rank two close funnels the other way. MFLOPs (one multiply-add as one FLOP, the MRL paper's accounting) and
bytes per item are reported beside it, machine-independent.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mrl.retrieval.baselines import BASELINES, BaselineSweep, TunedBaseline, sweep_baseline
from mrl.retrieval.compact import MIDDLE_FORMATS
from mrl.retrieval.flat import prefix, require_faiss
from mrl.retrieval.funnel import (
    METRICS,
    AdaptiveRetriever,
    best_by_score,
    exact_search,
    first_stage_bytes,
    funnel_mflops,
    row_sq_norms,
    scores_by_idx,
)
from mrl.retrieval.funnel_spec import FORMATS, Funnel
from mrl.retrieval.tune_stages import score_gap_shortlists, score_three_stages, stage_data

__all__ = [
    "GRID_SCORERS",
    "ScoredGrid",
    "TuneSettings",
    "TunedFunnel",
    "Tuning",
    "confirm_baselines",
    "confirm_fastest",
    "exact_ground_truth",
    "funnel_row",
    "recall_against_exact",
    "score_exact_scans",
    "score_grid",
    "score_gap_shortlists",
    "score_hnsw_first_stages",
    "score_ivf_first_stages",
    "score_three_stages",
    "split_queries",
    "sweep_baselines",
    "time_cheapest_candidates",
    "time_side_by_side",
    "tune_funnel",
    "tune_funnels",
]

APPROXIMATE = ("hnsw", "ivf")  # approximate first stages the tuner can try (float prefixes)
HNSW_MIN_ITEMS = 20_000  # approximate="auto" tries HNSW from this many items (below, a flat prefix scan is cheap)
HNSW_MAX_SIZE = 32  # ... on prefixes up to this wide (a wider graph costs more to build than it saves)
HNSW_ENOUGH = 5  # ... and no wider once a graph reaches every target with a shortlist of at most k times this
HNSW_MS = (8, 32)  # graph degrees M tried (a 32-d graph of M 8 walked faster than M 32 to the same recall, 100k x 1024)
HNSW_DEFAULT_BEAM = 64  # AdaptiveRetriever's efConstruction, left out of a funnel's options
HNSW_EF_CONSTRUCTIONS = (64, 128)  # build beams tried (a better-built graph reaches a recall with a narrower search)
IVF_MAX_SIZE = 64  # IVF first stages on prefixes up to this wide
IVF_NPROBES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)  # lists probed, raised until a target is met
SHORTLIST_FACTORS = (1, 2, 5, 10, 20, 50, 100)  # default shortlists: k times these
DEFAULT_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)  # default first-stage sizes (below D, and D)
RECALL_TOLERANCE = 1e-5  # of the scores' scale: a returned item this close to the k-th exact score is a hit
COST_SLACK = 4.0  # a first stage whose scan alone costs this many times a funnel meeting every target is skipped


# --------------------------------------------------------------------------------------------- the settings
def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


@dataclass(frozen=True)
class TuneSettings:
    """What `tune_funnel` / `tune_funnels` try and how they measure it (every field is also a keyword of both).

    Args:
        k: neighbours per query.
        metric: ``cosine`` (prefixes re-normalised), ``ip`` or ``l2``.
        sizes: first-stage prefix sizes to try (default: 8, 16, 32, ... below D, and D).
        shortlists: first-stage candidate counts (default: k x 1, 2, 5, 10, 20, 50, 100, capped at N).
        formats: first-stage number formats: ``float``, ``int8``, ``bits``.
        rerank_sizes: sizes a shortlist is reranked at (default: D alone).
        holdout: the share of the queries (seeded by ``seed``; at most ``max_queries`` in all) kept aside to
            confirm the choice, in [0, 1).
        max_first_stage_bytes: only funnels whose first stage takes at most this many bytes per item (e.g. 16:
            what fits in memory); without any that meets the target, the best recall within it (and a note).
        repeats: timed rounds per funnel (the fastest counts).
        approximate: approximate first stages to try besides the exact scans: ``"auto"`` (default) tries HNSW on
            float prefixes (`HNSW_MAX_SIZE`, 32, wide at most) when the database holds at least `HNSW_MIN_ITEMS`
            (20,000) items, and IVF (AdANNS-IVF: inverted lists on prefixes up to `IVF_MAX_SIZE`, 64, wide);
            ``("hnsw",)`` / ``("ivf",)`` try them whatever the size; ``()`` or None never.
        hnsw_ms: the HNSW graph degrees (M) tried for each prefix (default 8 and 32).
        hnsw_ef_constructions: the build beams (efConstruction) tried for each degree (default 64 and 128).
        ivf_nprobes: the lists an IVF first stage probes, raised in this order until a target is met.
        ivf_coarse_sizes: the prefixes an IVF first stage's lists are assigned on besides its own size (AdANNS-IVF
            with two prefixes, `mrl.retrieval.prefix_ivf`): default half and twice that size; ``()`` its own only.
        baselines: full-width indexes tuned to the same targets on the same queries, timed in the same rounds
            (`mrl.retrieval.baselines`: ``hnsw``, efSearch raised; ``ivf``, nprobe raised): ``"auto"`` (default)
            both from `HNSW_MIN_ITEMS` items on; ``()`` or None none.
        middle_sizes: sizes of the middle stage of three-stage funnels (`mrl.retrieval.tune_stages`; default
            D/8 and D/4 of the width D); ``()`` tries no three-stage funnel.
        middle_formats: number formats of that middle stage: ``float``, ``fp16``, ``int8``; ``()`` none.
        score_gaps: also try shortlists sized per query from their score gap (`mrl.retrieval.tune_stages`).

    `resolved` checks them against a database and fills the defaults that depend on it.
    """

    k: int = 10
    metric: str = "cosine"
    sizes: Sequence[int] | None = None
    shortlists: Sequence[int] | None = None
    formats: Sequence[str] = ("float", "int8", "bits")
    rerank_sizes: Sequence[int] | None = None
    holdout: float = 0.3
    max_first_stage_bytes: int | None = None
    repeats: int = 3
    seed: int = 0
    max_queries: int | None = 2000
    approximate: str | Sequence[str] | None = "auto"
    baselines: str | Sequence[str] | None = "auto"
    hnsw_ms: Sequence[int] = HNSW_MS
    hnsw_ef_constructions: Sequence[int] = HNSW_EF_CONSTRUCTIONS
    ivf_nprobes: Sequence[int] = IVF_NPROBES
    ivf_coarse_sizes: Sequence[int] | None = None
    middle_sizes: Sequence[int] | None = None
    middle_formats: Sequence[str] = MIDDLE_FORMATS
    score_gaps: bool = True

    def with_options(self, options: dict[str, Any]) -> TuneSettings:
        """These settings with some fields replaced (the keywords of `tune_funnel`); an unknown one is a
        ``TypeError`` naming it and the valid ones."""
        names = [f.name for f in dataclasses.fields(self)]
        for key in options:
            if key not in names:
                raise TypeError(f"{key}={options[key]!r}: not a tuning setting; expected some of {', '.join(names)}")
        return dataclasses.replace(self, **options) if options else self

    def resolved(self, n: int, dim: int) -> TuneSettings:
        """Checked against an ``[n, dim]`` database (one-line ``ValueError`` naming the field), with the defaults
        filled in: sizes, shortlists and rerank sizes sorted unique ints, ``approximate`` the tuple of indexes to
        try."""
        k, metric, formats = self.k, self.metric, self.formats
        if not _is_int(k) or not 1 <= k <= n:
            raise ValueError(f"k={k!r}: must be an integer in 1..{n} (the database size)")
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r}: expected one of {', '.join(METRICS)}")
        if not formats or any(f not in FORMATS for f in formats):
            raise ValueError(f"formats={list(formats)!r}: expected some of {', '.join(FORMATS)}")
        sizes = self.sizes
        if sizes is None:
            sizes = sorted({*(m for m in DEFAULT_SIZES if m < dim), dim})
        rerank_sizes = [dim] if self.rerank_sizes is None else self.rerank_sizes
        shortlists = self.shortlists
        if shortlists is None:
            shortlists = sorted({min(k * f, n) for f in SHORTLIST_FACTORS})
        for name, values in (("sizes", sizes), ("rerank_sizes", rerank_sizes)):
            if not values or any(not _is_int(m) or not 1 <= m <= dim for m in values):
                raise ValueError(f"{name}={list(values)!r}: prefix sizes in 1..{dim} (the embedding width)")
        if not shortlists or any(not _is_int(c) or not k <= c <= n for c in shortlists):
            raise ValueError(f"shortlists={list(shortlists)!r}: candidate counts in {k}..{n} (k to the database size)")
        holdout, budget, repeats = self.holdout, self.max_first_stage_bytes, self.repeats
        if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout < 1:
            raise ValueError(
                f"holdout={holdout!r}: the share of the queries kept aside to confirm the choice, in [0, 1)"
            )
        if budget is not None and (not _is_int(budget) or budget < 1):
            raise ValueError(f"max_first_stage_bytes={budget!r}: a positive number of bytes per item, or None")
        if not _is_int(repeats) or repeats < 1:
            raise ValueError(f"repeats={repeats!r}: a positive number of timed rounds")
        middle_sizes, middle_formats = self._middle_stages(dim)
        for name in ("hnsw_ms", "hnsw_ef_constructions", "ivf_nprobes"):
            values = getattr(self, name)
            if not values or any(not _is_int(v) or v < (2 if name == "hnsw_ms" else 1) for v in values):
                raise ValueError(f"{name}={list(values)!r}: positive integers (graph degrees >= 2, lists probed >= 1)")
        return dataclasses.replace(
            self,
            sizes=tuple(sorted({int(m) for m in sizes})),
            shortlists=tuple(sorted({int(c) for c in shortlists})),
            rerank_sizes=tuple(sorted({int(m) for m in rerank_sizes})),
            middle_sizes=middle_sizes,
            middle_formats=middle_formats,
            approximate=_approximate(self.approximate, n),
            baselines=_baselines(self.baselines, n),
        )

    def _middle_stages(self, dim: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """The middle stages to try (sizes, formats), checked; ``score_gaps`` and ``ivf_coarse_sizes`` checked too."""
        coarse = self.ivf_coarse_sizes
        if coarse is not None and any(not _is_int(c) or not 1 <= c <= dim for c in coarse):
            raise ValueError(f"ivf_coarse_sizes={list(coarse)!r}: prefix sizes in 1..{dim}, or () for none")
        middle_sizes = self.middle_sizes
        if middle_sizes is None:
            middle_sizes = [m for m in (dim // 8, dim // 4) if m >= 1]
        if any(not _is_int(m) or not 1 <= m < dim for m in middle_sizes):
            raise ValueError(f"middle_sizes={list(middle_sizes)!r}: middle stage sizes in 1..{dim - 1}, or ()")
        if isinstance(self.middle_formats, str) or any(f not in MIDDLE_FORMATS for f in self.middle_formats):
            raise ValueError(
                f"middle_formats={self.middle_formats!r}: some of {', '.join(MIDDLE_FORMATS)}, or () for none"
            )
        if not isinstance(self.score_gaps, bool):
            raise ValueError(f"score_gaps={self.score_gaps!r}: True or False")
        return tuple(sorted({int(m) for m in middle_sizes})), tuple(dict.fromkeys(self.middle_formats))

    def fits(self, row: dict[str, Any]) -> bool:
        """Whether a funnel's row fits ``max_first_stage_bytes``."""
        return self.max_first_stage_bytes is None or row["first_stage_bytes"] <= self.max_first_stage_bytes


def _approximate(value: Any, n: int) -> tuple[str, ...]:
    """The approximate first-stage indexes to try: ``"auto"`` is HNSW from `HNSW_MIN_ITEMS` items on."""
    if isinstance(value, str) and value == "auto":
        return APPROXIMATE if n >= HNSW_MIN_ITEMS else ()
    names = [value] if isinstance(value, str) else value
    ok = names is None or (
        isinstance(names, (list, tuple)) and all(isinstance(a, str) and a in APPROXIMATE for a in names)
    )
    if not ok:
        shown = list(value) if isinstance(value, (list, tuple)) else value
        raise ValueError(
            f"approximate={shown!r}: expected 'auto' (hnsw and ivf from {HNSW_MIN_ITEMS} items), () for none, or "
            f"some of {', '.join(APPROXIMATE)}"
        )
    return tuple(dict.fromkeys(names or ()))


def _baselines(value: Any, n: int) -> tuple[str, ...]:
    """The full-width indexes to tune beside the funnels: ``"auto"`` is all of them from `HNSW_MIN_ITEMS` items."""
    if isinstance(value, str) and value == "auto":
        return tuple(BASELINES) if n >= HNSW_MIN_ITEMS else ()
    names = [value] if isinstance(value, str) else value
    if not (names is None or (isinstance(names, (list, tuple)) and all(b in BASELINES for b in names))):
        shown = list(value) if isinstance(value, (list, tuple)) else value
        raise ValueError(
            f"baselines={shown!r}: expected 'auto' (all from {HNSW_MIN_ITEMS} items), () for none, or some of "
            f"{', '.join(BASELINES)}"
        )
    return tuple(dict.fromkeys(names or ()))


# --------------------------------------------------------------------------------------------- recall
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
            scores = scores_by_idx(self.queries[rows], self.full, found_ids, self.l2)
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
    exact = scores_by_idx(q, full, exact_ids, l2)
    kth = exact.max(axis=1) if l2 else exact.min(axis=1)
    q_norm = np.sqrt(row_sq_norms(q, 0))
    x_norm = float(np.sqrt(row_sq_norms(full, 0).max()))
    scale = (q_norm + x_norm) ** 2 if l2 else q_norm * x_norm
    return _Truth(full, q, kth, RECALL_TOLERANCE * np.maximum(scale, 1e-12), l2, exact_ids.shape[1])


def recall_against_exact(
    database: np.ndarray, queries: np.ndarray, found_ids: np.ndarray, k: int, metric: str = "cosine"
) -> float:
    """Mean recall@k of ``found_ids`` (``[Q, >=k]`` database rows per query) against exact full-width search,
    ties with the k-th neighbour counted as hits (see the module docstring)."""
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
    baselines: list[TunedBaseline] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        """Exact full-width search time over the chosen funnel's, measured side by side."""
        return self.exact_ms_per_query / self.ms_per_query if self.ms_per_query > 0 else float("nan")

    def baseline(self, kind: str) -> TunedBaseline | None:
        """The full-width ``kind`` index (``hnsw``, ``ivf``) tuned to the same target in the same run, if any."""
        return next((b for b in self.baselines if b.kind == kind), None)

    def speedup_vs(self, kind: str = "hnsw") -> float:
        """The tuned full-width ``kind`` index's time over the chosen funnel's, timed in the same rounds (NaN
        without it)."""
        b = self.baseline(kind)
        return b.ms_per_query / self.ms_per_query if b is not None and self.ms_per_query > 0 else float("nan")

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
            **{
                f"{b.kind}_{key}": value
                for b in self.baselines
                for key, value in b.summary().items()
                if key in ("setting", "holdout_recall", "ms_per_query", "build_seconds", "index_bytes")
            },
            **{f"speedup_vs_{b.kind}": self.speedup_vs(b.kind) for b in self.baselines},
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary, the funnel as data, the notes and the whole table."""
        return {
            **self.summary(),
            "funnel_data": self.funnel.to_dict(),
            "notes": list(self.notes),
            "table": self.table,
            "baselines": [b.summary() for b in self.baselines],
        }

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
            f'  make search ARGS="{" ".join(self.funnel.cli_args())}"'
            + (f" (with the index's defaults, not {dict(self.funnel.options)})" if self.funnel.options else ""),
        ]
        for b in self.baselines:
            lines.append(f"  against {b} ({self.speedup_vs(b.kind):.2f}x)")
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])


# --------------------------------------------------------------------------------------------- tuning
@dataclass
class Tuning:
    """One tuning problem, set up by step 1: the database, the resolved `TuneSettings`, the queries (the tuning
    ones first, ``tune_idx``, then the held-out ones, ``hold_idx``), the exact search and its ground truth, and the
    prefix arrays and indexes every funnel built shares (``cache``, `AdaptiveRetriever`'s ``prefix_cache``)."""

    db: np.ndarray
    settings: TuneSettings
    targets: list[float]
    queries: np.ndarray
    tune_idx: np.ndarray
    hold_idx: np.ndarray
    exact: AdaptiveRetriever
    exact_ids: np.ndarray
    truth: _Truth
    cache: dict
    notes: list[str]
    baseline_ms: dict[tuple[str, int], float] = field(default_factory=dict)  # (kind, value) -> ms/query, step 3

    @property
    def n(self) -> int:
        return self.db.shape[0]

    @property
    def dim(self) -> int:
        return self.db.shape[1]

    @property
    def q_tune(self) -> np.ndarray:
        return self.queries[self.tune_idx]

    @property
    def top_target(self) -> float:
        return max(self.targets)

    def recall(self, found_ids: np.ndarray, found_full_scores: np.ndarray | None = None) -> float:
        """Mean recall@k of ``found_ids`` (``[tuning queries, >=k]``) against the ground truth."""
        return float(self.truth.hits(self.tune_idx, found_ids, found_full_scores).mean())


@dataclass
class ScoredGrid:
    """The funnels scored so far, one `funnel_row` each (exact search first), and the cheapest MFLOPs among the
    funnels meeting the highest target within the bytes budget (the yardstick of the `COST_SLACK` skip rule)."""

    settings: TuneSettings
    top_target: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    best_mflops: float = float("inf")

    def add_funnel(self, funnel: Funnel, n: int, recall: float, mflops: float | None = None) -> dict[str, Any]:
        """Add `funnel_row` of ``funnel`` and return it (a scorer may add fields to it)."""
        row = funnel_row(funnel, n, recall, mflops)
        self.add(row)
        return row

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if row["recall"] >= self.top_target and self.settings.fits(row) and row["index"] != "hnsw":
            # a graph's few distance computations are random reads: its MFLOPs say little of its time
            self.best_mflops = min(self.best_mflops, row["mflops_per_query"])


def funnel_row(funnel: Funnel, n: int, recall: float, mflops: float | None = None) -> dict[str, Any]:
    """One row of the table: a funnel over ``n`` items, its recall, MFLOPs per query (``mflops``, else the flat
    scan's count), bytes per item; ``ms_per_query`` filled in where it is timed."""
    return {
        "funnel": str(funnel),
        "format": funnel.format,
        "index": funnel.index,
        "metric": funnel.metric,
        "stages": [list(s) for s in funnel.stages],
        "options": dict(funnel.options),
        "middle": funnel.middle,
        "gap": funnel.gap,
        "recall": float(recall),
        "mflops_per_query": funnel.mflops_per_query(n) if mflops is None else float(mflops),
        "first_stage_bytes": funnel.first_stage_bytes(),
        "bytes_per_item": funnel.bytes_per_item(),
        "ms_per_query": None,
        "chosen": False,
    }


def _structure(row: dict) -> tuple:
    """What a funnel is apart from its shortlist (and, for one stage, its size): the larger of two such is slower."""
    options = tuple(sorted((k, v) for k, v in (row.get("options") or {}).items() if k != "ef_search"))
    stages, kind = row["stages"], (row["format"], row.get("index"), options)
    if len(stages) == 1:
        return kind
    shortlist = () if row.get("gap") is None else ("gap", stages[0][1])  # each cap its own structure
    return (*kind, stages[0][0], tuple(m for m, _ in stages[1:]), row.get("middle", "float"), *shortlist)


def _cost_key(row: dict) -> tuple:
    """Within a structure, the cheaper of two funnels: the shorter shortlist (two stages), the smaller gap (a
    shortlist sized per query), the fewer MFLOPs (three stages: two counts trade against each other)."""
    stages = row["stages"]
    if len(stages) > 2:
        return (row["mflops_per_query"],)
    if row.get("gap") is not None:
        return (row["gap"],)
    return (stages[0][1], stages[0][0]) if len(stages) > 1 else (stages[0][0],)


# ------------------------------------------------------------------ step 1: the queries and the ground truth
def split_queries(queries: np.ndarray, settings: TuneSettings, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(tune_rows, hold_rows)``: query rows (each sorted) that tune the funnel and that confirm it, a seeded
    ``holdout`` share of at most ``max_queries`` (at least one tuning query); ``notes`` says what was left out."""
    order = np.random.default_rng(settings.seed).permutation(len(queries))
    if settings.max_queries is not None and len(order) > settings.max_queries:
        notes.append(f"{settings.max_queries} of the {len(order)} queries used (max_queries)")
        order = order[: settings.max_queries]
    n_hold = min(int(round(len(order) * settings.holdout)), len(order) - 1)
    if n_hold == 0:
        notes.append("no held-out queries: the target is confirmed on the tuning queries only")
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def exact_ground_truth(
    db: np.ndarray, queries: np.ndarray, settings: TuneSettings, cache: dict
) -> tuple[AdaptiveRetriever, np.ndarray, _Truth]:
    """``(exact, exact_ids, truth)``: exact full-width search (a funnel of one stage, built over ``cache``), its
    top k of every query, and the ground truth recall is counted against."""
    exact = Funnel(((db.shape[1], settings.k),), "float", settings.metric).build(db, prefix_cache=cache)
    _, exact_ids = exact.search(queries, settings.k)
    return exact, exact_ids, _truth(db, queries, exact_ids, settings.metric, cache)


def _set_up(db: np.ndarray, queries: np.ndarray, targets: list[float], settings: TuneSettings) -> Tuning:
    notes: list[str] = []
    tune_rows, hold_rows = split_queries(queries, settings, notes)
    q = np.ascontiguousarray(queries[np.concatenate([tune_rows, hold_rows])], dtype=np.float32)
    cache: dict = {}
    exact, exact_ids, truth = exact_ground_truth(db, q, settings, cache)
    return Tuning(
        db=db,
        settings=settings,
        targets=targets,
        queries=q,
        tune_idx=np.arange(len(tune_rows)),
        hold_idx=np.arange(len(tune_rows), len(q)),
        exact=exact,
        exact_ids=exact_ids,
        truth=truth,
        cache=cache,
        notes=notes,
    )


# ------------------------------------------------------------------ step 2: every funnel of the grid, scored
def score_exact_scans(tuning: Tuning, grid: ScoredGrid) -> list[str]:
    """One- and two-stage funnels over exact first-stage scans in every format (see the module docstring); one
    first-stage search with the largest shortlist serves every shortlist. Returns the note on skipped stages."""
    s, db, n, dim = tuning.settings, tuning.db, tuning.n, tuning.dim
    k, metric, q_tune = s.k, s.metric, tuning.q_tune
    l2 = metric == "l2"
    stage_arrays, q_stage = {}, {}
    for m in s.rerank_sizes:
        stage_arrays[m], q_stage[m] = stage_data(tuning, m, "float")
    cmax = max(s.shortlists)
    skipped = 0
    for fmt in s.formats:
        for m1 in s.sizes:
            if fmt == "bits" and m1 == dim:
                continue  # bits need a float stage after them
            if funnel_mflops(n, ((m1, k),), FORMATS[fmt]) > COST_SLACK * grid.best_mflops:
                skipped += 1  # its scan alone costs several times a funnel that already meets every target
                continue
            if fmt == "float" and m1 == dim:
                first = tuning.exact
            else:
                stages = ((m1, cmax), (dim, k)) if m1 < dim else ((m1, cmax),)
                first = Funnel(stages, fmt, metric).build(db, prefix_cache=tuning.cache)
            _, cand = first.shortlist(q_tune, cmax)
            if fmt != "bits" and not (fmt == "float" and m1 == dim):
                grid.add(funnel_row(Funnel(((m1, k),), fmt, metric), n, tuning.recall(cand)))
            for m2 in s.rerank_sizes:
                if m2 <= m1:
                    continue
                scores = np.empty((len(q_tune), 0), dtype=np.float32)
                for c in s.shortlists:
                    new = scores_by_idx(q_stage[m2], stage_arrays[m2], cand[:, scores.shape[1] : c], l2)
                    scores = np.concatenate([scores, new], axis=1)
                    top = np.argpartition(scores if l2 else -scores, k - 1, axis=1)[:, :k]
                    found = np.take_along_axis(cand[:, :c], top, axis=1)
                    found_scores = np.take_along_axis(scores, top, axis=1) if m2 == dim else None
                    recall = tuning.recall(found, found_scores)
                    grid.add(funnel_row(Funnel(((m1, c), (m2, k)), fmt, metric), n, recall))
                    if recall >= grid.top_target:
                        break  # larger shortlists of this structure only cost more
    if not skipped:
        return []
    return [
        f"{skipped} first stages not tried: their scan alone costs over {COST_SLACK:g}x the MFLOPs of a funnel "
        f"already reaching recall {grid.top_target}"
    ]


def approximate_sizes(s: TuneSettings, index: str, widest: int, dim: int) -> list[int]:
    """The prefix sizes an approximate first stage (``index``) is tried at: of ``s.sizes``, at most ``widest`` and
    below the width ``dim``, within ``s.max_first_stage_bytes``, smallest first (as listed)."""
    budget = s.max_first_stage_bytes
    return [
        m
        for m in s.sizes
        if m <= widest and m < dim and (budget is None or first_stage_bytes(m, index, s.metric) <= budget)
    ]


def score_hnsw_first_stages(tuning: Tuning, grid: ScoredGrid) -> list[str]:
    """HNSW first stages (with ``"hnsw"`` in ``approximate``: float prefixes of at most `HNSW_MAX_SIZE`, below
    the width, within the bytes budget), smallest first, one graph per degree of ``hnsw_ms`` and build beam of
    ``hnsw_ef_constructions``: each graph is built
    once (shared through the cache), then every shortlist ``c`` is searched as the built funnel will search it,
    with ``efSearch = c``, reranked, and counted (no shortlist is read off a larger search: HNSW's top ``c``
    depends on its beam). Stops at the first size meeting the highest target with a shortlist of at most
    `HNSW_ENOUGH` ``* k``. Returns the notes (build times)."""
    s, n, dim = tuning.settings, tuning.n, tuning.dim
    if "hnsw" not in s.approximate:
        return []
    k = s.k
    built = []
    for m1 in approximate_sizes(s, "hnsw", HNSW_MAX_SIZE, dim):
        met = False
        for degree, beam in [(d, b) for d in s.hnsw_ms for b in s.hnsw_ef_constructions]:
            options = {"hnsw_m": degree, **({"ef_construction": beam} if beam != HNSW_DEFAULT_BEAM else {})}
            for m2 in [m for m in s.rerank_sizes if m > m1]:
                for c in s.shortlists:
                    funnel = Funnel(((m1, c), (m2, k)), "float", s.metric, "hnsw", options)
                    start = time.perf_counter()
                    retriever = funnel.build(tuning.db, prefix_cache=tuning.cache)
                    if not built or built[-1][:3] != (m1, degree, beam):
                        built.append((m1, degree, beam, time.perf_counter() - start))
                    _, found = retriever.search(tuning.q_tune, k)
                    recall = tuning.recall(found)
                    grid.add(funnel_row(funnel, n, recall, retriever.mflops_per_query()))
                    if recall >= grid.top_target:
                        met = met or c <= HNSW_ENOUGH * k
                        break  # larger shortlists of this structure only cost more
        if met:
            break  # a short shortlist is enough: a wider graph costs more to build and to walk
    if not built:
        return []
    sizes_built = ", ".join(f"{m}-d M {d} efConstruction {b} in {t:.1f}s" for m, d, b, t in built)
    return [f"HNSW first stages (efSearch = the shortlist) built at {sizes_built}"]


def score_ivf_first_stages(tuning: Tuning, grid: ScoredGrid) -> list[str]:
    """IVF first stages (AdANNS-IVF; with ``"ivf"`` in ``approximate``): inverted lists (``4 sqrt(N)``, k-means)
    scanned on float prefixes of at most `IVF_MAX_SIZE`, below the width, smallest first, each with its lists
    assigned on its own prefix and on each of `_coarse_sizes` (`mrl.retrieval.prefix_ivf`: the lists chosen on one
    prefix, scanned on another). The lists are trained once per pair of sizes; for each ``nprobe`` of
    ``ivf_nprobes`` (raised in order) one search with the largest shortlist serves every ``c`` (within the probed
    lists the search is exact: its first ``c`` are its top ``c``), reranked at each rerank size; probes stop rising
    once a shortlist meets the highest target, scan sizes once that shortlist is at most `HNSW_ENOUGH` ``* k``.
    Returns the notes (training times)."""
    s, dim = tuning.settings, tuning.dim
    if "ivf" not in s.approximate:
        return []
    trained: list = []
    for m1 in approximate_sizes(s, "ivf", IVF_MAX_SIZE, dim):
        met_short = False
        for coarse in _coarse_sizes(s, m1, dim):
            met_short = _score_ivf(tuning, grid, m1, coarse, trained) or met_short
        if met_short:
            break
    if not trained:
        return []
    sizes = ", ".join(
        f"{m}-d" + (f" on lists of the first {c}" if c != m else "") + f" ({nlist} lists) in {seconds:.1f}s"
        for m, c, nlist, seconds in trained
    )
    return [f"IVF first stages trained at {sizes}"]


def _coarse_sizes(s: TuneSettings, m1: int, dim: int) -> list[int]:
    """The prefixes an IVF first stage scanning ``m1`` coordinates has its lists assigned on: ``m1`` itself first,
    then ``ivf_coarse_sizes`` (default: half and twice ``m1``) within the width."""
    others = (m1 // 2, 2 * m1) if s.ivf_coarse_sizes is None else s.ivf_coarse_sizes
    return list(dict.fromkeys([m1, *(c for c in others if 1 <= c <= dim)]))


def _score_ivf(tuning: Tuning, grid: ScoredGrid, m1: int, coarse: int, trained: list) -> bool:
    """The IVF first stage scanning ``m1`` coordinates of lists assigned on ``coarse``, probes raised (see
    `score_ivf_first_stages`); whether a shortlist of at most `HNSW_ENOUGH` ``* k`` met the highest target."""
    s, n, dim = tuning.settings, tuning.n, tuning.dim
    k, q_tune, cmax = s.k, tuning.q_tune, max(s.shortlists)
    l2 = s.metric == "l2"
    met_short = False
    for nprobe in s.ivf_nprobes:
        options = {"nprobe": nprobe, **({"coarse_size": coarse} if coarse != m1 else {})}
        funnel = Funnel(((m1, cmax), (dim, k)), "float", s.metric, "ivf", options)
        start = time.perf_counter()
        retriever = funnel.build(tuning.db, prefix_cache=tuning.cache)
        nlist = retriever.index.nlist
        if not trained or trained[-1][:2] != (m1, coarse):
            trained.append((m1, coarse, nlist, time.perf_counter() - start))
        if nprobe > nlist:
            break
        _, cand = retriever.shortlist(q_tune, cmax)
        met = False
        for m2 in [m for m in s.rerank_sizes if m > m1]:
            arr, q2 = stage_data(tuning, m2, "float")
            for c in s.shortlists:
                found, found_scores = best_by_score(q2, arr, cand[:, :c], k, l2)
                recall = tuning.recall(found, found_scores if m2 == dim else None)
                row_funnel = Funnel(((m1, c), (m2, k)), "float", s.metric, "ivf", options)
                row = funnel_row(row_funnel, n, recall)
                first = nlist * coarse + nprobe * (n / nlist) * m1
                row["mflops_per_query"] = funnel_mflops(n, row_funnel.stages, "ivf", first)
                grid.add(row)
                if recall >= grid.top_target:
                    met, met_short = True, met_short or c <= HNSW_ENOUGH * k
                    break  # larger shortlists of this structure only cost more
        if met:
            break  # more probes only cost more
    return met_short


# The kinds of funnel the grid holds, scored in this order (an exact scan's MFLOPs bound the later ones' skip rule).
GRID_SCORERS: tuple[Callable[[Tuning, ScoredGrid], list[str]], ...] = (
    score_exact_scans,
    score_hnsw_first_stages,
    score_ivf_first_stages,
    score_three_stages,  # these two extend the two-stage funnels the scorers above found meeting the target
    score_gap_shortlists,
)


def score_grid(tuning: Tuning) -> ScoredGrid:
    """Every funnel of the grid scored on the tuning queries: exact search first, then each of `GRID_SCORERS`
    (their notes go to ``tuning.notes``)."""
    grid = ScoredGrid(tuning.settings, tuning.top_target)
    exact_funnel = Funnel(((tuning.dim, tuning.settings.k),), "float", tuning.settings.metric)
    grid.add(funnel_row(exact_funnel, tuning.n, tuning.recall(tuning.exact_ids[tuning.tune_idx])))
    for scorer in GRID_SCORERS:
        tuning.notes.extend(scorer(tuning, grid))
    return grid


def sweep_baselines(tuning: Tuning) -> list[BaselineSweep]:
    """Step 2b: each full-width index of ``settings.baselines`` built and its knob's ladder scored on the tuning
    queries, as the funnels are (`mrl.retrieval.baselines`); notes say what was built."""
    s = tuning.settings
    sweeps = []
    for kind in s.baselines:
        sweep = sweep_baseline(kind, tuning.truth.full, s.metric, tuning.recall, tuning.q_tune, s.k, tuning.top_target)
        tried = ", ".join(f"{v}: {r:.4f}" for v, r in sweep.recalls.items())
        tuning.notes.append(
            f"baseline {BASELINES[kind].describe}: built in {sweep.build_seconds:.1f}s, "
            f"{sweep.index_bytes / 2**20:.1f} MiB; recall by {sweep.knob}: {tried}"
        )
        sweeps.append(sweep)
    return sweeps


# ------------------------------------------------------------------ step 3: the cheapest candidates, timed
def time_side_by_side(retrievers: dict, queries: np.ndarray, k: int, repeats: int) -> dict:
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


def _grown(row: dict) -> bool:
    """A funnel `mrl.retrieval.tune_stages` grew from a two-stage one: three stages, or a gap-sized shortlist."""
    return len(row["stages"]) > 2 or row.get("gap") is not None


def _cheapest_meeting(rows: list[dict], target: float, settings: TuneSettings) -> list[int]:
    """Rows of the cheapest funnel of each structure that meets ``target`` within the budget. A grown funnel (three
    stages, a gap) spends more time per multiply-add than the others (a gather, a cut), so it is a candidate only
    where it needs fewer MFLOPs than every other funnel meeting the target (HNSW's aside: a graph's MFLOPs say
    little of its time); timing every one cost more than the rest of the tuning on small databases."""
    meeting = [r for r in rows if r["recall"] >= target and settings.fits(r)]
    floor = min(
        (r["mflops_per_query"] for r in meeting if not _grown(r) and r["index"] != "hnsw"), default=float("inf")
    )
    best: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        if _grown(row) and row["mflops_per_query"] >= floor:
            continue
        if row["recall"] >= target and settings.fits(row):
            key = _structure(row)
            if key not in best or _cost_key(row) < _cost_key(rows[best[key]]):
                best[key] = i
    return sorted(best.values())


def _best_within_budget(rows: list[dict], settings: TuneSettings) -> list[int]:
    """Where nothing meets the target within the budget: the rows of the best recall within it."""
    within = [i for i, row in enumerate(rows) if settings.fits(row)]
    if not within:
        raise ValueError(
            f"max_first_stage_bytes={settings.max_first_stage_bytes}: no funnel tried fits it (the smallest first "
            f"stage takes {min(r['first_stage_bytes'] for r in rows)} bytes per item)"
        )
    top = max(rows[i]["recall"] for i in within)
    return [i for i in within if rows[i]["recall"] == top]


def time_cheapest_candidates(
    tuning: Tuning, grid: ScoredGrid, sweeps: Sequence[BaselineSweep] = ()
) -> tuple[dict[float, list[int]], dict[int, AdaptiveRetriever]]:
    """``(candidates per target, retriever per timed row)``: the cheapest funnels of each structure meeting each
    target (the best recall within the budget where none does), built and timed side by side with exact search
    (row 0); their ``ms_per_query`` is filled in. Each full-width baseline of ``sweeps`` at its setting for each
    target is timed in the same rounds (``tuning.baseline_ms``)."""
    rows = grid.rows
    chosen_sets = {t: _cheapest_meeting(rows, t, tuning.settings) for t in tuning.targets}
    for t, chosen in chosen_sets.items():
        if not chosen:  # nothing fits the budget and meets the target: the best recall within the budget
            chosen_sets[t] = _best_within_budget(rows, tuning.settings)
    to_time = sorted({i for chosen in chosen_sets.values() for i in chosen} | {0})
    retrievers = {
        i: tuning.exact if i == 0 else Funnel.from_dict(rows[i]).build(tuning.db, prefix_cache=tuning.cache)
        for i in to_time
    }
    baselines = {
        (sweep.kind, value): sweep.setting(value)
        for sweep in sweeps
        for value in {sweep.smallest_meeting(t) for t in tuning.targets}
    }
    ms = time_side_by_side({**retrievers, **baselines}, tuning.q_tune, tuning.settings.k, tuning.settings.repeats)
    for i in retrievers:
        rows[i]["ms_per_query"] = ms[i]
    tuning.baseline_ms.update({key: ms[key] for key in baselines})
    return chosen_sets, retrievers


# ------------------------------------------------------------------ step 4: the fastest, confirmed
def confirm_fastest(
    tuning: Tuning, grid: ScoredGrid, target: float, chosen: list[int], retrievers: dict[int, AdaptiveRetriever]
) -> TunedFunnel:
    """The fastest timed funnel meeting ``target`` (every funnel timed can win, exact search too, not only those
    timed for it; ``chosen`` where none does), searched on every query: its recall on the tuning and the held-out
    ones."""
    rows, s = grid.rows, tuning.settings
    eligible = [i for i in retrievers if rows[i]["recall"] >= target and s.fits(rows[i])] or chosen
    pick = min(eligible, key=lambda i: (rows[i]["ms_per_query"], rows[i]["mflops_per_query"]))
    retriever = retrievers[pick]
    _, ids = retriever.search(tuning.queries, s.k)
    recall = float(tuning.truth.hits(tuning.tune_idx, ids[tuning.tune_idx]).mean())
    hold_idx = tuning.hold_idx
    held = float(tuning.truth.hits(hold_idx, ids[hold_idx]).mean()) if len(hold_idx) else None
    notes = list(tuning.notes)
    if recall < target:
        notes.append(
            f"no funnel tried reaches recall {target} within max_first_stage_bytes={s.max_first_stage_bytes}; "
            f"the best within it is {recall:.4f}"
        )
    return TunedFunnel(
        target=target,
        k=s.k,
        metric=s.metric,
        funnel=Funnel.from_dict(rows[pick]),
        retriever=retriever,
        table=[{**row, "chosen": i == pick} for i, row in enumerate(rows)],
        recall=recall,
        holdout_recall=held,
        tuning_queries=len(tuning.tune_idx),
        holdout_queries=len(hold_idx),
        ms_per_query=rows[pick]["ms_per_query"],
        exact_ms_per_query=rows[0]["ms_per_query"],
        mflops_per_query=rows[pick]["mflops_per_query"],
        first_stage_bytes=rows[pick]["first_stage_bytes"],
        bytes_per_item=rows[pick]["bytes_per_item"],
        max_first_stage_bytes=s.max_first_stage_bytes,
        notes=notes,
    )


def confirm_baselines(tuning: Tuning, sweeps: Sequence[BaselineSweep], target: float) -> list[TunedBaseline]:
    """Each baseline at the smallest setting meeting ``target`` on the tuning queries, searched on the held-out
    ones too (timed by step 3)."""
    out = []
    hold_idx = tuning.hold_idx
    for sweep in sweeps:
        value = sweep.smallest_meeting(target)
        retriever = sweep.setting(value)
        held = None
        if len(hold_idx):
            _, ids = retriever.search(tuning.queries[hold_idx], tuning.settings.k)
            held = float(tuning.truth.hits(hold_idx, ids).mean())
        out.append(
            TunedBaseline(
                kind=sweep.kind,
                target=target,
                knob=sweep.knob,
                value=value,
                recall=sweep.recalls[value],
                holdout_recall=held,
                ms_per_query=tuning.baseline_ms[(sweep.kind, value)],
                build_seconds=sweep.build_seconds,
                index_bytes=sweep.index_bytes,
                retriever=retriever,
                sweep=dict(sweep.recalls),
            )
        )
    return out


# ------------------------------------------------------------------ the entry points
def _check_inputs(db: np.ndarray, q: np.ndarray, targets: list[Any]) -> None:
    if db.ndim != 2 or db.shape[0] == 0:
        raise ValueError(f"database.shape={db.shape}: expected a non-empty [N, D] array")
    if q.ndim != 2 or q.shape[1] != db.shape[1] or q.shape[0] == 0:
        raise ValueError(f"queries.shape={q.shape}: expected [Q, {db.shape[1]}] with Q > 0 (the database's width)")
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
            raise ValueError(f"target={t!r}: a recall@k to reach, in (0, 1], e.g. 0.99")


def tune_funnels(
    database: np.ndarray,
    queries: np.ndarray,
    targets: Sequence[float] = (0.99,),
    *,
    settings: TuneSettings | None = None,
    **options: Any,
) -> list[TunedFunnel]:
    """`tune_funnel` for several targets at once: the grid is scored and timed once, one `TunedFunnel` per target
    (in the order given; they share the table). ``settings`` and ``options`` (`TuneSettings` fields, which replace
    those of ``settings``) as in `tune_funnel`."""
    settings = (settings or TuneSettings()).with_options(options)
    require_faiss()
    db = np.asarray(database)
    q_all = np.asarray(queries)
    if q_all.ndim == 1:
        q_all = q_all[None, :]
    targets = list(targets)
    if not targets:
        raise ValueError("targets=[]: give at least one recall target, e.g. [0.99]")
    n, dim = (db.shape[0], db.shape[1]) if db.ndim == 2 else (0, 0)
    _check_inputs(db, q_all, targets)
    settings = settings.resolved(n, dim)
    tuning = _set_up(db, q_all, [float(t) for t in targets], settings)  # 1.
    grid = score_grid(tuning)  # 2.
    sweeps = sweep_baselines(tuning)  # 2b.
    chosen_sets, retrievers = time_cheapest_candidates(tuning, grid, sweeps)  # 3.
    results = [confirm_fastest(tuning, grid, t, chosen_sets[t], retrievers) for t in tuning.targets]  # 4.
    for result in results:
        result.baselines = confirm_baselines(tuning, sweeps, result.target)
    return results


def tune_funnel(
    database: np.ndarray,
    queries: np.ndarray,
    target: float = 0.99,
    *,
    settings: TuneSettings | None = None,
    **options: Any,
) -> TunedFunnel:
    """The fastest funnel (measured) whose recall@k against exact full-width search reaches ``target``.

    Args:
        database: ``[N, D]`` embeddings to search (float; never modified).
        queries: ``[Q, D]`` sample queries, of the kind the funnel will serve; a ``holdout`` share of them only
            confirms the choice.
        target: recall@k to reach, in (0, 1].
        settings: what to try and how to measure it (`TuneSettings`; default: its defaults).
        options: `TuneSettings` fields as keywords (``k=10, formats=("float", "int8")``), replacing those of
            ``settings``.

    Returns a `TunedFunnel`: ``.retriever`` ready to ``.search(queries, k)``, ``.funnel``, ``.table``. See the
    module docstring for how it is chosen.
    """
    return tune_funnels(database, queries, [target], settings=settings, **options)[0]
