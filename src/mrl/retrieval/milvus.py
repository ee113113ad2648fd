"""The funnel in a vector database: Matryoshka embeddings in a Milvus collection, shortlisted there, reranked here.

    from mrl.retrieval.milvus import MilvusFunnel, load_into_milvus
    load_into_milvus("embeddings_train.npz", "index.db", first_size=16)     # Milvus Lite: a local file
    funnel = MilvusFunnel("index.db")                                      # or "http://host:19530": a cluster
    scores, ids = funnel.search(queries, k=10)

One collection per database, one row per item, its primary key the item's row number in the embeddings file:

* ``prefix``: the first-stage prefix (re-normalised for cosine), indexed for search: exact (``FLAT``), ``HNSW``
  or ``IVF_FLAT`` in float; ``IVF_SQ8`` (one list: an exact scan of 8-bit codes) or ``HNSW_SQ`` in int8; ``BIN_FLAT``
  or ``BIN_IVF_FLAT`` over its bits (a Milvus server only: Milvus Lite has no binary vector fields);
* ``full``: the whole embedding as stored, fetched by id for the rerank;
* ``item`` (the row's name in the file) and ``label`` (-1 where none).

The collection's properties record what it holds (width, first stage, metric, the model's checkpoint, a
fingerprint of the file, the funnel to serve) so a search with another model's queries, another width, or a
resumed load from another file fails with one line. Moving from Milvus Lite (embedded, a ``.db`` file) to a
Milvus cluster is a change of ``uri``: the client, the collection and the calls are the same.

A search asks the database for each query's shortlist (``limit`` = the first stage's candidates), fetches the
full vectors of the shortlisted items once per batch of queries, and reranks them here exactly as
`AdaptiveRetriever` reranks (the same FAISS kernels over the same re-normalised prefixes, the lowest ids among
equal scores), so with an exact first stage both return the same neighbours. Loading is batched, shows a progress
bar, and resumes: rows whose ids are already in the collection are skipped, so an interrupted load continues
where it stopped and never inserts a row twice.

Milvus Lite 3.x is a pure-Python engine (FAISS per segment, results assembled in Python): on 2 shared cores it
loaded 871 2048-d items per second and served the 16-d, 200-candidate funnel over 20,000 of them in 113 ms per
query (``benchmarks/retrieval.py``; the in-process funnel took 0.34 ms), with the in-process funnel's exact
neighbours. It is for building, testing and small collections; a Milvus server serves the same collection
with its C++ engine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrl.retrieval.binary import bit_center, threshold_bits
from mrl.retrieval.flat import prefix
from mrl.retrieval.funnel import METRICS, rerank, validate_funnel
from mrl.retrieval.ties import order_ties
from mrl.retrieval.tune import FORMATS, Funnel

__all__ = ["INDEX_KINDS", "MilvusFunnel", "collection_name", "connect", "load_into_milvus"]

INDEX_KINDS = ("flat", "hnsw", "ivf")  # how the first stage's field is indexed (flat: exact)
PROPERTY = "mrl.meta"  # the collection property holding what it holds, as JSON
MAX_LIMIT = 16384  # Milvus's largest top-k
FETCH_BYTES = 32 << 20  # full vectors fetched per request
DEFAULT_SHORTLIST = 200
_MILVUS_INDEX = {
    ("float", "flat"): ("FLAT", {}),
    ("float", "hnsw"): ("HNSW", {"M": 32, "efConstruction": 64}),
    ("float", "ivf"): ("IVF_FLAT", {}),
    ("int8", "flat"): ("IVF_SQ8", {"nlist": 1}),
    ("int8", "hnsw"): ("HNSW_SQ", {"M": 32, "efConstruction": 64, "sq_type": "SQ8"}),
    ("int8", "ivf"): ("IVF_SQ8", {}),
    ("bits", "flat"): ("BIN_FLAT", {}),
    ("bits", "ivf"): ("BIN_IVF_FLAT", {}),
}
_METRIC = {"cosine": "IP", "ip": "IP", "l2": "L2"}  # cosine: the stored prefixes are re-normalised

log = logging.getLogger(__name__)


def require_pymilvus():
    try:
        import pymilvus
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError("backend=milvus needs pymilvus and milvus-lite: pip install 'mrl[retrieval]'") from None
    return pymilvus


def is_lite(uri: str) -> bool:
    """A local ``.db`` file (Milvus Lite, embedded) rather than a server's address."""
    return not re.match(r"^(https?|tcp|unix)://", str(uri))


