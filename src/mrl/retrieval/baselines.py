"""The index a user would build without Matryoshka prefixes: one approximate index on the full vectors, its search
knob raised until it meets the recall target, as the funnel is tuned (same queries, same recall counting, timed in
the same rounds). A funnel's speed-up is only worth quoting against this, not against exact flat search.

* ``hnsw``: ``faiss.IndexHNSWFlat`` on the full vectors (M `HNSW_M`, efConstruction `HNSW_EF_CONSTRUCTION`),
  efSearch raised over `EF_SEARCH_LADDER`;
* ``ivf``: ``faiss.IndexIVFFlat`` (``4 sqrt(N)`` lists, k-means on at most 64 points per list), nprobe raised over
  `NPROBE_LADDER`.

`sweep_baseline` builds one and scores every value of its ladder on the tuning queries, smallest first, until the
highest target is met; `BaselineSweep.smallest_meeting` is then, per target, the smallest value that meets it (the
first on the ladder: recall is not assumed monotone, the sweep is read in order). `TunedBaseline` is that choice,
timed and confirmed on the held-out queries by the tuner (`mrl.retrieval.tune`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mrl.retrieval.flat import faiss, prefix

__all__ = [
    "BASELINES",
    "EF_SEARCH_LADDER",
    "NPROBE_LADDER",
    "BaselineSweep",
    "FullWidthIndex",
    "TunedBaseline",
    "build_full_hnsw",
    "build_full_ivf",
    "hnsw_bytes",
    "ivf_bytes",
    "sweep_baseline",
]

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
EF_SEARCH_LADDER = (10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024, 2048)
NPROBE_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024, 2048, 4096)
IVF_POINTS_PER_LIST = 64  # k-means trains on at most this many points per list


def hnsw_bytes(index) -> int:
    """Resident bytes of an ``IndexHNSWFlat``: the vectors, the links (int32), the levels and offsets."""
    h = index.hnsw
    return int(index.ntotal * index.d * 4 + h.neighbors.size() * 4 + h.levels.size() * 4 + h.offsets.size() * 8)


def ivf_bytes(index) -> int:
    """Resident bytes of an ``IndexIVFFlat``: the listed vectors and their int64 ids, and the centroids."""
    return int(index.ntotal * (index.d * 4 + 8) + index.nlist * index.d * 4)


def build_full_hnsw(full: np.ndarray, l2: bool, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION):
    index = faiss.IndexHNSWFlat(full.shape[1], int(m), faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(ef_construction)
    index.add(full)
    return index


def build_full_ivf(full: np.ndarray, l2: bool, nlist: int | None = None, seed: int = 0):
    n, d = full.shape
    if nlist is None:
        nlist = int(np.clip(round(4 * np.sqrt(n)), 1, max(1, n // 39)))
    metric = faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT
    quantizer = faiss.IndexFlatL2(d) if l2 else faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, int(nlist), metric)
    n_train = min(n, IVF_POINTS_PER_LIST * nlist)
    rng = np.random.default_rng(seed)
    index.train(full if n_train == n else full[np.sort(rng.choice(n, n_train, replace=False))])
    index.add(full)
    return index


@dataclass(frozen=True)
class _Kind:
    build: Callable[[np.ndarray, bool], Any]
    knob: str
    ladder: tuple[int, ...]
    bytes_of: Callable[[Any], int]
    describe: str


BASELINES = {
    "hnsw": _Kind(
        build_full_hnsw,
        "efSearch",
        EF_SEARCH_LADDER,
        hnsw_bytes,
        f"FAISS HNSW on the full vectors (M {HNSW_M}, efConstruction {HNSW_EF_CONSTRUCTION})",
    ),
    "ivf": _Kind(build_full_ivf, "nprobe", NPROBE_LADDER, ivf_bytes, "FAISS IVF-Flat on the full vectors"),
}


class FullWidthIndex:
    """One setting of a full-width index, searchable like a funnel: ``search(queries, k)`` sets its knob (the
    index is shared by the settings of one sweep) and searches the (re-normalised, for cosine) full queries."""

    def __init__(self, index, kind: str, value: int, normalize: bool) -> None:
        self.index, self.kind, self.value, self.normalize = index, kind, int(value), normalize

    def _set(self) -> None:
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = self.value
        else:
            self.index.nprobe = self.value

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries)
        q = prefix(q[None, :] if q.ndim == 1 else q, self.index.d, self.normalize)
        self._set()
        return self.index.search(q, int(k))


@dataclass
class BaselineSweep:
    """A full-width index built once (``build_seconds``, ``index_bytes``) and its ladder scored on the tuning
    queries: ``recalls[value]`` in ladder order, up to the first value meeting the highest target."""

    kind: str
    index: Any
    normalize: bool
    build_seconds: float
    index_bytes: int
    recalls: dict[int, float] = field(default_factory=dict)

    @property
    def knob(self) -> str:
        return BASELINES[self.kind].knob

    def smallest_meeting(self, target: float) -> int:
        """The first value of the ladder whose tuning recall meets ``target`` (the last tried where none does)."""
        for value, recall in self.recalls.items():
            if recall >= target:
                return value
        return list(self.recalls)[-1]

    def setting(self, value: int) -> FullWidthIndex:
        return FullWidthIndex(self.index, self.kind, value, self.normalize)


def sweep_baseline(
    kind: str,
    full: np.ndarray,
    metric: str,
    recall_of: Callable[[np.ndarray], float],
    queries: np.ndarray,
    k: int,
    top_target: float,
) -> BaselineSweep:
    """Build the ``kind`` index over ``full`` (``[N, D]``, already re-normalised for cosine) and score its ladder
    on ``queries`` (``recall_of(found_ids)``), smallest first, stopping at the first value meeting ``top_target``
    (values past the list count or the database size are not tried)."""
    spec = BASELINES[kind]
    start = time.perf_counter()
    index = spec.build(full, metric == "l2")
    sweep = BaselineSweep(kind, index, metric == "cosine", time.perf_counter() - start, spec.bytes_of(index))
    limit = index.nlist if kind == "ivf" else len(full)
    for value in [v for v in spec.ladder if v <= limit] or [limit]:
        _, found = sweep.setting(value).search(queries, k)
        sweep.recalls[value] = recall_of(found)
        if sweep.recalls[value] >= top_target:
            break
    return sweep


@dataclass
class TunedBaseline:
    """A full-width index tuned to one target: its knob's ``value`` (the smallest on the ladder meeting the target
    on the tuning queries), ``recall`` there and ``holdout_recall`` on the held-out ones, ``ms_per_query`` timed in
    the funnel's rounds, ``build_seconds`` and resident ``index_bytes``; ``retriever`` searches with it."""

    kind: str
    target: float
    knob: str
    value: int
    recall: float
    holdout_recall: float | None
    ms_per_query: float
    build_seconds: float
    index_bytes: int
    retriever: FullWidthIndex
    sweep: dict[int, float]

    @property
    def met(self) -> bool:
        return (self.recall if self.holdout_recall is None else self.holdout_recall) >= self.target

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "setting": f"{self.knob} {self.value}",
            "recall": self.recall,
            "holdout_recall": self.holdout_recall,
            "met": self.met,
            "ms_per_query": self.ms_per_query,
            "build_seconds": self.build_seconds,
            "index_bytes": self.index_bytes,
        }

    def __str__(self) -> str:
        held = "" if self.holdout_recall is None else f", {self.holdout_recall:.4f} held-out"
        return (
            f"{BASELINES[self.kind].describe}, {self.knob} {self.value}: recall {self.recall:.4f}{held}, "
            f"{self.ms_per_query:.4f} ms/query, built in {self.build_seconds:.1f}s, {self.index_bytes / 2**20:.1f} MiB"
        )
