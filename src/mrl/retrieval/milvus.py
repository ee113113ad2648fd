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
with its C++ engine, and LanceDB (:mod:`mrl.retrieval.lancedb`) serves the same funnel embedded, measured 16x
faster (docs/retrieval.md, "Which database").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrl.retrieval.database import (
    INDEX_KINDS,
    META_KEY,
    CollectionMeta,
    DatabaseFunnel,
    Load,
    LoadSpec,
    collection_name,
    item_arrays,
    pick_collection,
)
from mrl.retrieval.funnel_spec import Funnel
from mrl.retrieval.store import VectorStore

__all__ = [
    "INDEX_KINDS",
    "MILVUS_INDEX",
    "MilvusFunnel",
    "MilvusStore",
    "collection_name",
    "connect",
    "load_into_milvus",
]

PROPERTY = META_KEY  # the collection property holding what it holds, as JSON
MAX_LIMIT = 16384  # Milvus's largest top-k
FETCH_BYTES = 32 << 20  # full vectors fetched per request
MILVUS_INDEX = {
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


def _read_meta(client, name: str) -> CollectionMeta | None:
    properties = client.describe_collection(name).get("properties") or {}
    return CollectionMeta.from_json(properties[PROPERTY]) if PROPERTY in properties else None


def _schema(client, meta: CollectionMeta, item_length: int):
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
    return schema


def _index_params(client, meta: CollectionMeta):
    index_type, params = MILVUS_INDEX[(meta.format, meta.index)]
    if meta.index == "ivf" and "nlist" not in params:
        params = {**params, "nlist": int(np.clip(round(4 * np.sqrt(meta.count)), 1, max(1, meta.count // 39)))}
    indexes = client.prepare_index_params()
    metric = "HAMMING" if meta.format == "bits" else _METRIC[meta.metric]
    indexes.add_index("prefix", index_type=index_type, metric_type=metric, params=params)
    indexes.add_index("full", index_type="FLAT", metric_type=_METRIC[meta.metric])
    return indexes


class MilvusFunnel(DatabaseFunnel):
    """Funnel search over a collection `load_into_milvus` made: the database shortlists, the rerank runs here.

    Args:
        uri: the collection's Milvus: a Milvus Lite ``.db`` file or a server's address.
        collection: its name (default: the only one there).
        funnel: stages ``[(size, candidates), ...]`` (or a `Funnel`) to serve instead of the recorded one; the
            first size must be the one the collection indexes.
        ef, nprobe: HNSW search beam (at least the shortlist) and IVF lists probed, for approximate indexes.
    """

    engine = "Milvus"
    max_candidates = MAX_LIMIT

    def __init__(
        self,
        uri: str | Path,
        collection: str | None = None,
        funnel: Funnel | Sequence[Sequence[int]] | None = None,
        token: str | None = None,
        ef: int | None = None,
        nprobe: int | None = None,
    ) -> None:
        store = MilvusStore(uri, token)
        store.connect(create=False)
        self.uri, self.client = store.uri, store.client
        self.collection = pick_collection(self.uri, store.ours(), collection)
        self.meta = store.read_meta(self.collection)
        self.warn_if_incomplete()
        self.funnel = self.resolve_funnel(funnel)
        self.ef, self.nprobe = ef, nprobe
        self.client.load_collection(self.collection)

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
        codes = self.query_prefix(queries)
        c = int(candidates or self.funnel.stages[0][1])
        if self.meta.format == "bits":  # pragma: no cover - needs a Milvus server (Lite has no binary fields)
            data = [row.tobytes() for row in codes]
        else:
            data = list(codes)
        hits = self.client.search(
            self.collection,
            data=data,
            anns_field="prefix",
            limit=c,
            search_params=self._search_params(c),
            output_fields=["id"],
        )
        ids = np.full((len(codes), c), -1, dtype=np.int64)
        scores = np.full((len(codes), c), np.nan, dtype=np.float32)
        for i, row in enumerate(hits):
            for j, hit in enumerate(row[:c]):
                ids[i, j], scores[i, j] = int(hit["id"]), float(hit["distance"])
        return scores, ids

    def items(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(names, labels)`` of database rows ``ids`` (any shape; ``None`` and -1 where ``ids`` is -1)."""
        ids = np.asarray(ids)
        wanted = np.unique(ids[ids >= 0])
        found: dict[int, tuple[str, int]] = {}
        for start in range(0, len(wanted), 16384):
            part = wanted[start : start + 16384].tolist()
            for r in self.client.get(self.collection, ids=part, output_fields=["item", "label"]):
                found[int(r["id"])] = (r["item"], int(r["label"]))
        return item_arrays(ids, found)

    def close(self) -> None:
        self.client.close()


class MilvusStore(VectorStore):
    """Milvus as a `VectorStore`: a Milvus Lite ``.db`` file (embedded) or a server's ``http://host:19530``
    (``credential``: its token). Milvus Lite has no binary vector fields: ``bits`` need a server."""

    name = "milvus"
    engine = "Milvus"
    supported = tuple(MILVUS_INDEX)
    funnel_class = MilvusFunnel

    def connect(self, create: bool = True) -> None:
        if not create and is_lite(self.uri) and not Path(self.uri).exists():
            raise FileNotFoundError(f"uri={self.uri!r}: no such Milvus Lite file (make index writes it)")
        self.client = connect(self.uri, self.credential)

    def close(self) -> None:
        self.client.close()

    def has_bits(self) -> bool:
        return not is_lite(self.uri)

    def check_spec(self, spec: LoadSpec) -> None:
        if spec.format == "bits" and is_lite(self.uri):
            raise ValueError(
                f"format='bits': Milvus Lite ({self.uri}) has no binary vector fields; a Milvus server has "
                "(uri=http://host:19530), or use format=int8 (4x smaller than float) here"
            )

    def collections(self) -> list[str]:
        return list(self.client.list_collections())

    def read_meta(self, collection: str) -> CollectionMeta | None:
        return _read_meta(self.client, collection)

    def drop(self, collection: str) -> None:
        self.client.drop_collection(collection)

    def create(self, load: Load) -> None:
        schema = _schema(self.client, load.meta, item_length=max(len(s) for s in load.items) * 4 + 16)
        indexes = _index_params(self.client, load.meta)
        properties = {PROPERTY: load.meta.to_json()}
        self.client.create_collection(load.name, schema=schema, index_params=indexes, properties=properties)
        self.client.load_collection(load.name)

    def open(self, collection: str) -> bool:
        self.client.load_collection(collection)
        return int(self.client.get_collection_stats(collection).get("row_count", 0)) > 0

    def insert(self, load: Load, rows: np.ndarray, resuming: bool) -> int:
        if resuming:  # skip the rows already there
            have = self.client.get(load.name, ids=rows.tolist(), output_fields=["id"])
            done = {int(r["id"]) for r in have}
            rows = np.array([r for r in rows if int(r) not in done], dtype=np.int64)
        if not len(rows):
            return 0
        codes, bits = load.codes(rows), load.meta.format == "bits"
        self.client.insert(
            load.name,
            [
                {
                    "id": int(r),
                    "prefix": codes[j].tobytes() if bits else codes[j],
                    "full": load.x[r],
                    "item": load.items[r],
                    "label": int(load.labels[r]),
                }
                for j, r in enumerate(rows)
            ],
        )
        return len(rows)

    def finish(self, load: Load, inserted: int) -> None:
        self.client.flush(load.name)
        self.client.alter_collection_properties(load.name, properties={PROPERTY: load.meta.finished().to_json()})

    def index_name(self, meta: CollectionMeta) -> str:
        return MILVUS_INDEX[(meta.format, meta.index)][0]


def load_into_milvus(
    embeddings: str | Path | np.ndarray,
    uri: str | Path,
    *,
    spec: LoadSpec | None = None,
    drop: bool = False,
    progress: bool = True,
    token: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Load embeddings (an ``.npz`` as ``make embed`` / ``make eval`` write, or an ``[N, D]`` array) into a Milvus
    collection for the funnel; returns what it did (``inserted``, ``skipped``, ``count``, ``seconds``, ...).

    ``spec`` (a `LoadSpec`) or its fields as keywords (``collection``, ``first_size``, ``format``, ``index``,
    ``metric``, ``funnel``, ``batch_size``, ``items``, ``labels``, ``checkpoint``): ``first_size`` coordinates in
    ``format`` (``float``, ``int8``, ``bits``) are indexed by ``index`` (``flat``: exact; ``hnsw``; ``ivf``);
    ``funnel`` (default: a shortlist of 200 reranked at full width) is recorded for `MilvusFunnel` to serve. Rows go
    in ``batch_size`` at a time. A collection that exists is resumed: its rows are kept, the missing ones inserted
    (it must hold the same embeddings, loaded the same way), unless ``drop`` (`VectorStore.load`).
    """
    spec = (spec or LoadSpec()).with_options(options)
    return MilvusStore(uri, token).load(embeddings, spec, drop=drop, progress=progress)
