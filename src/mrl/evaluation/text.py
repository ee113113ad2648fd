"""Evaluation of a text run: every part of the evaluation split embedded once, then the per-size retrieval
(sentence pairs) or Spearman (scored pairs) metrics of :mod:`mrl.core.retrieval_metrics`; with ``layers``, the
same at the chosen layer counts too (the (layers, size) grid of :mod:`mrl.evaluation.layer_grid`), every layer's
embeddings from the one forward of each batch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from mrl.core.retrieval_metrics import retrieval_metrics, sts_spearman
from mrl.evaluation.device import inference_autocast, to_device
from mrl.evaluation.layer_grid import grid_rows, layer_counts, layer_key
from mrl.evaluation.result import EvaluationResult

__all__ = ["embed_loader", "evaluate_text", "evaluate_text_run"]


def _embed(module: torch.nn.Module, features: Mapping, layers: Sequence[int] | None) -> torch.Tensor:
    """``[B, D]`` embeddings, or with ``layers`` (1-based counts) ``[len(layers), B, D]``: the embedding after each
    of those layers, all from one forward (``forward_layers``)."""
    if layers is None:
        return module.embed(features)
    per_layer = module.backbone.forward_layers(features)
    return torch.stack([per_layer[k - 1] for k in layers])


@torch.no_grad()
def embed_loader(
    module: torch.nn.Module, loader: Iterable, precision: str = "fp32", layers: Sequence[int] | None = None
) -> list[torch.Tensor]:
    """Embed every part of every batch of a pairs loader: one ``[N, D]`` (or ``[N]`` scores) per part; with
    ``layers``, ``[len(layers), N, D]`` per text part."""
    parts: list[list[torch.Tensor]] = []
    device = next(module.parameters()).device
    for batch in loader:
        batch = batch if isinstance(batch, (tuple, list)) else (batch,)
        if not parts:
            parts = [[] for _ in batch]
        for i, part in enumerate(batch):
            if isinstance(part, Mapping):
                with inference_autocast(module, precision):
                    embedded = _embed(module, to_device(part, device), layers)
                parts[i].append(embedded.float().cpu())
            else:
                parts[i].append(part.float().cpu())
    return [torch.cat(p, dim=-2 if layers is not None and p[0].ndim == 3 else 0) for p in parts]


def _metrics(kind: str, parts: Sequence[torch.Tensor], sizes: list[int]) -> dict[str, float]:
    if kind == "scored":
        return sts_spearman(parts[0], parts[1], parts[2], sizes)
    anchors, positives = parts[0], parts[1]
    return retrieval_metrics(anchors, positives, torch.arange(anchors.shape[0]), sizes, ks=(1, 10, 100))


def evaluate_text_run(
    module: torch.nn.Module,
    datamodule: Any,
    sizes: Iterable[int] | None = None,
    split: str = "val",
    precision: str = "fp32",
    layers: Sequence[int] | None = None,
) -> dict[str, float]:
    """Per-size text metrics of ``module`` on ``split``, keys prefixed ``eval/``.

    Classification sets add nothing (their per-size accuracy comes from the heads, like images); sentence
    pairs give retrieval metrics (each anchor's relevant document is its positive, the corpus is every
    positive of the split; k in 1, 10, 100); scored pairs give ``spearman@{m}``. ``layers`` (layer counts, as
    :func:`mrl.evaluation.layer_grid.layer_counts` gives them) measures those instead, every layer's embeddings
    from the one forward of each batch: an earlier layer k's as ``eval/layer{k}/{name}@{m}``, the full model's as
    ``eval/{name}@{m}``.
    """
    kind = getattr(datamodule, "eval_kind", getattr(datamodule, "kind", "classification"))
    if kind == "classification":
        return {}
    sizes = list(sizes if sizes is not None else module.sizes)
    layers = list(layers) if layers else None
    was_training = module.training
    module.eval()
    try:
        parts = embed_loader(module, datamodule.eval_dataloader(split), precision, layers)
    finally:
        module.train(was_training)
    if layers is None:
        return {f"eval/{k}": v for k, v in _metrics(kind, parts, sizes).items()}
    metrics, total = {}, int(module.backbone.num_layers)
    for i, layer in enumerate(layers):
        at_layer = [p[i] if p.ndim == 3 else p for p in parts]
        metrics |= {layer_key(layer, total, k): v for k, v in _metrics(kind, at_layer, sizes).items()}
    return metrics


def evaluate_text(settings: Any, module: torch.nn.Module, datamodule: Any, checkpoint: str) -> EvaluationResult:
    """A text run's :class:`EvaluationResult`: per-size metrics and, with ``settings.layers`` (or for a run
    trained with ``model.loss.layers``), the (layers, size) grid."""
    kind = getattr(datamodule, "eval_kind", getattr(datamodule, "kind", "classification"))
    layers = layer_counts(settings.layers, module, kind)
    sizes = list(module.sizes)
    metrics = evaluate_text_run(module, datamodule, sizes, precision=settings.precision, layers=layers)
    return EvaluationResult(
        checkpoint=checkpoint, sizes=sizes, metrics=metrics, layer_grid=grid_rows(metrics, layers, sizes)
    )
