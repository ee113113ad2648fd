"""`make eval`: everything measured on one trained model, written next to the checkpoint it evaluated.

For a classifier: embeddings of the database split (train) and query split are exported; then per-size
accuracy through the trained heads, kNN retrieval at every size (cosine and L2), the paper's baselines
for a rigid model (truncation, PCA/SVD and random projection, each with a refitted linear probe),
adaptive classification by confidence cascade (thresholds fitted on a held-out half of the queries),
funnel retrieval against exact search (accuracy, MFLOPs and wall-clock per query), and storage: the
bytes of every size in fp32, fp16, int8 and binary, with the retrieval each keeps (:mod:`mrl.eval.quantized`).
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from mrl.checkpoints import find_checkpoint, find_run_dirs, is_run_collection, load_module
from mrl.eval.adaptive import cascade_curve
from mrl.eval.baselines import baseline_curves
from mrl.eval.device import check_precision, resolve_device
from mrl.eval.embeddings import embed_split, load_embeddings, save_embeddings  # noqa: F401 (load_embeddings: kept importable from here)
from mrl.eval.knn import knn_metrics
from mrl.eval.plots import plot_curves, plot_groups, plot_xy
from mrl.eval.quantized import check_codecs, quantized_knn_metrics
from mrl.eval.storage import storage_table
from mrl.io import atomic_write_text, write_json
from mrl.nesting import default_nesting
from mrl.retrieval import AdaptiveRetriever

log = logging.getLogger(__name__)


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


def knn_device(name: str | None, model_device: torch.device) -> torch.device | None:
    """Where kNN metrics search: ``auto`` = the model's device when it is a GPU, else FAISS on the CPU (None);
    ``cpu`` = FAISS; a GPU name = there."""
    if name in (None, "auto"):
        return model_device if model_device.type == "cuda" else None
    if str(name) == "cpu":
        return None
    try:
        return resolve_device(name)
    except ValueError as error:
        raise ValueError(f"knn.{error}") from None


def split_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * fraction))
    return np.sort(order[:cut]), np.sort(order[cut:])


def funnel_rows(db: np.ndarray, queries: np.ndarray, db_labels: np.ndarray, q_labels: np.ndarray,
                sizes: list[int], shortlist: int, repeats: int = 3, binary: bool = False) -> list[dict]:
    """1-NN accuracy, MFLOPs and measured ms per query: exact full-size search against funnels that
    shortlist at each smaller size and rerank at full size; with ``binary``, also funnels that shortlist
    by Hamming distance between the bits of each smaller size (:func:`mrl.retrieval.sign_bits`)."""
    full = sizes[-1]
    shortlist = min(shortlist, len(db))
    funnels = [("exact", [(full, 1)], "flat")] + [
        (f"{m}->{full}", [(m, shortlist), (full, 1)], "flat") for m in sizes[:-1]
    ]
    if binary:
        funnels += [(f"{m} bits->{full}", [(m, shortlist), (full, 1)], "binary") for m in sizes[:-1]]
    rows = []
    for name, funnel, index in funnels:
        retriever = AdaptiveRetriever(db, funnel, metric="cosine", index=index)
        retriever.search(queries[: min(8, len(queries))], 1)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            _, ids = retriever.search(queries, 1)
            best = min(best, time.perf_counter() - start)
        rows.append({
            "funnel": name,
            "knn_top1": float((db_labels[ids[:, 0]] == q_labels).mean()),
            "mflops_per_query": retriever.mflops_per_query(),
            "ms_per_query": 1000 * best / len(queries),
        })
    exact = rows[0]["ms_per_query"]
    for row in rows:
        row["speedup"] = exact / row["ms_per_query"] if row["ms_per_query"] else float("nan")
    return rows


def storage_rows(rows: list[dict], metrics: dict[str, float], map_k: int) -> list[dict]:
    """The storage table with the retrieval each row keeps: 1-NN accuracy and mAP of the cosine search
    (fp32) or of the quantised codes (``eval/{dtype}_knn_top1@m``), where measured."""
    for row in rows:
        key = "" if row["dtype"] == "fp32" else f"{row['dtype']}_"
        row["knn_top1"] = metrics.get(f"eval/{key}knn_top1@{row['size']}")
        row[f"map@{map_k}"] = metrics.get(f"eval/{key}map@{map_k}@{row['size']}")
    return rows


# --------------------------------------------------------------------------------------------- run
def resolve_paths(cfg: DictConfig) -> tuple[Path, Path, Path]:
    """(checkpoint, run directory, output directory) from ``run=`` or ``ckpt=``."""
    target = cfg.get("run") or cfg.get("ckpt")
    if not target:
        raise ValueError("run=null and ckpt=null: give run=<run directory> or ckpt=<checkpoint file>")
    ckpt = find_checkpoint(target)
    run_dir = Path(cfg.run) if cfg.get("run") else (
        ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent)
    out = Path(cfg.output_dir) if cfg.get("output_dir") else run_dir / "eval"
    return ckpt, run_dir, out


def build_eval_data(cfg: DictConfig, run_dir: Path, module):
    from mrl.experiment import instantiate_clearly

    if cfg.get("data") is None:
        train_cfg = run_dir / "config.yaml"
        if not train_cfg.is_file():
            raise FileNotFoundError(f"run={str(run_dir)!r}: no config.yaml; pass data=... to say what to evaluate on")
        data_cfg = OmegaConf.load(train_cfg).data
    else:
        # data=<name>: a text set's ${model.backbone.*} (its tokenizer) resolves to the checkpoint's own backbone
        context = cfg.copy()
        with open_dict(context):
            context.model = {"backbone": dict(getattr(module, "hparams", {}).get("backbone") or {})}
        data_cfg = context.data
    datamodule = instantiate_clearly(data_cfg)
    if hasattr(datamodule, "set_data_config") and hasattr(module.backbone, "data_config"):
        datamodule.set_data_config(module.backbone.data_config)
    return datamodule


def evaluate_runs(cfg: DictConfig) -> list[dict[str, Any]]:
    """Evaluate ``run=``; a directory holding several runs (a sweep) has each of them evaluated.

    Every run writes ``<run>/eval/`` as on its own. With ``skip_evaluated`` a run that already has
    ``eval/results.json`` is left alone (to finish an interrupted pass). A run that fails is logged and
    the others go on; the failures are raised together at the end.
    """
    target = cfg.get("run")
    if not (target and is_run_collection(target)):
        return [evaluate(cfg)]
    runs = find_run_dirs(target)
    if not runs:
        raise FileNotFoundError(f"run={str(target)!r}: no run (a directory with checkpoints/*.ckpt) at or below it")
    if cfg.get("output_dir"):
        raise ValueError(f"output_dir={cfg.output_dir!r}: run={str(target)!r} holds {len(runs)} runs and each "
                         "writes its own <run>/eval; leave output_dir=null")
    results, failed = [], []
    for i, run in enumerate(runs, 1):
        if cfg.get("skip_evaluated") and (run / "eval" / "results.json").is_file():
            log.info("[%d/%d] %s: already evaluated, skipped", i, len(runs), run)
            continue
        log.info("[%d/%d] %s", i, len(runs), run)
        run_cfg = cfg.copy()
        run_cfg.run = str(run)
        try:
            results.append(evaluate(run_cfg))
        except Exception as error:  # one broken run must not cost the others their evaluation
            log.error("%s: evaluation failed: %s", run, error)
            failed.append(f"{run}: {type(error).__name__}: {error}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(runs)} runs failed to evaluate; " + " | ".join(failed))
    return results


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate one run (``run=<run directory>``) or one checkpoint (``ckpt=<file>``)."""
    precision = check_precision(cfg.get("precision", "fp32"))
    device = resolve_device(cfg.get("device", "auto"))
    search_device = knn_device(cfg.knn.get("device", "auto"), device)
    ckpt, run_dir, out = resolve_paths(cfg)
    out.mkdir(parents=True, exist_ok=True)
    reference = cfg.get("reference")
    if reference:
        from mrl.compat import load_reference_resnet50

        module = load_reference_resnet50(ckpt, kind=None if reference is True else reference)
    else:
        module = load_module(ckpt, weights_only=bool(cfg.get("weights_only", True)))
    module.to(device)
    datamodule = build_eval_data(cfg, run_dir, module)
    log.info("Evaluating %s on %s (%s, %s)", ckpt, type(datamodule).__name__, device, precision)
    if not hasattr(module, "head"):
        from mrl.eval.text import evaluate_text_run

        metrics = evaluate_text_run(module, datamodule, module.sizes, precision=precision)
        results = {"checkpoint": str(ckpt), "sizes": module.sizes, "metrics": metrics}
        write_outputs(out, results, {}, [], [], [], [])
        return results
    return evaluate_classifier(cfg, module, datamodule, ckpt, run_dir, out, search_device)


