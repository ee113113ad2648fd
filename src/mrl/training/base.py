"""The LightningModule base both model kinds share: backbone -> embedding, the hyper-parameters saved so a
checkpoint rebuilds its model, the per-size loss logging (in training, through ``self.log`` only on the steps
Lightning writes: :mod:`mrl.training.step_logging`), the non-finite-loss stop, and the optimizer with its warm-up
and decay."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from mrl.common.configs import typed
from mrl.common.errors import ConfigError
from mrl.runs import MODULE_CLASS_KEY, class_path
from mrl.training.optim import (
    OPTIMIZERS,
    SCHEDULES,
    OptimizerConfig,
    SchedulerConfig,
    build_optimizer,
    build_scheduler,
)
from mrl.training.step_logging import StepMean, writes_this_step


def plain(value: Any) -> Any:
    """OmegaConf containers as plain Python, so checkpoints load with ``weights_only=True``."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def build_backbone(backbone: Mapping | nn.Module) -> nn.Module:
    """Instantiate a backbone from a Hydra-style config (``_target_``) or pass a module through."""
    if isinstance(backbone, nn.Module):
        return backbone
    from hydra.utils import instantiate

    return instantiate(dict(backbone), _convert_="all")


class MatryoshkaLightningModule(L.LightningModule):
    """A backbone trained at several nested embedding sizes at once (``self.sizes``).

    Subclasses build their loss and metrics; this class saves the hyper-parameters (``backbone`` as its config,
    plus ``extra``), builds the backbone (``self.embed_dim`` is its width), logs ``{split}/loss`` and
    ``{split}/loss@{m}`` per size, and configures the optimizer and schedule from ``optimizer``/``scheduler``.
    """

    def __init__(
        self,
        backbone: Mapping | nn.Module,
        nesting: Sequence[int] | None,
        loss: Mapping | None,
        optimizer: Mapping | None,
        scheduler: Mapping | None,
        **extra: Any,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "backbone": None if isinstance(backbone, nn.Module) else plain(backbone),
                "nesting": plain(nesting),
                "loss": dict(plain(loss) or {}),
                "optimizer": dict(plain(optimizer) or {}),
                "scheduler": dict(plain(scheduler) or {}),
                **{key: plain(value) for key, value in extra.items()},
            }
        )
        self.optimizer_config = typed(OptimizerConfig, self.hparams.optimizer, "model.optimizer")
        if str(self.optimizer_config.name).lower() not in OPTIMIZERS:
            raise ConfigError(
                "model.optimizer.name", self.optimizer_config.name, f"expected one of {', '.join(OPTIMIZERS)}"
            )
        # No scheduler section, or name none: the learning rate stays as it is.
        scheduler_config = typed(SchedulerConfig, self.hparams.scheduler, "model.scheduler")
        name = str(scheduler_config.name).lower()
        if name not in (*SCHEDULES, "none"):
            raise ConfigError(
                "model.scheduler.name", scheduler_config.name, f"expected one of {', '.join(SCHEDULES)} or none"
            )
        self.scheduler_config = scheduler_config if self.hparams.scheduler and name != "none" else None
        self.backbone = build_backbone(backbone)
        self.embed_dim = int(self.backbone.embed_dim)
        self.sizes: list[int] = []
        self.train_loss_means = nn.ModuleList()  # one StepMean per size, made in setup (sizes are known then)
        self._epoch_registered = False
        self._train_batch_size: int | None = None

    def embed(self, x: Any) -> torch.Tensor:
        """Full-width embeddings ``[B, D]``; keep the first m coordinates for size m."""
        return self.backbone(x)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record this module's class, so :func:`mrl.runs.load_module` rebuilds the class that was trained."""
        checkpoint[MODULE_CLASS_KEY] = class_path(type(self))

    # ---------------------------------------------------------------------------------------- logging
    def log_losses(self, split: str, loss: torch.Tensor, per_size: torch.Tensor, batch_size: int) -> None:
        """Stop on a non-finite loss (the last good checkpoint is kept), else log the total and each size's.

        Epoch-level validation and test losses are averaged over processes."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{split}/loss is {loss.item()} at step {self.global_step} (per size: "
                f"{per_size.detach().tolist()}); the last good checkpoint is kept. "
                "Lower model.optimizer.lr or enable gradient clipping (trainer.gradient_clip_val)."
            )
        on_step, sync = split == "train", split != "train"
        self.log(
            f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=sync
        )
        if split == "train" and self._trainer is not None and len(self.train_loss_means) == len(self.sizes):
            values = per_size.detach()
            for i, mean in enumerate(self.train_loss_means):
                mean.update(values[i], batch_size)
            self._train_batch_size = batch_size  # logged in on_train_batch_end, on the steps Lightning writes
            return
        for i, m in enumerate(self.sizes):
            self.log(
                f"{split}/loss@{m}",
                per_size[i].detach(),
                on_step=on_step,
                on_epoch=True,
                batch_size=batch_size,
                sync_dist=sync,
            )

    def setup(self, stage: str) -> None:
        if len(self.train_loss_means) != len(self.sizes):
            self.train_loss_means = nn.ModuleList(StepMean() for _ in self.sizes)

    def train_epoch_metrics(self) -> dict[str, Any]:
        """Metrics logged ``on_epoch`` only in training, updated by the step (a subclass's accuracies): handed to
        ``self.log`` once per epoch, which is all Lightning needs to compute them at the epoch's end."""
        return {}

    def on_train_epoch_start(self) -> None:
        self._epoch_registered = False

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Hand the per-size training values to ``self.log`` on the steps Lightning writes, and once per epoch to
        register them for their epoch values (:mod:`mrl.training.step_logging`): after the callbacks' hooks, which
        may stop training and so make Lightning write this step."""
        first = not self._epoch_registered
        if first:
            for name, metric in self.train_epoch_metrics().items():
                self.log(name, metric, on_step=False, on_epoch=True)
        if self._train_batch_size is not None and (first or writes_this_step(self.trainer)):
            for i, m in enumerate(self.sizes):
                self.log(
                    f"train/loss@{m}",
                    self.train_loss_means[i],
                    on_step=True,
                    on_epoch=True,
                    batch_size=self._train_batch_size,
                    metric_attribute=f"train_loss_means.{i}",
                )
        self._epoch_registered = True

    # ------------------------------------------------------------------------------------- optimizers
    def global_batch(self) -> int | None:
        """Examples per optimizer step over all processes: batch size x processes x accumulated batches."""
        batch_size = getattr(self.trainer.datamodule, "batch_size", None)
        if not batch_size:
            return None
        return int(batch_size) * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def configure_optimizers(self):
        global_batch = self.global_batch()
        config = self.optimizer_config
        optimizer = build_optimizer(self, config, global_batch=global_batch)
        if config.lr_batch and global_batch != config.lr_batch:
            rank_zero_info(
                f"learning rate {config.lr} is set for a global batch of {config.lr_batch}; "
                f"{optimizer.param_groups[0]['lr']:.6g} for this run's {global_batch}"
            )
        if self.scheduler_config is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        batches = self.trainer.num_training_batches
        if batches == float("inf") or not batches:
            steps_per_epoch = total / max(1, int(self.trainer.max_epochs or 1))
        else:
            steps_per_epoch = max(1.0, batches / self.trainer.accumulate_grad_batches)
        scheduler = build_scheduler(optimizer, self.scheduler_config, total, steps_per_epoch=steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
