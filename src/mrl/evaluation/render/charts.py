"""The evaluation's charts (PNG, next to ``summary.md``): accuracy against size, the cascade, storage, funnels."""

from __future__ import annotations

from pathlib import Path

from mrl.evaluation.plots import plot_curves, plot_groups, plot_xy
from mrl.evaluation.result import EvaluationResult

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
