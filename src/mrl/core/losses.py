"""Matryoshka losses: one loss per nesting size, combined by a weighted sum.

Both losses expose ``per_size(...) -> Tensor[G]`` (differentiable), ``reduce(per_size) -> scalar``
and keep ``last_per_size`` (detached) from the latest ``forward`` for logging ``loss@{m}``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from mrl.core.nesting import sort_with_weights

__all__ = ["MatryoshkaContrastiveLoss", "MatryoshkaCrossEntropy", "MatryoshkaDistillationLoss", "nested_cosine"]


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of every size, ``logits[G, B, C], target[B] -> [G]``, keeping the softmax.

    Same values and gradients as ``F.cross_entropy`` (with label smoothing) on each ``logits[g]``,
    with one exponential pass instead of two. On the CPU the loss is ``-log(softmax[target])``, read
    off the softmax itself; rows whose target probability underflows (below ``1e-30``) are redone
    from the logits. Elsewhere (no host sync wanted) it is ``lse - logits[target]`` with
    ``lse = max(logits) - log(max(softmax))`` (the largest probability is >= 1/C, so never 0).
    The backward pass turns the saved softmax into ``(softmax - smoothed one-hot) * grad / B``.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, label_smoothing: float) -> Tensor:
        x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        probs = torch.softmax(x, dim=-1)
        index = target.view(1, -1, 1).expand(x.shape[0], -1, 1)
        if x.device.type == "cpu" and not label_smoothing:
            loss = probs.gather(-1, index).squeeze(-1).log_().neg_()
            lost = loss > 69.0  # -log(1e-30): the probability may have underflowed
            if bool(lost.any()):
                rows = x[lost]
                loss[lost] = torch.logsumexp(rows, dim=-1) - x.gather(-1, index).squeeze(-1)[lost]
        else:
            lse = x.amax(dim=-1) - probs.amax(dim=-1).log()
            loss = lse - x.gather(-1, index).squeeze(-1)
            if label_smoothing:
                smooth = lse - x.mean(dim=-1)  # mean over classes of -log_softmax
                loss = (1.0 - label_smoothing) * loss + label_smoothing * smooth
        ctx.save_for_backward(probs, index)
        ctx.label_smoothing, ctx.dtype = label_smoothing, logits.dtype
        return loss.mean(dim=-1)  # float32 for half-precision logits, as F.cross_entropy under autocast

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor):
        probs, index = ctx.saved_tensors
        eps = ctx.label_smoothing
        scale = (grad_loss.to(probs.dtype) / probs.shape[1]).view(-1, 1, 1)
        grad = probs  # reused in place: writing a fresh [G, B, C] buffer cost more than the arithmetic
        if eps:
            grad.sub_(eps / probs.shape[-1])
        grad.mul_(scale).scatter_add_(-1, index, (-(1.0 - eps) * scale).expand(index.shape))
        return grad.to(ctx.dtype), None, None


class _WeightedSizes(nn.Module):
    """Shared part: optional per-size weights, the weighted sum, and ``last_per_size``."""

    def __init__(self, weights: Sequence[float] | None, key: str):
        super().__init__()
        self.key = key
        w = None if weights is None else torch.as_tensor(list(weights), dtype=torch.float32)
        if w is not None and w.dim() != 1:
            raise ValueError(f"{key}={list(weights)!r}: expected a flat list of numbers, one per nesting size")
        self.register_buffer("weights", w, persistent=False)
        self.last_per_size: Tensor | None = None

    def reduce(self, per_size: Tensor, active: Tensor | None = None) -> Tensor:
        """Weighted sum of the per-size losses (all weights 1 by default); ``active`` (bool, one per size) keeps
        only some sizes (the ones drawn for this step)."""
        if self.weights is not None and self.weights.numel() != per_size.numel():
            raise ValueError(
                f"{self.key} has {self.weights.numel()} entries but the head gives {per_size.numel()} "
                f"sizes: give one weight per nesting size"
            )
        if active is not None:
            per_size = per_size[active.to(per_size.device)]
            weights = None if self.weights is None else self.weights[active.to(self.weights.device)]
        else:
            weights = self.weights
        if weights is None:
            return per_size.sum()
        return (weights.to(per_size.dtype) * per_size).sum()


class MatryoshkaCrossEntropy(_WeightedSizes):
    """``sum_g w_g * CrossEntropy(logits[g], target)`` over nested logits ``[G, B, C]``.

    ``target`` is class indices ``[B]`` or class probabilities ``[B, C]`` (mixup / cutmix).
    All G cross-entropies run as one fused call.
    """

    def __init__(self, weights: Sequence[float] | None = None, label_smoothing: float = 0.0):
        super().__init__(weights, key="loss.weights")
        self.label_smoothing = float(label_smoothing)

    def per_size(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean cross-entropy of each size: ``Tensor[G]``."""
        if logits.dim() != 3:
            raise ValueError(f"logits must be [G, B, C] (sizes, batch, classes), got {list(logits.shape)}")
        if target.dim() == 1:  # class indices: the fused softmax cross-entropy
            return _SoftmaxCrossEntropy.apply(logits, target, self.label_smoothing)
        g, b, c = logits.shape  # class probabilities
        soft = target.unsqueeze(0).expand(g, b, c).reshape(g * b, c)
        losses = F.cross_entropy(logits.reshape(g * b, c), soft, reduction="none", label_smoothing=self.label_smoothing)
        return losses.view(g, b).mean(1)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        per_size = self.per_size(logits, target)
        self.last_per_size = per_size.detach()
        return self.reduce(per_size)


