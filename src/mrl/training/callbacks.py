"""Lightning callbacks: the truncation curve (accuracy, or retrieval quality, against embedding size) after each
validation, and progressive resizing of the training images (the reference ImageNet recipe)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from rich.table import Table

from mrl.common.io import console

log = logging.getLogger(__name__)

# The per-size metrics a run may log as ``{split}/{name}@{m}``, in table order: (name, column title, in %).
CURVE_METRICS = (
    ("top1", "top-1 %", True),
    ("top5", "top-5 %", True),  # classifiers
    ("mrr@10", "MRR@10 %", True),
    ("ndcg@10", "NDCG@10 %", True),
    ("recall@1", "recall@1 %", True),
    ("recall@10", "recall@10 %", True),  # sentence pairs
    ("spearman", "Spearman", False),  # scored pairs
)


def curve_table(metrics: Mapping, sizes: Sequence[int], split: str = "val") -> tuple[list[str], list[list[float]]]:
    """(metric names, rows ``[size, value, ...]``): the per-size metrics of :data:`CURVE_METRICS` logged at some
    size, one row per size that has any (NaN where one is missing). Empty when there are none."""
    names = [name for name, _, _ in CURVE_METRICS if any(f"{split}/{name}@{m}" in metrics for m in sizes)]
    rows = []
    for m in sizes:
        values = [metrics.get(f"{split}/{name}@{m}") for name in names]
        if any(v is not None for v in values):
            rows.append([int(m), *(float("nan") if v is None else float(v) for v in values)])
    return (names, rows) if rows else ([], [])


def print_curve(names: Sequence[str], rows: list[list[float]], title: str) -> None:
    """A rich table of the per-size metrics, for the console at the end of a run."""
    columns = {name: (column, percent) for name, column, percent in CURVE_METRICS}
    table = Table(title=title)
    table.add_column("size", justify="right")
    for name in names:
        table.add_column(columns[name][0], justify="right")
    for size, *values in rows:
        cells = [f"{100 * v:.2f}" if columns[name][1] else f"{v:.4f}" for name, v in zip(names, values)]
        table.add_row(str(size), *cells)
    console().print(table)


class TruncationCurve(L.Callback):
    """Logs a W&B table of the per-size metrics (size, top-1, top-5; for text pairs MRR@10, NDCG@10, recall; or
    Spearman) and a line chart of the first of them against size after each validation, so runs of MRL, MRL-E,
    FF and standard models can be compared on one chart."""

    def __init__(self, split: str = "val") -> None:
        self.split = split
        self._warned = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        names, rows = curve_table(trainer.callback_metrics, pl_module.sizes, self.split)
        if not wandb_loggers or not rows:
            return
        import wandb

        table = wandb.Table(columns=["size", *names], data=rows)
        chart = wandb.plot.line(table, "size", names[0], title=f"{self.split} {names[0]} against embedding size")
        for logger in wandb_loggers:
            try:
                logger.experiment.log(
                    {
                        f"{self.split}/truncation_table": table,
                        f"{self.split}/truncation_curve": chart,
                        "trainer/global_step": trainer.global_step,
                    }
                )
            except Exception as error:  # a W&B failure never stops training; said once per run
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "W&B: the truncation table was not logged (%s: %s); training goes on",
                        type(error).__name__,
                        error,
                    )


class ProgressiveResizing(L.Callback):
    """Train on small images first: the crop size ramps from ``start_size`` to ``end_size``.

    The size is ``start_size`` up to ``start_epoch``, ``end_size`` from ``end_epoch`` on, and in between
    the linear interpolation rounded to a multiple of ``multiple`` (FFCV's ImageNet schedule, which the
    reference MRL models were trained with: 160 to 192 over epochs 29-34 of 40). Validation keeps the
    data's own ``image_size``. The data module must have ``set_train_image_size`` (image folders do).
    A resumed run continues with the size of the epoch it resumes, from its first batch.
    """

    def __init__(self, start_size: int, end_size: int, start_epoch: int, end_epoch: int, multiple: int = 32):
        key = "callbacks.progressive_resizing"
        for name, value in (("start_size", start_size), ("end_size", end_size), ("multiple", multiple)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}.{name}={value!r} is invalid; use a positive integer")
        if not 0 <= start_epoch <= end_epoch:
            raise ValueError(
                f"{key}.start_epoch={start_epoch!r}, end_epoch={end_epoch!r}: need 0 <= start_epoch <= end_epoch"
            )
        self.start_size, self.end_size, self.multiple = start_size, end_size, multiple
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self._epoch, self._epoch_done = 0, False
        self._trainer: L.Trainer | None = None

    def size_at(self, epoch: int) -> int:
        if epoch <= self.start_epoch:
            return self.start_size
        if epoch >= self.end_epoch:
            return self.end_size
        fraction = (epoch - self.start_epoch) / (self.end_epoch - self.start_epoch)
        size = self.start_size + fraction * (self.end_size - self.start_size)
        return round(size / self.multiple) * self.multiple

    def _set(self, trainer: L.Trainer, epoch: int) -> int:
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "set_train_image_size"):
            raise ValueError(
                f"callbacks.progressive_resizing={self.start_size}->{self.end_size}: the data module "
                f"{type(datamodule).__name__} cannot change its training image size; use an image-folder data set "
                f"(data=imagenet or data=image_folder) or set callbacks.progressive_resizing=null"
            )
        size = self.size_at(epoch)
        datamodule.set_train_image_size(size)
        return size

    # The first epoch's loader can start its workers before on_fit_start (configure_optimizers asks for
    # the number of steps), so the size is set at setup and again when a checkpoint's state arrives.
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._trainer = trainer
            self._set(trainer, self._epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch, self._epoch_done = trainer.current_epoch, False
        size = self._set(trainer, self._epoch)
        pl_module.log("train/image_size", float(size), on_step=False, on_epoch=True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        self._epoch_done = batch_idx + 1 >= trainer.num_training_batches

    def state_dict(self) -> dict[str, int]:
        # A checkpoint taken once the epoch's batches are all done resumes at the next epoch.
        return {"resume_epoch": self._epoch + int(self._epoch_done)}

    def load_state_dict(self, state_dict: Mapping[str, int]) -> None:
        self._epoch = int(state_dict["resume_epoch"])
        if self._trainer is not None:
            self._set(self._trainer, self._epoch)
