"""Tables of per-size values: one row per embedding size, one column per metric family or per curve."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

# The columns of summary.md (and of the console table), where measured; results.csv keeps every family.
SUMMARY_COLUMNS = (
    "top1",
    "top5",
    "knn_top1",
    "map@10",
    "precision@10",
    "recall@100",
    "l2_knn_top1",
    "probe_trunc_top1",
    "probe_pca_top1",
    "probe_rp_top1",
    "spearman",
    "mrr@10",
    "ndcg@10",
    "zero_prefix_db",
    "zero_prefix_queries",
)


def per_size_table(
    metrics: dict[str, float], sizes: list[int], columns: tuple[str, ...] | None = None
) -> tuple[list[str], list[list]]:
    """Rows per size, one column per metric family (``eval/knn_top1@8`` -> column ``knn_top1``)."""
    families = sorted({k.split("/", 1)[1].rsplit("@", 1)[0] for k in metrics if "@" in k})
    columns = [c for c in columns if c in families] if columns else families
    rows = [[m] + [metrics.get(f"eval/{c}@{m}") for c in columns] for m in sizes]
    return ["size", *columns], rows


def layer_grid_table(grid: list[dict], family: str) -> tuple[list[str], list[list]]:
    """The (layers, size) grid of one metric family: rows ``[layers, relative cost, value per size...]``."""
    sizes = list(dict.fromkeys(row["size"] for row in grid))
    rows: dict[int, list] = {}
    for row in grid:
        rows.setdefault(row["layers"], [row["layers"], row["relative_cost"]]).append(row[family])
    return ["layers", "cost", *map(str, sizes)], list(rows.values())


def dict_rows_table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """A list of flat dicts as a header (the first row's keys) and rows."""
    header = list(rows[0]) if rows else []
    return header, [[row.get(key) for key in header] for row in rows]


def curves_table(curves: dict[str, dict[int, float]]) -> tuple[list[str], list[list]]:
    """Rows per size, one column per named curve of {size: value} (empty where a curve has no point)."""
    sizes = sorted({m for points in curves.values() for m in points})
    labels = list(curves)
    rows = [[m] + [curves[label].get(m) for label in labels] for m in sizes]
    return ["size", *labels], rows


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)
