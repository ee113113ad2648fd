"""The evaluation's charts (PNG, next to ``summary.md``): accuracy against size, the cascade, storage, funnels."""

from __future__ import annotations

from pathlib import Path

from mrl.evaluation.plots import plot_curves, plot_groups, plot_xy
from mrl.evaluation.result import EvaluationResult


def plot_funnel_tuning(table: list[dict], tuned: list[dict], path: Path) -> Path:
    """Recall@k against MFLOPs per query of every funnel the tuning tried, one colour per first-stage format and
    stage count; the chosen funnels ringed and named with their target, the targets drawn as lines."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    groups: dict[str, list[dict]] = {}
    for row in table:
        kind = f"{row['format']}, {'one stage' if len(row['stages']) == 1 else 'shortlist + rerank'}"
        groups.setdefault(kind, []).append(row)
    for kind, rows in groups.items():
        ax.scatter([r["mflops_per_query"] for r in rows], [100 * r["recall"] for r in rows], s=14, label=kind)
    for t in tuned:
        ax.axhline(100 * t["target"], color="grey", lw=0.6, ls=":")
        ax.scatter([t["mflops_per_query"]], [100 * t["recall"]], s=90, facecolors="none", edgecolors="black")
        ax.annotate(
            f"{t['target']}: {t['spec']} {t['format']}",
            (t["mflops_per_query"], 100 * t["recall"]),
            fontsize=7,
            xytext=(4, -10),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    k = tuned[0]["k"] if tuned else "k"
    ax.set_xlabel("MFLOPs per query")
    ax.set_ylabel(f"recall@{k} against exact search (%)")
    ax.set_title("funnel tuning: recall against cost of every funnel tried")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# metric family -> curve label on the truncation chart
TRUNCATION_CURVES = (
    ("top1", "head top-1"),
    ("knn_top1", "1-NN (cosine)"),
    ("probe_trunc_top1", "truncate + probe"),
    ("probe_pca_top1", "PCA + probe"),
    ("probe_rp_top1", "random proj. + probe"),
)


def write_charts(out: Path, result: EvaluationResult) -> list[Path]:
    """Each chart the result has data for; the paths written."""
    written = []
    metrics, sizes = result.metrics, result.sizes
    curves = {}
    for family, label in TRUNCATION_CURVES:
        points = {m: metrics[f"eval/{family}@{m}"] for m in sizes if f"eval/{family}@{m}" in metrics}
        if points:
            curves[label] = points
    if curves:
        written.append(plot_curves(curves, out / "truncation_curve.png", "accuracy against embedding size"))
    if result.adaptive_classification:
        written.append(
            plot_xy(
                result.adaptive_classification,
                "expected_size",
                "accuracy",
                out / "adaptive_classification.png",
                "adaptive classification (confidence cascade)",
                "expected size (dimensions)",
                "top-1 accuracy (%)",
                logx=True,
            )
        )
    measured = [row for row in result.storage if row.get("knn_top1") is not None]
    if measured:
        written.append(
            plot_groups(
                measured,
                "bytes_per_vector",
                "knn_top1",
                "dtype",
                out / "storage_retrieval.png",
                "1-NN accuracy against storage per vector",
                "bytes per vector",
                "1-NN accuracy (%)",
                "size",
            )
        )
    if result.funnel_tuning:
        written.append(plot_funnel_tuning(result.funnel_tuning, result.tuned_funnels, out / "funnel_tuning.png"))
    if result.funnel_retrieval:
        written.append(
            plot_xy(
                [{**r, "label": r["funnel"]} for r in result.funnel_retrieval],
                "mflops_per_query",
                "knn_top1",
                out / "funnel_retrieval.png",
                "funnel retrieval: 1-NN accuracy against cost",
                "MFLOPs per query",
                "1-NN accuracy (%)",
                logx=True,
            )
        )
    return written
