"""The classifier: backbone -> embedding -> nested head -> Matryoshka cross-entropy, with per-size accuracy."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from mrl.common.configs import typed
from mrl.common.errors import ConfigError
from mrl.core.heads import HEAD_KINDS, build_head
from mrl.core.losses import MatryoshkaCrossEntropy
from mrl.core.nesting import default_nesting, sort_with_weights
from mrl.data.base import SPLITS
from mrl.data.image.decode import uint8_to_input
from mrl.training.base import MatryoshkaLightningModule, plain

# The classifier's on_after_batch_transfer only touches uint8 batches, so Lightning's note that a data module's
# own hook would not run says nothing (no data module here defines one).
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule` but")


@dataclass(frozen=True)
class HeadConfig:
    """``model.head``: ``kind`` (mrl, mrl_e, ff, standard), ``dim`` (the ff head's size), ``bias``."""

    kind: str = "mrl"
    bias: bool = True
    dim: int | None = None


@dataclass(frozen=True)
class CrossEntropyConfig:
    """``model.loss``: per-size ``weights`` (null: 1 each, as the paper sums) and ``label_smoothing``."""

    weights: Sequence[float] | None = None
    label_smoothing: float = 0.0


class MatryoshkaClassifier(MatryoshkaLightningModule):
    """Trains one embedding at several nested sizes at once.

    ``head`` is a dict for :func:`mrl.core.heads.build_head` (``kind``: mrl, mrl_e, ff or standard, plus
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
        head_config = typed(HeadConfig, plain(head), "model.head")
        if head_config.kind not in HEAD_KINDS:
            raise ConfigError("model.head.kind", head_config.kind, f"expected one of {', '.join(HEAD_KINDS)}")
        super().__init__(
            backbone,
            nesting,
            loss,
            optimizer,
            scheduler,
            num_classes=int(num_classes),
            head=asdict(head_config),
            channels_last=channels_last,
            compile=compile,
        )
        if int(num_classes) < 2:
            raise ConfigError("model.num_classes", num_classes, "need at least 2 classes")
        loss_config = typed(CrossEntropyConfig, self.hparams.loss, "model.loss")
        kind = head_config.kind
        weights = loss_config.weights
        self.nesting = None
        if kind in ("mrl", "mrl_e"):  # sizes in any order: the heads get them ascending, the weights follow them
            given = self.hparams.nesting if self.hparams.nesting is not None else default_nesting(self.embed_dim)
            self.nesting, weights = sort_with_weights(given, weights, width=self.embed_dim)
        self.head = build_head(
            kind, self.embed_dim, int(num_classes), nesting=self.nesting, dim=head_config.dim, bias=head_config.bias
        )
        self.sizes = list(self.head.sizes)
        self.criterion = MatryoshkaCrossEntropy(weights=weights, label_smoothing=float(loss_config.label_smoothing))
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

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 image batches (prepared shards, :mod:`mrl.data.image.decode`) become the model's float input
        here, on the device: ``/255``, normalised, flipped with p=0.5 in training, channels-last. Float
        batches pass untouched."""
        if not (isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor)):
            return batch
        x = batch[0]
        if x.dtype != torch.uint8 or x.ndim != 4:
            return batch
        trainer = self._trainer
        stats = getattr(getattr(trainer, "datamodule", None), "normalization", None)
        if stats is None:
            config = getattr(self.backbone, "data_config", None) or {}
            stats = (config.get("mean", (0.485, 0.456, 0.406)), config.get("std", (0.229, 0.224, 0.225)))
        training = bool(trainer is not None and trainer.training)
        x = uint8_to_input(x, stats[0], stats[1], flip=training, channels_last=bool(self.hparams.channels_last))
        return type(batch)([x, *batch[1:]]) if isinstance(batch, list) else (x, *batch[1:])

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
        batch_size = y.shape[0]
        self.log_losses(split, loss, per_size, batch_size)
        detached = logits.detach()
        for i, m in enumerate(self.sizes):
            for name in ("top1", "top5"):
                metric = self.metrics[f"{split}_acc"][name][i]
                metric.update(detached[i], y)  # epoch-level only: no per-batch compute (forward would do one)
                if split != "train":  # training hands them to self.log once per epoch (train_epoch_metrics)
                    self.log(f"{split}/{name}@{m}", metric, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def train_epoch_metrics(self) -> dict[str, MulticlassAccuracy]:
        accuracy = self.metrics["train_acc"]
        return {f"train/{name}@{m}": accuracy[name][i] for i, m in enumerate(self.sizes) for name in ("top1", "top5")}

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
