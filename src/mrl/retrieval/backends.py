"""The vector databases ``make index`` loads and ``make search --backend`` searches, by name: each a
`mrl.retrieval.store.VectorStore`, its module imported only when asked for (their clients are optional: the
``retrieval`` extra)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = ["BACKENDS", "DATABASES", "default_uri", "funnel_class", "has_bits", "loader", "store", "store_class"]

# name -> (module, its VectorStore, its load function, the default database next to the embeddings)
BACKENDS = {
    "milvus": ("mrl.retrieval.milvus", "MilvusStore", "load_into_milvus", "index.db"),
    "lancedb": ("mrl.retrieval.lancedb", "LanceStore", "load_into_lancedb", "index.lancedb"),
}
DATABASES = tuple(BACKENDS)


def _check(name: str) -> tuple[str, str, str, str]:
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r}: expected one of {', '.join(DATABASES)}")
    return BACKENDS[name]


def store_class(name: str) -> Any:
    """The `VectorStore` of backend ``name`` (`MilvusStore`, `LanceStore`)."""
    module, cls, _, _ = _check(name)
    return getattr(importlib.import_module(module), cls)


def store(name: str, uri: str | Path, credential: str | None = None) -> Any:
    """Backend ``name``'s `VectorStore` on ``uri``."""
    return store_class(name)(uri, credential)


def loader(name: str) -> Any:
    """The load function of backend ``name`` (``load_into_milvus``, ``load_into_lancedb``)."""
    module, _, load, _ = _check(name)
    return getattr(importlib.import_module(module), load)


def funnel_class(name: str) -> Any:
    """The search class of backend ``name`` (`MilvusFunnel`, `LanceFunnel`)."""
    return store_class(name).funnel_class


def default_uri(name: str, folder: str | Path) -> str:
    """Where ``make index`` puts backend ``name``'s database by default: beside the embeddings, in ``folder``."""
    return str(Path(folder) / _check(name)[3])


def has_bits(name: str, uri: str) -> bool:
    """Whether the database at ``uri`` indexes binary codes (Milvus Lite has no binary vector fields)."""
    return store(name, uri).has_bits()