def nested_cosine(anchor: Tensor, docs: Tensor, dims: Sequence[int]) -> Tensor:
    """Cosine similarity of the m-prefixes of every anchor and document, for each m in ``dims`` (ascending):
    ``[G, B, N]``, the same values as ``normalize(anchor[:, :m]) @ normalize(docs[:, :m]).T``.

    One product per slice between consecutive sizes, summed cumulatively (the prefixes' dot products and
    squared norms grow slice by slice), so all G sizes cost one full-width product instead of G of them.
    Half-precision embeddings are computed in float32 (cumulative sums of bf16 products lose digits).
    """
    if anchor.dtype in (torch.float16, torch.bfloat16):
        anchor, docs = anchor.float(), docs.float()
    bounds = [0, *dims]
    slices = list(itertools.pairwise(bounds))
    dots = torch.stack([anchor[:, lo:hi] @ docs[:, lo:hi].t() for lo, hi in slices]).cumsum(0)
    anchor_sq = torch.stack([anchor[:, lo:hi].pow(2).sum(1) for lo, hi in slices]).cumsum(0)
    docs_sq = torch.stack([docs[:, lo:hi].pow(2).sum(1) for lo, hi in slices]).cumsum(0)
    # F.normalize divides by max(norm, 1e-12); clamping the squares keeps a zero prefix's gradient finite
    anchor_norm = anchor_sq.clamp_min(1e-24).sqrt()
    docs_norm = docs_sq.clamp_min(1e-24).sqrt()
    return dots / anchor_norm.unsqueeze(2) / docs_norm.unsqueeze(1)


