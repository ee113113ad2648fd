"""Contrastive Matryoshka training for text encoders: (anchor, positive[, negative]) batches, in-batch
negatives at every nested size, per-size retrieval (or STS) metrics at validation."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mrl.backbones.hf_text import POOLING, resolve_name_or_path
from mrl.common.configs import typed
from mrl.common.errors import ConfigError
from mrl.core.losses import MatryoshkaContrastiveLoss, MatryoshkaDistillationLoss
from mrl.core.nesting import default_nesting, sort_with_weights
from mrl.core.retrieval_metrics import retrieval_metrics, sts_spearman
from mrl.data.base import SPLITS
from mrl.training.base import MatryoshkaLightningModule
from mrl.training.contrastive_configs import (
    LAYER_WEIGHTINGS,
    ContrastiveLossConfig,
    DistillConfig,
    LayerLossConfig,
    positive_int_or_null,
)
from mrl.training.gather import distributed_world, gather_rows
from mrl.training.grad_cache import cached_loss, chunk_slices, take_rows
from mrl.training.teacher_targets import TeacherTargets

# The loss settings are documented (docs/text.md) under this module's name: importable from here too.
__all__ = [
    "RETRIEVAL_KS",
    "ContrastiveLossConfig",
    "DistillConfig",
    "LayerLossConfig",
    "MatryoshkaContrastiveModule",
    "concat_features",
]

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


def _split(embeddings: torch.Tensor | list[torch.Tensor], counts: list[int]) -> list:
    """Rows of one embedding tensor split per part, or, for a list of them (one per layer), per part of each:
    ``[part] -> tensor`` or ``[part] -> [layer] -> tensor``."""
    if isinstance(embeddings, torch.Tensor):
        return list(torch.split(embeddings, counts, dim=0))
    return [list(layers) for layers in zip(*(torch.split(e, counts, dim=0) for e in embeddings))]


class MatryoshkaContrastiveModule(MatryoshkaLightningModule):
    """A text (or any) encoder trained with :class:`mrl.core.losses.MatryoshkaContrastiveLoss`.

    Batches are ``(anchor, positive)`` or ``(anchor, positive, negative)``, each a tokenizer dict (or a
    tensor for non-text backbones). All parts go through the encoder in ONE forward (concatenated, then
    split). Logged: ``{split}/loss@{m}``, ``{split}/loss`` and, after each validation/test epoch, retrieval
    over that split's pairs (every anchor's relevant document is its positive, the corpus is all the
    positives): ``{split}/mrr@10@{m}``, ``{split}/ndcg@10@{m}``, ``{split}/recall@{k}@{m}`` for k in 1, 10.
    Scored pairs ``(sentence1, sentence2, score)`` at validation give ``{split}/spearman@{m}`` instead (no
    loss: set the checkpoint monitor to a spearman metric).

    ``loss`` (:class:`ContrastiveLossConfig`): ``{scale: 20.0, weights: null, n_dims_per_step: null,
    mini_batch_size: null, layers: null, gather: true}``; ``gather`` scores each anchor against every process's
    documents under DDP; ``layers`` (:class:`LayerLossConfig`) adds 2D Matryoshka: losses on earlier layers'
    embeddings, and validation logs ``{split}/layer{k}/mrr@10@{m}`` for every earlier layer k.
    Sizes (``nesting``) may be given in any order; they are sorted and the weights
    follow them. With ``mini_batch_size`` the training step is cached (GradCache, as sentence-transformers'
    ``CachedMultipleNegativesRankingLoss``): the batch is embedded ``mini_batch_size`` texts at a time without
    gradients, the loss is taken over the whole batch, and each mini-batch is embedded again (same dropout) with
    the loss's gradient for its embeddings: the same gradients as the plain step, with memory for one mini-batch.
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
        given = self.hparams.nesting if self.hparams.nesting is not None else default_nesting(self.embed_dim)
        self.nesting, weights = sort_with_weights(given, loss.weights, width=self.embed_dim)
        self.sizes = list(self.nesting)
        self.criterion = MatryoshkaContrastiveLoss(self.sizes, weights=weights, scale=float(loss.scale))
        self.n_dims_per_step = None if loss.n_dims_per_step == -1 else loss.n_dims_per_step
        positive_int_or_null(self.n_dims_per_step, "model.loss.n_dims_per_step", " (or -1: every size)")
        if self.n_dims_per_step is not None and self.n_dims_per_step > len(self.sizes):
            raise ValueError(
                f"model.loss.n_dims_per_step={self.n_dims_per_step}: more than the {len(self.sizes)} sizes of "
                f"model.nesting; use 1..{len(self.sizes)}, or null for all"
            )
        self.mini_batch_size = positive_int_or_null(loss.mini_batch_size, "model.loss.mini_batch_size")
        if not isinstance(loss.gather, bool):
            raise ConfigError("model.loss.gather", loss.gather, "expected true or false")
        self.gather = loss.gather
        self.layers = self._layer_config(loss.layers)
        self.distill = self._distill_config(loss.distill, weights)
        self._targets: TeacherTargets | None = None
        self._outputs: dict[str, list[tuple[torch.Tensor, ...]]] = {split: [] for split in SPLITS}

    def _distill_config(self, distill: Mapping | None, weights) -> DistillConfig | None:
        key = "model.loss.distill"
        if distill is None:
            return None
        if not isinstance(distill, Mapping):
            raise ValueError(
                f"{key}={distill!r}: expected a mapping (e.g. {{teacher: null, mode: similarity}}) or null"
            )
        config = typed(DistillConfig, distill, key)
        resolve_name_or_path(config.teacher, key=f"{key}.teacher")  # a missing directory fails now
        if config.pooling not in POOLING:
            raise ValueError(f"{key}.pooling={config.pooling!r}: expected one of {', '.join(POOLING)}")
        weight = config.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"{key}.weight={weight!r}: expected a number >= 0")
        if not isinstance(config.contrastive, bool):
            raise ValueError(f"{key}.contrastive={config.contrastive!r}: expected true or false")
        self.distiller = MatryoshkaDistillationLoss(self.sizes, weights=weights, mode=config.mode)
        return config

    def _layer_config(self, layers: Mapping | None) -> LayerLossConfig | None:
        key = "model.loss.layers"
        if layers is None:
            return None
        if not isinstance(layers, Mapping):
            raise ValueError(
                f"{key}={layers!r}: expected a mapping (e.g. {{n_layers_per_step: 1, weighting: uniform}}; "
                "{} for the defaults) or null"
            )
        config = typed(LayerLossConfig, layers, key)
        if not callable(getattr(self.backbone, "forward_layers", None)):
            raise ValueError(
                f"{key}={dict(layers)!r}: 2D Matryoshka needs a transformer backbone with forward_layers "
                f"(mrl.backbones.HFTextEncoder); {type(self.backbone).__name__} has none"
            )
        if config.weighting not in LAYER_WEIGHTINGS:
            raise ValueError(f"{key}.weighting={config.weighting!r}: expected one of {', '.join(LAYER_WEIGHTINGS)}")
        prior = self.backbone.num_layers - 1
        n = config.n_layers_per_step
        if isinstance(n, bool) or not isinstance(n, int) or not (n == -1 or 1 <= n <= prior):
            raise ValueError(
                f"{key}.n_layers_per_step={n!r}: expected 1..{prior} (the layers before the last) or -1 for all"
            )
        for name in ("last_layer_weight", "prior_layers_weight", "kl_div_weight", "kl_temperature"):
            value = getattr(config, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{key}.{name}={value!r}: expected a number >= 0")
        return config

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, x: Any) -> torch.Tensor:
        return self.embed(x)

    def encode_parts(self, parts: Sequence[Any]) -> list[torch.Tensor]:
        """Embed the parts of a batch (anchors, positives[, negatives]); returns one ``[B_i, D]`` per part.

        Token dicts: a packing backbone (:attr:`mrl.backbones.HFTextEncoder.packs`) embeds every part in one call
        without padding; otherwise the anchors get their own call (short queries keep their own padding) and the
        documents (positives, negatives) share one. Tensors: one call on the concatenation.
        """
        return self._encode(parts, self.embed)

    def encode_parts_layers(self, parts: Sequence[Any]) -> list[list[torch.Tensor]]:
        """:meth:`encode_parts` after every transformer layer: ``[layer][part] -> [B_i, D]`` (the last layer is
        :meth:`encode_parts`'s), from one forward."""
        per_part = self._encode(parts, self.backbone.forward_layers)
        return [list(layer) for layer in zip(*per_part)]

    def _encode(self, parts: Sequence[Any], embed) -> list:
        if not isinstance(parts[0], Mapping):
            counts = [p.shape[0] for p in parts]
            return _split(embed(torch.cat(list(parts), dim=0)), counts)
        counts = [p["input_ids"].shape[0] for p in parts]
        if len(parts) == 1:
            return [embed(parts[0])]
        if getattr(self.backbone, "packs", False):
            return _split(embed(concat_features(parts)), counts)
        documents = parts[1] if len(parts) == 2 else concat_features(parts[1:])
        return [embed(parts[0]), *_split(embed(documents), counts[1:])]

    @staticmethod
    def _is_scored(batch: Sequence[Any]) -> bool:
        return (
            len(batch) == 3
            and isinstance(batch[2], torch.Tensor)
            and batch[2].ndim == 1
            and batch[2].is_floating_point()
        )

    def _embed_in_chunks(self, parts: Sequence[Any]) -> list[torch.Tensor]:
        """``encode_parts`` for the cached step and evaluation: at most ``mini_batch_size`` texts per call."""
        if self.mini_batch_size is None:
            return self.encode_parts(parts)
        joined, counts = self._joined(parts)
        chunks = [self.embed(take_rows(joined, rows)) for rows in chunk_slices(sum(counts), self.mini_batch_size)]
        return list(torch.split(torch.cat(chunks), counts, dim=0))

    @staticmethod
    def _joined(parts: Sequence[Any]) -> tuple[Any, list[int]]:
        if isinstance(parts[0], Mapping):
            return (concat_features(parts) if len(parts) > 1 else parts[0]), [p["input_ids"].shape[0] for p in parts]
        return torch.cat(list(parts), dim=0), [p.shape[0] for p in parts]

    # ------------------------------------------------------------------------------------------- steps
    def _active_sizes(self) -> torch.Tensor | None:
        """Which sizes train this step: ``n_dims_per_step`` drawn at random (Python's ``random``, seeded with the
        run), or all (None)."""
        if self.n_dims_per_step is None or self.n_dims_per_step >= len(self.sizes):
            return None
        active = torch.zeros(len(self.sizes), dtype=torch.bool)
        active[random.sample(range(len(self.sizes)), self.n_dims_per_step)] = True
        return active

    def _loss_step(
        self,
        embeddings: list[torch.Tensor],
        split: str,
        active: torch.Tensor | None = None,
        parts: Sequence[Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        anchor = embeddings[0]
        per_size = self._train_per_size(embeddings) if split == "train" else self.criterion.per_size(*embeddings)
        loss = self.criterion.reduce(per_size, active)
        self.log_losses(split, loss, per_size, anchor.shape[0])
        if self.distill is not None and split == "train" and parts is not None:
            if self._targets is None:
                raise RuntimeError("model.loss.distill: the teacher's targets are built at fit start (Trainer.fit)")
            teacher = torch.cat([self._targets(part) for part in parts])
            distilled = self.distiller.reduce(self.distiller.per_size(torch.cat(embeddings), teacher), active)
            self.log("train/distill", distilled.detach(), on_step=True, on_epoch=True, batch_size=anchor.shape[0])
            loss = (loss if self.distill.contrastive else 0.0) + self.distill.weight * distilled
        return loss, per_size

    def _train_per_size(self, embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """The training loss of each size; under DDP with ``model.loss.gather`` (the default) the candidates of
        each anchor are the positives and negatives of every process."""
        anchor, documents = embeddings[0], list(embeddings[1:])
        if not self.gather or distributed_world()[1] == 1:
            return self.criterion.per_size(anchor, *documents)
        gathered = [gather_rows(part) for part in documents]
        offset = gathered[0][1]
        return self.criterion.per_size(anchor, *(rows for rows, _ in gathered), offset=offset)

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        if self._is_scored(batch):
            raise ValueError(
                "training batches are scored pairs (sentence1, sentence2, score): those are "
                "evaluation data; train on (anchor, positive[, negative]) pairs "
                "(data.score_column=null) and put the scored set in data.eval_source"
            )
        if self.mini_batch_size is not None:
            return self._cached_step(batch[:3], layers=self.layers is not None)
        if self.layers is not None:
            return self._layer_step(batch[:3])
        return self._loss_step(self.encode_parts(batch[:3]), "train", self._active_sizes(), batch[:3])[0]

    def _layer_step(self, parts: Sequence[Any]) -> torch.Tensor:
        """2D Matryoshka: the last layer's loss plus, for layers drawn this step, their loss and the KL term."""
        return self._layer_loss(self.encode_parts_layers(parts), parts)

    def _layer_loss(self, layers: list[list[torch.Tensor]], parts: Sequence[Any]) -> torch.Tensor:
        """The 2D Matryoshka loss of the embeddings after every layer (``[layer][part] -> [B_i, D]``)."""
        config = self.layers
        active = self._active_sizes()
        last, per_size = self._loss_step(layers[-1], "train", active, parts)
        loss = config.last_layer_weight * last
        prior = list(range(len(layers) - 1))
        if config.n_layers_per_step != -1 and config.n_layers_per_step < len(prior):
            prior = sorted(random.sample(prior, config.n_layers_per_step))
        temperature = float(config.kl_temperature)
        if temperature > 0:
            target = torch.softmax(torch.cat(layers[-1]) / temperature, dim=-1).detach()
        for i in prior:
            layer_loss = self.criterion.reduce(self._train_per_size(layers[i]), active)
            loss = loss + config.prior_layers_weight * config.layer_weight(i) / len(prior) * layer_loss
            if temperature > 0:
                log_probs = F.log_softmax(torch.cat(layers[i]) / temperature, dim=-1)
                kl = F.kl_div(log_probs, target, reduction="batchmean")
                loss = loss + config.kl_div_weight * temperature * kl
        batch_size = layers[-1][0].shape[0]
        self.log("train/loss_2d", loss.detach(), on_step=True, on_epoch=True, batch_size=batch_size)
        return loss

    def on_fit_start(self) -> None:
        if self.distill is not None and self._targets is None:
            self._targets = TeacherTargets(self.distill, self.trainer.datamodule, self.device)

    def _cached_step(self, parts: Sequence[Any], layers: bool = False) -> torch.Tensor:
        """GradCache (:mod:`mrl.training.grad_cache`): the loss over the whole batch from embeddings taken
        ``mini_batch_size`` texts at a time without gradients; its backward replays each mini-batch with gradients.
        ``layers``: the 2D loss, over the embeddings after every layer (each mini-batch's replay back-propagates all
        its layers' gradients at once)."""
        joined, counts = self._joined(parts)
        if layers:
            embed, loss_of = self.backbone.forward_layers, lambda split: self._layer_loss(split, parts)
        else:
            embed, loss_of = (
                lambda features: [self.embed(features)],  # one "layer": the embedding
                lambda split: self._loss_step(split[0], "train", self._active_sizes(), parts)[0],
            )
        return cached_loss(self, joined, counts, self.mini_batch_size, embed, loss_of, self.device)

    def _eval_step(self, batch: Sequence[Any], split: str) -> None:
        if self._is_scored(batch):
            a, b = self._embed_in_chunks(batch[:2])
            self._outputs[split].append((a.float().cpu(), b.float().cpu(), batch[2].float().cpu()))
            return
        if self.layers is not None:  # the (layers, size) grid: every layer's anchors and positives
            layers = self.encode_parts_layers(batch[:3])
            self._loss_step(layers[-1], split)
            self._outputs[split].append(tuple(e.float().cpu() for layer in layers for e in layer[:2]))
            return
        embeddings = self._embed_in_chunks(batch[:3])
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
            anchors, positives = columns[-2:]  # the last layer's (the only one without model.loss.layers)
            metrics = retrieval_metrics(anchors, positives, torch.arange(anchors.shape[0]), self.sizes, ks=RETRIEVAL_KS)
            for layer in range(len(columns) // 2 - 1):  # 2D Matryoshka: MRR@10 of each earlier layer and size
                a, p = columns[2 * layer], columns[2 * layer + 1]
                grid = retrieval_metrics(a, p, torch.arange(a.shape[0]), self.sizes, ks=(10,))
                metrics.update({f"layer{layer + 1}/mrr@10@{m}": grid[f"mrr@10@{m}"] for m in self.sizes})
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