def evaluate_classifier(cfg, module, datamodule, ckpt: Path, run_dir: Path, out: Path,
                        search_device: torch.device | None = None) -> dict[str, Any]:
    kind = module.hparams.head.get("kind")
    head_sizes = list(module.sizes)
    # Retrieval sizes: every size MRL would serve (halving the width) plus the model's own nesting list,
    # so a model trained on a sparse list is also measured between its sizes (interpolation). An FF
    # model is the baseline at its own size only (one model per size).
    if cfg.get("sizes"):
        sizes = list(cfg.sizes)
    elif kind == "ff":
        sizes = head_sizes
    else:
        sizes = sorted(set(module.nesting or []) | set(default_nesting(module.embed_dim)))
    # database_split=null: head accuracy only, for evaluation-only sets (ImageNetV2, -A, -R, -Sketch)
    retrieval = cfg.get("database_split") is not None
    precision = cfg.get("precision", "fp32")
    splits = {}
    if retrieval:
        splits[cfg.database_split] = db = embed_split(module, datamodule.eval_dataloader(cfg.database_split),
                                                      logits=False, precision=precision,
                                                      name=cfg.database_split)
    query = embed_split(module, datamodule.eval_dataloader(cfg.query_split), flip=bool(cfg.get("tta")),
                        precision=precision, name=cfg.query_split)
    splits[cfg.query_split] = query
    meta = {"checkpoint": str(ckpt), "head": kind, "embed_dim": module.embed_dim, "sizes": sizes}
    for name, split in splits.items():
        save_embeddings(out / f"embeddings_{name}.npz", split, {**meta, "split": name,
                        "count": len(split["labels"]), "dtype": cfg.embeddings_dtype}, cfg.embeddings_dtype)
    if cfg.get("only_present_classes"):
        # ImageNet-A and -R hold 200 of the 1,000 classes: predict among those only, as the reference does
        absent = np.setdiff1d(np.arange(query["logits"].shape[2]), query["labels"])
        query["logits"][:, :, absent] = -np.inf

    metrics: dict[str, float] = {}
    for key, value in head_accuracy(query["logits"], query["labels"], head_sizes).items():
        metrics[f"eval/{key}"] = value
    for metric in cfg.knn.metrics if retrieval else []:
        prefix = "eval/" if metric == "cosine" else f"eval/{metric}_"
        knn = knn_metrics(db["embeddings"], db["labels"], query["embeddings"], query["labels"], sizes,
                          metric=metric, ks=[k for k in cfg.knn.ks if k <= len(db["labels"])],
                          map_k=min(cfg.knn.map_k, len(db["labels"])), device=search_device)
        metrics.update({prefix + k: v for k, v in knn.items()})
    codecs = check_codecs(cfg.get("quantized")) if retrieval else []
    if codecs:
        metrics.update({f"eval/{k}": v for k, v in quantized_knn_metrics(
            db["embeddings"], db["labels"], query["embeddings"], query["labels"], sizes, codecs,
            map_k=min(cfg.knn.map_k, len(db["labels"])), device=search_device).items()})
    if retrieval and cfg.baselines.enabled and (kind == "standard" or cfg.baselines.all_heads):
        base = baseline_curves(db["embeddings"], db["labels"], query["embeddings"], query["labels"], sizes,
                               seed=cfg.seed, max_train=cfg.baselines.get("max_train"))
        metrics.update({f"eval/{k}": v for k, v in base.items()})

    cascade: list[dict] = []
    if len(head_sizes) > 1:
        fit, held = split_holdout(len(query["labels"]), cfg.adaptive.holdout_fraction, cfg.seed)
        cascade = cascade_curve(query["logits"][:, fit], query["labels"][fit], query["logits"][:, held],
                                query["labels"][held], head_sizes, from_logits=True)
    funnels, storage = [], []
    if retrieval:
        funnels = funnel_rows(db["embeddings"], query["embeddings"], db["labels"], query["labels"], sizes,
                              cfg.funnel.shortlist, binary=bool(cfg.funnel.get("binary", True)))
        storage = storage_rows(storage_table(sizes, len(db["labels"]), ("fp32", *codecs)), metrics,
                               min(cfg.knn.map_k, len(db["labels"])))
    results = {
        "checkpoint": str(ckpt),
        "head": kind,
        "embed_dim": module.embed_dim,
        "head_sizes": head_sizes,
        "tta": bool(cfg.get("tta")),
        "sizes": sizes,
        "database": {"split": cfg.database_split, "count": len(db["labels"])} if retrieval else None,
        "only_present_classes": bool(cfg.get("only_present_classes")),
        "queries": {"split": cfg.query_split, "count": len(query["labels"])},
        "metrics": metrics,
        "adaptive_classification": cascade,
        "funnel_retrieval": funnels,
        "storage": storage,
    }
    write_outputs(out, results, metrics, sizes, cascade, funnels, storage)
    if cfg.get("wandb"):
        log_to_wandb(results, out, run_dir)
    return results


