"""The vector databases ``make index`` loads and ``make search --backend`` searches, by name; each imported only
when asked for (their clients are optional: the ``retrieval`` extra)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = ["DATABASES", "default_uri", "funnel_class", "has_bits", "loader"]

# name -> (module, load function, funnel class, default database next to the embeddings)
_BACKENDS = {
    "milvus": ("mrl.retrieval.milvus", "load_into_milvus", "MilvusFunnel", "index.db"),
    "lancedb": ("mrl.retrieval.lancedb", "load_into_lancedb", "LanceFunnel", "index.lancedb"),
}
DATABASES = tuple(_BACKENDS)


def _check(name: str) -> tuple[str, str, str, str]:
    if name not in _BACKENDS:
        raise ValueError(f"backend={name!r}: expected one of {', '.join(DATABASES)}")
    return _BACKENDS[name]


def loader(name: str) -> Any:
    """The load function of backend ``name`` (``load_into_milvus``, ``load_into_lancedb``)."""
    module, load, _, _ = _check(name)
    return getattr(importlib.import_module(module), load)


def funnel_class(name: str) -> Any:
    """The search class of backend ``name`` (`MilvusFunnel`, `LanceFunnel`)."""
    module, _, cls, _ = _check(name)
    return getattr(importlib.import_module(module), cls)


def default_uri(name: str, folder: str | Path) -> str:
    """Where ``make index`` puts backend ``name``'s database by default: beside the embeddings, in ``folder``."""
    return str(Path(folder) / _check(name)[3])


def has_bits(name: str, uri: str) -> bool:
    """Whether the database at ``uri`` indexes binary codes (Milvus Lite has no binary vector fields)."""
    _check(name)
    if name == "milvus":
        from mrl.retrieval.milvus import is_lite

        return not is_lite(uri)
    return True
