"""``make search``: the nearest database items of every query, shortlisted with a short prefix and reranked.

``python -m mrl.cli.search DATABASE.npz QUERIES.npz [--k 10] [--funnel 16:200,512:10] [--out results.csv]``
``python -m mrl.cli.search DATABASE.npz QUERIES.npz --target-recall 0.99``
``python -m mrl.cli.search QUERIES.npz --backend milvus --uri index.db`` (or ``--backend lancedb --uri index.lancedb``)

Both files are embeddings as ``make embed`` writes them (or ``make eval``'s ``embeddings_*.npz``) from the same
model. The default funnel shortlists 200 candidates with the first 16 coordinates and reranks them with
all of them (:class:`mrl.AdaptiveRetriever`); ``--funnel 2048:10`` is an exact search at full width.
``--index binary`` shortlists by the Hamming distance between sign bits (the first 128 by default), ``--index
int8`` by int8 codes of the prefix. ``--target-recall 0.99`` picks the funnel instead: the fastest whose
recall@k against exact search reaches 0.99 on a sample of the queries (:func:`mrl.tune_funnel`; it prints
the choice and its recall on queries it was not tuned on). ``--backend milvus`` or ``--backend lancedb``
searches a collection that ``make index`` loaded (``--uri``: its Milvus Lite file or server, its LanceDB folder or
object-storage path), with the funnel recorded there or ``--funnel``'s. The results go to a CSV file (query, rank,
id, score, and the item's label where the database has labels; ids as the files name their rows) and the first
queries' results are printed.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from mrl.common.door import require_writable
from mrl.common.embeddings import read_embeddings
from mrl.common.errors import ConfigError, InputError, exit_on_config_error
from mrl.common.io import console
from mrl.retrieval import METRICS, AdaptiveRetriever, tune_funnel, validate_funnel
from mrl.retrieval.backends import store_class
from mrl.retrieval.funnel import check_gap, check_middle

__all__ = ["command", "main", "parse_funnel", "run"]

BINARY_FIRST_SIZE = 128  # the default funnel's first stage with --index binary
BACKENDS = ("faiss", "milvus", "lancedb")  # faiss: in this process; the others: make index's database
TUNE_QUERIES = 1000  # --target-recall tunes on at most this many of the queries


def parse_funnel(text: str | None, dim: int, k: int, n: int | None = None, first: int = 16) -> list[tuple[int, int]]:
    """``"16:200,2048:10"`` -> ``[(16, 200), (2048, 10)]``; a last stage without ``:candidates`` keeps ``k``.

    ``None`` is the default funnel: 200 candidates from the first ``first`` coordinates, reranked at full
    width (one exact full-width stage when the embeddings are ``first`` wide or less). No stage keeps more
    candidates than the database's ``n`` items.
    """
    if text is None:
        stages = [(dim, k)] if dim <= first else [(first, max(200, k)), (dim, k)]
        return [(m, min(c, n or c)) for m, c in stages]
    stages = []
    for i, part in enumerate(text.split(",")):
        size, _, candidates = part.strip().partition(":")
        try:
            stages.append((int(size), min(int(candidates) if candidates else k, n or int(1e18))))
        except ValueError:
            raise ConfigError(
                "funnel", text, f"stage {i + 1} is {part.strip()!r}; write size:candidates stages, e.g. 16:200,512:10"
            ) from None
    try:
        stages = validate_funnel(stages, dim)
    except ValueError as error:
        raise ConfigError("funnel", text, str(error)) from None
    if stages[-1][1] < k:
        raise ConfigError("funnel", text, f"the last stage keeps {stages[-1][1]} candidates, fewer than k={k}")
    return stages


def _same_model(queries: str, q_meta: dict, db_checkpoint: str | None) -> None:
    if db_checkpoint and q_meta.get("checkpoint"):
        if Path(db_checkpoint).resolve() != Path(q_meta["checkpoint"]).resolve():
            raise InputError(
                "queries",
                queries,
                f"embedded by {q_meta['checkpoint']}, the database by "
                f"{db_checkpoint}; embeddings of different models are not comparable",
            )


def _write_csv(path: Path, q_ids, ids: np.ndarray, scores: np.ndarray, names, labels) -> None:
    """query, rank, id, score (and label where the database has labels), one row per result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query", "rank", "id", "score"] + (["label"] if labels is not None else []))
        for qi in range(ids.shape[0]):
            for rank in range(ids.shape[1]):
                if ids[qi, rank] >= 0:
                    label = [int(labels[qi, rank])] if labels is not None else []
                    writer.writerow([q_ids[qi], rank + 1, names[qi, rank], f"{scores[qi, rank]:.6g}", *label])


