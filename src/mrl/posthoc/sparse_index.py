"""Search over sparse codes with an inverted index: one posting list per code unit (the database items where that
unit is active, with their values), held as a scipy CSR matrix ``[units, items]``. A query touches only the posting
lists of its own active units, so its cost grows with the lists' lengths, not with the code width.

:func:`dense_search` is the dense peer measured beside it: exact inner products of every query with every item.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = ["InvertedIndex", "dense_search", "top_k"]


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the k highest scores per row, highest first; equal scores: the lower id first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    rows = np.arange(len(scores))[:, None]
    order = np.lexsort((part, -scores[rows, part]), axis=1)
    ids = part[rows, order]
    return scores[rows, ids], ids


class InvertedIndex:
    """Posting lists of a ``[N, H]`` database of sparse codes (dense arrays with zeros, or scipy matrices)."""

    def __init__(self, codes) -> None:
        matrix = sparse.csr_matrix(codes, dtype=np.float32)
        self.count, self.width = matrix.shape
        self.postings = matrix.T.tocsr()  # row u: the items where unit u is active, and the values there
        self.postings.sort_indices()

    @property
    def posting_lengths(self) -> np.ndarray:
        return np.diff(self.postings.indptr)

    def scores(self, queries) -> np.ndarray:
        """``[Q, N]`` inner products, accumulated over the posting lists of each query's active units."""

        q = sparse.csr_matrix(queries, dtype=np.float32)
        if q.shape[1] != self.width:
            raise ValueError(f"queries of width {q.shape[1]} for an index of width {self.width}")
        return np.asarray((q @ self.postings).todense())

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k(self.scores(queries), k)


def dense_search(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner-product search of dense queries over a dense database."""
    return top_k(np.asarray(queries, dtype=np.float32) @ np.asarray(database, dtype=np.float32).T, k)
