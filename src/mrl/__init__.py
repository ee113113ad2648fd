"""Matryoshka Representation Learning: nested embeddings whose every prefix is a usable representation.

The main building blocks are importable from the package itself (``from mrl import MatryoshkaHead``);
they are loaded on first use, so ``import mrl`` stays light and optional extras (FAISS) are only
needed by what uses them. ``mrl.__version__`` is the installed distribution's version (pyproject.toml holds it).
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

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
    "Funnel": "mrl.retrieval",
    "tune_funnel": "mrl.retrieval",
    "tune_funnels": "mrl.retrieval",
    "TuneSettings": "mrl.retrieval",
    "load_embeddings": "mrl.common.embeddings",
}

__all__ = ["__version__", *_EXPORTS]


def _installed_version() -> str:
    try:
        return version("mrl")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        return _installed_version()
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mrl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
