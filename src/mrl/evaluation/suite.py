"""Everything measured on a trained classifier, into an :class:`EvaluationResult`.

The database split (train) and the query split are embedded and exported; then per-size accuracy through the
trained heads, kNN retrieval at every size (cosine and L2), retrieval from quantised prefixes
(:mod:`mrl.evaluation.quantized`), the paper's baselines for a rigid model (truncation, PCA/SVD and random
projection, each with a refitted linear probe), adaptive classification by confidence cascade (thresholds
fitted on a held-out half of the queries), funnel retrieval against exact search (accuracy, MFLOPs and
wall-clock per query), the funnels tuned to recall targets (:func:`mrl.tune_funnel`, every funnel tried kept for
the recall-against-cost chart), storage: the bytes of every size in each format, with the retrieval each keeps,
and per size how many database and query prefixes are all zeros (queries with none count as misses).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mrl.core.nesting import default_nesting
from mrl.core.retrieval_metrics import zero_prefix_counts, zero_prefix_rows
from mrl.evaluation.adaptive import cascade_curve
from mrl.evaluation.baselines import baseline_curves
from mrl.evaluation.embeddings import embed_split, save_embeddings
from mrl.evaluation.knn_metrics import knn_metrics
from mrl.evaluation.quantized import check_codecs, quantized_knn_metrics
from mrl.evaluation.result import EvaluationResult, SplitCount
from mrl.evaluation.settings import EvalConfig
from mrl.evaluation.storage import storage_table
from mrl.retrieval import AdaptiveRetriever, tune_funnels

Split = dict[str, np.ndarray]  # embed_split's arrays: embeddings, labels (and logits)


# --------------------------------------------------------------------------------------------- parts
def head_accuracy(logits: np.ndarray, labels: np.ndarray, sizes: list[int]) -> dict[str, float]:
    """Top-1 and top-5 of each size's logits ``[G, N, C]``, one size at a time (no ``[G, N, C]`` sort)."""
    out = {}
    labels_t = torch.from_numpy(np.asarray(labels)).view(-1, 1)
    for i, m in enumerate(sizes):
        top5 = torch.from_numpy(logits[i]).topk(min(5, logits.shape[2]), dim=1).indices
        out[f"top1@{m}"] = float((logits[i].argmax(1) == labels).mean())
        out[f"top5@{m}"] = float((top5 == labels_t).any(1).float().mean())
    return out


def split_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * fraction))
    return np.sort(order[:cut]), np.sort(order[cut:])


def funnel_rows(
    db: np.ndarray,
    queries: np.ndarray,
    db_labels: np.ndarray,
    q_labels: np.ndarray,
    sizes: list[int],
    shortlist: int,
    repeats: int = 3,
    binary: bool = False,
) -> list[dict]:
    """1-NN accuracy, MFLOPs and measured ms per query: exact full-size search against funnels that
    shortlist at each smaller size and rerank at full size; with ``binary``, also funnels that shortlist
    by Hamming distance between the bits of each smaller size (:func:`mrl.retrieval.threshold_bits`)."""
    full = sizes[-1]
    shortlist = min(shortlist, len(db))
    funnels = [("exact", [(full, 1)], "flat")] + [
        (f"{m}->{full}", [(m, shortlist), (full, 1)], "flat") for m in sizes[:-1]
    ]
    if binary:
        funnels += [(f"{m} bits->{full}", [(m, shortlist), (full, 1)], "binary") for m in sizes[:-1]]
    rows = []
    blank = zero_prefix_rows(queries, full)  # a query with no information is a miss
    for name, funnel, index in funnels:
        retriever = AdaptiveRetriever(db, funnel, metric="cosine", index=index)
        retriever.search(queries[: min(8, len(queries))], 1)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            _, ids = retriever.search(queries, 1)
            best = min(best, time.perf_counter() - start)
        rows.append(
            {
                "funnel": name,
                "knn_top1": float(((db_labels[ids[:, 0]] == q_labels) & ~blank).mean()),
                "mflops_per_query": retriever.mflops_per_query(),
                "ms_per_query": 1000 * best / len(queries),
            }
        )
    exact = rows[0]["ms_per_query"]
    for row in rows:
        row["speedup"] = exact / row["ms_per_query"] if row["ms_per_query"] else float("nan")
    return rows


