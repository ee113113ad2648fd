"""``make index``: load a run's embeddings, or any embeddings file, into a vector database for the funnel.

``mrl-index RUN_OR_NPZ [--backend lancedb|milvus] [--uri URI] [--collection NAME] [--first-size 16]
[--format float|int8|bits] [--index flat|hnsw|ivf] [--queries Q.npz --target-recall 0.99 --k 10] [--drop]``

A run directory stands for the database embeddings ``make eval`` wrote (``<run>/eval/embeddings_train.npz``; the
test split's, ``embeddings_test.npz``, are the default queries for tuning). The database (``--backend``) is LanceDB
(the default, :mod:`mrl.retrieval.lancedb`; embedded, in the folder ``index.lancedb`` next to the embeddings;
``--uri s3://bucket/path`` puts it on object storage) or Milvus (:mod:`mrl.retrieval.milvus`; Milvus Lite,
embedded, in ``index.db`` next to the embeddings; a server's address, ``--uri http://host:19530``, loads a Milvus
cluster through the same calls). With ``--target-recall`` the funnel is tuned first
(:func:`mrl.retrieval.tune_funnel`, on the queries) and its first stage is what gets indexed; the funnel is recorded
in the collection, and ``make search ARGS="--backend <backend> --uri <uri>"`` serves it. Loading shows a progress
bar and resumes: run it again after an interruption.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from mrl.common.door import require_writable
from mrl.common.embeddings import read_embeddings
from mrl.common.errors import ConfigError, exit_on_config_error
from mrl.retrieval.backends import default_uri, store_class
from mrl.retrieval.database import LoadSpec, collection_name
from mrl.retrieval.funnel_spec import FORMATS, Funnel
from mrl.retrieval.store import VectorStore
from mrl.retrieval.tune import TunedFunnel, tune_funnel

__all__ = ["command", "given_funnel", "main", "resolve_embeddings", "run", "tune_for_store"]

DATABASE_FUNNELS = {"middle_formats": ("float",), "score_gaps": False}  # what DatabaseFunnel serves

QUERY_SPLITS = ("test", "val")


def resolve_embeddings(source: str, queries: str | None, tuning: bool) -> tuple[Path, Path | None]:
    """(database file, queries file or None) of an ``.npz`` or a run directory (its ``eval/embeddings_*.npz``)."""
    path = Path(source)
    if path.is_dir():
        found = path / "eval" / "embeddings_train.npz"
        if not found.is_file():
            raise FileNotFoundError(
                f"embeddings={source!r}: no eval/embeddings_train.npz in this run; run make eval RUN={source} "
                "first (it writes the embeddings), or give an .npz"
            )
        if queries is None and tuning:
            queries = next(
                (str(p) for s in QUERY_SPLITS if (p := path / "eval" / f"embeddings_{s}.npz").is_file()), None
            )
        path = found
    elif not path.is_file():
        raise FileNotFoundError(f"embeddings={source!r}: no such file or run directory")
    return path, Path(queries) if queries else None


def run(  # noqa: PLR0913 - one argument per command-line flag
    source: str,
    uri: str | None = None,
    backend: str = "lancedb",
    collection: str | None = None,
    first_size: int = 16,
    format: str = "float",
    index: str = "flat",
    metric: str = "cosine",
    queries: str | None = None,
    target_recall: float | None = None,
    k: int = 10,
    shortlist: int = 200,
    batch_size: int = 1000,
    drop: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Tune (with ``target_recall``) and load into ``backend``; returns the load's summary (`VectorStore.load`),
    with ``backend`` and ``tuned``."""
    store = store_class(backend)  # an unknown backend fails before anything is read
    database, queries_path = resolve_embeddings(source, queries, tuning=target_recall is not None)
    uri = uri or default_uri(backend, database.parent)
    database_store = store(uri)
    if "://" not in str(uri):  # a local database: its file (Milvus Lite) or folder (LanceDB) must be writable
        require_writable(uri, "uri", folder=backend != "milvus")
    db, names, labels, meta = read_embeddings(database)
    if target_recall is None and (isinstance(first_size, bool) or not 1 <= first_size <= db.shape[1]):
        raise ConfigError(
            "first_size", first_size, f"the indexed prefix's size, in 1..{db.shape[1]} (the file's width)"
        )
    if isinstance(k, bool) or not 1 <= k <= len(db):
        raise ConfigError("k", k, f"must be in 1..{len(db)} (the database size)")
    tuned = None
    if target_recall is not None:
        tuned = tune_for_store(db, queries_path, target_recall, k, metric, database_store)
        funnel = tuned.funnel
        first_size, format = funnel.stages[0][0], funnel.format
    else:
        funnel = given_funnel(db.shape[1], first_size, format, metric, k, shortlist)
    spec = LoadSpec(
        collection=collection or collection_name(database),
        first_size=first_size,
        format=format,
        index=index,
        metric=metric,
        funnel=funnel,
        batch_size=batch_size,
        items=names,
        labels=labels,
        checkpoint=meta.get("checkpoint"),
    )
    summary = database_store.load(db, spec, drop=drop, progress=progress)
    summary["database_file"] = str(database)
    summary["backend"] = backend
    summary["tuned"] = tuned
    return summary


