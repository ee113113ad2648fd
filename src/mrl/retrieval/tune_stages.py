"""Two more kinds of funnel for the tuner's grid (`mrl.retrieval.tune.GRID_SCORERS`), each grown from a two-stage
funnel the earlier scorers found meeting the highest target: the first stage (an exact scan in any format, or IVF
on a prefix) is searched once, and every variant below is scored on its shortlist.

* `score_three_stages`: a middle stage between the shortlist and the full-width rerank, at each of
  ``middle_sizes`` in each of ``middle_formats`` (float32, fp16, int8: `mrl.retrieval.compact`). Tried where the
  two-stage funnel needs a shortlist longer than `LONG_SHORTLIST` ``* k``: a middle stage only pays by sparing the
  last stage most of a long shortlist (on a short one the last stage's pruning head, its first m/8 coordinates
  scored first, already is a cheap middle stage). Shortlists ``c_1`` up to the next one above the two-stage
  funnel's, each narrowed to the smallest ``c_2`` that meets the target.
* `score_gap_shortlists`: the shortlist sized per query from its own scores (`mrl.retrieval.funnel.cut_by_gap`):
  candidates within a gap of the query's k-th best first-stage score, at most ``cap`` of them, for the two-stage
  funnel's shortlist and the next larger as caps. The gaps tried are the median distances, over the tuning
  queries, from the k-th score to the t-th for counts t between k and the cap; the smallest gap meeting the target
  is kept. Its MFLOPs count the candidates kept on average.

Both score exactly as the built funnel searches (the same `CompactStage` codes, the same cut), so the recall the
grid records is the recall it serves; MFLOPs reuse the first stage's from its two-stage row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mrl.retrieval.compact import CompactStage
from mrl.retrieval.flat import prefix
from mrl.retrieval.funnel import best_by_score, cut_by_gap, scores_by_idx, top_k_lowest_ids
from mrl.retrieval.funnel_spec import Funnel
from mrl.retrieval.ties import NO_ID

if TYPE_CHECKING:
    from mrl.retrieval.tune import ScoredGrid, Tuning

__all__ = ["GAP_COUNTS", "LONG_SHORTLIST", "score_gap_shortlists", "score_three_stages"]

LONG_SHORTLIST = 5  # three stages are tried where two need a shortlist longer than k times this
GAP_COUNTS = 12  # gaps tried per cap: the medians at this many counts from k to the cap
SHORTLIST_FIRST_STAGES = ("flat", "int8", "binary", "ivf")  # one search with the longest shortlist serves every c


def _met_two_stage(grid: ScoredGrid, final: int | None = None) -> dict[tuple, dict[str, Any]]:
    """Per first stage (format, index, options, size) and rerank size, the two-stage row meeting the highest target
    with the shortest shortlist (flat, int8, binary or IVF first stages; fixed shortlists, float stages)."""
    best: dict[tuple, dict[str, Any]] = {}
    for row in grid.rows:
        stages = row["stages"]
        if len(stages) != 2 or row["index"] not in SHORTLIST_FIRST_STAGES or row["recall"] < grid.top_target:
            continue
        if row.get("gap") is not None or (final is not None and stages[1][0] != final):
            continue
        key = (row["format"], row["index"], tuple(sorted(row["options"].items())), stages[0][0], stages[1][0])
        if key not in best or stages[0][1] < best[key]["stages"][0][1]:
            best[key] = row
    return best


def _first_stage(tuning: Tuning, row: dict[str, Any], candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)``: the tuning queries' ``candidates`` best by the first stage of ``row``'s funnel."""
    funnel = Funnel.from_dict({**row, "stages": [[row["stages"][0][0], candidates], row["stages"][1]]})
    return funnel.build(tuning.db, prefix_cache=tuning.cache).shortlist(tuning.q_tune, candidates)


def stage_data(tuning: Tuning, m: int, fmt: str) -> tuple[np.ndarray | CompactStage, np.ndarray]:
    """A stage's data as `AdaptiveRetriever` builds it (through the shared cache) and the tuning queries' prefix."""
    normalize, l2 = tuning.settings.metric == "cosine", tuning.settings.metric == "l2"
    if (m, normalize) not in tuning.cache:
        tuning.cache[(m, normalize)] = prefix(tuning.db, m, normalize)
    data = tuning.cache[(m, normalize)]
    if fmt != "float":
        key = (fmt, int(m), normalize, l2)
        if key not in tuning.cache:
            tuning.cache[key] = CompactStage(data, fmt, l2=l2)
        data = tuning.cache[key]
    return data, prefix(tuning.q_tune, m, normalize)


def _scores(data: np.ndarray | CompactStage, q: np.ndarray, ids: np.ndarray, l2: bool) -> np.ndarray:
    return data.scores(q, ids) if isinstance(data, CompactStage) else scores_by_idx(q, data, ids, l2)


def _next_shortlists(shortlists: tuple[int, ...], c: int, more: int) -> list[int]:
    """``c`` and the next ``more`` shortlists of the grid above it."""
    return [c, *[v for v in shortlists if v > c][:more]]


def _first_mflops(row: dict[str, Any]) -> float:
    """The first stage's share of a two-stage row's MFLOPs (its shortlist's rerank taken off)."""
    (_, c1), (m2, _) = row["stages"]
    return row["mflops_per_query"] - c1 * m2 / 1e6


