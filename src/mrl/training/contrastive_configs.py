"""The settings of the contrastive model's loss (``model.loss`` and its ``distill`` and ``layers`` sections), as
frozen dataclasses that :func:`mrl.common.configs.typed` fills from the config (an unknown key fails there)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LAYER_WEIGHTINGS", "ContrastiveLossConfig", "DistillConfig", "LayerLossConfig", "positive_int_or_null"]

LAYER_WEIGHTINGS = ("uniform", "log", "linear")


@dataclass(frozen=True)
class ContrastiveLossConfig:
    """``model.loss``: the similarity ``scale`` of the in-batch softmax, per-size ``weights`` (null: 1 each, in the
    order of ``model.nesting``), ``n_dims_per_step`` (train on that many sizes drawn at random each step; null or
    -1: all, as sentence-transformers' ``MatryoshkaLoss``), ``mini_batch_size`` (the cached step: embed the
    batch ``mini_batch_size`` texts at a time; null: off) and ``gather`` (under DDP, score each anchor against
    the positives and negatives of every process, not only its own; gradients flow back to each process)."""

    scale: float = 20.0
    weights: Sequence[float] | None = None
    n_dims_per_step: int | None = None
    mini_batch_size: int | None = None
    layers: Mapping[str, Any] | None = None
    distill: Mapping[str, Any] | None = None
    gather: bool = True


@dataclass(frozen=True)
class DistillConfig:
    """``model.loss.distill``: make an existing embedding model Matryoshka by distillation. ``teacher``: its
    Hugging Face model (a directory, a hub name; null: the bundled all-MiniLM-L6-v2) with ``pooling``; its
    embeddings of every training text are computed once, at the start of training, and kept (``cache``: a file
    to keep them in between runs). ``mode``: ``similarity`` (each prefix's similarity matrix against the
    teacher's) or ``mse`` (each prefix against the teacher's prefix); ``weight`` scales the loss, added to the
    contrastive loss unless ``contrastive`` is false (distillation alone)."""

    teacher: str | None = None
    pooling: str = "mean"
    mode: str = "similarity"
    weight: float = 1.0
    contrastive: bool = True
    cache: str | None = None


@dataclass(frozen=True)
class LayerLossConfig:
    """``model.loss.layers``: 2D Matryoshka, as sentence-transformers' ``Matryoshka2dLoss`` /
    ``AdaptiveLayerLoss``. Each step adds the loss on the embedding after ``n_layers_per_step`` earlier layers
    (drawn at random; -1: all), each weighted ``prior_layers_weight * w(i) / n`` with ``w`` of the 0-based layer
    ``i`` from ``weighting`` (uniform: 1, log: 1 / (1 + ln(1 + i)), linear: 1 / (1 + i)), plus
    ``kl_div_weight * kl_temperature * KL`` of that layer's softened embedding against the last layer's
    (``kl_temperature`` 0: none); the last layer's loss is weighted ``last_layer_weight``."""

    n_layers_per_step: int = 1
    weighting: str = "uniform"
    last_layer_weight: float = 1.0
    prior_layers_weight: float = 1.0
    kl_div_weight: float = 1.0
    kl_temperature: float = 0.3

    def layer_weight(self, index: int) -> float:
        if self.weighting == "log":
            return 1.0 / (1.0 + math.log(1 + index))
        if self.weighting == "linear":
            return 1.0 / (1 + index)
        return 1.0


def positive_int_or_null(value: Any, key: str, extra: str = "") -> int | None:
    """``value`` as an int when it is a positive integer, None for null; otherwise a one-line ValueError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r}: expected a positive integer or null{extra}")
    return int(value)