def log_to_wandb(results: dict, out: Path, run_dir: Path) -> None:
    """Add the evaluation to the training run's W&B run (same id, resumed): metrics in the summary,
    the per-size, cascade and funnel tables, and the charts."""
    import wandb

    from mrl.wandb_setup import ensure_wandb_mode, stable_run_id

    ensure_wandb_mode(run_dir)
    run = wandb.init(project="mrl", id=stable_run_id(run_dir), resume="allow", dir=str(run_dir))
    header, rows = per_size_table(results["metrics"], results["sizes"])
    payload = {"eval/per_size": wandb.Table(columns=header, data=rows)}
    for key in ("adaptive_classification", "funnel_retrieval"):
        if results.get(key):
            columns = [c for c in results[key][0] if not isinstance(results[key][0][c], (dict, list))]
            payload[f"eval/{key}"] = wandb.Table(columns=columns, data=[[r[c] for c in columns]
                                                                        for r in results[key]])
    for image in sorted(out.glob("*.png")):
        payload[f"eval/{image.stem}"] = wandb.Image(str(image))
    run.log(payload)
    run.summary.update(results["metrics"])
    run.finish()


# ------------------------------------------------------------------------------------------- outputs
SUMMARY_COLUMNS = ("top1", "top5", "knn_top1", "map@10", "precision@10", "recall@100", "l2_knn_top1",
                   "probe_trunc_top1", "probe_pca_top1", "probe_rp_top1", "spearman", "mrr@10", "ndcg@10")


