"""Matryoshka Representation Learning: nested embeddings whose every prefix is a usable representation.

The main building blocks are importable from the package itself (``from mrl import MatryoshkaHead``);
they are loaded on first use, so ``import mrl`` stays light and optional extras (FAISS) are only
needed by what uses them.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "MatryoshkaHead": "mrl.core.heads",
    "FixedFeatureHead": "mrl.core.heads",
    "StandardHead": "mrl.core.heads",
    "MatryoshkaCrossEntropy": "mrl.core.losses",
    "MatryoshkaContrastiveLoss": "mrl.core.losses",
    "MatryoshkaDistillationLoss": "mrl.core.losses",
    "default_nesting": "mrl.core.nesting",
    "validate_nesting": "mrl.core.nesting",
    "MatryoshkaClassifier": "mrl.training.classifier",
    "MatryoshkaContrastiveModule": "mrl.training.contrastive",
    "load_module": "mrl.runs",
    "find_checkpoint": "mrl.runs",
    "AdaptiveRetriever": "mrl.retrieval",
    "tune_funnel": "mrl.retrieval",
    "load_embeddings": "mrl.evaluation.embeddings",
}

# Names kept for code written against earlier releases: {old name: new name}.
_RENAMED = {"MatryoshkaModule": "MatryoshkaClassifier"}

__all__ = ["__version__", *_EXPORTS, *_RENAMED]


def __getattr__(name: str):
    if name in _RENAMED:
        return __getattr__(_RENAMED[name])
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mrl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
