"""``make search``: the nearest database items of every query, shortlisted with a short prefix and reranked.

``python -m mrl.cli.search DATABASE.npz QUERIES.npz [--k 10] [--funnel 16:200,512:10] [--out results.csv]``

Both files are embeddings as ``make embed`` writes them (or ``make eval``'s ``embeddings_*.npz``) from the same
model. The default funnel shortlists 200 candidates with the first 16 coordinates and reranks them with
all of them (:class:`mrl.AdaptiveRetriever`); ``--funnel 2048:10`` is an exact search at full width.
``--index binary`` shortlists by the Hamming distance between sign bits (the first 128 by default).
The results go to a CSV file (query, rank, id, score, and the item's label where the database file has
labels; ids as the files name their rows) and the first queries' results are printed.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from mrl.common.errors import exit_on_config_error
from mrl.common.io import console
from mrl.evaluation.embeddings import read_embeddings

__all__ = ["main", "parse_funnel", "run"]

BINARY_FIRST_SIZE = 128  # the default funnel's first stage with --index binary


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
            raise ValueError(
                f"funnel={text!r}: stage {i + 1} is {part.strip()!r}; write size:candidates stages, e.g. 16:200,512:10"
            ) from None
    from mrl.retrieval import validate_funnel

    try:
        stages = validate_funnel(stages, dim)
    except ValueError as error:
        raise ValueError(f"funnel={text!r}: {error}") from None
    if stages[-1][1] < k:
        raise ValueError(f"funnel={text!r}: the last stage keeps {stages[-1][1]} candidates, fewer than k={k}")
    return stages


def run(
    database: str,
    queries: str,
    k: int = 10,
    funnel: str | None = None,
    metric: str = "cosine",
    index: str = "flat",
    out: str | None = None,
) -> dict[str, Any]:
    """Search ``queries`` against ``database``; writes the CSV and returns a summary with the results."""
    from mrl.retrieval import METRICS, AdaptiveRetriever

    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {', '.join(METRICS)}")
    db, db_ids, db_labels, db_meta = read_embeddings(database)
    q, q_ids, _, q_meta = read_embeddings(queries)
    if db.shape[1] != q.shape[1]:
        raise ValueError(
            f"queries={queries!r}: {q.shape[1]}-wide embeddings against a {db.shape[1]}-wide database; "
            "embed both with the same --dim"
        )
    models = [Path(meta.get("checkpoint") or "").resolve() for meta in (db_meta, q_meta)]
    if db_meta.get("checkpoint") and q_meta.get("checkpoint") and models[0] != models[1]:
        raise ValueError(
            f"queries={queries!r}: embedded by {q_meta['checkpoint']}, the database by "
            f"{db_meta['checkpoint']}; embeddings of different models are not comparable"
        )
    if isinstance(k, bool) or not 1 <= k <= len(db):
        raise ValueError(f"k={k}: must be in 1..{len(db)} (the database size)")
    # sign bits carry less than floats: a binary shortlist starts from a longer prefix (128 bits = 16 bytes)
    first = min(BINARY_FIRST_SIZE, max(db.shape[1] // 2, 1)) if index == "binary" else 16
    stages = parse_funnel(funnel, db.shape[1], k, len(db), first=first)
    retriever = AdaptiveRetriever(db, funnel=stages, metric=metric, index=index)
    began = time.perf_counter()
    scores, ids = retriever.search(q, k=k)
    seconds = time.perf_counter() - began
    path = Path(out) if out else Path(queries).with_name(f"{Path(queries).stem}_top{k}.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query", "rank", "id", "score"] + (["label"] if db_labels is not None else []))
        for qi in range(len(q)):
            for rank in range(k):
                row = int(ids[qi, rank])
                if row >= 0:
                    label = [int(db_labels[row])] if db_labels is not None else []
                    writer.writerow([q_ids[qi], rank + 1, db_ids[row], f"{scores[qi, rank]:.6g}", *label])
    return {
        "output": str(path),
        "funnel": stages,
        "queries": len(q),
        "database": len(db),
        "k": k,
        "ms_per_query": 1e3 * seconds / max(len(q), 1),
        "mflops_per_query": retriever.mflops_per_query(),
        "query_ids": q_ids,
        "rows": ids,
        "ids": np.where(ids >= 0, db_ids[np.maximum(ids, 0)], None),
        "scores": scores,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m mrl.cli.search", description=__doc__.splitlines()[0].strip("`: "))
    parser.add_argument("database", help="the .npz of the items to search")
    parser.add_argument("queries", help="the .npz of the queries (same model, same width)")
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
    parser.add_argument("--out", default=None, help="the CSV to write (default: <queries>_top<k>.csv)")
    parser.add_argument("--show", type=int, default=5, help="queries whose results are printed (default 5)")
    args = parser.parse_args(argv)
    result = exit_on_config_error(
        lambda: run(
            args.database,
            args.queries,
            k=args.k,
            funnel=args.funnel,
            metric=args.metric,
            index=args.index,
            out=args.out,
        )
    )
    from rich.table import Table

    funnel = " -> ".join(f"{m}d:{c}" for m, c in result["funnel"])
    table = Table(title=f"top {min(result['k'], 3)} of {result['database']} items, funnel {funnel}")
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


if __name__ == "__main__":
    main()
