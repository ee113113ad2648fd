"""The report's equal-bytes view: every evaluated run's retrieval quality against the bytes one stored vector costs,
so dense prefixes (MRL, MRL-E, the standard model truncated, PCA, the adaptor) and k-sparse codes (CSR) share one
axis.

A run's evaluation says what each of its sizes costs in ``bytes_per_vector`` (the post-hoc runs of
:mod:`mrl.posthoc`: a CSR code is k indices plus k fp32 values); without it a size m is a dense fp32 prefix, 4m
bytes. Runs with the same label (repeats over seeds) are averaged, with the standard deviation beside the mean.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from mrl.common.io import read_json
from mrl.evaluation.render.tables import write_csv

__all__ = ["EQUAL_BYTES_SECTIONS", "equal_bytes_sections", "gather_by_bytes"]

# key: (title, metric name before "@{size}")
EQUAL_BYTES_SECTIONS = {
    "bytes_knn_top1": ("1-NN top-1 against bytes per vector (eval, cosine)", "eval/knn_top1"),
    "bytes_map10": ("mAP@10 against bytes per vector (eval, cosine)", "eval/map@10"),
    "bytes_mrr10": ("MRR@10 against bytes per vector (eval, text pairs)", "eval/mrr@10"),
}


def gather_by_bytes(run_dirs: list[Path], labels: dict[Path, str], metric: str) -> dict[str, dict[int, list[float]]]:
    """{label: {bytes per vector: [value of each run]}} from each run's ``eval/results.json``."""
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in run_dirs:
        path = run / "eval" / "results.json"
        if not path.is_file():
            continue
        result = read_json(path)
        priced = {int(m): int(b) for m, b in (result.get("bytes_per_vector") or {}).items()}
        for key, value in result.get("metrics", {}).items():
            name, _, size = key.rpartition("@")
            if name == metric and size.isdigit():
                values[labels[run]][priced.get(int(size), 4 * int(size))].append(float(value))
    return {label: dict(sorted(points.items())) for label, points in values.items()}


def _plot(curves: dict[str, dict[int, float]], spread: dict[str, dict[int, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for label, points in curves.items():
        xs = sorted(points)
        ys = np.array([100 * points[x] for x in xs])
        ax.plot(xs, ys, marker="o", label=label)
        errors = np.array([100 * spread[label].get(x, 0.0) for x in xs])
        if errors.any():
            ax.fill_between(xs, ys - errors, ys + errors, alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per stored vector")
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def equal_bytes_sections(run_dirs: list[Path], labels: dict[Path, str], out: Path, report: dict) -> list[str]:
    """Markdown sections (a table and a chart each, ``report_bytes_*.csv`` / ``.png``) for the metrics some run
    has; the curves also go into ``report["curves"]`` / ``report["spread"]`` under the section's key."""
    lines: list[str] = []
    for key, (title, metric) in EQUAL_BYTES_SECTIONS.items():
        values = gather_by_bytes(run_dirs, labels, metric)
        if not values:
            continue
        curves = {label: {b: float(np.mean(v)) for b, v in points.items()} for label, points in values.items()}
        spread = {
            label: {b: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for b, v in points.items()}
            for label, points in values.items()
        }
        report.setdefault("curves", {})[key], report.setdefault("spread", {})[key] = curves, spread
        byte_counts = sorted({b for points in curves.values() for b in points})
        header = ["bytes", *curves]
        write_csv(out / f"report_{key}.csv", header, [[b] + [curves[c].get(b) for c in curves] for b in byte_counts])
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for b in byte_counts:
            cells = []
            for label in curves:
                runs = values[label].get(b)
                mean, std = curves[label].get(b), spread[label].get(b)
                cells.append("" if not runs else f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if len(runs) > 1 else ""))
            lines.append("| " + " | ".join([str(b), *cells]) + " |")
        lines += ["", f"![{title}](report_{key}.png)", ""]
        _plot(curves, spread, out / f"report_{key}.png", title)
    return lines
