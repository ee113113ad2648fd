"""Lightning callbacks: the truncation curve (accuracy against embedding size) after each validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning as L
from lightning.pytorch.loggers import WandbLogger


def curve_rows(metrics: Mapping, sizes: Sequence[int], split: str = "val") -> list[list[float]]:
    """Rows of (size, top-1, top-5) read from logged metrics named ``{split}/top1@{m}``."""
    rows = []
    for m in sizes:
        top1, top5 = metrics.get(f"{split}/top1@{m}"), metrics.get(f"{split}/top5@{m}")
        if top1 is None:
            continue
        rows.append([int(m), float(top1), float(top5) if top5 is not None else float("nan")])
    return rows


def print_curve(rows: list[list[float]], title: str) -> None:
    """A rich table of the truncation curve, for the console at the end of a run."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("size", "top-1 %", "top-5 %"):
        table.add_column(column, justify="right")
    for size, top1, top5 in rows:
        table.add_row(str(size), f"{100 * top1:.2f}", f"{100 * top5:.2f}")
    Console().print(table)


class TruncationCurve(L.Callback):
    """Logs a W&B table of (size, top-1, top-5) and a line chart of top-1 against size after each
    validation, so runs of MRL, MRL-E, FF and standard models can be compared on one chart."""

    def __init__(self, split: str = "val") -> None:
        self.split = split

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        rows = curve_rows(trainer.callback_metrics, pl_module.sizes, self.split)
        if not wandb_loggers or not rows:
            return
        import wandb

        table = wandb.Table(columns=["size", "top1", "top5"], data=rows)
        chart = wandb.plot.line(table, "size", "top1", title=f"{self.split} top-1 against embedding size")
        for logger in wandb_loggers:
            logger.experiment.log(
                {
                    f"{self.split}/truncation_table": table,
                    f"{self.split}/truncation_curve": chart,
                    "trainer/global_step": trainer.global_step,
                }
            )
