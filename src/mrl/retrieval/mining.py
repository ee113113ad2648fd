"""Hard-negative mining on embeddings: the candidates come from the prefix funnel, the filters follow
sentence-transformers' ``util.mine_hard_negatives`` (same options, same meaning; no model in here).

The problem (:func:`mining_problem`): pairs ``(anchor, positive)``; the queries are the unique anchors (a
repeated anchor is one query with several positives), the corpus is ``unique(corpus + positives)`` in that
order. For each query the funnel returns ``range_max + max_positives + 1`` candidates scored by cosine at full
width (the last stage is exact). Then, as sentence-transformers does, in this order:

* the query's own text (when it is in the corpus) and every positive of the query are removed;
* ``absolute_margin``: removed where ``score + absolute_margin > p``, ``p`` the query's lowest positive score;
* ``relative_margin``: removed where ``score > p - |p| * relative_margin``;
* ``max_score``: removed where ``score > max_score``; ``min_score``: removed where ``score < min_score``;
* the best ``range_max`` of what is left, less the first ``range_min`` of them, is the window;
* ``sampling="top"`` keeps the first ``num_negatives`` of the window, ``"random"`` draws ``num_negatives``
  of the window's valid candidates (seeded), best first.

A query that runs short of candidates gets fewer negatives (``-1`` in :attr:`Mined.ids`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mrl.retrieval.funnel import AdaptiveRetriever

__all__ = ["MiningProblem", "MiningSettings", "Mined", "default_funnel", "mine", "mining_problem", "triplet_rows"]

SAMPLING = ("top", "random")


@dataclass(frozen=True)
class MiningSettings:
    """sentence-transformers' options of the same names (``sampling`` is its ``sampling_strategy``)."""

    num_negatives: int = 3
    range_min: int = 0
    range_max: int | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    max_score: float | None = None
    min_score: float | None = None
    sampling: str = "top"
    seed: int = 0

    def resolved_range_max(self, max_positives: int) -> int:
        """``range_max``, or sentence-transformers' default: ``range_min + num_negatives + max_positives``, ten
        times the negatives when a margin or ``max_score`` may remove some."""
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives={self.num_negatives}: must be at least 1")
        if self.sampling not in SAMPLING:
            raise ValueError(f"sampling={self.sampling!r}: expected one of {', '.join(SAMPLING)}")
        if self.range_min < 0:
            raise ValueError(f"range_min={self.range_min}: must be >= 0")
        range_max = self.range_max
        if range_max is None:
            filtered = self.absolute_margin is not None or self.relative_margin is not None
            filtered = filtered or self.max_score is not None
            range_max = self.range_min + self.num_negatives * (10 if filtered else 1) + max_positives
        if self.range_min >= range_max:
            raise ValueError(f"range_min={self.range_min}: must be smaller than range_max={range_max}")
        if self.num_negatives > range_max - self.range_min:
            raise ValueError(
                f"num_negatives={self.num_negatives}: only {range_max - self.range_min} candidates remain between "
                f"range_min={self.range_min} and range_max={range_max}"
            )
        return int(range_max)


@dataclass
class MiningProblem:
    """Unique queries, the corpus, and for each query its positives' and its own corpus ids."""

    queries: list[str]
    corpus: list[str]
    positive_ids: list[list[int]]
    query_in_corpus: np.ndarray  # [Q] corpus id of the query's own text, -1 where it is not in the corpus
    pairs: int = 0

    @property
    def max_positives(self) -> int:
        return max(len(p) for p in self.positive_ids)


def mining_problem(
    anchors: Sequence[str], positives: Sequence[str], corpus: Sequence[str] | None = None
) -> MiningProblem:
    """Queries = unique anchors (first-seen order), corpus = ``unique(corpus + positives)``."""
    if len(anchors) != len(positives) or not anchors:
        raise ValueError(f"anchors/positives: need as many anchors as positives, at least one ({len(anchors)})")
    texts = list(dict.fromkeys(list(corpus or []) + list(positives)))
    corpus_id = {text: i for i, text in enumerate(texts)}
    queries = list(dict.fromkeys(anchors))
    query_id = {text: i for i, text in enumerate(queries)}
    positive_ids: list[list[int]] = [[] for _ in queries]
    for anchor, positive in zip(anchors, positives):
        ids = positive_ids[query_id[anchor]]
        if corpus_id[positive] not in ids:
            ids.append(corpus_id[positive])
    own = np.array([corpus_id.get(q, -1) for q in queries], dtype=np.int64)
    return MiningProblem(queries, texts, positive_ids, own, pairs=len(anchors))


