"""One order for equal scores everywhere: among items with the same score, the lowest database id comes first.

A short prefix can score many items alike: a ReLU network's 8-d prefix can be all zeros, and then every cosine
score is 0; sign bits put thousands of items at the same Hamming distance. FAISS's heaps keep the first items
they see among equals (the lowest ids, as every flat scan runs in id order) but list them in reverse order,
so without this the best-ranked of a thousand tied items was item 99 when 100 neighbours were asked for and
item 0 when one was: a top-1 that depended on k. Every search in :mod:`mrl.retrieval` (the flat, int8 and
binary first stages, the rerank stages, the torch search) now keeps the lowest ids among equals and lists
them by id, so the first ``j`` results of a top-``k`` search are the top-``j`` search for every ``j <= k``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NO_ID", "order_ties", "sort_candidates"]

NO_ID = np.iinfo(np.int64).max  # sorts -1 ("no result") after every real id


def order_ties(scores: np.ndarray, ids: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` rows ``[Q, k]`` best first, re-ordered so that equal scores are listed by increasing id
    (a ``-1`` id, no result, after the real ones). ``descending``: higher scores are better (inner products);
    else lower (distances). Only rows holding equal neighbours are sorted; the arrays are changed in place and
    returned."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        return scores, ids
    rows = np.flatnonzero((scores[:, 1:] == scores[:, :-1]).any(axis=1))
    if rows.size:
        s, i = scores[rows], ids[rows]
        order = np.lexsort((np.where(i < 0, NO_ID, i), -s if descending else s), axis=1)
        scores[rows] = np.take_along_axis(s, order, axis=1)
        ids[rows] = np.take_along_axis(i, order, axis=1)
    return scores, ids


def sort_candidates(ids: np.ndarray) -> np.ndarray:
    """Each row's candidate ids in increasing order, ``-1`` (none) last: FAISS's ``*_by_idx`` rerank keeps the
    first it reads among equal scores and stops at the first ``-1``, so sorted rows keep the lowest ids."""
    out = np.where(ids < 0, NO_ID, ids)
    out.sort(axis=1)
    out[out == NO_ID] = -1
    return out