def _sort_key(ids: np.ndarray) -> np.ndarray:
    return np.where(ids < 0, NO_ID, ids)


def _by_id(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ids in increasing order (``-1`` last) with their scores: the order a built stage scores them in,
    so that equal scores keep the lowest ids as it does."""
    order = np.argsort(_sort_key(ids), axis=1, kind="stable")
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


def score_three_stages(tuning: Tuning, grid: ScoredGrid) -> list[str]:
    """Three-stage funnels (see the module docstring); returns a note on what was tried."""
    s = tuning.settings
    k, l2, final = s.k, s.metric == "l2", max(s.rerank_sizes)
    if not s.middle_formats:
        return []
    rows = [r for r in _met_two_stage(grid, final).values() if r["stages"][0][1] > LONG_SHORTLIST * k]
    tried = 0
    full_data, q_full = stage_data(tuning, final, "float")
    for row in rows:
        m1, c_star = row["stages"][0]
        firsts = _next_shortlists(s.shortlists, c_star, 1)
        _, cand = _first_stage(tuning, row, max(firsts))  # first-stage order: its top c1 are the first c1
        first_cost = _first_mflops(row)
        for m2 in [m for m in s.middle_sizes if m1 < m < final]:
            for fmt in s.middle_formats:
                data, q_mid = stage_data(tuning, m2, fmt)
                mid = _scores(data, q_mid, cand, l2)
                for c1 in firsts:
                    ids_c1, mid_c1 = _by_id(cand[:, :c1], mid[:, :c1])
                    for c2 in [c for c in s.shortlists if k <= c < c1]:
                        _, kept = top_k_lowest_ids(mid_c1, ids_c1, c2, descending=not l2)
                        found, found_scores = best_by_score(q_full, full_data, kept, k, l2)
                        recall = tuning.recall(found, found_scores)
                        stages = ((m1, c1), (m2, c2), (final, k))
                        options = tuple(row["options"].items())
                        funnel = Funnel(stages, row["format"], s.metric, row["index"], options, fmt)
                        grid.add_funnel(funnel, tuning.n, recall, first_cost + (c1 * m2 + c2 * final) / 1e6)
                        tried += 1
                        if recall >= grid.top_target:
                            break  # a longer middle shortlist only costs more
    if not tried:
        return []
    return [
        f"{tried} three-stage funnels scored on {len(rows)} first stages needing a shortlist of over "
        f"{LONG_SHORTLIST * k} (middle sizes {', '.join(map(str, s.middle_sizes))}; {', '.join(s.middle_formats)})"
    ]


def score_gap_shortlists(tuning: Tuning, grid: ScoredGrid) -> list[str]:
    """Shortlists sized per query from their score gap (see the module docstring); returns a note."""
    s = tuning.settings
    if not s.score_gaps:
        return []
    k, l2 = s.k, s.metric == "l2"
    rows = list(_met_two_stage(grid).values())
    tried = 0
    for row in rows:
        (m1, c_star), (m2, _) = row["stages"]
        caps = [c for c in _next_shortlists(s.shortlists, c_star, 1) if c > k]
        if not caps:
            continue
        first_scores, cand = _first_stage(tuning, row, max(caps))
        descending = row["index"] != "binary" and not l2
        data, q2 = stage_data(tuning, m2, "float")
        first_cost = _first_mflops(row)
        for cap in caps:
            fs, ids = first_scores[:, :cap], cand[:, :cap]
            for gap in _gap_ladder(fs, ids, k, cap):
                kept = cut_by_gap(fs, ids, k, gap, descending)
                mean_kept = float((kept >= 0).sum(axis=1).mean())
                found, found_scores = best_by_score(q2, data, kept, k, l2)
                recall = tuning.recall(found, found_scores if m2 == tuning.dim else None)
                options = tuple(row["options"].items())
                funnel = Funnel(((m1, cap), (m2, k)), row["format"], s.metric, row["index"], options, gap=gap)
                added = grid.add_funnel(funnel, tuning.n, recall, first_cost + mean_kept * m2 / 1e6)
                added["mean_candidates"] = mean_kept
                tried += 1
                if recall >= grid.top_target:
                    break  # a wider gap only keeps more
    if not tried:
        return []
    return [f"{tried} shortlists sized per query from their score gap, on {len(rows)} two-stage funnels"]


def _gap_ladder(first_scores: np.ndarray, ids: np.ndarray, k: int, cap: int) -> list[float]:
    """Gaps that keep about t candidates for the median query, for `GAP_COUNTS` counts t from k to ``cap``."""
    counts = np.unique(np.geomspace(k, cap, GAP_COUNTS + 1).round().astype(int))[1:]  # k itself: no gap
    valid = ids >= 0  # a missing candidate's score is a sentinel, not a distance
    with np.errstate(over="ignore", invalid="ignore"):
        gaps = np.where(valid & valid[:, k - 1 : k], np.abs(first_scores - first_scores[:, k - 1 : k]), np.nan)
    medians = [np.nanmedian(gaps[:, t - 1]) if valid[:, t - 1].any() else np.nan for t in counts]
    return sorted({float(g) for g in medians if np.isfinite(g)})