def tune_for_store(
    db: np.ndarray, queries: Path | None, target_recall: float, k: int, metric: str, store: VectorStore
) -> TunedFunnel:
    """The funnel tuned on ``queries`` over the first stages ``store`` reproduces exactly: a float scan, and bits
    where it has binary fields (Milvus Lite has none). Its int8 codes and ANN indexes are its own, so a recall
    measured here on ours would not be the recall it serves; ``--format int8`` / ``--index hnsw`` remain, with their
    recall reported. The database funnel reranks the fetched float vectors with fixed shortlists: no fp16 / int8
    middle stage, no shortlist sized per query (`DATABASE_FUNNELS`)."""
    if queries is None:
        raise ValueError(
            f"target_recall={target_recall}: tuning needs sample queries: give --queries <embeddings .npz> "
            "(make search's QUERIES=; make eval writes embeddings_test.npz)"
        )
    q, _, _, _ = read_embeddings(queries)
    if q.shape[1] != db.shape[1]:
        raise ValueError(
            f"queries={str(queries)!r}: {q.shape[1]}-wide embeddings against a {db.shape[1]}-wide database"
        )
    formats = [f for f in FORMATS if f == "float" or (f == "bits" and store.has_bits())]
    return tune_funnel(
        db, q, target=target_recall, k=k, metric=metric, formats=formats, approximate=(), **DATABASE_FUNNELS
    )


def given_funnel(dim: int, first_size: int, format: str, metric: str, k: int, shortlist: int) -> Funnel:
    """The funnel of ``--first-size`` / ``--format`` / ``--shortlist``: a shortlist reranked at full width (one
    stage when the first size is the full width)."""
    if shortlist < k:
        raise ConfigError("shortlist", shortlist, f"must keep at least k={k} candidates")
    stages = ((first_size, k),) if first_size == dim else ((first_size, shortlist), (dim, k))
    if format not in FORMATS:
        raise ConfigError("format", format, f"expected one of {', '.join(FORMATS)}")
    return Funnel(stages, format, metric)


def command(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse, load and print the summary; returns `run`'s summary (for callers in Python)."""
    parser = argparse.ArgumentParser(prog="mrl-index", description=__doc__.splitlines()[0].strip("`: "))
    parser.add_argument("source", help="an embeddings .npz (make embed, make eval), or a run directory after make eval")
    parser.add_argument("--backend", default="lancedb", help="the vector database: lancedb (default) or milvus")
    parser.add_argument("--uri", default=None, help="milvus: a Milvus Lite .db file (default: index.db next to the "
                        "embeddings) or a server, http://host:19530; lancedb: a folder (default: index.lancedb next "
                        "to the embeddings) or s3://bucket/path")  # fmt: skip
    parser.add_argument("--collection", default=None, help="collection (LanceDB: table) name (default: mrl_<stem>)")
    parser.add_argument("--first-size", type=int, default=16, help="prefix size indexed for the shortlist (16)")
    parser.add_argument("--format", default="float", help="the shortlist's numbers: float, int8 or bits (LanceDB, "
                        "or a Milvus server)")  # fmt: skip
    parser.add_argument("--index", default="flat", help="flat (exact), hnsw or ivf (approximate)")
    parser.add_argument("--metric", default="cosine", help="cosine (prefixes re-normalised), ip or l2")
    parser.add_argument("--shortlist", type=int, default=200, help="candidates the served funnel shortlists (200)")
    parser.add_argument("--queries", default=None, help="sample queries (.npz) to tune the funnel on")
    parser.add_argument("--target-recall", type=float, default=None, help="tune the funnel to this recall@k first")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query the funnel serves (10)")
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per insert (1000)")
    parser.add_argument("--drop", action="store_true", help="replace the collection instead of resuming it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    summary = exit_on_config_error(
        lambda: run(
            args.source,
            uri=args.uri,
            backend=args.backend,
            collection=args.collection,
            first_size=args.first_size,
            format=args.format,
            index=args.index,
            metric=args.metric,
            queries=args.queries,
            target_recall=args.target_recall,
            k=args.k,
            shortlist=args.shortlist,
            batch_size=args.batch_size,
            drop=args.drop,
            progress=not args.no_progress,
        )
    )
    if summary["tuned"] is not None:
        print(summary["tuned"])
    how = "resumed: " if summary["resumed"] else ""
    print(
        f"{how}{summary['count']} items in collection {summary['collection']} at {summary['uri']} "
        f"({summary['inserted']} inserted, {summary['skipped']} already there, {summary['seconds']:.1f} s); "
        f"first stage: {summary['index']}; funnel {summary['funnel']}"
    )
    print(f'search it: make search QUERIES=<queries .npz> ARGS="--backend {summary["backend"]} --uri {summary["uri"]}"')
    return summary


def main(argv: list[str] | None = None) -> None:
    """The console script: exits 0 on success (``sys.exit(main())``), 1 with one line on a user's mistake."""
    command(argv)


if __name__ == "__main__":
    main()
