"""Embeddings of a split (or of any loader) into preallocated arrays, and the ``.npz`` files that hold them.

Kept apart from the evaluation runner so that tools which only embed (``make embed``) do not load FAISS.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# re-exported: the one reader of embeddings files lives below every layer
from mrl.common.embeddings import load_embeddings, read_embeddings
from mrl.common.io import atomic_savez
from mrl.evaluation.device import inference_autocast, to_device

__all__ = ["embed_split", "load_embeddings", "read_embeddings", "save_embeddings"]

log = logging.getLogger(__name__)


@torch.no_grad()
def embed_split(
    module, loader, logits: bool = True, flip: bool = False, precision: str = "fp32", name: str = "split"
) -> dict[str, np.ndarray]:
    """Full-width embeddings, labels and (with ``logits``) per-size logits ``[G, N, C]`` of one split, in
    loader order.

    The arrays are allocated once at the split's size and filled batch by batch. The retrieval database
    is embedded without logits: for ImageNet's train split they would be 9 x 1.28M x 1000 floats (46 GB),
    next to 10 GB of embeddings. ``flip`` averages each image's logits with those of its mirror image
    (the reference's test-time augmentation); the embeddings stay the image's own. The model runs on its
    own device, in ``precision`` (:mod:`mrl.evaluation.device`). Progress is logged at every tenth of the split.
    """
    module.eval()
    device = next(module.parameters()).device
    count = len(loader.dataset)
    out: dict[str, np.ndarray] = {"labels": np.empty(count, dtype=np.int64)}
    start, began, next_report = 0, time.perf_counter(), count / 10
    for x, y in loader:
        x = to_device(x, device)
        with inference_autocast(module, precision):
            z = module.embed(x)
            if logits:
                size_logits = module.head(z).float()
                if flip:
                    size_logits = (size_logits + module.head(module.embed(x.flip(-1))).float()) / 2
        stop = start + len(y)
        if start == 0:
            out["embeddings"] = np.empty((count, z.shape[1]), dtype=np.float32)
        out["embeddings"][start:stop] = z.float().cpu().numpy()
        out["labels"][start:stop] = y.cpu().numpy()
        if logits:
            if start == 0:
                out["logits"] = np.empty((size_logits.shape[0], count, size_logits.shape[2]), dtype=np.float32)
            out["logits"][:, start:stop] = size_logits.cpu().numpy()
        start = stop
        if start >= next_report or start == count:
            next_report += count / 10
            log.info(
                "%s: %d/%d embedded (%.0f per second)",
                name,
                start,
                count,
                start / max(time.perf_counter() - began, 1e-9),
            )
    if start != count:
        raise RuntimeError(f"the loader gave {start} examples for a split of {count}")
    return out


def save_embeddings(path: Path, split: dict[str, np.ndarray], meta: dict[str, Any], dtype: str) -> Path:
    """``.npz`` with ``embeddings [N, D]`` (fp32 or fp16), ``labels [N]`` and ``meta`` (a JSON string:
    model, head, sizes, split, dtype, count) so a file can be used without the run that made it."""
    np_dtype = {"fp32": np.float32, "fp16": np.float16}[dtype]
    return atomic_savez(
        path, embeddings=split["embeddings"].astype(np_dtype), labels=split["labels"], meta=np.array(json.dumps(meta))
    )
