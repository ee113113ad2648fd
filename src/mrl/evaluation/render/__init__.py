"""Renderers of an :class:`~mrl.evaluation.result.EvaluationResult`, one job each: ``summary.md``
(:mod:`.markdown`), ``results.csv``, ``layer_grid.csv`` and the per-size tables (:mod:`.tables`), the PNG charts
(:mod:`.charts`), W&B (:mod:`.wandb_log`). :func:`write_outputs` writes every file of an evaluation."""

from __future__ import annotations

from pathlib import Path

from mrl.common.io import atomic_write_text, write_json
from mrl.evaluation.render.charts import write_charts
from mrl.evaluation.render.markdown import summary_markdown
from mrl.evaluation.render.tables import dict_rows_table, per_size_table, write_csv
from mrl.evaluation.result import EvaluationResult

__all__ = ["write_outputs"]


def write_outputs(out: Path, result: EvaluationResult) -> None:
    """``results.json``, ``results.csv``, ``summary.md`` and the charts, in ``out`` (recorded as the result's
    ``output_dir``)."""
    result.output_dir = str(out)
    write_json(out / "results.json", result.to_dict())
    write_csv(out / "results.csv", *per_size_table(result.metrics, result.sizes))
    if result.layer_grid:
        write_csv(out / "layer_grid.csv", *dict_rows_table(result.layer_grid))
    atomic_write_text(out / "summary.md", summary_markdown(result))
    write_charts(out, result)
