"""The LightningModule: backbone -> embedding -> nested head -> Matryoshka loss, with per-size metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from mrl.heads import build_head
from mrl.losses import MatryoshkaCrossEntropy
from mrl.nesting import resolve_nesting
from mrl.optim import build_optimizer, build_scheduler

SPLITS = ("train", "val", "test")


def _plain(value: Any) -> Any:
    """Turn OmegaConf containers into plain Python so checkpoints load with ``weights_only=True``."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def build_backbone(backbone: Mapping | nn.Module) -> nn.Module:
    """Instantiate a backbone from a Hydra-style config (``_target_``) or pass a module through."""
    if isinstance(backbone, nn.Module):
        return backbone
    from hydra.utils import instantiate

    return instantiate(dict(backbone), _convert_="all")


class MatryoshkaModule(L.LightningModule):
    """Trains one embedding at several nested sizes at once.

    ``head`` is a dict for :func:`mrl.heads.build_head` (``kind``: mrl, mrl_e, ff or standard, plus
    ``dim`` for ff and ``bias``); ``nesting`` is resolved against the backbone's embedding width (None =
    halve down to 8). Metrics are logged as ``{split}/top1@{m}``, ``{split}/top5@{m}``,
    ``{split}/loss@{m}`` and ``{split}/loss`` for every size m the head serves.
    """

    def __init__(
        self,
        backbone: Mapping | nn.Module,
        num_classes: int,
        head: Mapping | None = None,
        nesting: list[int] | None = None,
        loss: Mapping | None = None,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        head = dict(_plain(head) or {"kind": "mrl"})
        loss = dict(_plain(loss) or {})
        nesting = _plain(nesting)
        ignore = ["backbone"] if isinstance(backbone, nn.Module) else []
        self.save_hyperparameters(
            {
                "backbone": _plain(backbone) if not ignore else None,
                "num_classes": int(num_classes),
                "head": head,
                "nesting": nesting,
                "loss": loss,
                "optimizer": dict(_plain(optimizer) or {}),
                "scheduler": dict(_plain(scheduler) or {}),
                "channels_last": channels_last,
                "compile": compile,
            }
        )
        if int(num_classes) < 2:
            raise ValueError(f"model.num_classes={num_classes!r}: need at least 2 classes")
        self.backbone = build_backbone(backbone)
        self.embed_dim = int(self.backbone.embed_dim)
        head_kwargs = {k: v for k, v in head.items() if k != "kind"}
        kind = head.get("kind", "mrl")
        self.nesting = resolve_nesting(nesting, self.embed_dim) if kind in ("mrl", "mrl_e") else None
        self.head = build_head(kind, self.embed_dim, int(num_classes), nesting=self.nesting, **head_kwargs)
        self.sizes = list(self.head.sizes)
        self.criterion = MatryoshkaCrossEntropy(
            weights=loss.get("weights"), label_smoothing=float(loss.get("label_smoothing", 0.0))
        )
        top5 = min(5, int(num_classes))

        def accuracy(k: int) -> nn.ModuleList:
            return nn.ModuleList(MulticlassAccuracy(num_classes, top_k=k, average="micro") for _ in self.sizes)

        self.metrics = nn.ModuleDict(
            {f"{split}_acc": nn.ModuleDict({"top1": accuracy(1), "top5": accuracy(top5)}) for split in SPLITS}
        )
        self._embed_fn = self.backbone
        if compile:
            # Not registered as a submodule, so state-dict keys stay free of ``_orig_mod.``.
            object.__setattr__(self, "_embed_fn", torch.compile(self.backbone))
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    # ----------------------------------------------------------------------------------------- forward
    def _prepare(self, x: Any) -> Any:
        if self.hparams.channels_last and isinstance(x, torch.Tensor) and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def embed(self, x: Any) -> torch.Tensor:
        """Full-width embeddings ``[B, D]``; truncate to any prefix for a smaller representation."""
        return self._embed_fn(self._prepare(x))

    def forward(self, x: Any) -> torch.Tensor:
        """Logits for every size, stacked ``[G, B, C]``."""
        return self.head(self.embed(x))

    # ------------------------------------------------------------------------------------------- steps
    def _shared_step(self, batch: Any, split: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        per_size = self.criterion.per_size(logits, y)
        loss = self.criterion.reduce(per_size)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{split}/loss is {loss.item()} at step {self.global_step} (per size: "
                f"{per_size.detach().tolist()}); the last good checkpoint is kept. "
                "Lower model.optimizer.lr or enable gradient clipping (trainer.gradient_clip_val)."
            )
        on_step = split == "train"
        sync = split != "train"  # epoch-level validation/test losses are averaged over processes
        batch_size = y.shape[0]
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=batch_size,
                 sync_dist=sync)
        detached = logits.detach()
        for i, m in enumerate(self.sizes):
            self.log(f"{split}/loss@{m}", per_size[i].detach(), on_step=on_step, on_epoch=True,
                     batch_size=batch_size, sync_dist=sync)
            for name in ("top1", "top5"):
                metric = self.metrics[f"{split}_acc"][name][i]
                metric(detached[i], y)
                self.log(f"{split}/{name}@{m}", metric, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        out = {"embedding": self.embed(x)}
        if y is not None:
            out["label"] = y
        return out

    # -------------------------------------------------------------------------------------- optimizers
    def global_batch(self) -> int | None:
        """Examples per optimizer step over all processes: batch size x processes x accumulated batches."""
        batch_size = getattr(self.trainer.datamodule, "batch_size", None)
        if not batch_size:
            return None
        return int(batch_size) * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def configure_optimizers(self):
        global_batch = self.global_batch()
        optimizer = build_optimizer(self, self.hparams.optimizer, global_batch=global_batch)
        lr_batch = self.hparams.optimizer.get("lr_batch")
        if lr_batch and global_batch != lr_batch:
            rank_zero_info(f"learning rate {self.hparams.optimizer.get('lr')} is set for a global batch of {lr_batch}; "
                           f"{optimizer.param_groups[0]['lr']:.6g} for this run's {global_batch}")
        sched_cfg = self.hparams.scheduler
        if not sched_cfg or str(sched_cfg.get("name", "cosine")).lower() == "none":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        batches = self.trainer.num_training_batches
        if batches == float("inf") or not batches:
            steps_per_epoch = total / max(1, int(self.trainer.max_epochs or 1))
        else:
            steps_per_epoch = max(1.0, batches / self.trainer.accumulate_grad_batches)
        scheduler = build_scheduler(optimizer, sched_cfg, total, steps_per_epoch=steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