def per_size_table(metrics: dict[str, float], sizes: list[int],
                   columns: tuple[str, ...] | None = None) -> tuple[list[str], list[list]]:
    """Rows per size, one column per metric family (``eval/knn_top1@8`` -> column ``knn_top1``)."""
    families = sorted({k.split("/", 1)[1].rsplit("@", 1)[0] for k in metrics if "@" in k})
    columns = [c for c in columns if c in families] if columns else families
    rows = [[m] + [metrics.get(f"eval/{c}@{m}") for c in columns] for m in sizes]
    return ["size", *columns], rows


def write_outputs(out: Path, results: dict, metrics: dict, sizes: list[int], cascade: list[dict],
                  funnels: list[dict], storage: list[dict]) -> None:
    results["output_dir"] = str(out)
    write_json(out / "results.json", results)
    header, rows = per_size_table(metrics or results.get("metrics", {}), sizes or results.get("sizes", []))
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    header, rows = per_size_table(metrics or results.get("metrics", {}), sizes or results.get("sizes", []),
                                  SUMMARY_COLUMNS)
    atomic_write_text(out / "summary.md", summary_markdown(results, header, rows, cascade, funnels, storage))
    curves = {}
    for family, label in (("top1", "head top-1"), ("knn_top1", "1-NN (cosine)"),
                          ("probe_trunc_top1", "truncate + probe"), ("probe_pca_top1", "PCA + probe"),
                          ("probe_rp_top1", "random proj. + probe")):
        points = {m: metrics[f"eval/{family}@{m}"] for m in sizes if f"eval/{family}@{m}" in metrics}
        if points:
            curves[label] = points
    if curves:
        plot_curves(curves, out / "truncation_curve.png", "accuracy against embedding size")
    if cascade:
        plot_xy(cascade, "expected_size", "accuracy", out / "adaptive_classification.png",
                "adaptive classification (confidence cascade)", "expected size (dimensions)",
                "top-1 accuracy (%)", logx=True)
    measured = [row for row in storage if row.get("knn_top1") is not None]
    if measured:
        plot_groups(measured, "bytes_per_vector", "knn_top1", "dtype", out / "storage_retrieval.png",
                    "1-NN accuracy against storage per vector", "bytes per vector", "1-NN accuracy (%)", "size")
    if funnels:
        plot_xy([{**r, "label": r["funnel"]} for r in funnels], "mflops_per_query", "knn_top1",
                out / "funnel_retrieval.png", "funnel retrieval: 1-NN accuracy against cost",
                "MFLOPs per query", "1-NN accuracy (%)", logx=True)


