"""The per-size training logging before :mod:`mrl.training.step_logging`: every value through Lightning's
``self.log`` on every training step. The reference the cheaper logging is tested (row by row of the loggers'
output) and timed against."""

from __future__ import annotations

from mrl.training.classifier import MatryoshkaClassifier
from mrl.training.contrastive import MatryoshkaContrastiveModule


class _LogEveryStep:
    def setup(self, stage: str) -> None:  # no StepMean: log_losses logs each size's loss as a tensor, every step
        pass

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        pass


class ClassifierLoggingEveryStep(_LogEveryStep, MatryoshkaClassifier):
    def _shared_step(self, batch, split: str):
        x, y = batch
        logits = self(x)
        per_size = self.criterion.per_size(logits, y)
        loss = self.criterion.reduce(per_size)
        self.log_losses(split, loss, per_size, y.shape[0])
        detached = logits.detach()
        for i, m in enumerate(self.sizes):
            for name in ("top1", "top5"):
                metric = self.metrics[f"{split}_acc"][name][i]
                metric.update(detached[i], y)
                self.log(f"{split}/{name}@{m}", metric, on_step=False, on_epoch=True, batch_size=y.shape[0])
        return loss


class ContrastiveLoggingEveryStep(_LogEveryStep, MatryoshkaContrastiveModule):
    pass