def run(  # noqa: PLR0913 - one keyword per command-line flag
    database: str | None,
    queries: str,
    k: int = 10,
    funnel: str | None = None,
    metric: str = "cosine",
    index: str = "flat",
    out: str | None = None,
    target_recall: float | None = None,
    backend: str = "faiss",
    uri: str | None = None,
    collection: str | None = None,
    middle: str = "float",
    gap: float | None = None,
) -> dict[str, Any]:
    """Search ``queries`` against ``database`` (or, with ``backend="milvus"`` or ``"lancedb"``, the collection at
    ``uri``); writes the CSV and returns a summary with the results. ``middle`` and ``gap``: the funnel's middle
    stages' number format and its shortlist sized per query (`AdaptiveRetriever`'s ``middle``, ``shortlist_gap``)."""
    if metric not in METRICS:
        raise ConfigError("metric", metric, f"expected one of {', '.join(METRICS)}")
    _check_middle_and_gap(middle, gap, backend, target_recall)
    if backend not in BACKENDS:
        raise ConfigError("backend", backend, f"expected one of {', '.join(BACKENDS)}")
    if backend != "faiss":
        return _run_database(backend, database, queries, k, funnel, out, target_recall, uri, collection)
    if uri is not None or collection is not None:
        raise ConfigError(
            "uri", uri, "--uri and --collection name a vector database; add --backend milvus or --backend lancedb"
        )
    if database is None:
        raise ValueError(
            "database=None: give the database's embeddings .npz and the queries' (or --backend milvus / lancedb)"
        )
    if target_recall is not None and funnel is not None:
        raise ConfigError("target_recall", target_recall, "--funnel and --target-recall both choose a funnel; give one")
    path = require_writable(Path(out) if out else Path(queries).with_name(f"{Path(queries).stem}_top{k}.csv"))
    db, db_ids, db_labels, db_meta = read_embeddings(database)
    q, q_ids, _, q_meta = read_embeddings(queries)
    if db.shape[1] != q.shape[1]:
        raise InputError(
            "queries",
            queries,
            f"{q.shape[1]}-wide embeddings against a {db.shape[1]}-wide database; embed both with the same --dim",
        )
    _same_model(queries, q_meta, db_meta.get("checkpoint"))
    if isinstance(k, bool) or not 1 <= k <= len(db):
        raise ConfigError("k", k, f"must be in 1..{len(db)} (the database size)")
    tuned = None
    if target_recall is not None:
        tuned = tune_funnel(db, q, target=target_recall, k=k, metric=metric, max_queries=TUNE_QUERIES)
        retriever, stages, index = tuned.retriever, list(tuned.funnel.stages), tuned.funnel.index
    else:
        # sign bits carry less than floats: a binary shortlist starts from a longer prefix (128 bits = 16 bytes)
        first = min(BINARY_FIRST_SIZE, max(db.shape[1] // 2, 1)) if index == "binary" else 16
        stages = parse_funnel(funnel, db.shape[1], k, len(db), first=first)
        check_middle(middle, stages)  # one-line ValueErrors naming middle= and gap=
        check_gap(gap, stages, "gap")
        retriever = AdaptiveRetriever(db, funnel=stages, metric=metric, index=index, middle=middle, shortlist_gap=gap)
    scores, ids, timing = _timed_search(retriever, q, k)
    names = np.where(ids >= 0, db_ids[np.maximum(ids, 0)], None)
    labels = None if db_labels is None else np.where(ids >= 0, db_labels[np.maximum(ids, 0)], -1)
    _write_csv(path, q_ids, ids, scores, names, labels)
    found = {"query_ids": q_ids, "rows": ids, "ids": names, "scores": scores}
    where = {"output": str(path), "backend": backend}
    return {**where, "funnel": stages, "index": index, "tuned": tuned, "database": len(db), **timing, **found}


def _check_middle_and_gap(middle: str, gap: float | None, backend: str, target_recall: float | None) -> None:
    """``--middle`` and ``--gap`` only where a funnel of this process serves them (their values are checked with
    the funnel's stages, `check_middle` / `check_gap`)."""
    if (middle != "float" or gap is not None) and (backend != "faiss" or target_recall is not None):
        key, value = ("middle", middle) if middle != "float" else ("gap", gap)
        why = (
            "the database funnel serves float stages and fixed shortlists"
            if backend != "faiss"
            else ("--target-recall chooses the whole funnel")
        )
        raise ConfigError(key, value, f"{why}; give it with --funnel in this process (--backend faiss)")


def _timed_search(retriever: Any, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(scores, ids, timing)``: the search of every query, and its ``queries``, ``k``, ``ms_per_query`` and
    ``mflops_per_query`` for the summary."""
    began = time.perf_counter()
    scores, ids = retriever.search(q, k=k)
    seconds = time.perf_counter() - began
    timing = {
        "queries": len(q),
        "k": k,
        "ms_per_query": 1e3 * seconds / max(len(q), 1),
        "mflops_per_query": retriever.mflops_per_query(),
    }
    return scores, ids, timing


def _run_database(
    backend: str,
    database: str | None,
    queries: str,
    k: int,
    funnel: str | None,
    out: str | None,
    target_recall: float | None,
    uri: str | None,
    collection: str | None,
) -> dict[str, Any]:
    """`run` against a collection `make index` loaded into ``backend`` (milvus, lancedb)."""
    store = store_class(backend)
    if uri is None:
        where = "the Milvus Lite file make index wrote, or a server" if backend == "milvus" else "its folder"
        raise ConfigError("uri", None, f"--backend {backend} needs --uri <{where}>")
    if target_recall is not None:
        raise ValueError(
            f"target_recall={target_recall}: with --backend {backend} the funnel is tuned when the collection is "
            'built (make index ARGS="--target-recall ..."); search serves the funnel recorded there'
        )
    path = require_writable(Path(out) if out else Path(queries).with_name(f"{Path(queries).stem}_top{k}.csv"))
    q, q_ids, _, q_meta = read_embeddings(queries)
    retriever = store(uri).funnel(collection)
    meta = retriever.meta
    if q.shape[1] != meta.dim:
        raise ValueError(
            f"queries={queries!r}: {q.shape[1]}-wide embeddings against the {meta.dim}-wide collection "
            f"{retriever.collection}; embed both with the same --dim"
        )
    _same_model(queries, q_meta, meta.checkpoint)
    if database is not None:  # a database file given too: it must be what the collection holds
        db, _, _, db_meta = read_embeddings(database)
        if (len(db), db.shape[1]) != (meta.count, meta.dim):
            raise ValueError(
                f"database={database!r}: {len(db)} {db.shape[1]}-wide embeddings, but collection "
                f"{retriever.collection} holds {meta.count} {meta.dim}-wide ones; load it with make index"
            )
    if isinstance(k, bool) or not 1 <= k <= meta.count:
        raise ConfigError("k", k, f"must be in 1..{meta.count} (the collection's size)")
    if funnel is not None:
        stages = parse_funnel(funnel, meta.dim, k, meta.count, first=meta.first_size)
    else:  # the recorded funnel, widened to k where k asks for more than it keeps
        recorded = [list(s) for s in retriever.funnel.stages]
        stages = [(m, max(c, k)) for m, c in recorded]
    retriever.funnel = retriever.resolve_funnel(stages)
    scores, ids, timing = _timed_search(retriever, q, k)
    names, labels = retriever.items(ids)
    has_labels = bool((labels >= 0).any())
    _write_csv(path, q_ids, ids, scores, names, labels if has_labels else None)
    retriever.close()
    found = {"query_ids": q_ids, "rows": ids, "ids": names, "scores": scores}
    where = {"output": str(path), "backend": backend, "uri": str(uri), "collection": retriever.collection}
    funnel_served = {"funnel": list(retriever.funnel.stages), "index": meta.index, "tuned": None}
    return {**where, **funnel_served, "database": meta.count, **timing, **found}


def command(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse, search and print the first results; returns `run`'s summary (for callers in Python)."""
    parser = argparse.ArgumentParser(prog="python -m mrl.cli.search", description=__doc__.splitlines()[0].strip("`: "))
    parser.add_argument(
        "files",
        nargs="+",
        metavar="DATABASE QUERIES",
        help="the .npz of the items to search and the .npz of the queries (same model, same width); "
        "with --backend milvus or lancedb, the queries alone",
    )
    parser.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    parser.add_argument(
        "--funnel", default=None, help="size:candidates stages, e.g. 16:200,512:10 (default: 16:200 then full width)"
    )
    parser.add_argument("--metric", default="cosine", help="cosine (prefixes re-normalised), ip or l2")
    parser.add_argument(
        "--index",
        default="flat",
        help="first stage: flat (exact), hnsw, ivf or binary (sign bits by Hamming distance; "
        "its default funnel shortlists with 128 bits)",
    )
    parser.add_argument(
        "--target-recall",
        type=float,
        default=None,
        help="choose the funnel: the fastest whose recall@k against exact search reaches this (e.g. 0.99), "
        f"tuned on up to {TUNE_QUERIES} of the queries",
    )
    parser.add_argument(
        "--backend", default="faiss", help="faiss (in this process), or milvus or lancedb (make index's database)"
    )
    parser.add_argument(
        "--uri", default=None, help="milvus: the Milvus Lite .db file or a server's address; lancedb: the folder"
    )
    parser.add_argument(
        "--middle", default="float", help="number format of the middle stages of a 3-stage --funnel: float, fp16, int8"
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=None,
        help="size each query's shortlist: keep the candidates within this much of its k-th best first-stage score",
    )
    parser.add_argument("--collection", default=None, help="milvus, lancedb: the collection (default: the only one)")
    parser.add_argument("--out", default=None, help="the CSV to write (default: <queries>_top<k>.csv)")
    parser.add_argument("--show", type=int, default=5, help="queries whose results are printed (default 5)")
    args = parser.parse_args(argv)
    if len(args.files) > 2:
        parser.error(f"give the database and the queries files, got {len(args.files)} files")
    database, queries = (None, args.files[0]) if len(args.files) == 1 else args.files
    result = exit_on_config_error(
        lambda: run(
            database,
            queries,
            k=args.k,
            funnel=args.funnel,
            metric=args.metric,
            index=args.index,
            out=args.out,
            target_recall=args.target_recall,
            backend=args.backend,
            uri=args.uri,
            collection=args.collection,
            middle=args.middle,
            gap=args.gap,
        )
    )
    if result["tuned"] is not None:
        print(result["tuned"])
    funnel = " -> ".join(f"{m}d:{c}" for m, c in result["funnel"])
    engine = {"milvus": "Milvus", "lancedb": "LanceDB"}.get(result["backend"])
    where = f", {engine} collection {result['collection']}" if engine else ""
    table = Table(title=f"top {min(result['k'], 3)} of {result['database']} items, funnel {funnel}{where}")
    table.add_column("query")
    for rank in range(min(result["k"], 3)):
        table.add_column(f"#{rank + 1} (score)")
    for qi in range(min(args.show, result["queries"])):
        cells = [f"{result['ids'][qi, r]} ({result['scores'][qi, r]:.3f})" for r in range(min(result["k"], 3))]
        table.add_row(str(result["query_ids"][qi]), *cells)
    if args.show > 0:
        console().print(table)
    print(
        f"{result['queries']} queries, {result['ms_per_query']:.3f} ms and {result['mflops_per_query']:.3g} MFLOPs "
        f"per query; results -> {result['output']}"
    )
    return result


def main(argv: list[str] | None = None) -> None:
    """The console script: exits 0 on success (``sys.exit(main())``), 1 with one line on a user's mistake."""
    command(argv)


if __name__ == "__main__":
    main()