def connect(uri: str | Path, token: str | None = None):
    """A ``MilvusClient`` on ``uri``: a ``.db`` file (Milvus Lite, created with its folder if missing) or a
    server's ``http://host:19530``."""
    pymilvus = require_pymilvus()
    uri = str(uri)
    if is_lite(uri):
        if not uri.endswith(".db"):
            raise ValueError(f"uri={uri!r}: a Milvus Lite file ends in .db (or give a server: http://host:19530)")
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        return pymilvus.MilvusClient(uri=uri, **({"token": token} if token else {}))
    except pymilvus.exceptions.MilvusException as error:
        raise ValueError(f"uri={uri!r}: cannot open it with Milvus: {error.message}") from None


def collection_name(path: str | Path) -> str:
    """The default collection of an embeddings file: ``mrl_`` and its stem, as Milvus names allow."""
    name = re.sub(r"\W", "_", Path(path).stem)
    return f"mrl_{name}"[:255]


def _fingerprint(x: np.ndarray) -> str:
    """A hash of the file's shape and of a few rows: a resumed load must be of the same embeddings."""
    rows = np.unique(np.linspace(0, len(x) - 1, num=min(len(x), 16)).astype(int))
    digest = hashlib.sha1(repr(x.shape).encode())
    digest.update(np.ascontiguousarray(x[rows], dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CollectionMeta:
    """What a collection holds (its ``mrl.meta`` property)."""

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
    def from_json(cls, text: str) -> CollectionMeta:
        data = json.loads(text)
        return cls(**{key: data.get(key) for key in cls.__dataclass_fields__ if key in data})


def _read_meta(client, name: str) -> CollectionMeta | None:
    properties = client.describe_collection(name).get("properties") or {}
    return CollectionMeta.from_json(properties[PROPERTY]) if PROPERTY in properties else None


def _create(client, name: str, meta: CollectionMeta, item_length: int) -> None:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    if meta.format == "bits":
        schema.add_field("prefix", DataType.BINARY_VECTOR, dim=8 * -(-meta.first_size // 8))
    else:
        schema.add_field("prefix", DataType.FLOAT_VECTOR, dim=meta.first_size)
    schema.add_field("full", DataType.FLOAT_VECTOR, dim=meta.dim)
    schema.add_field("item", DataType.VARCHAR, max_length=max(1, min(item_length, 65535)))
    schema.add_field("label", DataType.INT64)
    index_type, params = _MILVUS_INDEX[(meta.format, meta.index)]
    if meta.index == "ivf" and "nlist" not in params:
        params = {**params, "nlist": int(np.clip(round(4 * np.sqrt(meta.count)), 1, max(1, meta.count // 39)))}
    indexes = client.prepare_index_params()
    metric = "HAMMING" if meta.format == "bits" else _METRIC[meta.metric]
    indexes.add_index("prefix", index_type=index_type, metric_type=metric, params=params)
    indexes.add_index("full", index_type="FLAT", metric_type=_METRIC[meta.metric])
    client.create_collection(name, schema=schema, index_params=indexes, properties={PROPERTY: meta.to_json()})


def _check_same(name: str, old: CollectionMeta, new: CollectionMeta) -> None:
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


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mrl.common.io import console

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console(),
        disable=not enabled,
        transient=False,
    )


def load_into_milvus(
    embeddings: str | Path | np.ndarray,
    uri: str | Path,
    collection: str | None = None,
    first_size: int = 16,
    format: str = "float",
    index: str = "flat",
    metric: str = "cosine",
    funnel: Funnel | None = None,
    batch_size: int = 1000,
    drop: bool = False,
    progress: bool = True,
    token: str | None = None,
    items: Sequence | None = None,
    labels: np.ndarray | None = None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Load embeddings (an ``.npz`` as ``make embed`` / ``make eval`` write, or an ``[N, D]`` array) into a Milvus
    collection for the funnel; returns what it did (``inserted``, ``skipped``, ``count``, ``seconds``, ...).

    ``first_size`` coordinates in ``format`` (``float``, ``int8``, ``bits``) are indexed by ``index`` (``flat``:
    exact; ``hnsw``; ``ivf``); ``funnel`` (default: a shortlist of 200 reranked at full width) is recorded for
    `MilvusFunnel` to serve. Rows go in ``batch_size`` at a time. A collection that exists is resumed: its rows
    are kept, the missing ones inserted (it must hold the same embeddings, loaded the same way), unless ``drop``.
    """
    from mrl.evaluation.embeddings import read_embeddings

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
    if isinstance(first_size, bool) or not isinstance(first_size, (int, np.integer)) or not 1 <= first_size <= dim:
        raise ValueError(f"first_size={first_size!r}: the indexed prefix's size, in 1..{dim} (the embedding width)")
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: expected one of {', '.join(FORMATS)}")
    if index not in INDEX_KINDS:
        raise ValueError(f"index={index!r}: expected one of {', '.join(INDEX_KINDS)}")
    if (format, index) not in _MILVUS_INDEX:
        raise ValueError(f"index={index!r}: Milvus has no {index} index over bits; use flat or ivf")
    if format == "bits" and is_lite(str(uri)):
        raise ValueError(
            f"format='bits': Milvus Lite ({uri}) has no binary vector fields; a Milvus server has "
            "(uri=http://host:19530), or use format=int8 (4x smaller than float) here"
        )
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {', '.join(METRICS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
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
    name = collection or (collection_name(source) if source else "mrl_embeddings")
    first = prefix(x[:, :first_size], first_size, metric == "cosine")
    center = bit_center(first) if format == "bits" else None
    meta = CollectionMeta(
        dim=dim,
        count=n,
        first_size=int(first_size),
        format=format,
        index=index,
        metric=metric,
        fingerprint=_fingerprint(x),
        checkpoint=checkpoint,
        source=str(Path(source).resolve()) if source else None,
        funnel=funnel.to_dict(),
        bit_center=None if center is None else [float(v) for v in center],
    )

    began = time.perf_counter()
    client = connect(uri, token)
    resumed = False
    if client.has_collection(name) and drop:
        client.drop_collection(name)
    if client.has_collection(name):
        old = _read_meta(client, name)
        if old is None:
            raise ValueError(f"collection={name!r}: exists and was not made by mrl; give another --collection")
        _check_same(name, old, meta)
        resumed = True
    else:
        _create(client, name, meta, item_length=max(len(s) for s in items) * 4 + 16)
    client.load_collection(name)
    present = int(client.get_collection_stats(name).get("row_count", 0)) if resumed else 0

    inserted = skipped = 0
    with _progress(progress) as bar:
        task = bar.add_task(f"{name}: loading {n} items", total=n)
        for start in range(0, n, batch_size):
            rows = np.arange(start, min(start + batch_size, n))
            if present:  # resuming: skip the rows already there
                have = client.get(name, ids=rows.tolist(), output_fields=["id"])
                done = {int(r["id"]) for r in have}
                rows = np.array([r for r in rows if int(r) not in done], dtype=np.int64)
                skipped += (min(start + batch_size, n) - start) - len(rows)
            if len(rows):
                codes = threshold_bits(first[rows], center) if format == "bits" else first[rows]
                client.insert(
                    name,
                    [
                        {
                            "id": int(r),
                            "prefix": codes[j].tobytes() if format == "bits" else codes[j],
                            "full": x[r],
                            "item": items[r],
                            "label": int(labels[r]),
                        }
                        for j, r in enumerate(rows)
                    ],
                )
                inserted += len(rows)
            bar.update(task, advance=min(start + batch_size, n) - start)
    client.flush(name)
    done = CollectionMeta(**{**meta.__dict__, "complete": True})
    client.alter_collection_properties(name, properties={PROPERTY: done.to_json()})
    seconds = time.perf_counter() - began
    client.close()
    return {
        "uri": str(uri),
        "collection": name,
        "count": n,
        "dim": dim,
        "inserted": inserted,
        "skipped": skipped,
        "resumed": resumed,
        "seconds": seconds,
        "rows_per_second": inserted / seconds if seconds > 0 else float("nan"),
        "funnel": funnel,
        "index": _MILVUS_INDEX[(format, index)][0],
    }


class MilvusFunnel:
    """Funnel search over a collection `load_into_milvus` made: the database shortlists, the rerank runs here.

    Args:
        uri: the collection's Milvus: a Milvus Lite ``.db`` file or a server's address.
        collection: its name (default: the only one there).
        funnel: stages ``[(size, candidates), ...]`` (or a `Funnel`) to serve instead of the recorded one; the
            first size must be the one the collection indexes.
        ef, nprobe: HNSW search beam (at least the shortlist) and IVF lists probed, for approximate indexes.
    """

    def __init__(
        self,
        uri: str | Path,
        collection: str | None = None,
        funnel: Funnel | Sequence[Sequence[int]] | None = None,
        token: str | None = None,
        ef: int | None = None,
        nprobe: int | None = None,
    ) -> None:
        self.uri = str(uri)
        if is_lite(self.uri) and not Path(self.uri).exists():
            raise FileNotFoundError(f"uri={self.uri!r}: no such Milvus Lite file (make index writes it)")
        self.client = connect(self.uri, token)
        names = [c for c in self.client.list_collections() if self._is_ours(c)]
        if collection is None:
            if len(names) != 1:
                raise ValueError(
                    f"collection=None: {self.uri} holds {len(names)} mrl collections ({', '.join(names) or 'none'}); "
                    "name one with --collection"
                )
            collection = names[0]
        if not self.client.has_collection(collection) or collection not in names:
            raise ValueError(
                f"collection={collection!r}: not in {self.uri} (it holds {', '.join(names) or 'none'}); "
                "make index loads one"
            )
        self.collection = collection
        meta = _read_meta(self.client, collection)
        if not meta.complete:
            log.warning("collection %s: its load did not finish; run make index again to resume it", collection)
        self.meta = meta
        self.dim, self.n, self.metric = meta.dim, meta.count, meta.metric
        recorded = Funnel.from_dict(meta.funnel) if meta.funnel else None
        if funnel is None:
            funnel = recorded
        elif not isinstance(funnel, Funnel):
            funnel = Funnel(tuple(validate_funnel(funnel, self.dim)), meta.format, meta.metric)
        if funnel.stages[0][0] != meta.first_size:
            raise ValueError(
                f"funnel={funnel.spec!r}: collection={collection!r} indexes the first {meta.first_size} "
                f"coordinates; its first stage must be {meta.first_size}:<candidates>"
            )
        if funnel.stages[0][1] > MAX_LIMIT:
            raise ValueError(f"funnel={funnel.spec!r}: Milvus shortlists at most {MAX_LIMIT} candidates per query")
        self.funnel = Funnel(funnel.stages, meta.format, meta.metric)
        self.ef, self.nprobe = ef, nprobe
        self.client.load_collection(collection)

    def _is_ours(self, name: str) -> bool:
        try:
            return _read_meta(self.client, name) is not None
        except Exception:  # a collection we cannot describe is not one of ours
            return False

    def _search_params(self, limit: int) -> dict:
        metric = "HAMMING" if self.meta.format == "bits" else _METRIC[self.metric]
        params: dict[str, Any] = {}
        if self.meta.index == "hnsw":
            params["ef"] = max(limit, self.ef or limit)
        elif self.meta.index == "ivf":
            params["nprobe"] = self.nprobe or 16
        return {"metric_type": metric, "params": params}

    def _fetch(self, ids: np.ndarray) -> np.ndarray:
        """Full vectors of ``ids`` (sorted unique), in that order."""
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        step = max(1, FETCH_BYTES // (4 * self.dim))
        for start in range(0, len(ids), step):
            part = ids[start : start + step]
            got = self.client.get(self.collection, ids=part.tolist(), output_fields=["full"])
            rows = {int(r["id"]): r["full"] for r in got}
            if len(rows) != len(part):
                missing = sorted(set(part.tolist()) - set(rows))[:5]
                raise RuntimeError(f"collection {self.collection}: ids {missing} are shortlisted but have no row")
            out[start : start + len(part)] = np.asarray([rows[int(i)] for i in part], dtype=np.float32)
        return out

    def shortlist(self, queries: np.ndarray, candidates: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The database's first stage: ``(scores, ids)`` of each query's best ``candidates`` (``-1`` where it
        returned fewer), best first as the database ranks them."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries.shape={q.shape}: expected [Q, {self.dim}] (the collection's width)")
        m1, c1 = self.funnel.stages[0]
        c = int(candidates or c1)
        qp = prefix(q, m1, self.metric == "cosine")
        if self.meta.format == "bits":  # pragma: no cover - needs a Milvus server (Lite has no binary fields)
            data = [row.tobytes() for row in threshold_bits(qp, np.asarray(self.meta.bit_center, dtype=np.float32))]
        else:
            data = list(qp)
        hits = self.client.search(
            self.collection,
            data=data,
            anns_field="prefix",
            limit=c,
            search_params=self._search_params(c),
            output_fields=["id"],
        )
        ids = np.full((len(q), c), -1, dtype=np.int64)
        scores = np.full((len(q), c), np.nan, dtype=np.float32)
        for i, row in enumerate(hits):
            for j, hit in enumerate(row[:c]):
                ids[i, j], scores[i, j] = int(hit["id"]), float(hit["distance"])
        return scores, ids

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
        _, cand = self.shortlist(q)
        rows = np.unique(cand[cand >= 0])
        full = self._fetch(rows)
        local = np.where(cand >= 0, np.searchsorted(rows, np.maximum(cand, 0)), -1)
        scores = None
        for stage, (m, c) in enumerate(stages[1:], start=1):
            keep = k if stage == len(stages) - 1 else c
            scores, local = rerank(prefix(q, m, normalize), prefix(full, m, normalize), local, keep, l2)
        return scores, np.where(local >= 0, rows[np.maximum(local, 0)], -1)

    def items(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(names, labels)`` of database rows ``ids`` (any shape; ``None`` and -1 where ``ids`` is -1)."""
        ids = np.asarray(ids)
        wanted = np.unique(ids[ids >= 0])
        found: dict[int, tuple[str, int]] = {}
        for start in range(0, len(wanted), 16384):
            part = wanted[start : start + 16384].tolist()
            for r in self.client.get(self.collection, ids=part, output_fields=["item", "label"]):
                found[int(r["id"])] = (r["item"], int(r["label"]))
        names = np.array([found[int(i)][0] if i >= 0 else None for i in ids.ravel()], dtype=object).reshape(ids.shape)
        labels = np.array([found[int(i)][1] if i >= 0 else -1 for i in ids.ravel()], dtype=np.int64).reshape(ids.shape)
        return names, labels

    def mflops_per_query(self) -> float:
        """The funnel's MFLOPs per query as `AdaptiveRetriever` counts them (an exact first stage over N items)."""
        return self.funnel.mflops_per_query(self.n)

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"MilvusFunnel(uri={self.uri!r}, collection={self.collection!r}, n={self.n}, funnel={self.funnel})"
