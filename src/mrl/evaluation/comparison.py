"""Comparison of many runs (MRL, MRL-E, FF, standard), behind `make report DIR=...`: one table and one chart per metric.

Each training run's ``results.json`` gives its validation and test accuracy per size; each
``eval/results.json`` beside it gives 1-NN accuracy and mAP@10 per size. Runs whose resolved configs
differ only in seeds (and in settings that do not change the result: devices, workers, logging) are
averaged, with the spread shown; the fixed-feature runs, one per size, join into a single FF curve.
Runs that differ in anything else (a nesting list, a learning rate, another experiment) get curves
of their own, labelled by the head and the settings that tell them apart.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from mrl.common.door import require_writable
from mrl.common.errors import InputError
from mrl.common.io import atomic_write_text, read_json, write_json
from mrl.evaluation.equal_bytes import equal_bytes_sections
from mrl.evaluation.plots import plot_curves
from mrl.evaluation.render.tables import curves_table, write_csv
from mrl.evaluation.render.wandb_log import log_report

LABELS = {"mrl": "MRL", "mrl_e": "MRL-E", "ff": "FF", "standard": "standard", "contrastive": "MRL contrastive"}
LABELS |= {"csr": "CSR", "adaptor": "Adaptor", "adaptor_supervised": "Adaptor (supervised)",
           "truncate": "standard truncated", "pca": "standard PCA"}  # post-hoc runs (mrl.posthoc)  # fmt: skip
# key: (title, metric name before "@{size}", where it is read: the training or the evaluation results)
SECTIONS = {
    "val_top1": ("val top-1 (trained heads)", "val/top1", "train"),
    "test_top1": ("test top-1 (trained heads)", "test/top1", "train"),
    "val_mrr10": ("val MRR@10 (text pairs, in-batch)", "val/mrr@10", "train"),
    "val_spearman": ("val Spearman x 100 (scored pairs)", "val/spearman", "train"),
    "knn_top1": ("1-NN top-1 (eval, cosine)", "eval/knn_top1", "eval"),
    "map10": ("mAP@10 (eval, cosine)", "eval/map@10", "eval"),
    "int8_knn_top1": ("1-NN top-1 (eval, prefixes stored as int8)", "eval/int8_knn_top1", "eval"),
    "binary_knn_top1": ("1-NN top-1 (eval, prefixes stored as bits, Hamming distance)", "eval/binary_knn_top1", "eval"),
    "mrr10": ("MRR@10 (eval, text pairs)", "eval/mrr@10", "eval"),
    "ndcg10": ("NDCG@10 (eval, text pairs)", "eval/ndcg@10", "eval"),
    "spearman": ("Spearman x 100 (eval, scored pairs)", "eval/spearman", "eval"),
}

# The config sections that define what a run measures; other keys below them that do not change
# the result are ignored when deciding which runs are repeats of one another.
COMPARED_SECTIONS = ("experiment_name", "data", "model", "trainer")
IGNORED_KEYS = {
    "data.num_workers", "data.pin_memory", "data.persistent_workers",
    "trainer.default_root_dir", "trainer.plugins", "trainer.accelerator", "trainer.devices",
    "trainer.num_nodes", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps", "trainer.num_sanity_val_steps", "trainer.deterministic",
    "model.compile", "model.channels_last",  # speed options: same model, same numbers up to rounding
}  # fmt: skip
FF_SIZE_KEYS = {"model.head.dim", "model.nesting"}  # one FF run per size: together they are one curve


def find_runs(root: str | Path) -> list[Path]:
    """Training run directories below ``root``: those holding a training ``results.json``.

    An evaluation's ``results.json`` (in ``<run>/eval`` or wherever ``output_dir=`` put it, say a robustness
    set's) names its ``checkpoint`` and is not a run.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"DIR={str(root)!r}: no such directory")
    return sorted(
        p.parent for p in root.rglob("results.json") if p.parent.name != "eval" and "checkpoint" not in read_json(p)
    )


def run_settings(run_dir: Path) -> dict[str, str]:
    """The settings that define a run, from its ``config.yaml``: ``{dotted key: value as text}``.

    Seeds and the keys in ``IGNORED_KEYS`` are left out; a run without a config gives ``{}``.
    """
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    flat: dict[str, str] = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif prefix.split(".")[-1] != "seed" and prefix not in IGNORED_KEYS:
            flat[prefix] = node if isinstance(node, str) else json.dumps(node, sort_keys=True)

    walk("", {k: v for k, v in config.items() if k in COMPARED_SECTIONS})
    return flat


