"""``make eval`` of a post-hoc run: the frozen embeddings it was trained on, through the trained method, measured
with the same per-size metrics as an MRL run, plus what each size costs to store and to search.

Sizes are prefix sizes (truncation, PCA, the adaptor) or active units k (CSR). For labelled data (the digits):
the train split is the database and the val split the queries, as in ``make eval`` of a digits run (whose test
split is its val split): ``eval/knn_top1@m``, ``eval/map@10@m``, ``eval/precision|recall|hit@k@m`` by cosine
search, and ``eval/probe_top1@m``, a linear probe refitted on the database. For pairs (text): each val anchor's
positive among all val positives, ``eval/mrr@10@m``, ``eval/ndcg@10@m``, ``eval/recall@k@m``.

Storage (``eval/bytes_per_vector@m``): a dense size m in fp32 costs 4m bytes; a k-sparse CSR code is stored as k
(index, value) pairs, the index in the smallest unsigned integer that holds the code width (uint16 for up to
65,536 units) and the value in fp32, so 6k bytes for the usual widths.

Search cost (``search_cost`` rows and ``eval/ms_per_query@m``): CSR codes are searched through a real inverted
index (:class:`~mrl.posthoc.sparse_index.InvertedIndex`, posting lists in a scipy CSR matrix), dense
representations by exact flat search (numpy inner products); both measured the same way, best of three passes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from mrl.common.errors import InputError
from mrl.common.io import atomic_write_text, read_json, write_json
from mrl.core.retrieval_metrics import retrieval_metrics
from mrl.core.sparse import index_bytes, sparse_bytes_per_vector
from mrl.evaluation.baselines import linear_probe_accuracy
from mrl.evaluation.knn_metrics import knn_metrics
from mrl.evaluation.result import EvaluationResult, SplitCount
from mrl.evaluation.runner import evaluate_run, resolve_paths
from mrl.evaluation.settings import eval_config
from mrl.posthoc.frozen import FrozenEmbeddings, load_frozen
from mrl.posthoc.module import PostHocModule
from mrl.posthoc.sparse_index import InvertedIndex, dense_search

__all__ = ["PostHocMethod", "evaluate_posthoc", "is_posthoc_run"]

log = logging.getLogger(__name__)


def is_posthoc_run(run_dir: str | Path) -> bool:
    """A run of :mod:`mrl.posthoc.procedure` (its ``results.json`` names the frozen embeddings it trained on)."""
    path = Path(run_dir) / "results.json"
    return path.is_file() and "frozen_embeddings" in read_json(path)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class PostHocMethod:
    """A trained post-hoc run, loaded from its checkpoint (``weights_only``): :meth:`represent` gives the
    representation at a size, :meth:`bytes_per_vector` what it costs to store."""

    def __init__(self, checkpoint: str | Path, weights_only: bool = True) -> None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=weights_only)
        self.hparams: dict[str, Any] = dict(state["hyper_parameters"])
        self.name: str = self.hparams["name"]
        self.sizes: list[int] = sorted(int(m) for m in self.hparams["sizes"])
        self.module: PostHocModule | None = None
        self.state = state["state_dict"]
        if self.name in ("csr", "adaptor", "adaptor_supervised"):
            self.module = PostHocModule(**self.hparams)
            self.module.load_state_dict(self.state)
            self.module.eval()

    @property
    def sparse(self) -> bool:
        return self.name == "csr"

    @property
    def code_dim(self) -> int | None:
        return self.module.code_dim if self.sparse else None

    def represent(self, x: np.ndarray, size: int) -> np.ndarray:
        """``[N, m]`` dense prefixes, or ``[N, H]`` k-sparse codes for CSR."""
        if self.module is not None:
            with torch.no_grad():
                return self.module.transform(torch.as_tensor(np.asarray(x, dtype=np.float32)), size).numpy()
        if self.name == "pca":
            matrix, mean = self.state["matrix"].numpy(), self.state["mean"].numpy()
            return (_unit(x) - mean) @ matrix[:, :size]
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32)[:, :size])  # truncate

    def bytes_per_vector(self, size: int) -> int:
        return sparse_bytes_per_vector(size, self.code_dim) if self.sparse else 4 * int(size)


def _classes_metrics(method: PostHocMethod, frozen: FrozenEmbeddings, settings, seed: int) -> dict[str, float]:
    db_x, db_y = frozen["train_anchor"], frozen["train_labels"]
    q_x, q_y = frozen["val_anchor"], frozen["val_labels"]
    count = len(db_y)
    ks = [k for k in getattr(getattr(settings, "knn", None), "ks", (10, 25, 50, 100)) if k <= count]
    map_k = min(getattr(getattr(settings, "knn", None), "map_k", 10), count)
    metrics: dict[str, float] = {}
    for m in method.sizes:
        db, q = method.represent(db_x, m), method.represent(q_x, m)
        found = knn_metrics(db, db_y, q, q_y, [db.shape[1]], metric="cosine", ks=ks, map_k=map_k)
        metrics |= {f"eval/{key.rpartition('@')[0]}@{m}": value for key, value in found.items()}
        probe = linear_probe_accuracy(db, db_y, q, q_y)
        metrics |= {f"eval/probe_{key}@{m}": value for key, value in probe.items()}
    return metrics


def _pairs_metrics(method: PostHocMethod, frozen: FrozenEmbeddings) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for m in method.sizes:
        a, p = method.represent(frozen["val_anchor"], m), method.represent(frozen["val_positive"], m)
        found = retrieval_metrics(a, p, np.arange(len(a)), [a.shape[1]], ks=(1, 10, 100))
        metrics |= {f"eval/{key.rpartition('@')[0]}@{m}": value for key, value in found.items()}
    return metrics


def _timed(search, queries: np.ndarray, repeats: int = 3) -> tuple[float, np.ndarray]:
    search(queries[: min(8, len(queries))])  # warm-up
    best, ids = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        ids = search(queries)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(queries), ids


def search_cost_rows(method: PostHocMethod, database: np.ndarray, queries: np.ndarray, k: int = 10) -> list[dict]:
    """Per size: bytes per vector, how it is stored, and measured ms per query of top-``k`` cosine search (the
    inverted index for CSR codes, exact flat search otherwise), with the mean number of non-zeros per code."""
    rows = []
    k = min(k, len(database))
    for m in method.sizes:
        db, q = _unit(method.represent(database, m)), _unit(method.represent(queries, m))
        row: dict[str, Any] = {}
        if method.sparse:
            index = InvertedIndex(db)
            ms, _ = _timed(lambda x, index=index: index.search(x, k)[1], q)
            stored = f"{m} x (uint{8 * index_bytes(db.shape[1])} index + fp32 value)"
            search = "inverted index (scipy.sparse)"
            # the dense peer at equal bytes: the frozen embeddings' first bytes/4 coordinates, exact flat search
            width = min(method.bytes_per_vector(m) // 4, database.shape[1])
            dense_db, dense_q = _unit(database[:, :width]), _unit(queries[:, :width])
            row["dense_equal_bytes_size"] = int(width)
            row["dense_equal_bytes_ms_per_query"] = _timed(lambda x, d=dense_db: dense_search(d, x, k)[1], dense_q)[0]
        else:
            ms, _ = _timed(lambda x, db=db: dense_search(db, x, k)[1], q)
            stored, search = f"{m} x fp32", "exact flat (numpy)"
        rows.append(
            {
                "size": int(m),
                "bytes_per_vector": method.bytes_per_vector(m),
                "stored_as": stored,
                "search": search,
                "nonzeros_per_vector": float((db != 0).sum(1).mean()),
                "ms_per_query": ms,
                **row,
            }
        )
    return rows


def _summary(method: PostHocMethod, metrics: dict[str, float], rows: list[dict], frozen: FrozenEmbeddings) -> str:
    main = "knn_top1" if frozen.kind == "classes" else "mrr@10"
    second = "map@10" if frozen.kind == "classes" else "ndcg@10"
    lines = [
        f"# {method.name} on frozen embeddings",
        "",
        f"Frozen embeddings: `{frozen.path}` ({frozen.kind}, width {frozen.dim}). Sizes: "
        + ("active units k of the sparse code." if method.sparse else "prefix sizes."),
        "",
        f"| size | {main} | {second} | bytes/vector | stored as | search | ms/query | dense at equal bytes: ms/query |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m = row["size"]
        lines.append(
            f"| {m} | {100 * metrics.get(f'eval/{main}@{m}', float('nan')):.2f} | "
            f"{100 * metrics.get(f'eval/{second}@{m}', float('nan')):.2f} | {row['bytes_per_vector']} | "
            f"{row['stored_as']} | {row['search']} | {row['ms_per_query']:.4f} | "
            + (
                f"{row['dense_equal_bytes_ms_per_query']:.4f} ({row['dense_equal_bytes_size']}-d fp32) |"
                if "dense_equal_bytes_ms_per_query" in row
                else "|"
            )
        )
    return "\n".join(lines) + "\n"


def evaluate_posthoc(settings, checkpoint: str | Path, run_dir: Path, out: Path) -> EvaluationResult:
    """Measure a post-hoc run and write ``results.json`` (with ``bytes_per_vector`` and ``search_cost``),
    ``results.csv`` and ``summary.md`` into ``out``."""
    method = PostHocMethod(checkpoint, weights_only=getattr(settings, "weights_only", True))
    frozen = load_frozen(method.hparams["frozen_embeddings"])
    if frozen.kind == "classes":
        metrics = _classes_metrics(method, frozen, settings, int(getattr(settings, "seed", 0)))
        database, queries = frozen["train_anchor"], frozen["val_anchor"]
    elif frozen.kind == "pairs":
        metrics = _pairs_metrics(method, frozen)
        database, queries = frozen["val_positive"], frozen["val_anchor"]
    else:
        raise InputError("frozen_embeddings", frozen.path, f"unknown kind {frozen.kind!r}")
    rows = search_cost_rows(method, database, queries)
    for row in rows:
        metrics[f"eval/bytes_per_vector@{row['size']}"] = float(row["bytes_per_vector"])
        metrics[f"eval/ms_per_query@{row['size']}"] = row["ms_per_query"]
    result = EvaluationResult(
        checkpoint=str(checkpoint),
        sizes=list(method.sizes),
        metrics=metrics,
        head=method.name,
        embed_dim=frozen.dim,
        head_sizes=[],
        database=SplitCount("train" if frozen.kind == "classes" else "val positives", len(database)),
        queries=SplitCount("val" if frozen.kind == "classes" else "val anchors", len(queries)),
        storage=rows,
        output_dir=str(out),
    )
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        **result.to_dict(),
        "method": method.name,
        "frozen_embeddings": str(frozen.path),
        "bytes_per_vector": {str(row["size"]): row["bytes_per_vector"] for row in rows},
        "search_cost": rows,
    }
    write_json(out / "results.json", payload)
    names = sorted({key.split("/", 1)[1].rpartition("@")[0] for key in metrics})
    table = ["size," + ",".join(names)] + [
        f"{m}," + ",".join(str(metrics.get(f"eval/{name}@{m}", "")) for name in names) for m in method.sizes
    ]
    atomic_write_text(out / "results.csv", "\n".join(table) + "\n")
    atomic_write_text(out / "summary.md", _summary(method, metrics, rows, frozen))
    log.info("Post-hoc %s evaluated into %s", method.name, out)
    return result


def evaluate_any_run(cfg: DictConfig) -> EvaluationResult:
    """One run of ``make eval``: a post-hoc run by :func:`evaluate_posthoc`, any other by the runner's
    :func:`~mrl.evaluation.runner.evaluate_run`."""
    settings = eval_config(cfg)
    ckpt, run_dir, out = resolve_paths(settings)
    if is_posthoc_run(run_dir):
        return evaluate_posthoc(settings, ckpt, run_dir, out)
    return evaluate_run(cfg)
