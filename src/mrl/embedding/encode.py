"""The model over ``make embed``'s inputs: full-width embeddings of image files or texts, batch by batch, in
:func:`mrl.evaluation.embeddings.embed_split` (the loop evaluation embeds its splits with)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from mrl.embedding.inputs import ImageFiles, TokenizeTexts
from mrl.evaluation.embeddings import embed_split

__all__ = ["embed_image_files", "embed_texts"]


def embed_loader(module, loader: DataLoader, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """Full-width embeddings ``[N, D]`` of a loader of ``(input, index)`` batches, and which rows are real
    (``bool[N]``: index -1 marks an input that could not be read)."""
    out = embed_split(module, loader, logits=False, precision=precision, name="input")
    return out["embeddings"], out["labels"] >= 0


def embed_image_files(
    module,
    paths: Sequence[Path],
    transform: Callable,
    batch_size: int = 64,
    num_workers: int = 0,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Full-width embeddings ``[N, D]`` of image files, and which of them could be read (``bool[N]``; the
    rows of the others are meaningless)."""
    loader = DataLoader(ImageFiles(paths, transform), batch_size=batch_size, num_workers=num_workers)
    return embed_loader(module, loader, precision)


def embed_texts(module, texts: Sequence[str], batch_size: int = 64, precision: str = "fp32") -> np.ndarray:
    """Full-width embeddings ``[N, D]`` of texts, tokenized by the model's own tokenizer."""
    items = [(text, i) for i, text in enumerate(texts)]
    loader = DataLoader(items, batch_size=batch_size, collate_fn=TokenizeTexts(module.backbone.tokenize))
    return embed_loader(module, loader, precision)[0]
