"""Contrastive Matryoshka training for text encoders: (anchor, positive[, negative]) batches, in-batch
negatives at every nested size, per-size retrieval (or STS) metrics at validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mrl.common.configs import typed
from mrl.core.losses import MatryoshkaContrastiveLoss
from mrl.core.nesting import resolve_nesting
from mrl.core.retrieval_metrics import retrieval_metrics, sts_spearman
from mrl.data.base import SPLITS
from mrl.training.base import MatryoshkaLightningModule

RETRIEVAL_KS = (1, 10)


def concat_features(parts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack tokenized batches along the batch axis, right-padding (with 0, masked out) to a common length."""
    keys = list(parts[0])
    length = max(p["input_ids"].shape[1] for p in parts)
    out = {}
    for key in keys:
        tensors = [p[key] for p in parts]
        tensors = [F.pad(t, (0, length - t.shape[1])) if t.ndim == 2 and t.shape[1] < length else t for t in tensors]
        out[key] = torch.cat(tensors, dim=0)
    return out


@dataclass(frozen=True)
class ContrastiveLossConfig:
    """``model.loss``: the similarity ``scale`` of the in-batch softmax and per-size ``weights`` (null: 1 each)."""

    scale: float = 20.0
    weights: Sequence[float] | None = None


class MatryoshkaContrastiveModule(MatryoshkaLightningModule):
    """A text (or any) encoder trained with :class:`mrl.core.losses.MatryoshkaContrastiveLoss`.

    Batches are ``(anchor, positive)`` or ``(anchor, positive, negative)``, each a tokenizer dict (or a
    tensor for non-text backbones). All parts go through the encoder in ONE forward (concatenated, then
    split). Logged: ``{split}/loss@{m}``, ``{split}/loss`` and, after each validation/test epoch, retrieval
    over that split's pairs (every anchor's relevant document is its positive, the corpus is all the
    positives): ``{split}/mrr@10@{m}``, ``{split}/ndcg@10@{m}``, ``{split}/recall@{k}@{m}`` for k in 1, 10.
    Scored pairs ``(sentence1, sentence2, score)`` at validation give ``{split}/spearman@{m}`` instead (no
    loss: set the checkpoint monitor to a spearman metric).

    ``loss``: ``{scale: 20.0, weights: null}``.
    """

    def __init__(
        self,
        backbone: Mapping | nn.Module,
        nesting: list[int] | None = None,
        loss: Mapping | None = None,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
    ) -> None:
        super().__init__(backbone, nesting, loss, optimizer, scheduler)
        loss = typed(ContrastiveLossConfig, self.hparams.loss, "model.loss")
        self.nesting = resolve_nesting(self.hparams.nesting, self.embed_dim)
        self.sizes = list(self.nesting)
        self.criterion = MatryoshkaContrastiveLoss(self.sizes, weights=loss.weights, scale=float(loss.scale))
        self._outputs: dict[str, list[tuple[torch.Tensor, ...]]] = {split: [] for split in SPLITS}

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, x: Any) -> torch.Tensor:
        return self.embed(x)

    def encode_parts(self, parts: Sequence[Any]) -> list[torch.Tensor]:
        """Embed several same-sized inputs with one encoder call; returns one ``[B_i, D]`` per part."""
        if isinstance(parts[0], Mapping):
            joined = concat_features(parts)
            counts = [p["input_ids"].shape[0] for p in parts]
        else:
            joined = torch.cat(list(parts), dim=0)
            counts = [p.shape[0] for p in parts]
        return list(torch.split(self.embed(joined), counts, dim=0))

    @staticmethod
    def _is_scored(batch: Sequence[Any]) -> bool:
        return (
            len(batch) == 3
            and isinstance(batch[2], torch.Tensor)
            and batch[2].ndim == 1
            and batch[2].is_floating_point()
        )

    # ------------------------------------------------------------------------------------------- steps
    def _loss_step(self, embeddings: list[torch.Tensor], split: str) -> torch.Tensor:
        anchor, positive = embeddings[0], embeddings[1]
        negative = embeddings[2] if len(embeddings) > 2 else None
        per_size = self.criterion.per_size(anchor, positive, negative)
        loss = self.criterion.reduce(per_size)
        self.log_losses(split, loss, per_size, anchor.shape[0])
        return loss

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        if self._is_scored(batch):
            raise ValueError(
                "training batches are scored pairs (sentence1, sentence2, score): those are "
                "evaluation data; train on (anchor, positive[, negative]) pairs "
                "(data.score_column=null) and put the scored set in data.eval_source"
            )
        return self._loss_step(self.encode_parts(batch[:3]), "train")

    def _eval_step(self, batch: Sequence[Any], split: str) -> None:
        if self._is_scored(batch):
            a, b = self.encode_parts(batch[:2])
            self._outputs[split].append((a.float().cpu(), b.float().cpu(), batch[2].float().cpu()))
            return
        embeddings = self.encode_parts(batch[:3])
        self._loss_step(embeddings, split)
        self._outputs[split].append((embeddings[0].float().cpu(), embeddings[1].float().cpu()))

    def validation_step(self, batch: Sequence[Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Sequence[Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.world_size <= 1:
            return tensor
        gathered = self.all_gather(tensor.to(self.device))
        return gathered.reshape(-1, *tensor.shape[1:]).cpu()

    def _epoch_metrics(self, split: str) -> None:
        outputs, self._outputs[split] = self._outputs[split], []
        if not outputs:
            return
        columns = [self._gather(torch.cat(column)) for column in zip(*outputs)]
        if len(columns) == 3:
            metrics = sts_spearman(columns[0], columns[1], columns[2], self.sizes)
        else:
            anchors, positives = columns
            metrics = retrieval_metrics(anchors, positives, torch.arange(anchors.shape[0]), self.sizes, ks=RETRIEVAL_KS)
        for name, value in metrics.items():
            self.log(f"{split}/{name}", value, on_step=False, on_epoch=True)

    def on_validation_epoch_start(self) -> None:
        self._outputs["val"] = []

    def on_validation_epoch_end(self) -> None:
        self._epoch_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._outputs["test"] = []

    def on_test_epoch_end(self) -> None:
        self._epoch_metrics("test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        if isinstance(batch, (tuple, list)):
            return {
                f"embedding_{i}": e
                for i, e in enumerate(
                    self.encode_parts(
                        [p for p in batch if isinstance(p, Mapping) or (isinstance(p, torch.Tensor) and p.ndim > 1)]
                    )
                )
            }
        return {"embedding": self.embed(batch)}
