"""Per-size training values logged without paying Lightning's ``self.log`` on every step.

``self.log`` costs about a millisecond a call on a CPU core (Python bookkeeping), and a training step logs a value
per size. Lightning writes step values to the loggers only every ``trainer.log_every_n_steps`` steps, but a tensor
logged with ``on_epoch=True`` has to reach ``self.log`` every step to count in the epoch's mean. So the epoch mean
is kept here, by :class:`StepMean` (a torchmetrics ``Metric``, updated every step for a few microseconds), and the
Metric itself is handed to ``self.log`` only on the steps Lightning writes, and once per epoch to register it for
the epoch's value (:func:`writes_this_step`). The loggers get the same names (``_step`` and ``_epoch``), the same
step values and the same epoch means as from a tensor logged every step.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

__all__ = ["StepMean", "writes_this_step"]


class StepMean(Metric):
    """The mean of a value over an epoch weighted by batch size, reduced as Lightning reduces a tensor logged with
    ``on_epoch=True`` (the same float sums, so the same epoch value), with the latest step's value as its step
    value (what Lightning logs ``on_step``). Local to each process, as the training losses were logged
    (``sync_dist=False``)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self) -> None:
        super().__init__(sync_on_compute=False)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, batch_size: int) -> None:
        if value.dtype not in (torch.float32, torch.float64):
            value = value.float()
        self.total = self.total + value * batch_size  # not +=: type promotion, as Lightning
        self.count = self.count + batch_size
        self._forward_cache = value  # the step value Lightning reads from a logged Metric

    def compute(self) -> torch.Tensor:
        return self.total / self.count


def writes_this_step(trainer: Any) -> bool:
    """Whether Lightning writes this training step's values to the loggers: every ``log_every_n_steps`` optimizer
    steps, on a step after which training stops, and every step under ``fast_dev_run``. Asked after the callbacks'
    ``on_train_batch_end`` (which may stop training), as Lightning asks it. True where the answer is unknown."""
    connector = getattr(trainer, "_logger_connector", None)
    try:
        writes = connector.should_update_logs
    except (AttributeError, NotImplementedError):
        return True
    return bool(writes or trainer.fast_dev_run)