class MatryoshkaContrastiveLoss(_WeightedSizes):
    """In-batch-negatives contrastive loss (MultipleNegativesRankingLoss) at every size in ``dims``.

    For each m: keep the first m coordinates, L2-normalise, score ``scale * a @ [p; n].T`` and take
    the cross-entropy against the matching positive. Takes embeddings, so the encoder runs once; all sizes'
    similarities come from one pass (:func:`nested_cosine`) and their cross-entropies from one fused softmax.

    ``dims`` may come in any order (``[768, 512, 256, 128, 64]`` as sentence-transformers users write them):
    they are sorted ascending and ``weights`` (one per size, in the order of ``dims`` as given) move with them.
    """

    def __init__(self, dims: Sequence[int], weights: Sequence[float] | None = None, scale: float = 20.0):
        dims, weights = sort_with_weights(dims, weights, key="loss.dims", weights_key="loss.weights")
        super().__init__(weights, key="loss.weights")
        self.dims = dims
        self.scale = float(scale)

    def similarities(
        self, anchor: Tensor, positive: Tensor, negative: Tensor | None = None, offset: int | None = None
    ) -> Tensor:
        """Scaled cosine similarities ``[G, B, N]`` of each size: anchors against positives (then negatives).
        ``offset``: the positives are a larger (gathered) batch whose row ``offset + i`` matches anchor ``i``."""
        if offset is None and positive.shape[0] != anchor.shape[0]:
            raise ValueError(
                f"anchor and positive batches differ: {anchor.shape[0]} vs {positive.shape[0]} rows; "
                f"row i of positive must be the match of row i of anchor"
            )
        if offset is not None and not 0 <= offset <= positive.shape[0] - anchor.shape[0]:
            raise ValueError(
                f"offset={offset}: the {anchor.shape[0]} anchors' positives must lie within the "
                f"{positive.shape[0]} positive rows"
            )
        docs = positive if negative is None else torch.cat([positive, negative], dim=0)
        if self.dims[-1] > anchor.shape[-1] or anchor.shape[-1] != docs.shape[-1]:
            raise ValueError(
                f"loss.dims={self.dims}: embeddings are {anchor.shape[-1]} (anchor) and {docs.shape[-1]} "
                f"(documents) wide; they must match and be >= {self.dims[-1]}"
            )
        return self.scale * nested_cosine(anchor, docs, self.dims)

    def per_size(
        self, anchor: Tensor, positive: Tensor, negative: Tensor | None = None, offset: int | None = None
    ) -> Tensor:
        """Contrastive loss of each size: ``Tensor[len(dims)]``. With ``offset`` the positives (and negatives)
        are every process's, and anchor ``i`` matches positive ``offset + i`` (:mod:`mrl.training.gather`)."""
        logits = self.similarities(anchor, positive, negative, offset)
        labels = torch.arange(anchor.shape[0], device=anchor.device) + (offset or 0)
        return _SoftmaxCrossEntropy.apply(logits, labels, 0.0)

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor | None = None) -> Tensor:
        per_size = self.per_size(anchor, positive, negative)
        self.last_per_size = per_size.detach()
        return self.reduce(per_size)


DISTILL_MODES = ("similarity", "mse")


class MatryoshkaDistillationLoss(_WeightedSizes):
    """Distillation of a teacher's embeddings into every prefix size of a student, to make an existing model
    Matryoshka: ``mode="similarity"`` (default) takes, at each size m, the mean squared difference between the
    cosine-similarity matrix of the student's m-prefixes over the batch and the teacher's full-width one (any
    teacher width; the prefix learns to keep the teacher's geometry); ``mode="mse"`` the mean squared error of the
    student's m-prefix against the teacher's m-prefix (sentence-transformers' ``MatryoshkaLoss(MSELoss)``; the
    student must live in the teacher's space, e.g. start from it). Sizes in any order, weights follow them."""

    def __init__(self, dims: Sequence[int], weights: Sequence[float] | None = None, mode: str = "similarity"):
        dims, weights = sort_with_weights(dims, weights, key="loss.dims", weights_key="loss.weights")
        super().__init__(weights, key="loss.weights")
        if mode not in DISTILL_MODES:
            raise ValueError(f"model.loss.distill.mode={mode!r}: expected one of {', '.join(DISTILL_MODES)}")
        self.dims, self.mode = dims, mode

    def per_size(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Distillation loss of each size: ``Tensor[len(dims)]`` for ``student[N, D]`` against ``teacher[N, D_t]``."""
        if student.shape[0] != teacher.shape[0]:
            raise ValueError(f"student and teacher rows differ: {student.shape[0]} vs {teacher.shape[0]}")
        teacher = teacher.to(student.dtype)
        if self.mode == "mse":
            if teacher.shape[-1] < self.dims[-1]:
                raise ValueError(
                    f"model.loss.distill.mode=mse: the teacher's embeddings are {teacher.shape[-1]} wide, less than "
                    f"the largest size {self.dims[-1]}; use mode=similarity (any teacher width)"
                )
            return torch.stack([F.mse_loss(student[:, :m], teacher[:, :m]) for m in self.dims])
        unit = F.normalize(teacher, dim=-1)
        target = unit @ unit.t()
        sims = nested_cosine(student, student, self.dims)
        return (sims - target.to(sims.dtype)).pow(2).mean(dim=(1, 2))

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        per_size = self.per_size(student, teacher)
        self.last_per_size = per_size.detach()
        return self.reduce(per_size)
