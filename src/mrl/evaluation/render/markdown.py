"""``summary.md``: the per-size table of an evaluation, then its cascade, funnel and storage tables."""

from __future__ import annotations

from mrl.evaluation.layer_grid import headline
from mrl.evaluation.render.tables import SUMMARY_COLUMNS, layer_grid_table, per_size_table
from mrl.evaluation.result import EvaluationResult


def _fmt(value) -> str:
    return "" if value is None else f"{100 * value:.2f}" if isinstance(value, float) else str(value)


def summary_markdown(result: EvaluationResult) -> str:
    lines = [f"# Evaluation of `{result.checkpoint}`", ""]
    if result.head:
        database, queries = result.database, result.queries
        lines += [
            f"Head: **{result.head}**, embedding width {result.embed_dim}; database "
            + (f"{database.split} ({database.count})" if database else "none (head accuracy only)")
            + f", queries {queries.split} ({queries.count})"
            + ("; head accuracy with flip test-time augmentation" if result.tta else "")
            + ". Values in %.",
            "",
        ]
    header, rows = per_size_table(result.metrics, result.sizes, SUMMARY_COLUMNS)
    if "zero_prefix_db" in header:
        lines += [
            "zero_prefix_db / zero_prefix_queries: how many database / query prefixes of that size are all zeros "
            "(no information; such a query counts as a miss).",
            "",
        ]
    if rows:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    else:
        lines += [f"- {k}: {v:.4f}" for k, v in sorted(result.metrics.items())]
    lines += layer_grid_lines(result.layer_grid)
    lines += cascade_lines(result.adaptive_classification)
    lines += funnel_lines(result.funnel_retrieval)
    lines += tuned_funnel_lines(result.tuned_funnels)
    lines += storage_lines(result.storage)
    return "\n".join(lines) + "\n"


def layer_grid_lines(grid: list[dict]) -> list[str]:
    """The (layers, size) grid of a text run: one row per layer count with its cost, one column per size."""
    family = headline(grid)
    if family is None:
        return []
    header, rows = layer_grid_table(grid, family)
    total = grid[-1]["layers"]
    return [
        "",
        f"## Layers x sizes: {family} % of the model cut to its first k of {total} layers",
        "",
        "cost: the share of the full model's transformer layers the cut model runs (k / L); layer_grid.csv has "
        "every metric.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ] + [f"| {row[0]} | {row[1]:.2f}x | " + " | ".join(_fmt(v) for v in row[2:]) + " |" for row in rows]


def cascade_lines(cascade: list[dict]) -> list[str]:
    if not cascade:
        return []
    return ["", "## Adaptive classification", "", "| tolerance | expected size | top-1 % |", "|---|---|---|"] + [
        f"| {c['tolerance']:.3f} | {c['expected_size']:.1f} | {100 * c['accuracy']:.2f} |" for c in cascade
    ]


def funnel_lines(funnels: list[dict]) -> list[str]:
    if not funnels:
        return []
    return [
        "",
        "## Funnel retrieval (shortlist, then rerank at full size)",
        "",
        "| funnel | 1-NN % | MFLOPs/query | ms/query | speed-up |",
        "|---|---|---|---|---|",
    ] + [
        f"| {f['funnel']} | {100 * f['knn_top1']:.2f} | {f['mflops_per_query']:.3f} | "
        f"{f['ms_per_query']:.4f} | {f['speedup']:.2f}x |"
        for f in funnels
    ]


def tuned_funnel_lines(tuned: list[dict]) -> list[str]:
    """The funnel `mrl.tune_funnel` chose for each recall target, with how it did on held-out queries."""
    if not tuned:
        return []
    k = tuned[0]["k"]
    hnsw = all("speedup_vs_hnsw" in t for t in tuned)  # the full-width HNSW tuned to the same target, same run
    lines = [
        "",
        f"## Tuned funnels (the fastest reaching recall@{k} against exact search; chart: funnel_tuning.png)",
        "",
        f"| target | funnel | recall@{k} tuning | held-out | ms/query | speed-up | MFLOPs/query | bytes/item scanned "
        "| 1-NN % |" + (" full-width HNSW tuned alike: setting, held-out, ms/query | funnel vs it |" if hnsw else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if hnsw else ""),
    ]
    for t in tuned:
        held = "" if t["holdout_recall"] is None else f"{t['holdout_recall']:.4f}"
        if t["holdout_recall"] is not None and not t["met"]:
            held += f" (misses by {t['shortfall']:.4f})"
        against = ""
        if hnsw:
            hnsw_held = "" if t["hnsw_holdout_recall"] is None else f", {t['hnsw_holdout_recall']:.4f}"
            against = f" {t['hnsw_setting']}{hnsw_held}, {t['hnsw_ms_per_query']:.4f} | {t['speedup_vs_hnsw']:.2f}x |"
        lines.append(
            f"| {t['target']} | {t['funnel']} | {t['recall']:.4f} | {held} | {t['ms_per_query']:.4f} | "
            f"{t['speedup']:.2f}x | {t['mflops_per_query']:.3g} | {t['first_stage_bytes']} | "
            f"{100 * t['knn_top1']:.2f} |" + against
        )
    return lines


def storage_lines(storage: list[dict]) -> list[str]:
    """The storage rows whose retrieval was measured, smallest first."""
    measured = [row for row in storage if row.get("knn_top1") is not None]
    if not measured:
        return []
    map_key = next(key for key in measured[0] if key.startswith("map@"))
    return [
        "",
        "## Storage (database prefixes, smallest first; retrieval by the stored codes)",
        "",
        f"| size | dtype | bytes/vector | database MiB | 1-NN % | {map_key} % |",
        "|---|---|---|---|---|---|",
    ] + [
        f"| {r['size']} | {r['dtype']} | {r['bytes_per_vector']} | {r['total_mib']:.3f} | "
        f"{_fmt(r['knn_top1'])} | {_fmt(r[map_key])} |"
        for r in sorted(measured, key=lambda r: (r["bytes_per_vector"], -r["knn_top1"]))
    ]
