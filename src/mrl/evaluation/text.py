"""Evaluation of a text run: every part of the evaluation split embedded once, then the per-size retrieval
(sentence pairs) or Spearman (scored pairs) metrics of :mod:`mrl.core.retrieval_metrics`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from mrl.core.retrieval_metrics import retrieval_metrics, sts_spearman
from mrl.evaluation.device import inference_autocast, to_device

__all__ = ["embed_loader", "evaluate_text_run"]


@torch.no_grad()
def embed_loader(module: torch.nn.Module, loader: Iterable, precision: str = "fp32") -> list[torch.Tensor]:
    """Embed every part of every batch of a pairs loader: one ``[N, D]`` (or ``[N]`` scores) per part."""
    parts: list[list[torch.Tensor]] = []
    device = next(module.parameters()).device
    for batch in loader:
        batch = batch if isinstance(batch, (tuple, list)) else (batch,)
        if not parts:
            parts = [[] for _ in batch]
        for i, part in enumerate(batch):
            if isinstance(part, Mapping):
                with inference_autocast(module, precision):
                    embedded = module.embed(to_device(part, device))
                parts[i].append(embedded.float().cpu())
            else:
                parts[i].append(part.float().cpu())
    return [torch.cat(p) for p in parts]


def evaluate_text_run(
    module: torch.nn.Module,
    datamodule: Any,
    sizes: Iterable[int] | None = None,
    split: str = "val",
    precision: str = "fp32",
) -> dict[str, float]:
    """Per-size text metrics of ``module`` on ``split``, keys prefixed ``eval/``.

    Classification sets add nothing (their per-size accuracy comes from the heads, like images); sentence
    pairs give retrieval metrics (each anchor's relevant document is its positive, the corpus is every
    positive of the split; k in 1, 10, 100); scored pairs give ``spearman@{m}``.
    """
    kind = getattr(datamodule, "eval_kind", getattr(datamodule, "kind", "classification"))
    if kind == "classification":
        return {}
    sizes = list(sizes if sizes is not None else module.sizes)
    was_training = module.training
    module.eval()
    try:
        parts = embed_loader(module, datamodule.eval_dataloader(split), precision)
    finally:
        module.train(was_training)
    if kind == "scored":
        metrics = sts_spearman(parts[0], parts[1], parts[2], sizes)
    else:
        anchors, positives = parts[0], parts[1]
        metrics = retrieval_metrics(anchors, positives, torch.arange(anchors.shape[0]), sizes, ks=(1, 10, 100))
    return {f"eval/{k}": v for k, v in metrics.items()}
