"""Evaluation and report uploads to W&B: tables, line charts, the PNG charts and the summary metrics.

The run is opened by :func:`mrl.common.wandb_runs.open_run`: the W&B project and entity of the runs' own
logger config, offline without an API key.
"""

from __future__ import annotations

from pathlib import Path

from mrl.common.wandb_curves import log_size_curves
from mrl.common.wandb_runs import open_run
from mrl.evaluation.render.tables import curves_table, per_size_table
from mrl.evaluation.result import EvaluationResult

# logged row by row
ROW_TABLES = ("adaptive_classification", "funnel_retrieval", "tuned_funnels", "funnel_tuning", "layer_grid", "storage")


def log_evaluation(result: EvaluationResult, out: Path, run_dir: Path) -> None:
    """Add the evaluation to the training run's W&B run (same id, resumed): metrics in the summary,
    the per-size (with the all-zero prefix counts), cascade, funnel, tuned-funnel, storage and (text) layer-grid
    tables,
    the charts, and each per-size metric as a curve against ``curve/size`` (``curve/eval/...``)."""
    import wandb

    run = open_run(run_dir, config_from=[run_dir], resume=True)
    header, rows = per_size_table(result.metrics, result.sizes)
    payload = {"eval/per_size": wandb.Table(columns=header, data=rows)}
    for key in ROW_TABLES:
        table = getattr(result, key)
        if table:
            columns = [c for c in table[0] if not isinstance(table[0][c], (dict, list))]
            payload[f"eval/{key}"] = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in table])
    for image in sorted(out.glob("*.png")):
        payload[f"eval/{image.stem}"] = wandb.Image(str(image))
    run.log(payload)
    run.summary.update(result.metrics)
    log_size_curves(run, result.metrics, result.sizes)
    run.finish()


def log_report(report: dict, out: Path) -> None:
    """One W&B run (job type "report") with, per section, the table, a line chart of every curve
    against embedding size, and the matplotlib figure."""
    import wandb

    run = open_run(
        out, config_from=[Path(r) for r in report["runs"]], job_type="report", config={"root": report["root"]}
    )
    for key, curves in report["curves"].items():
        header, rows = curves_table(curves)
        labels = list(curves)
        chart = wandb.plot.line_series(
            xs=[list(curves[label]) for label in labels],
            ys=[[100 * v for v in curves[label].values()] for label in labels],
            keys=labels,
            title=key.replace("_", " "),
            xname="embedding size",
        )
        run.log(
            {
                f"report/{key}": wandb.Table(columns=header, data=rows),
                f"report/{key}_curves": chart,
                f"report/{key}_chart": wandb.Image(str(out / f"report_{key}.png")),
            }
        )
    run.finish()
