"""Matryoshka Representation Learning: nested embeddings whose every prefix is a usable representation.

The main building blocks are importable from the package itself (``from mrl import MatryoshkaHead``);
they are loaded on first use, so ``import mrl`` stays light and optional extras (FAISS) are only
needed by what uses them.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "MatryoshkaHead": "mrl.heads",
    "FixedFeatureHead": "mrl.heads",
    "StandardHead": "mrl.heads",
    "MatryoshkaCrossEntropy": "mrl.losses",
    "MatryoshkaContrastiveLoss": "mrl.losses",
    "default_nesting": "mrl.nesting",
    "validate_nesting": "mrl.nesting",
    "MatryoshkaModule": "mrl.module",
    "load_module": "mrl.checkpoints",
    "find_checkpoint": "mrl.checkpoints",
    "AdaptiveRetriever": "mrl.retrieval",
    "load_embeddings": "mrl.eval.embeddings",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mrl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
