"""One interface for the vector databases behind the funnel: `VectorStore`, with LanceDB
(:class:`mrl.retrieval.lancedb.LanceStore`) and Milvus (:class:`mrl.retrieval.milvus.MilvusStore`) as its two
implementations.

    store = LanceStore("index.lancedb")                      # or MilvusStore("index.db")
    summary = store.load("embeddings_train.npz", LoadSpec(first_size=16))   # resumes an interrupted load
    store.describe()                                         # CollectionMeta: width, first stage, funnel, ...
    scores, ids = store.funnel().search(queries, k=10)       # a DatabaseFunnel: shortlist there, rerank here

What every database does the same way is written once here: `VectorStore.load` reads and checks the load
(`prepare_load`), connects, drops or resumes the collection (a resumed one must hold the same embeddings, loaded
the same way: `check_same`), inserts the rows a batch at a time under one progress bar, counting the rows a resumed
load finds already there, finishes the collection (its index, and the record that the load completed) and returns
one summary. A store supplies only the steps that differ: how it creates, opens, inserts into and finishes a
collection, and how it names its index.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mrl.retrieval.database import (
    CollectionMeta,
    DatabaseFunnel,
    Load,
    LoadSpec,
    check_same,
    pick_collection,
    prepare_load,
    progress_bar,
)
from mrl.retrieval.funnel_spec import Funnel

__all__ = ["VectorStore"]


class VectorStore(ABC):
    """A vector database holding Matryoshka embeddings for the funnel: connect, load (resuming), search a funnel,
    describe a collection.

    Args:
        uri: where the database is (each store says what it takes: a file, a folder, a server's address).
        credential: the store's secret for a remote database (Milvus: a token; LanceDB Cloud: an API key).
    """

    name: ClassVar[str]  # the backend's name: ``make index --backend``
    engine: ClassVar[str]  # the database's name in messages
    supported: ClassVar[Sequence[tuple[str, str]]]  # the (format, index) pairs it indexes
    funnel_class: ClassVar[type[DatabaseFunnel]]  # its search

    def __init__(self, uri: str | Path, credential: str | None = None) -> None:
        self.uri = str(uri)
        self.credential = credential

    # ------------------------------------------------------------------ what each store implements
    @abstractmethod
    def connect(self, create: bool = True) -> None:
        """Open the database (creating a local one where missing and ``create``); one line where it cannot."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    @abstractmethod
    def collections(self) -> list[str]:
        """Every collection (table) the database holds, mrl's or not."""

    @abstractmethod
    def read_meta(self, collection: str) -> CollectionMeta | None:
        """What an mrl collection holds; None for one mrl did not make."""

    @abstractmethod
    def drop(self, collection: str) -> None: ...

    @abstractmethod
    def create(self, load: Load) -> None:
        """A new, empty collection for ``load``, recording ``load.meta``."""

    @abstractmethod
    def open(self, collection: str) -> bool:
        """Open an existing collection for more rows; whether it may hold some already (a resumed load then
        inserts only the missing ones)."""

    @abstractmethod
    def insert(self, load: Load, rows: np.ndarray, resuming: bool) -> int:
        """Insert ``rows`` of ``load`` (with ``resuming``, only those whose ids are not there); how many went in."""

    @abstractmethod
    def finish(self, load: Load, inserted: int) -> None:
        """After the rows: build or refresh the first stage's index and record the load as complete."""

    @abstractmethod
    def index_name(self, meta: CollectionMeta) -> str:
        """The database's own name of the index a collection's first stage is searched with."""

    @abstractmethod
    def check_spec(self, spec: LoadSpec) -> None:
        """Refuse, in one line, a load this database cannot hold (before anything is read)."""

    def has_bits(self) -> bool:
        """Whether the database indexes binary codes."""
        return ("bits", "flat") in self.supported

    # ------------------------------------------------------------------ written once for every store
    def load(
        self, embeddings: str | Path | np.ndarray, spec: LoadSpec, drop: bool = False, progress: bool = True
    ) -> dict[str, Any]:
        """Load embeddings (an ``.npz`` as ``make embed`` / ``make eval`` write, or an ``[N, D]`` array) for the
        funnel; returns what it did (``inserted``, ``skipped``, ``count``, ``seconds``, ``resumed``, ``index``,
        ...). A collection that exists is resumed: its rows are kept, the missing ones inserted (it must hold the
        same embeddings, loaded the same way), unless ``drop``."""
        self.check_spec(spec)
        load = prepare_load(embeddings, spec, engine=self.engine, supported=list(self.supported))
        began = time.perf_counter()
        self.connect()
        try:
            resumed, partial = self._create_or_resume(load, drop)
            inserted, skipped = self._insert_batches(load, spec.batch_size, partial, progress)
            self.finish(load, inserted)
        finally:
            self.close()
        seconds = time.perf_counter() - began
        return {
            "uri": self.uri,
            "collection": load.name,
            "count": len(load.x),
            "dim": load.meta.dim,
            "inserted": inserted,
            "skipped": skipped,
            "resumed": resumed,
            "seconds": seconds,
            "rows_per_second": inserted / seconds if seconds > 0 else float("nan"),
            "funnel": load.funnel,
            "index": self.index_name(load.meta),
        }

    def _create_or_resume(self, load: Load, drop: bool) -> tuple[bool, bool]:
        """``(resumed, partial)``: whether the collection was there (and kept), and whether it may hold rows."""
        name = load.name
        exists = name in self.collections()
        if exists and drop:
            self.drop(name)
            exists = False
        if not exists:
            self.create(load)
            return False, False
        old = self.read_meta(name)
        if old is None:
            raise ValueError(f"collection={name!r}: exists and was not made by mrl; give another --collection")
        check_same(name, old, load.meta)
        return True, self.open(name)

    def _insert_batches(self, load: Load, batch_size: int, partial: bool, progress: bool) -> tuple[int, int]:
        """``(inserted, skipped)``: every row in ``batch_size`` batches under one progress bar."""
        n = len(load.x)
        inserted = skipped = 0
        with progress_bar(progress) as bar:
            task = bar.add_task(f"{load.name}: loading {n} items", total=n)
            for start in range(0, n, batch_size):
                rows = np.arange(start, min(start + batch_size, n))
                added = self.insert(load, rows, resuming=partial)
                inserted += added
                skipped += len(rows) - added
                bar.update(task, advance=len(rows))
        return inserted, skipped

    def funnel(
        self,
        collection: str | None = None,
        funnel: Funnel | Sequence[Sequence[int]] | None = None,
        ef: int | None = None,
        nprobe: int | None = None,
    ) -> DatabaseFunnel:
        """The search over ``collection`` (default: the only mrl one): ``funnel`` (default: the one recorded at
        load) served with the database's shortlist; ``ef`` / ``nprobe`` for approximate indexes."""
        return self.funnel_class(self.uri, collection, funnel, self.credential, ef, nprobe)

    def describe(self, collection: str | None = None) -> CollectionMeta:
        """What ``collection`` (default: the only mrl one) holds: width, count, first stage, metric, the funnel to
        serve, the model's checkpoint, whether its load completed."""
        self.connect(create=False)
        try:
            meta = self.read_meta(pick_collection(self.uri, self.ours(), collection))
        finally:
            self.close()
        assert meta is not None
        return meta

    def ours(self) -> list[str]:
        """The collections mrl made (those that record what they hold), of a connected store."""
        return [name for name in self.collections() if self._is_ours(name)]

    def _is_ours(self, name: str) -> bool:
        try:
            return self.read_meta(name) is not None
        except Exception:  # a collection we cannot describe is not one of ours
            return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(uri={self.uri!r})"