def _fmt(value) -> str:
    return "" if value is None else f"{100 * value:.2f}" if isinstance(value, float) else str(value)


def summary_markdown(results: dict, header: list[str], rows: list[list], cascade: list[dict],
                     funnels: list[dict], storage: list[dict] | None = None) -> str:
    lines = [f"# Evaluation of `{results['checkpoint']}`", ""]
    if results.get("head"):
        database = results.get("database")
        lines += [f"Head: **{results['head']}**, embedding width {results.get('embed_dim')}; database "
                  + (f"{database['split']} ({database['count']})" if database else "none (head accuracy only)")
                  + ", queries "
                  f"{results['queries']['split']} ({results['queries']['count']})"
                  + ("; head accuracy with flip test-time augmentation" if results.get("tta") else "")
                  + ". Values in %.", ""]
    if rows:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    else:
        lines += [f"- {k}: {v:.4f}" for k, v in sorted(results.get("metrics", {}).items())]
    if cascade:
        lines += ["", "## Adaptive classification", "", "| tolerance | expected size | top-1 % |", "|---|---|---|"]
        lines += [f"| {c['tolerance']:.3f} | {c['expected_size']:.1f} | {100 * c['accuracy']:.2f} |" for c in cascade]
    if funnels:
        lines += ["", "## Funnel retrieval (shortlist, then rerank at full size)", "",
                  "| funnel | 1-NN % | MFLOPs/query | ms/query | speed-up |", "|---|---|---|---|---|"]
        lines += [f"| {f['funnel']} | {100 * f['knn_top1']:.2f} | {f['mflops_per_query']:.3f} | "
                  f"{f['ms_per_query']:.4f} | {f['speedup']:.2f}x |" for f in funnels]
    measured = [row for row in storage or [] if row.get("knn_top1") is not None]
    if measured:
        map_key = next(key for key in measured[0] if key.startswith("map@"))
        lines += ["", "## Storage (database prefixes, smallest first; retrieval by the stored codes)", "",
                  f"| size | dtype | bytes/vector | database MiB | 1-NN % | {map_key} % |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['size']} | {r['dtype']} | {r['bytes_per_vector']} | {r['total_mib']:.3f} | "
                  f"{_fmt(r['knn_top1'])} | {_fmt(r[map_key])} |"
                  for r in sorted(measured, key=lambda r: (r["bytes_per_vector"], -r["knn_top1"]))]
    return "\n".join(lines) + "\n"