def default_funnel(dim: int, candidates: int, corpus_size: int, first: int | None = None) -> list[tuple[int, int]]:
    """A prefix shortlist (``first``, default ``dim // 2``: 192 of MiniLM's 384) of ``10 * candidates`` (at least
    1000) items, reranked exactly at full width; one exact stage where that would not shorten anything. Wide on
    purpose: a stock encoder's prefixes were never trained to stand alone, and the search is a fraction of a
    percent of mining (embedding is the rest), so the funnel buys agreement with exact search, not speed."""
    first = max(1, dim // 2) if first is None else int(first)
    shortlist = min(corpus_size, max(1000, 10 * candidates))
    if first >= dim or shortlist <= candidates:
        return [(dim, candidates)]
    return [(first, shortlist), (dim, candidates)]


@dataclass
class Mined:
    """Per query: the negatives' corpus ids ``[Q, num_negatives]`` (``-1``: none), their scores (``-inf``: none),
    the lowest positive score ``[Q]``, and how many candidates each filter removed."""

    ids: np.ndarray
    scores: np.ndarray
    positive_scores: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    funnel: list[tuple[int, int]] = field(default_factory=list)


def _normalized(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def mine(
    query_embeddings: np.ndarray,
    corpus_embeddings: np.ndarray,
    problem: MiningProblem,
    settings: MiningSettings = MiningSettings(),
    funnel: Sequence[Sequence[int]] | str | None = None,
    batch_size: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> Mined:
    """Mine ``problem`` on its embeddings (rows in :class:`MiningProblem` order; cosine similarity).

    ``funnel``: ``None`` for :func:`default_funnel`, ``"exact"`` for one exact full-width stage, or the stages
    ``[(size, candidates), ...]`` (the last stage's candidates are raised to what the filters need).
    ``progress(n)`` is called after every ``n`` queries searched."""
    q = np.asarray(query_embeddings, dtype=np.float32)
    c = np.asarray(corpus_embeddings, dtype=np.float32)
    if q.shape[0] != len(problem.queries) or c.shape[0] != len(problem.corpus) or q.shape[1] != c.shape[1]:
        raise ValueError(
            f"embeddings: {q.shape} queries and {c.shape} corpus rows for {len(problem.queries)} queries and "
            f"{len(problem.corpus)} corpus texts"
        )
    n_q, dim = q.shape
    range_max = settings.resolved_range_max(problem.max_positives)
    want = range_max + problem.max_positives + 1
    k = min(want, c.shape[0])
    if funnel is None:
        stages = default_funnel(dim, k, c.shape[0])
    elif funnel == "exact":
        stages = [(dim, k)]
    else:
        stages = [(int(m), int(n)) for m, n in funnel]
        stages[-1] = (stages[-1][0], max(k, stages[-1][1]))
        if stages[-1][0] != dim:
            raise ValueError(f"funnel={funnel}: the last stage must be the full width {dim} (exact cosine)")
        stages = [(m, min(max(n, k), c.shape[0])) for m, n in stages]
    retriever = AdaptiveRetriever(c, stages, metric="cosine")
    scores = np.full((n_q, want), -np.inf, dtype=np.float32)
    ids = np.full((n_q, want), -1, dtype=np.int64)
    for start in range(0, n_q, batch_size):
        stop = min(start + batch_size, n_q)
        s, i = retriever.search(q[start:stop], k)
        scores[start:stop, :k], ids[start:stop, :k] = s, i
        if progress is not None:
            progress(stop - start)

    # positive scores at full width (cosine), the lowest per query for the margins
    qn, cn = _normalized(q), _normalized(c)
    positive_scores = np.array(
        [float(np.min(cn[p] @ qn[row])) for row, p in enumerate(problem.positive_ids)], dtype=np.float32
    )
    removed = (ids == -1) | (ids == problem.query_in_corpus[:, None])
    for row, p in enumerate(problem.positive_ids):
        removed[row] |= np.isin(ids[row], p)
    scores[removed] = -np.inf
    skipped: dict[str, int] = {}

    def drop(name: str, mask: np.ndarray) -> None:
        mask &= np.isfinite(scores)
        skipped[name] = int(mask.sum())
        scores[mask] = -np.inf

    p = positive_scores[:, None]
    if settings.absolute_margin is not None:
        drop("absolute_margin", scores + np.float32(settings.absolute_margin) > p)
    if settings.relative_margin is not None:
        drop("relative_margin", scores > p - np.abs(p) * np.float32(settings.relative_margin))
    if settings.max_score is not None:
        drop("max_score", scores > np.float32(settings.max_score))
    if settings.min_score is not None:
        drop("min_score", scores < np.float32(settings.min_score))

    # the best range_max left (stable: the funnel's order, lowest id first among equal scores), less range_min
    order = np.argsort(-scores, axis=1, kind="stable")[:, :range_max]
    scores = np.take_along_axis(scores, order, 1)[:, settings.range_min :]
    ids = np.take_along_axis(ids, order, 1)[:, settings.range_min :]
    n = settings.num_negatives
    if settings.sampling == "top":
        scores, ids = scores[:, :n], ids[:, :n]
    else:
        rng = np.random.default_rng(settings.seed)
        valid = np.isfinite(scores).sum(1)
        picks = np.stack([np.sort(rng.choice(max(int(v), n), size=n, replace=False)) for v in valid])
        scores, ids = np.take_along_axis(scores, picks, 1), np.take_along_axis(ids, picks, 1)
    ids = np.where(np.isfinite(scores), ids, -1)
    return Mined(ids, scores, positive_scores, skipped, stages)


def triplet_rows(problem: MiningProblem, mined: Mined) -> list[dict[str, str]]:
    """``{anchor, positive, negative}`` per query, positive and mined negative (best first), in query order."""
    rows = []
    for row, query in enumerate(problem.queries):
        negatives = [problem.corpus[i] for i in mined.ids[row] if i >= 0]
        for p in problem.positive_ids[row]:
            positive = problem.corpus[p]
            rows.extend({"anchor": query, "positive": positive, "negative": neg} for neg in negatives)
    return rows