def label_runs(run_dirs: list[Path]) -> dict[Path, str]:
    """A curve label per run: the head's name, plus the settings that differ between runs of that head."""
    heads = {}
    for run in run_dirs:
        kind = read_json(run / "results.json").get("head")
        heads[run] = LABELS.get(kind, str(kind))
    settings = {}
    for run in run_dirs:
        found = run_settings(run)
        settings[run] = {k: v for k, v in found.items() if not (heads[run] == "FF" and k in FF_SIZE_KEYS)}
    labels = {}
    for head in dict.fromkeys(heads.values()):
        group = [run for run in run_dirs if heads[run] == head]
        keys = sorted({key for run in group for key in settings[run]})
        varying = [key for key in keys if len({settings[run].get(key) for run in group}) > 1]
        for run in group:
            parts = [f"{key.removeprefix('model.')}={settings[run].get(key)}" for key in varying]
            labels[run] = " ".join([head, ", ".join(parts)]) if parts else head
    return labels


def gather_values(
    run_dirs: list[Path], metric: str = "val/top1", source: str = "train", labels: dict[Path, str] | None = None
) -> dict[str, dict[int, list[float]]]:
    """{label: {size: [value of each run]}}; ``source="eval"`` reads ``eval/results.json``."""
    labels = labels if labels is not None else label_runs(run_dirs)
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run_dir in run_dirs:
        path = run_dir / ("eval/results.json" if source == "eval" else "results.json")
        if not path.is_file():
            continue
        train = read_json(run_dir / "results.json")
        # An FF model stands for its own size only; its other prefixes are not the FF baseline.
        own_sizes = set(train.get("sizes") or []) if train.get("head") == "ff" else None
        for key, value in read_json(path).get("metrics", {}).items():
            name, _, size = key.rpartition("@")
            if name == metric and size.isdigit() and (own_sizes is None or int(size) in own_sizes):
                values[labels[run_dir]][int(size)].append(float(value))
    return {label: dict(sorted(sizes.items())) for label, sizes in values.items()}


def _cell(values: list[float] | None, mean: float | None, std: float | None) -> str:
    """Mean in %, with the standard deviation over runs when there are several."""
    if not values:
        return ""
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if len(values) > 1 else "")


def write_report(root: str | Path, out: str | Path | None = None, use_wandb: bool = False) -> dict:
    """``report.md``, ``report.json`` and, per section, ``report_{key}.csv`` and ``.png`` in ``out`` (default
    ``root``); with ``use_wandb`` also one W&B run. Returns what ``report.json`` holds."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError("DIR", root, "a file; give a run or sweep directory")
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"DIR={str(root)!r}: no results.json below it; train (and evaluate) runs first")
    out = require_writable(Path(out) if out else root, "out", folder=True)
    out.mkdir(parents=True, exist_ok=True)
    labels = label_runs(runs)
    groups = {label: [run for run in runs if labels[run] == label] for label in dict.fromkeys(labels.values())}
    count = f"{len(runs)} run{'' if len(runs) == 1 else 's'}"
    lines = [
        f"# Report: {root}",
        "",
        f"{count}. Values in %: the mean over the runs of each curve, ± the standard "
        "deviation where a curve has several (seeds).",
        "",
        "| curve | runs |",
        "|---|---|",
    ]
    lines += [f"| {label} | {len(group)}: {', '.join(run.name for run in group)} |" for label, group in groups.items()]
    lines.append("")
    report = {
        "root": str(root),
        "runs": [str(r) for r in runs],
        "labels": {str(r): labels[r] for r in runs},
        "curves": {},
        "spread": {},
    }
    val_top1 = None
    for key, (title, metric, source) in SECTIONS.items():
        values = gather_values(runs, metric, source, labels)
        val_top1 = values if key == "val_top1" else val_top1
        if not values or (key == "test_top1" and values == val_top1):
            continue  # data sets without a test split of their own (digits, ImageNet) test on val
        curves = {label: {m: float(np.mean(v)) for m, v in sizes.items()} for label, sizes in values.items()}
        spread = {
            label: {m: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for m, v in sizes.items()}
            for label, sizes in values.items()
        }
        report["curves"][key], report["spread"][key] = curves, spread
        header, rows = curves_table(curves)
        write_csv(out / f"report_{key}.csv", header, rows)
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [
            "| "
            + " | ".join(
                [str(m)]
                + [_cell(values[label].get(m), curves[label].get(m), spread[label].get(m)) for label in header[1:]]
            )
            + " |"
            for m, *_ in rows
        ]
        lines += ["", f"![{title}](report_{key}.png)", ""]
        plot_curves(curves, out / f"report_{key}.png", title)
    if not any(SECTIONS[key][2] == "eval" for key in report["curves"]):
        lines += [
            "Evaluation metrics (1-NN, mAP@10; MRR, NDCG, Spearman for text) appear here once the runs "
            "are evaluated: `make eval RUN=<run or sweep directory>`.",
            "",
        ]
    lines += equal_bytes_sections(runs, labels, out, report)  # every run at equal bytes per vector
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    write_json(out / "report.json", report)
    if use_wandb:
        log_report(report, out)
    return report
