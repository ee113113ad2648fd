"""The funnel in LanceDB: Matryoshka embeddings in a Lance table, shortlisted there, reranked here.

    from mrl.retrieval.lancedb import LanceFunnel, load_into_lancedb
    load_into_lancedb("embeddings_train.npz", "index.lancedb", first_size=16)   # a local folder
    funnel = LanceFunnel("index.lancedb")                                       # or "s3://bucket/index.lancedb"
    scores, ids = funnel.search(queries, k=10)

LanceDB is an embedded engine (Rust, in this process) over Lance files: a local folder, or object storage
(``s3://``, ``gs://``, ``az://``; credentials from the environment) that any number of machines can search at once;
``db://`` names a LanceDB Cloud / Enterprise database (``api_key``), the same calls served remotely.

One table per database, one row per item, ``id`` the item's row number in the embeddings file:

* ``prefix``: the first-stage prefix (re-normalised for cosine) in float, searched exactly by a scan (``flat``), or
  through ``IVF_HNSW_FLAT`` (``hnsw``) or ``IVF_FLAT`` (``ivf``); in ``int8`` through ``IVF_SQ`` (one partition
  for ``flat``: a scan of 8-bit codes), ``IVF_HNSW_SQ`` or ``IVF_SQ``; or its ``bits`` (``threshold_bits``, uint8
  codes) by Hamming distance, scanned (``flat``) or through ``IVF_FLAT`` (``ivf``);
* ``full``: the whole embedding as stored, for the rerank; ``item`` (the row's name in the file) and ``label``.

What the table holds (width, first stage, metric, checkpoint, a fingerprint of the file, the funnel to serve) is
recorded in the metadata of its ``id`` column, so a search with another model's queries or another width, or a
resumed load from another file, fails with one line. Loading is batched with a progress bar; a load that finds its
table resumes with ``merge_insert`` on ``id`` (only the ids not there go in), so an interrupted load continues and no
row is ever inserted twice. A search asks the table for each query's shortlist (one request per batch of queries),
takes the shortlisted rows' full vectors once each (by row address, ``fetch="inline"`` in the shortlist's own
request, or ``fetch="local"`` from a memmap of them here: memory-tiered), and reranks them here as
`AdaptiveRetriever` does, so with an exact first stage both return the same neighbours. `LanceFullWidth` is the
baseline: LanceDB's own index (IVF_PQ, IVF_HNSW_SQ, IVF_FLAT) on the ``full`` column, what a LanceDB user builds
without prefixes (benchmarks/lancedb_native.py compares the two).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
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
    "FULL_WIDTH_KINDS",
    "INDEX_KINDS",
    "LANCE_INDEX",
    "LanceFullWidth",
    "LanceFunnel",
    "LanceStore",
    "collection_name",
    "connect",
    "load_into_lancedb",
]

_DISTANCE = {"cosine": "dot", "ip": "dot", "l2": "l2"}  # cosine: the stored prefixes are re-normalised
LANCE_INDEX = {  # (format, index) -> the index on ``prefix`` (None: none, an exact scan)
    ("float", "flat"): None,
    ("float", "hnsw"): "IVF_HNSW_FLAT",
    ("float", "ivf"): "IVF_FLAT",
    ("int8", "flat"): "IVF_SQ",  # one partition: every query scans all the 8-bit codes
    ("int8", "hnsw"): "IVF_HNSW_SQ",
    ("int8", "ivf"): "IVF_SQ",
    ("bits", "flat"): None,
    ("bits", "ivf"): "IVF_FLAT",
}
FETCH_MODES = ("take", "inline", "local")  # how LanceFunnel gets the shortlist's full vectors
REMOTE = ("s3://", "s3+ddb://", "gs://", "az://", "abfss://", "db://", "memory://")
QUERY_BYTES = 64 << 20  # shortlisted ids and distances asked for per request
TAKE_ROWS = 8192  # full vectors taken per request
LOOKUP_IDS = 4096  # ids per ``id IN (...)`` filter


def require_lancedb():
    try:
        import lancedb
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError("backend=lancedb needs lancedb: pip install 'mrl[retrieval]'") from None
    return lancedb


def is_local(uri: str) -> bool:
    """A folder on this machine rather than object storage or a LanceDB server."""
    return not str(uri).startswith(REMOTE)


def connect(uri: str | Path, api_key: str | None = None, create: bool = True):
    """A LanceDB connection on ``uri``: a local folder (created if missing and ``create``), object storage
    (``s3://bucket/path``) or a LanceDB Cloud / Enterprise database (``db://name`` with ``api_key``).

    Calls on the same database (a local folder by its resolved path, else the uri as given) with the same
    ``api_key`` share one connection (`_shared_connection`) rather than each store or funnel opening its own (a
    benchmark that made one funnel per setting once counted 500 threads). A local folder is checked on every call,
    so ``create=False`` still fails on a folder removed since, and a folder that had to be created gets a new
    connection."""
    require_lancedb()
    uri = str(uri)
    if not is_local(uri):
        return _shared_connection(uri, uri, api_key)
    path = Path(uri)
    if path.is_file():
        raise ValueError(f"uri={uri!r}: a file; a LanceDB database is a folder (e.g. index.lancedb)")
    resolved = str(path.resolve())  # the same folder under any spelling, and still it after a chdir
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"uri={uri!r}: no such LanceDB folder (make index writes it)")
        path.mkdir(parents=True)
        _forget_connection(resolved, api_key)
    return _shared_connection(uri, resolved, api_key)


_CONNECTIONS: OrderedDict[tuple[str, str | None], Any] = OrderedDict()  # (database, api key) -> connection
_CONNECTIONS_LOCK = threading.Lock()
MAX_CONNECTIONS = 32  # the least recently asked-for is dropped beyond it (its holders keep theirs)


def _shared_connection(uri: str, database: str, api_key: str | None):
    """The cached connection to ``database`` with ``api_key``, opened on first use; ``memory://`` databases are
    never shared (each connection is a database of its own). Errors name ``uri`` as the caller gave it."""
    key = (database, api_key or None)
    with _CONNECTIONS_LOCK:
        db = _CONNECTIONS.get(key)
        if db is not None:
            _CONNECTIONS.move_to_end(key)
            return db
        db = _open_connection(uri, database, api_key)
        if not uri.startswith("memory://"):
            _CONNECTIONS[key] = db
            while len(_CONNECTIONS) > MAX_CONNECTIONS:
                _CONNECTIONS.popitem(last=False)
        return db


def _open_connection(uri: str, database: str, api_key: str | None):
    try:
        return require_lancedb().connect(database, **({"api_key": api_key} if api_key else {}))
    except (OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"uri={uri!r}: cannot open it with LanceDB: {str(error).splitlines()[0]}") from None


def _forget_connection(database: str, api_key: str | None = None) -> None:
    """Drop the shared connection to ``database`` (a resolved local path, or a remote uri), if there is one: the
    next `connect` opens a new one. Objects holding the old one keep it."""
    with _CONNECTIONS_LOCK:
        _CONNECTIONS.pop((database, api_key or None), None)


def _table_names(db) -> list[str]:
    names, token = [], None
    while True:
        page = db.list_tables(page_token=token)
        names += list(page.tables)
        token = page.page_token
        if not token:
            return names


def _read_meta(table) -> CollectionMeta | None:
    """What an mrl table holds; None for a table mrl did not make."""
    schema = table.schema
    if "id" not in schema.names:
        return None
    metadata = schema.field("id").metadata or {}
    text = metadata.get(META_KEY.encode())
    return CollectionMeta.from_json(text) if text is not None else None


def _write_meta(table, meta: CollectionMeta) -> None:
    table.update_field_metadata({"path": "id", "metadata": {META_KEY: meta.to_json()}})


def _schema(meta: CollectionMeta):
    import pyarrow as pa

    if meta.format == "bits":
        first = pa.list_(pa.uint8(), -(-meta.first_size // 8))
    else:
        first = pa.list_(pa.float32(), meta.first_size)
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False, metadata={META_KEY: meta.to_json()}),
            pa.field("prefix", first),
            pa.field("full", pa.list_(pa.float32(), meta.dim)),
            pa.field("item", pa.string()),
            pa.field("label", pa.int64()),
        ]
    )


def _rows(schema, load, rows: np.ndarray):
    """The Arrow table of ``rows`` of a `Load`."""
    import pyarrow as pa

    codes, full = load.codes(rows), load.x[rows]
    return pa.Table.from_arrays(
        [
            pa.array(rows, pa.int64()),
            pa.FixedSizeListArray.from_arrays(pa.array(codes.ravel()), codes.shape[1]),
            pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(full, np.float32).ravel()), full.shape[1]),
            pa.array([load.items[r] for r in rows], pa.string()),
            pa.array(load.labels[rows], pa.int64()),
        ],
        schema=schema,
    )


def _index_config(meta: CollectionMeta):
    """The LanceDB index on ``prefix`` (None: none, an exact scan)."""
    from lancedb.index import HnswFlat, HnswSq, IvfFlat, IvfSq

    kind = LANCE_INDEX[(meta.format, meta.index)]
    distance = "hamming" if meta.format == "bits" else _DISTANCE[meta.metric]
    if kind is None:
        return None
    if kind in ("IVF_HNSW_FLAT", "IVF_HNSW_SQ"):  # one partition: one graph over every item, as FAISS builds it
        return (HnswFlat if kind == "IVF_HNSW_FLAT" else HnswSq)(distance_type=distance, num_partitions=1, m=32)
    if kind == "IVF_SQ" and meta.index == "flat":
        return IvfSq(distance_type=distance, num_partitions=1)
    partitions = int(np.clip(round(np.sqrt(meta.count)), 1, max(1, meta.count // 39)))
    return (IvfFlat if kind == "IVF_FLAT" else IvfSq)(distance_type=distance, num_partitions=partitions)


def _build_indexes(table, meta: CollectionMeta, inserted: int) -> None:
    """The first stage's index and a BTree on ``id`` (for lookups by id), built once the rows are in; rows added to
    an indexed table later are folded in by ``optimize``."""
    from lancedb.index import BTree

    have = {tuple(i.columns) for i in table.list_indices()}
    config = _index_config(meta)
    if config is not None and ("prefix",) not in have:
        table.create_index("prefix", config=config)
    elif config is not None and inserted:
        table.optimize()
    if ("id",) not in have:
        table.create_index("id", config=BTree())


class LanceFunnel(DatabaseFunnel):
    """Funnel search over a table `load_into_lancedb` made: the database shortlists, the rerank runs here.

    Args:
        uri: the database: a local folder, object storage (``s3://...``) or ``db://`` (with ``api_key``).
        collection: the table's name (default: the only mrl table there).
        funnel: stages ``[(size, candidates), ...]`` (or a `Funnel`) to serve instead of the recorded one; the
            first size must be the one the table indexes.
        ef, nprobe: HNSW search beam (at least the shortlist) and IVF partitions probed, for approximate indexes.
        fetch: how the shortlist's full vectors come: ``"take"`` (default), a second request by row address after
            the shortlist's; ``"inline"``, in the shortlist's own request (``full`` selected beside ``id``: LanceDB
            reads it for the returned rows only), one request instead of two, which pays where LanceDB's fixed cost
            per request dominates (benchmarks/lancedb_native.py: about 3 ms a request on 2 cores); ``"local"``,
            from ``vectors`` in this process (set by giving ``vectors``).
        vectors: the table's full vectors by id, ``[count, dim]``: an array or a read-only memmap (``np.load(path,
            mmap_mode="r")``, `write_rerank_memmap`). Memory-tiered serving: LanceDB's index on the prefix column
            shortlists, the shortlist's rows are read from the file here, no second request and no full vectors in
            RAM beyond the pages read.
    """

    engine = "LanceDB"

    def __init__(
        self,
        uri: str | Path,
        collection: str | None = None,
        funnel: Funnel | Sequence[Sequence[int]] | None = None,
        api_key: str | None = None,
        ef: int | None = None,
        nprobe: int | None = None,
        fetch: str = "take",
        vectors: np.ndarray | None = None,
    ) -> None:
        fetch = "local" if vectors is not None and fetch == "take" else fetch
        if fetch not in FETCH_MODES:
            raise ValueError(f"fetch={fetch!r}: expected one of {', '.join(FETCH_MODES)}")
        if (fetch == "local") != (vectors is not None):
            raise ValueError(f"fetch={fetch!r}: 'local' reads the full vectors from vectors=, given only with it")
        store = LanceStore(uri, api_key)
        store.connect(create=False)
        self.uri, self.db = store.uri, store.db
        self.collection = pick_collection(self.uri, store.ours(), collection)
        self.table = self.db.open_table(self.collection)
        self.meta = _read_meta(self.table)
        self.warn_if_incomplete()
        self.funnel = self.resolve_funnel(funnel)
        self.ef, self.nprobe, self.fetch = ef, nprobe, fetch
        if vectors is not None and tuple(np.shape(vectors)) != (self.n, self.dim):
            raise ValueError(
                f"vectors.shape={tuple(np.shape(vectors))}: expected ({self.n}, {self.dim}), the full vectors of "
                f"collection={self.collection!r} by id"
            )
        self.vectors = vectors

    def first_stage_plan(self, queries: np.ndarray | None = None) -> str:
        """LanceDB's plan of the first stage's request (of the first query, or a zero vector): ``ANNIvfPartition`` /
        ``ANNSubIndex`` where the native index on ``prefix`` serves it, a ``KNNVectorDistance`` over every row's
        ``prefix`` where it is a scan."""
        codes = self.query_prefix(queries[:1]) if queries is not None else None
        if codes is None:
            width = -(-self.meta.first_size // 8) if self.meta.format == "bits" else self.meta.first_size
            codes = np.zeros((1, width), dtype=np.uint8 if self.meta.format == "bits" else np.float32)
        return self._query(codes[0], self.funnel.stages[0][1], ["id", "_distance"]).explain_plan(True)

    def _query(self, codes: np.ndarray, limit: int, columns: list[str]):
        query = self.table.search(codes, vector_column_name="prefix")
        query = query.distance_type("hamming" if self.meta.format == "bits" else _DISTANCE[self.metric])
        if self.meta.index == "hnsw":
            query = query.ef(max(limit, self.ef or limit))
        elif self.meta.index == "ivf":
            query = query.nprobes(self.nprobe or 16)
        return query.limit(limit).select(columns)

    def _ask(self, codes: np.ndarray, c: int, extra: str | None):
        """``(query_index, id, distance, extra)`` of every query's best ``c``, ``codes`` in one request; ``extra``:
        None, the row ids (``"rowid"``) or the full vectors (``"full"``) of the rows returned."""
        columns = ["id", "_distance"] + (["full"] if extra == "full" else [])
        query = self._query(codes if len(codes) > 1 else codes[0], c, columns)
        got = (query.with_row_id(True) if extra == "rowid" else query).to_arrow()
        which = got["query_index"].to_numpy() if "query_index" in got.column_names else np.zeros(got.num_rows, int)
        more = None
        if extra == "rowid":
            more = got["_rowid"].to_numpy()
        elif extra == "full":
            more = got["full"].combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, self.dim)
        return which, got["id"].to_numpy(), got["_distance"].to_numpy(), more

    def _shortlist(self, queries: np.ndarray, c: int, with_row_ids: bool = False, with_full: bool = False):
        """``(scores, ids, row_ids)`` ``[Q, c]`` best first, the lowest ids first among equal distances (``-1``:
        none; row ids -1 unless asked for); ``with_full``: a fourth, ``(rows, full)``, the sorted unique ids
        shortlisted and their full vectors, read in the same requests.

        Among items at the same distance as the ``c``-th, the database keeps any; FAISS, and so `AdaptiveRetriever`,
        keeps the lowest ids (:mod:`mrl.retrieval.ties`). So each query asks for some more than ``c`` and, where the
        last returned item still ties with the ``c``-th (the norm for bit codes: a few hundred distinct distances),
        again for more, until its whole tie is in; then the ``c`` best by (distance, id) are kept."""
        codes = self.query_prefix(queries)
        nq = len(codes)
        ids = np.full((nq, c), -1, dtype=np.int64)
        distances = np.full((nq, c), np.nan, dtype=np.float32)
        row_ids = np.full((nq, c), -1, dtype=np.int64)
        todo, limit = np.arange(nq), min(self.n, c + max(16, c // 4))
        extra = "full" if with_full else "rowid" if with_row_ids else None
        kept_ids, kept_full = [], []
        while len(todo):
            step = max(1, QUERY_BYTES // (64 * limit))
            again = []
            for start in range(0, len(todo), step):
                part = todo[start : start + step]
                which, found, distance, more = self._ask(codes[part], limit, extra)
                order = np.lexsort((found, distance, which))  # each query's hits best first, ties by id
                which, found, distance = which[order], found[order], distance[order]
                begins = np.searchsorted(which, np.arange(len(part)))
                ends = np.searchsorted(which, np.arange(len(part)), side="right")
                cut, last = np.minimum(begins + c, ends) - 1, ends - 1
                open_tie = (ends - begins == limit) & (limit < self.n) & (ends > begins + c)
                open_tie &= distance[np.maximum(cut, 0)] == distance[np.maximum(last, 0)]
                again.append(part[open_tie])
                rank = np.arange(len(which)) - begins[which]
                keep = (rank < c) & ~open_tie[which]
                at = (part[which[keep]], rank[keep])
                ids[at], distances[at] = found[keep], distance[keep]
                if extra == "rowid":
                    row_ids[at] = more[order][keep]
                elif extra == "full":
                    kept_ids.append(found[keep])
                    kept_full.append(more[order[keep]])
            todo, limit = np.concatenate(again), min(self.n, 4 * limit)
        dot = self.meta.format != "bits" and self.metric != "l2"  # LanceDB's dot distance is 1 - the product
        scores = 1.0 - distances if dot else distances
        if not with_full:
            return scores, ids, row_ids
        rows, first = np.unique(np.concatenate(kept_ids or [ids[:0, 0]]), return_index=True)
        full = np.concatenate(kept_full)[first] if kept_full else np.empty((0, self.dim), np.float32)
        return scores, ids, row_ids, (rows, np.ascontiguousarray(full, dtype=np.float32))

    def shortlist(self, queries: np.ndarray, candidates: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The database's first stage: ``(scores, ids)`` of each query's best ``candidates`` (``-1`` where it
        returned fewer), best first as the database ranks them (scores: inner products, or distances for l2 and
        bits)."""
        scores, ids, _ = self._shortlist(queries, int(candidates or self.funnel.stages[0][1]))
        return scores, ids

    def _shortlist_full(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The shortlist, then each shortlisted row's full vector taken once by its row address (a row taken is
        checked by its id: one that moved since, e.g. by a compaction, is looked up by id instead); with
        ``fetch="inline"`` the vectors come with the shortlist, in its request; with ``"local"`` from ``vectors``."""
        if self.fetch == "inline":
            _, cand, _, (rows, full) = self._shortlist(q, self.funnel.stages[0][1], with_full=True)
            return cand, rows, full
        if self.fetch == "local":
            _, cand, _ = self._shortlist(q, self.funnel.stages[0][1])
            rows = np.unique(cand[cand >= 0])
            return cand, rows, np.asarray(self.vectors[rows], dtype=np.float32)  # type: ignore[index]
        _, cand, row_ids = self._shortlist(q, self.funnel.stages[0][1], with_row_ids=True)
        rows, first = np.unique(cand[cand >= 0], return_index=True)
        addresses = row_ids[cand >= 0][first]
        full = np.empty((len(rows), self.dim), dtype=np.float32)
        found = np.zeros(len(rows), dtype=bool)
        for start in range(0, len(rows), TAKE_ROWS):
            part = addresses[start : start + TAKE_ROWS]
            got = self.table.take_row_ids(part.tolist()).select(["id", "full"]).to_arrow()
            self._place(got, rows, full, found)
        if not found.all():
            self._lookup(rows[~found], rows, full, found)
        return cand, rows, full

    def _place(self, got, rows: np.ndarray, full: np.ndarray, found: np.ndarray) -> None:
        """Put the ``full`` vectors of an Arrow result at their ids' positions in ``rows``."""
        if not got.num_rows:
            return
        ids = got["id"].to_numpy()
        at = np.searchsorted(rows, ids)
        ok = (at < len(rows)) & (rows[np.minimum(at, len(rows) - 1)] == ids)
        vectors = got["full"].combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, self.dim)
        full[at[ok]] = vectors[ok]
        found[at[ok]] = True

    def _lookup(self, wanted: np.ndarray, rows: np.ndarray, full: np.ndarray, found: np.ndarray) -> None:
        for start in range(0, len(wanted), LOOKUP_IDS):
            part = wanted[start : start + LOOKUP_IDS]
            where = f"id IN ({','.join(str(int(i)) for i in part)})"
            got = self.table.search().where(where).select(["id", "full"]).limit(len(part)).to_arrow()
            self._place(got, rows, full, found)
        if not found.all():
            missing = rows[~found][:5].tolist()
            raise RuntimeError(f"collection {self.collection}: ids {missing} are shortlisted but have no row")

    def items(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(names, labels)`` of database rows ``ids`` (any shape; ``None`` and -1 where ``ids`` is -1)."""
        ids = np.asarray(ids)
        wanted = np.unique(ids[ids >= 0])
        found: dict[int, tuple[str, int]] = {}
        for start in range(0, len(wanted), LOOKUP_IDS):
            part = wanted[start : start + LOOKUP_IDS]
            where = f"id IN ({','.join(str(int(i)) for i in part)})"
            got = self.table.search().where(where).select(["id", "item", "label"]).limit(len(part)).to_arrow()
            found.update({int(r["id"]): (r["item"], int(r["label"])) for r in got.to_pylist()})
        return item_arrays(ids, found)

    def close(self) -> None:
        """Nothing to release: the table's files are read as needed."""


FULL_WIDTH_KINDS = ("IVF_PQ", "IVF_HNSW_SQ", "IVF_FLAT")


def _full_width_config(kind: str, distance: str, n: int, dim: int, partitions: int | None, options: dict):
    from lancedb.index import HnswSq, IvfFlat, IvfPq

    if kind not in FULL_WIDTH_KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(FULL_WIDTH_KINDS)}")
    parts = int(partitions or np.clip(round(np.sqrt(n)), 1, max(1, n // 39)))
    if kind == "IVF_PQ":
        sub_vectors = options.get("sub_vectors", dim // 16)
        return IvfPq(distance_type=distance, num_partitions=parts, num_sub_vectors=sub_vectors)
    if kind == "IVF_HNSW_SQ":
        return HnswSq(distance_type=distance, num_partitions=parts, m=options.get("m", 20),
                      ef_construction=options.get("ef_construction", 300))  # fmt: skip
    return IvfFlat(distance_type=distance, num_partitions=parts)


class LanceFullWidth:
    """LanceDB's own index on the ``full`` column of an mrl table: what a LanceDB user builds without Matryoshka
    prefixes, the baseline of the LanceDB funnel (benchmarks/lancedb_native.py).

    ``IVF_PQ`` (searched with ``nprobes`` and ``refine_factor``: the best ``refine_factor x k`` by the PQ codes are
    re-scored on the stored vectors), ``IVF_HNSW_SQ`` (``nprobes``, ``ef``, ``refine_factor``) or ``IVF_FLAT``
    (``nprobes``). `build` makes (or replaces) the index; `search` returns ``(scores, ids)`` as `LanceFunnel` does
    (scores: inner products, or squared distances for l2; ids: the rows of the loaded file).
    """

    def __init__(
        self,
        uri: str | Path,
        collection: str | None = None,
        kind: str = "IVF_PQ",
        api_key: str | None = None,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        ef: int | None = None,
    ) -> None:
        store = LanceStore(uri, api_key)
        store.connect(create=False)
        self.collection = pick_collection(store.uri, store.ours(), collection)
        self.table = store.db.open_table(self.collection)
        self.meta = _read_meta(self.table)
        self.kind, self.metric = kind, self.meta.metric
        self.nprobes, self.refine_factor, self.ef = nprobes, refine_factor, ef
        _full_width_config(kind, "dot", 1, 16, 1, {})  # the kind checked now, not at the first search

    @property
    def distance(self) -> str:
        """``cosine`` for cosine (the column holds the vectors as stored, not re-normalised), else dot or l2."""
        return {"cosine": "cosine", "ip": "dot", "l2": "l2"}[self.metric]

    def build(self, partitions: int | None = None, **options: int) -> float:
        """Build (or replace) the index on ``full``: ``partitions`` IVF lists (default ``sqrt(N)``), ``sub_vectors``
        for IVF_PQ (default ``dim / 16``), ``m`` / ``ef_construction`` for IVF_HNSW_SQ; returns the seconds taken."""
        config = _full_width_config(self.kind, self.distance, self.meta.count, self.meta.dim, partitions, options)
        began = time.perf_counter()
        self.table.create_index("full", config=config, replace=True)
        return time.perf_counter() - began

    def index_bytes(self) -> int:
        """The index's own bytes on disk (the IVF centroids, codes or graph; not the ``full`` column it refines
        from)."""
        for index in self.table.list_indices():
            if tuple(index.columns) == ("full",):
                return int(getattr(index, "size_bytes", 0) or 0)
        return 0

    def _query(self, q: np.ndarray, k: int):
        query = self.table.search(q, vector_column_name="full").distance_type(self.distance)
        if self.nprobes:
            query = query.nprobes(int(self.nprobes))
        if self.refine_factor:
            query = query.refine_factor(int(self.refine_factor))
        if self.ef and self.kind == "IVF_HNSW_SQ":  # the graph returns refine_factor x k: ef must reach it
            query = query.ef(max(int(self.ef), k * int(self.refine_factor or 1)))
        return query.limit(k).select(["id", "_distance"])

    def plan(self) -> str:
        """LanceDB's plan of one query (``ANNIvfPartition`` where the index serves it)."""
        return self._query(np.zeros(self.meta.dim, dtype=np.float32), 10).explain_plan(True)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(queries, dtype=np.float32)
        q = q[None, :] if q.ndim == 1 else q
        ids = np.full((len(q), k), -1, dtype=np.int64)
        distances = np.full((len(q), k), np.nan, dtype=np.float32)
        step = max(1, QUERY_BYTES // (64 * k))
        for start in range(0, len(q), step):
            part = q[start : start + step]
            got = self._query(part if len(part) > 1 else part[0], k).to_arrow()
            which = got["query_index"].to_numpy() if "query_index" in got.column_names else np.zeros(got.num_rows, int)
            found, distance = got["id"].to_numpy(), got["_distance"].to_numpy()
            order = np.lexsort((found, distance, which))
            which, found, distance = which[order], found[order], distance[order]
            rank = np.arange(len(which)) - np.searchsorted(which, which)
            keep = rank < k
            ids[start + which[keep], rank[keep]] = found[keep]
            distances[start + which[keep], rank[keep]] = distance[keep]
        scores = distances if self.metric == "l2" else 1.0 - distances  # cosine and dot: 1 - the similarity
        return scores, ids

    def close(self) -> None:
        """Nothing to release: the table's files are read as needed."""


class LanceStore(VectorStore):
    """LanceDB as a `VectorStore`: a local folder, object storage (``s3://...``) or a LanceDB Cloud / Enterprise
    database (``db://``, ``credential``: its API key)."""

    name = "lancedb"
    engine = "LanceDB"
    supported = tuple(LANCE_INDEX)
    funnel_class = LanceFunnel

    def connect(self, create: bool = True) -> None:
        self.db = connect(self.uri, self.credential, create=create)

    def close(self) -> None:
        """Nothing to release: the table's files are read as needed."""

    def check_spec(self, spec: LoadSpec) -> None:
        """LanceDB holds every format (bits as uint8 codes)."""

    def collections(self) -> list[str]:
        return _table_names(self.db)

    def read_meta(self, collection: str) -> CollectionMeta | None:
        return _read_meta(self.db.open_table(collection))

    def drop(self, collection: str) -> None:
        self.db.drop_table(collection)

    def create(self, load: Load) -> None:
        self.table = self.db.create_table(load.name, schema=_schema(load.meta))
        self.schema = self.table.schema

    def open(self, collection: str) -> bool:
        # a table found may hold some of the rows: merge on id; one this load made is empty: plain appends
        self.table = self.db.open_table(collection)
        self.schema = self.table.schema
        return self.table.count_rows() > 0

    def insert(self, load: Load, rows: np.ndarray, resuming: bool) -> int:
        batch = _rows(self.schema, load, rows)
        if resuming:
            return self.table.merge_insert("id").when_not_matched_insert_all().execute(batch).num_inserted_rows
        self.table.add(batch)
        return len(rows)

    def finish(self, load: Load, inserted: int) -> None:
        _build_indexes(self.table, load.meta, inserted)
        _write_meta(self.table, load.meta.finished())

    def index_name(self, meta: CollectionMeta) -> str:
        return LANCE_INDEX[(meta.format, meta.index)] or (
            "exact Hamming scan" if meta.format == "bits" else "exact scan"
        )


def load_into_lancedb(
    embeddings: str | Path | np.ndarray,
    uri: str | Path,
    *,
    spec: LoadSpec | None = None,
    drop: bool = False,
    progress: bool = True,
    api_key: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Load embeddings (an ``.npz`` as ``make embed`` / ``make eval`` write, or an ``[N, D]`` array) into a LanceDB
    table (``collection``) for the funnel; returns what it did (``inserted``, ``skipped``, ``count``, ``seconds``, ...).

    ``spec`` (a `LoadSpec`) or its fields as keywords (``collection``, ``first_size``, ``format``, ``index``,
    ``metric``, ``funnel``, ``batch_size``, ``items``, ``labels``, ``checkpoint``): ``first_size`` coordinates in
    ``format`` (``float``, ``int8``, ``bits``) are indexed by ``index`` (``flat``: exact; ``hnsw``; ``ivf``);
    ``funnel`` (default: a shortlist of 200 reranked at full width) is recorded for `LanceFunnel` to serve. Rows go
    in ``batch_size`` at a time. A table that exists is resumed: its rows are kept, the missing ones inserted (it
    must hold the same embeddings, loaded the same way), unless ``drop`` (`VectorStore.load`).
    """
    spec = (spec or LoadSpec()).with_options(options)
    return LanceStore(uri, api_key).load(embeddings, spec, drop=drop, progress=progress)
