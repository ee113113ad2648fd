"""What the vector-database backends of the funnel share (:mod:`mrl.retrieval.milvus`, :mod:`mrl.retrieval.lancedb`).

* `LoadSpec` and `prepare_load`: how to load (the first stage, the funnel to serve, the batch size), then the
  load's inputs read and checked once (the embeddings file, the spec) into a `Load`, with the `CollectionMeta` the
  database records beside the rows (the load itself, the same for every database: `mrl.retrieval.store`);
* `check_same`: a resumed load must load the same embeddings the same way (one line naming the difference);
* `progress_bar`: the loading bar;
* `DatabaseFunnel`: the search around a database's shortlist: the full vectors of the shortlisted items are
  reranked here with `AdaptiveRetriever`'s kernels and tie order, so an exact first stage in the database returns
  the in-process funnel's neighbours. A backend supplies the shortlist and the full vectors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mrl.common.embeddings import read_embeddings
from mrl.common.io import console
from mrl.retrieval.binary import bit_center, threshold_bits
from mrl.retrieval.flat import prefix
from mrl.retrieval.funnel import METRICS, rerank, validate_funnel
from mrl.retrieval.funnel_spec import FORMATS, Funnel
from mrl.retrieval.ties import order_ties

__all__ = [
    "DEFAULT_SHORTLIST",
    "INDEX_KINDS",
    "META_KEY",
    "CollectionMeta",
    "DatabaseFunnel",
    "Load",
    "LoadSpec",
    "check_database_funnel",
    "check_same",
    "collection_name",
    "fingerprint",
    "item_arrays",
    "pick_collection",
    "prepare_load",
    "progress_bar",
]

INDEX_KINDS = ("flat", "hnsw", "ivf")  # how the first stage is indexed in the database (flat: exact)
DEFAULT_SHORTLIST = 200
META_KEY = "mrl.meta"  # where a database records what a collection holds, as JSON

log = logging.getLogger(__name__)


def collection_name(path: str | Path) -> str:
    """The default collection of an embeddings file: ``mrl_`` and its stem, as database names allow."""
    name = re.sub(r"\W", "_", Path(path).stem)
    return f"mrl_{name}"[:255]


def fingerprint(x: np.ndarray) -> str:
    """A hash of the file's shape and of a few rows: a resumed load must be of the same embeddings."""
    rows = np.unique(np.linspace(0, len(x) - 1, num=min(len(x), 16)).astype(int))
    digest = hashlib.sha1(repr(x.shape).encode())
    digest.update(np.ascontiguousarray(x[rows], dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CollectionMeta:
    """What a collection holds (recorded in the database beside its rows)."""

    dim: int
    count: int
    first_size: int
    format: str
    index: str
    metric: str
    fingerprint: str
    checkpoint: str | None = None
    source: str | None = None
    funnel: dict | None = None
    bit_center: list | None = None  # bits: the per-coordinate thresholds (the database's mean prefix)
    complete: bool = False

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str | bytes) -> CollectionMeta:
        data = json.loads(text)
        return cls(**{key: data.get(key) for key in cls.__dataclass_fields__ if key in data})

    def finished(self) -> CollectionMeta:
        return CollectionMeta(**{**self.__dict__, "complete": True})


def check_same(name: str, old: CollectionMeta, new: CollectionMeta) -> None:
    """A resumed load must load the same embeddings the same way; one line naming the difference otherwise."""
    fix = "load it with --drop to replace it, or into another --collection"
    if old.checkpoint and new.checkpoint and Path(old.checkpoint).resolve() != Path(new.checkpoint).resolve():
        raise ValueError(
            f"collection={name!r}: holds embeddings of {old.checkpoint}, these are of {new.checkpoint}; {fix}"
        )
    if (old.dim, old.count) != (new.dim, new.count) or old.fingerprint != new.fingerprint:
        raise ValueError(
            f"collection={name!r}: holds {old.count} {old.dim}-wide embeddings"
            + (f" of {old.source}" if old.source else "")
            + f", not these {new.count} {new.dim}-wide ones; {fix}"
        )
    for key in ("first_size", "format", "index", "metric"):
        if getattr(old, key) != getattr(new, key):
            raise ValueError(
                f"{key}={getattr(new, key)!r}: collection={name!r} was built with {key}={getattr(old, key)!r}; {fix}"
            )


def progress_bar(enabled: bool):
    """The loading bar (rich, on the project's console)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console(),
        disable=not enabled,
        transient=False,
    )


def pick_collection(uri: str, ours: Sequence[str], collection: str | None) -> str:
    """``collection``, or the only mrl collection at ``uri`` when it is None; one line where there is none such."""
    held = ", ".join(ours) or "none"
    if collection is None:
        if len(ours) != 1:
            raise ValueError(
                f"collection=None: {uri} holds {len(ours)} mrl collections ({held}); name one with --collection"
            )
        return ours[0]
    if collection not in ours:
        raise ValueError(f"collection={collection!r}: not in {uri} (it holds {held}); make index loads one")
    return collection


def item_arrays(ids: np.ndarray, found: dict[int, tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(names, labels)`` shaped as ``ids`` from ``found`` (id -> (name, label)); ``None`` and -1 where an id is -1."""
    flat = ids.ravel()
    names = np.array([found[int(i)][0] if i >= 0 else None for i in flat], dtype=object).reshape(ids.shape)
    labels = np.array([found[int(i)][1] if i >= 0 else -1 for i in flat], dtype=np.int64).reshape(ids.shape)
    return names, labels


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


@dataclass
class Load:
    """A load's inputs, checked: the embeddings ``x``, each row's ``items`` name and ``labels`` (-1: none), the
    first-stage prefix ``first`` (re-normalised for cosine), the ``meta`` to record and the ``name`` to load into."""

    x: np.ndarray
    items: list[str]
    labels: np.ndarray
    first: np.ndarray
    meta: CollectionMeta
    funnel: Funnel
    name: str

    def codes(self, rows: np.ndarray) -> np.ndarray:
        """The first-stage vectors of ``rows`` as the database indexes them: float prefixes, or bit codes."""
        if self.meta.format != "bits":
            return self.first[rows]
        return threshold_bits(self.first[rows], np.asarray(self.meta.bit_center, dtype=np.float32))


@dataclass(frozen=True)
class LoadSpec:
    """How to load embeddings into a vector store: the ``collection`` (default: from the file's name), the indexed
    first stage (``first_size`` coordinates in ``format``, indexed by ``index``, under ``metric``), the ``funnel``
    to record for serving (default: a shortlist of `DEFAULT_SHORTLIST` reranked at full width), rows per insert
    (``batch_size``), and the rows' ``items`` names, ``labels`` and model ``checkpoint`` where the embeddings are an
    array rather than a file that holds them. Every field is also a keyword of ``load_into_lancedb`` /
    ``load_into_milvus``."""

    collection: str | None = None
    first_size: int = 16
    format: str = "float"
    index: str = "flat"
    metric: str = "cosine"
    funnel: Funnel | None = None
    batch_size: int = 1000
    items: Sequence | None = None
    labels: np.ndarray | None = None
    checkpoint: str | None = None

    def with_options(self, options: dict[str, Any]) -> LoadSpec:
        """This spec with some fields replaced; an unknown one is a ``TypeError`` naming it and the valid ones."""
        names = [f.name for f in dataclasses.fields(self)]
        for key in options:
            if key not in names:
                raise TypeError(f"{key}={options[key]!r}: not a load setting; expected some of {', '.join(names)}")
        return dataclasses.replace(self, **options) if options else self


def prepare_load(
    embeddings: str | Path | np.ndarray, spec: LoadSpec, engine: str, supported: Sequence[tuple[str, str]]
) -> Load:
    """Read (an ``.npz`` as ``make embed`` / ``make eval`` write it, or an ``[N, D]`` array) and check a load for
    ``engine``, which indexes the ``(format, index)`` pairs in ``supported``; one-line errors naming the key."""
    first_size, format, index, metric = spec.first_size, spec.format, spec.index, spec.metric
    funnel, batch_size, checkpoint = spec.funnel, spec.batch_size, spec.checkpoint
    items, labels = spec.items, spec.labels
    source = None
    if isinstance(embeddings, (str, Path)):
        source = str(embeddings)
        x, names, file_labels, file_meta = read_embeddings(embeddings)
        checkpoint = checkpoint or file_meta.get("checkpoint")
        items = names if items is None else items
        labels = file_labels if labels is None else labels
    else:
        x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings.shape={x.shape}: expected a non-empty [N, D] array")
    n, dim = x.shape
    if not _positive_int(first_size) or first_size > dim:
        raise ValueError(f"first_size={first_size!r}: the indexed prefix's size, in 1..{dim} (the embedding width)")
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: expected one of {', '.join(FORMATS)}")
    if index not in INDEX_KINDS:
        raise ValueError(f"index={index!r}: expected one of {', '.join(INDEX_KINDS)}")
    if (format, index) not in supported:
        valid = " or ".join(i for f, i in supported if f == format)
        raise ValueError(f"index={index!r}: {engine} has no {index} index over {format}; use {valid}")
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {', '.join(METRICS)}")
    if not _positive_int(batch_size):
        raise ValueError(f"batch_size={batch_size!r}: rows per insert, a positive integer")
    items = [str(v) for v in (np.arange(n) if items is None else items)]
    labels = np.full(n, -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(items) != n or len(labels) != n:
        raise ValueError(f"items/labels: {len(items)} names and {len(labels)} labels for {n} embeddings")
    if funnel is None:
        stages = [(dim, 10)] if first_size == dim else [(first_size, min(DEFAULT_SHORTLIST, n)), (dim, 10)]
        funnel = Funnel(tuple(stages), format, metric)
    if funnel.stages[0][0] != first_size or funnel.format != format or funnel.metric != metric:
        raise ValueError(
            f"funnel={funnel.spec!r}: its first stage ({funnel.stages[0][0]}-d {funnel.format}, {funnel.metric}) "
            f"is not what the collection indexes ({first_size}-d {format}, {metric})"
        )
    validate_funnel(funnel.stages, dim)
    check_database_funnel(funnel)
    first = prefix(x[:, :first_size], first_size, metric == "cosine")
    center = bit_center(first) if format == "bits" else None
    meta = CollectionMeta(
        dim=dim,
        count=n,
        first_size=int(first_size),
        format=format,
        index=index,
        metric=metric,
        fingerprint=fingerprint(x),
        checkpoint=checkpoint,
        source=str(Path(source).resolve()) if source else None,
        funnel=funnel.to_dict(),
        bit_center=None if center is None else [float(v) for v in center],
    )
    name = spec.collection or (collection_name(source) if source else "mrl_embeddings")
    return Load(x=x, items=items, labels=labels, first=first, meta=meta, funnel=funnel, name=name)


def check_database_funnel(funnel: Funnel) -> None:
    """A database funnel reranks the fetched float vectors with fixed shortlists: no fp16 / int8 middle stage, no
    shortlist sized per query (those are `AdaptiveRetriever`'s)."""
    if funnel.middle != "float" or funnel.gap is not None:
        shown = f"middle={funnel.middle!r}" if funnel.middle != "float" else f"gap={funnel.gap:g}"
        raise ValueError(
            f"funnel={funnel.spec!r} ({shown}): a database funnel reranks fetched float vectors with fixed "
            "shortlists; serve this one with AdaptiveRetriever (Funnel.build)"
        )


class DatabaseFunnel:
    """Funnel search over a collection in a vector database: the database shortlists, the rerank runs here.

    A backend sets ``meta`` (`CollectionMeta`), ``collection`` and ``funnel`` (`resolve_funnel`) and implements
    `shortlist` and `_fetch` (full vectors by id) or, where the database returns both in one call,
    `_shortlist_full`; and `items`.
    """

    meta: CollectionMeta
    collection: str
    funnel: Funnel
    engine = "the database"
    max_candidates: int | None = None  # the most the database shortlists per query

    def warn_if_incomplete(self) -> None:
        if not self.meta.complete:
            log.warning("collection %s: its load did not finish; run make index again to resume it", self.collection)

    def resolve_funnel(self, funnel: Funnel | Sequence[Sequence[int]] | None) -> Funnel:
        """The funnel to serve: ``funnel`` (stages or a `Funnel`), else the one recorded; its first size must be
        the indexed one."""
        meta = self.meta
        self.dim, self.n, self.metric = meta.dim, meta.count, meta.metric
        if funnel is None:
            funnel = Funnel.from_dict(meta.funnel)
        elif not isinstance(funnel, Funnel):
            funnel = Funnel(tuple(validate_funnel(funnel, self.dim)), meta.format, meta.metric)
        if funnel.stages[0][0] != meta.first_size:
            raise ValueError(
                f"funnel={funnel.spec!r}: collection={self.collection!r} indexes the first {meta.first_size} "
                f"coordinates; its first stage must be {meta.first_size}:<candidates>"
            )
        check_database_funnel(funnel)
        if self.max_candidates is not None and funnel.stages[0][1] > self.max_candidates:
            raise ValueError(
                f"funnel={funnel.spec!r}: {self.engine} shortlists at most {self.max_candidates} candidates per query"
            )
        return Funnel(funnel.stages, meta.format, meta.metric)

    def query_prefix(self, queries: np.ndarray) -> np.ndarray:
        """The queries' first-stage vectors as the collection indexes them (float prefixes, or bit codes)."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries.shape={q.shape}: expected [Q, {self.dim}] (the collection's width)")
        qp = prefix(q, self.meta.first_size, self.metric == "cosine")
        if self.meta.format == "bits":
            return threshold_bits(qp, np.asarray(self.meta.bit_center, dtype=np.float32))
        return qp

    def shortlist(self, queries: np.ndarray, candidates: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The database's first stage: ``(scores, ids)`` of each query's best ``candidates`` (``-1`` where it
        returned fewer), best first as the database ranks them."""
        raise NotImplementedError

    def _fetch(self, ids: np.ndarray) -> np.ndarray:
        """Full vectors of ``ids`` (sorted unique), in that order."""
        raise NotImplementedError

    def _shortlist_full(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(candidates [Q, C], rows, full)``: the shortlisted ids (-1: none), their sorted unique ``rows`` and
        the full vectors of those rows."""
        _, cand = self.shortlist(q)
        rows = np.unique(cand[cand >= 0])
        return cand, rows, self._fetch(rows)

    def search(self, queries: np.ndarray, k: int, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``(scores[Q, k], ids[Q, k])`` best first, as `AdaptiveRetriever.search` returns them: scores of the
        last stage (computed here from the fetched full vectors), ids the rows of the loaded file."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        last_c = self.funnel.stages[-1][1]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= last_c:
            raise ValueError(f"k={k!r}: must be an integer in 1..{last_c} (the last funnel stage's candidates)")
        scores = np.empty((len(q), k), dtype=np.float32)
        ids = np.empty((len(q), k), dtype=np.int64)
        for start in range(0, len(q), batch_size):
            s, i = self._search_batch(q[start : start + batch_size], int(k))
            scores[start : start + len(s)], ids[start : start + len(s)] = s, i
        return scores, ids

    def _search_batch(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        stages = self.funnel.stages
        normalize, l2 = self.metric == "cosine", self.metric == "l2"
        if len(stages) == 1:
            db_scores, ids = self.shortlist(q, k)
            return order_ties(db_scores, ids, descending=not l2)
        cand, rows, full = self._shortlist_full(q)
        local = np.where(cand >= 0, np.searchsorted(rows, np.maximum(cand, 0)), -1)
        scores = None
        for stage, (m, c) in enumerate(stages[1:], start=1):
            keep = k if stage == len(stages) - 1 else c
            scores, local = rerank(prefix(q, m, normalize), prefix(full, m, normalize), local, keep, l2)
        return scores, np.where(local >= 0, rows[np.maximum(local, 0)], -1)

    def mflops_per_query(self) -> float:
        """The funnel's MFLOPs per query as `AdaptiveRetriever` counts them (an exact first stage over N items)."""
        return self.funnel.mflops_per_query(self.n)

    def __repr__(self) -> str:
        where = getattr(self, "uri", None)
        return f"{type(self).__name__}(uri={where!r}, collection={self.collection!r}, n={self.n}, funnel={self.funnel})"