def tuned_funnel_rows(
    db: np.ndarray,
    queries: np.ndarray,
    db_labels: np.ndarray,
    q_labels: np.ndarray,
    targets: list[float],
    k: int,
    seed: int = 0,
) -> tuple[list[dict], list[dict]]:
    """(one row per recall target: the funnel `mrl.tune_funnel` chose, its recall@k against exact search on the
    tuning and held-out queries, speed, MFLOPs, bytes and 1-NN accuracy; every funnel tried, for the chart)."""
    if not targets:
        return [], []
    k = min(k, len(db))
    tuned = tune_funnels(db, queries, targets, k=k, seed=seed, baselines=("hnsw", "ivf"))  # the index to beat
    blank = zero_prefix_rows(queries, db.shape[1])
    rows = []
    for result in tuned:
        _, ids = result.retriever.search(queries, k)
        rows.append({**result.summary(), "knn_top1": float(((db_labels[ids[:, 0]] == q_labels) & ~blank).mean())})
    chosen = {i for t in tuned for i, r in enumerate(t.table) if r["chosen"]}  # the tables are the same rows
    table = [{**row, "chosen": i in chosen} for i, row in enumerate(tuned[0].table)]
    return rows, table


def storage_rows(rows: list[dict], metrics: dict[str, float], map_k: int) -> list[dict]:
    """The storage table with the retrieval each row keeps: 1-NN accuracy and mAP of the cosine search
    (fp32) or of the quantised codes (``eval/{dtype}_knn_top1@m``), where measured."""
    for row in rows:
        key = "" if row["dtype"] == "fp32" else f"{row['dtype']}_"
        row["knn_top1"] = metrics.get(f"eval/{key}knn_top1@{row['size']}")
        row[f"map@{map_k}"] = metrics.get(f"eval/{key}map@{map_k}@{row['size']}")
    return rows


def retrieval_sizes(settings: EvalConfig, module) -> list[int]:
    """``sizes=``, else every size MRL would serve (halving the width) plus the model's own nesting list, so
    a model trained on a sparse list is also measured between its sizes; an FF model at its own size only."""
    if settings.sizes:
        return list(settings.sizes)
    if module.hparams.head.get("kind") == "ff":
        return list(module.sizes)
    return sorted(set(module.nesting or []) | set(default_nesting(module.embed_dim)))


# --------------------------------------------------------------------------------------------- run
def embed_splits(
    settings: EvalConfig, module, datamodule, checkpoint: str, sizes: list[int], out: Path
) -> tuple[Split | None, Split]:
    """(database or None, queries), each also written to ``out/embeddings_{split}.npz``.

    ``database_split=null`` embeds no database: head accuracy only, for evaluation-only sets (ImageNetV2,
    -A, -R, -Sketch)."""
    splits = {}
    db = None
    if settings.database_split is not None:
        splits[settings.database_split] = db = embed_split(
            module,
            datamodule.eval_dataloader(settings.database_split),
            logits=False,
            precision=settings.precision,
            name=settings.database_split,
        )
    query = embed_split(
        module,
        datamodule.eval_dataloader(settings.query_split),
        flip=settings.tta,
        precision=settings.precision,
        name=settings.query_split,
    )
    splits[settings.query_split] = query
    meta = {
        "checkpoint": checkpoint,
        "head": module.hparams.head.get("kind"),
        "embed_dim": module.embed_dim,
        "sizes": sizes,
    }
    dtype = settings.embeddings_dtype
    for name, split in splits.items():
        save_embeddings(
            out / f"embeddings_{name}.npz",
            split,
            {**meta, "split": name, "count": len(split["labels"]), "dtype": dtype},
            dtype,
        )
    return db, query


