"""Naive per-size MRL head and loss written the way the reference code (RAIVNLab/MRL) computes them.

One matmul per nesting size and one cross-entropy call per size: slow but obviously right. The tests
compare the fused heads and losses against it, and ``benchmarks/heads.py`` times it.
"""

from __future__ import annotations

import torch
from torch import nn


class NaiveMRLLinear(nn.Module):
    """Reference-style head: a tuple of per-size logits, one ``x[:, :m]`` product per size."""

    def __init__(self, nesting: list[int], num_classes: int, efficient: bool = False, bias: bool = True):
        super().__init__()
        self.nesting, self.efficient = list(nesting), efficient
        widths = [self.nesting[-1]] if efficient else self.nesting
        for i, m in enumerate(widths):
            setattr(self, f"nesting_classifier_{i}", nn.Linear(m, num_classes, bias=bias))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = []
        for i, m in enumerate(self.nesting):
            if self.efficient:
                fc = self.nesting_classifier_0
                out = torch.matmul(x[:, :m], fc.weight[:, :m].t())
                logits.append(out if fc.bias is None else out + fc.bias)
            else:
                logits.append(getattr(self, f"nesting_classifier_{i}")(x[:, :m]))
        return tuple(logits)


class NaiveMatryoshkaCE(nn.Module):
    """Reference-style loss: ``sum_i w_i * CrossEntropyLoss(logits[i], target)``, one call per size."""

    def __init__(self, relative_importance: list[float] | None = None, **ce_kwargs):
        super().__init__()
        self.criterion = nn.CrossEntropyLoss(**ce_kwargs)
        self.relative_importance = relative_importance

    def forward(self, logits, target: torch.Tensor) -> torch.Tensor:
        loss = 0.0
        for i, out in enumerate(logits):
            w = 1.0 if self.relative_importance is None else self.relative_importance[i]
            loss = loss + w * self.criterion(out, target)
        return loss


class ShiftedSumBlurConv(nn.Module):
    """A reference-layout BlurPool convolution (``.conv`` + ``blur_filter``) that blurs another way.

    The blur is a weighted sum of the nine one-pixel shifts of the zero-padded input, weights
    ``[1, 2, 1]`` times ``[1, 2, 1]`` over 16, instead of a depthwise convolution. ``blur_filter`` is
    only carried (with the values the reference files hold), not used.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0
        self.register_buffer("blur_filter", kernel.repeat(conv.in_channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
        h, w = x.shape[-2:]
        weights = (1.0, 2.0, 1.0)
        blurred = sum(
            weights[i] * weights[j] / 16.0 * padded[..., i : i + h, j : j + w] for i in range(3) for j in range(3)
        )
        return self.conv(blurred)
