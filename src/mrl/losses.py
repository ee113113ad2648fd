"""Matryoshka losses: one loss per nesting size, combined by a weighted sum.

Both losses expose ``per_size(...) -> Tensor[G]`` (differentiable), ``reduce(per_size) -> scalar``
and keep ``last_per_size`` (detached) from the latest ``forward`` for logging ``loss@{m}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrl.nesting import validate_nesting

__all__ = ["MatryoshkaContrastiveLoss", "MatryoshkaCrossEntropy"]


class _WeightedSizes(nn.Module):
    """Shared part: optional per-size weights, the weighted sum, and ``last_per_size``."""

    def __init__(self, weights: Sequence[float] | None, key: str):
        super().__init__()
        self.key = key
        w = None if weights is None else torch.as_tensor(list(weights), dtype=torch.float32)
        if w is not None and w.dim() != 1:
            raise ValueError(
                f"{key}={list(weights)!r}: expected a flat list of numbers, one per nesting size"
            )
        self.register_buffer("weights", w, persistent=False)
        self.last_per_size: Tensor | None = None

    def reduce(self, per_size: Tensor) -> Tensor:
        """Weighted sum of the per-size losses (all weights 1 by default)."""
        if self.weights is None:
            return per_size.sum()
        if self.weights.numel() != per_size.numel():
            raise ValueError(
                f"{self.key} has {self.weights.numel()} entries but the head gives {per_size.numel()} "
                f"sizes: give one weight per nesting size"
            )
        return (self.weights.to(per_size.dtype) * per_size).sum()


class MatryoshkaCrossEntropy(_WeightedSizes):
    """``sum_g w_g * CrossEntropy(logits[g], target)`` over nested logits ``[G, B, C]``.

    ``target`` is class indices ``[B]`` or class probabilities ``[B, C]`` (mixup / cutmix).
    All G cross-entropies run as one call on the ``[G*B, C]`` view.
    """

    def __init__(self, weights: Sequence[float] | None = None, label_smoothing: float = 0.0):
        super().__init__(weights, key="loss.weights")
        self.label_smoothing = float(label_smoothing)

    def per_size(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean cross-entropy of each size: ``Tensor[G]``."""
        if logits.dim() != 3:
            raise ValueError(f"logits must be [G, B, C] (sizes, batch, classes), got {list(logits.shape)}")
        g, b, c = logits.shape
        if target.dim() == 1:
            flat_target = target.repeat(g)
        else:
            flat_target = target.unsqueeze(0).expand(g, b, c).reshape(g * b, c)
        losses = F.cross_entropy(
            logits.reshape(g * b, c), flat_target, reduction="none", label_smoothing=self.label_smoothing
        )
        return losses.view(g, b).mean(1)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        per_size = self.per_size(logits, target)
        self.last_per_size = per_size.detach()
        return self.reduce(per_size)


class MatryoshkaContrastiveLoss(_WeightedSizes):
    """In-batch-negatives contrastive loss (MultipleNegativesRankingLoss) at every size in ``dims``.

    For each m: keep the first m coordinates, L2-normalise, score ``scale * a @ [p; n].T`` and take
    the cross-entropy against the matching positive. Takes embeddings, so the encoder runs once.
    """

    def __init__(self, dims: Sequence[int], weights: Sequence[float] | None = None, scale: float = 20.0):
        super().__init__(weights, key="loss.weights")
        self.dims = validate_nesting(dims, key="loss.dims")
        if self.weights is not None and self.weights.numel() != len(self.dims):
            raise ValueError(
                f"loss.weights has {self.weights.numel()} entries but loss.dims has {len(self.dims)}: "
                f"give one weight per size"
            )
        self.scale = float(scale)

    def per_size(self, anchor: Tensor, positive: Tensor, negative: Tensor | None = None) -> Tensor:
        """Contrastive loss of each size: ``Tensor[len(dims)]``."""
        docs = positive if negative is None else torch.cat([positive, negative], dim=0)
        if self.dims[-1] > anchor.shape[-1] or anchor.shape[-1] != docs.shape[-1]:
            raise ValueError(
                f"loss.dims={self.dims}: embeddings are {anchor.shape[-1]} (anchor) and {docs.shape[-1]} "
                f"(documents) wide; they must match and be >= {self.dims[-1]}"
            )
        labels = torch.arange(anchor.shape[0], device=anchor.device)
        losses = []
        for m in self.dims:
            a = F.normalize(anchor[:, :m], p=2, dim=-1)
            d = F.normalize(docs[:, :m], p=2, dim=-1)
            losses.append(F.cross_entropy(self.scale * (a @ d.t()), labels))
        return torch.stack(losses)

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor | None = None) -> Tensor:
        per_size = self.per_size(anchor, positive, negative)
        self.last_per_size = per_size.detach()
        return self.reduce(per_size)