def evaluate_classifier(
    settings: EvalConfig, module, datamodule, checkpoint: str, out: Path, search_device: torch.device | None = None
) -> EvaluationResult:
    """Embed the splits (exported to ``out``) and measure everything on them."""
    kind = module.hparams.head.get("kind")
    head_sizes = list(module.sizes)
    sizes = retrieval_sizes(settings, module)
    db, query = embed_splits(settings, module, datamodule, checkpoint, sizes, out)
    if settings.only_present_classes:
        # ImageNet-A and -R hold 200 of the 1,000 classes: predict among those only, as the reference does
        absent = np.setdiff1d(np.arange(query["logits"].shape[2]), query["labels"])
        query["logits"][:, :, absent] = -np.inf
    metrics = {
        f"eval/{key}": value for key, value in head_accuracy(query["logits"], query["labels"], head_sizes).items()
    }
    if db is not None:
        metrics.update(retrieval_metrics(settings, db, query, sizes, kind, search_device))
    cascade: list[dict] = []
    if len(head_sizes) > 1:
        fit, held = split_holdout(len(query["labels"]), settings.adaptive.holdout_fraction, settings.seed)
        cascade = cascade_curve(
            query["logits"][:, fit],
            query["labels"][fit],
            query["logits"][:, held],
            query["labels"][held],
            head_sizes,
            from_logits=True,
        )
    funnels, storage, tuned, tuning_table = [], [], [], []
    if db is not None:
        funnels = funnel_rows(
            db["embeddings"],
            query["embeddings"],
            db["labels"],
            query["labels"],
            sizes,
            settings.funnel.shortlist,
            binary=settings.funnel.binary,
        )
        tuned, tuning_table = tuned_funnel_rows(
            db["embeddings"],
            query["embeddings"],
            db["labels"],
            query["labels"],
            list(settings.funnel_tuning.targets),
            settings.funnel_tuning.k,
            seed=settings.seed,
        )
        storage = storage_rows(
            storage_table(sizes, len(db["labels"]), ("fp32", *check_codecs(settings.quantized))),
            metrics,
            min(settings.knn.map_k, len(db["labels"])),
        )
    return EvaluationResult(
        checkpoint=checkpoint,
        sizes=sizes,
        metrics=metrics,
        head=kind,
        embed_dim=module.embed_dim,
        head_sizes=head_sizes,
        tta=settings.tta,
        only_present_classes=settings.only_present_classes,
        database=SplitCount(settings.database_split, len(db["labels"])) if db is not None else None,
        queries=SplitCount(settings.query_split, len(query["labels"])),
        adaptive_classification=cascade,
        funnel_retrieval=funnels,
        tuned_funnels=tuned,
        funnel_tuning=tuning_table,
        storage=storage,
    )


def retrieval_metrics(
    settings: EvalConfig, db: Split, query: Split, sizes: list[int], kind: str, search_device: torch.device | None
) -> dict[str, float]:
    """kNN metrics per size and search metric, those of the quantised prefixes, and (for the standard model,
    or every head with ``baselines.all_heads``) the paper's baselines; keys prefixed ``eval/``."""
    metrics: dict[str, float] = {
        f"eval/{key}": value for key, value in zero_prefix_counts(db["embeddings"], query["embeddings"], sizes).items()
    }
    count = len(db["labels"])
    map_k = min(settings.knn.map_k, count)
    for metric in settings.knn.metrics:
        prefix = "eval/" if metric == "cosine" else f"eval/{metric}_"
        knn = knn_metrics(
            db["embeddings"],
            db["labels"],
            query["embeddings"],
            query["labels"],
            sizes,
            metric=metric,
            ks=[k for k in settings.knn.ks if k <= count],
            map_k=map_k,
            device=search_device,
        )
        metrics.update({prefix + k: v for k, v in knn.items()})
    codecs = check_codecs(settings.quantized)
    if codecs:
        metrics.update(
            {
                f"eval/{k}": v
                for k, v in quantized_knn_metrics(
                    db["embeddings"],
                    db["labels"],
                    query["embeddings"],
                    query["labels"],
                    sizes,
                    codecs,
                    map_k=map_k,
                    device=search_device,
                ).items()
            }
        )
    if settings.baselines.enabled and (kind == "standard" or settings.baselines.all_heads):
        base = baseline_curves(
            db["embeddings"],
            db["labels"],
            query["embeddings"],
            query["labels"],
            sizes,
            seed=settings.seed,
            max_train=settings.baselines.max_train,
        )
        metrics.update({f"eval/{k}": v for k, v in base.items()})
    return metrics
