"""Pairs read from a memory-mapped Arrow table instead of into Python objects (``data.memory_map: true``).

A pairs file of tens of millions of rows does not fit in memory as Python tuples. With ``memory_map`` the file
is converted once into Arrow files by ``datasets`` (in its cache, ``HF_DATASETS_CACHE``; a second run with the
same file reuses them) and training reads rows from the memory map: resident memory holds the row numbers of
each split (8 bytes a row, 4 below 2**31 rows) and the pages recently read, not the texts.

Sources: a ``.jsonl``/``.json``, ``.csv``/``.tsv`` or ``.parquet`` file, a directory written by
``datasets.Dataset.save_to_disk`` (opened as it is: no conversion), or a Hugging Face dataset name (``datasets``
keeps its Arrow cache memory-mapped; the rows are no longer copied into a list).

The splits are row numbers (:class:`ArrowPairs` is a map-style data set over them), so the training order is
the same resumable, sharded, seeded order as for pairs held in memory (:mod:`mrl.data.sampling`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from mrl.common.errors import InputError

__all__ = [
    "ArrowPairs",
    "is_saved_dataset",
    "open_arrow",
    "require_memory_map",
    "sample_rows",
    "saved_splits",
    "split_rows",
    "valid_rows",
]

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


def is_saved_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a directory written by ``datasets``' ``save_to_disk`` (a Dataset or a DatasetDict)."""
    path = Path(path).expanduser()
    return path.is_dir() and any((path / name).is_file() for name in ("state.json", "dataset_dict.json"))


def saved_splits(path: str | Path) -> list[str] | None:
    """The split names of a directory holding a saved ``DatasetDict`` (its ``dataset_dict.json``), else None."""
    index = Path(path).expanduser() / "dataset_dict.json"
    if not index.is_file():
        return None
    try:
        return [str(name) for name in json.loads(index.read_text(encoding="utf-8"))["splits"]]
    except (ValueError, KeyError, TypeError):
        return None


def _datasets(key: str, source: str):
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            f"{key}={source!r}: data.memory_map needs the `datasets` package; `pip install datasets` "
            "(in the `hub` extra), or set data.memory_map=false"
        ) from error
    return datasets


def require_memory_map(source: str) -> None:
    """Fail fast (before any training) when ``data.memory_map`` is set without ``datasets``."""
    _datasets("data.memory_map", source)


def _one_split(loaded: Any, key: str, source: str, split: str | None):
    """A Dataset from what ``load_from_disk`` returned: itself, or ``split`` of a DatasetDict."""
    if not hasattr(loaded, "keys"):
        return loaded
    names = list(loaded.keys())
    if split in names:
        return loaded[split]
    if split is None and len(names) == 1:
        return loaded[names[0]]
    if split is None:
        where = Path(source).expanduser() / names[0]
        problem = f"a saved DatasetDict of several splits ({', '.join(names)}); give one split's folder, e.g. {where}"
        raise InputError(key, source, problem)
    raise InputError(key, source, f"a saved DatasetDict without split {split!r}; its splits: {', '.join(names)}")


def open_arrow(source: str, key: str = "data.source", subset: str | None = None, split: str | None = None):
    """The ``datasets.Dataset`` of ``source``, backed by memory-mapped Arrow files (converted once if needed)."""
    datasets = _datasets(key, source)
    path = Path(source).expanduser()
    if path.is_dir():
        if not is_saved_dataset(path):
            raise InputError(key, source, "a directory that datasets' save_to_disk did not write (no state.json)")
        data = _one_split(datasets.load_from_disk(str(path)), key, source, split)
    elif path.suffix.lower() in _BUILDERS:
        if not path.is_file():
            raise FileNotFoundError(f"{key}={source!r}: no such file")
        options = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        try:
            data = datasets.load_dataset(_BUILDERS[path.suffix.lower()], data_files=str(path), split="train", **options)
        except Exception as error:  # the builders raise many types; keep the message one line
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise InputError(key, source, f"could not convert to Arrow ({first[:200]})") from None
    else:
        try:
            data = datasets.load_dataset(source, subset, split=split)
        except Exception as error:  # noqa: BLE001 - as above
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise RuntimeError(
                f"{key}={source!r} (subset={subset!r}, split={split!r}): could not load ({first[:200]})"
            ) from error
    if len(data) != data.data.num_rows:  # a saved selection: rows through an indices mapping
        data = data.flatten_indices()
    return data


def valid_rows(data: Any, columns: Sequence[str]) -> np.ndarray:
    """Row numbers where none of ``columns`` is null, computed on the Arrow columns (no row is read into Python)."""
    keep = np.ones(len(data), dtype=bool)
    for name in columns:
        column = data.data.column(name)
        if column.null_count:
            keep &= np.asarray(column.is_valid())
    return np.flatnonzero(keep) if not keep.all() else np.arange(len(data))


def _row_dtype(count: int) -> type:
    return np.int32 if count < 2**31 else np.int64


def split_rows(rows: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` row numbers: a seeded ``val_fraction`` of ``rows`` held out, each part in file order."""
    order = rows[np.random.default_rng(seed).permutation(len(rows))]
    n_val = max(1, round(val_fraction * len(rows)))
    dtype = _row_dtype(int(rows.max(initial=0)) + 1)
    return np.sort(order[n_val:]).astype(dtype), np.sort(order[:n_val]).astype(dtype)


def sample_rows(rows: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A seeded choice of ``count`` of ``rows`` (``data.max_pairs``), in file order."""
    return np.sort(np.random.default_rng(seed).choice(rows, size=int(count), replace=False)).astype(rows.dtype)


class ArrowPairs(Dataset):
    """Items ``(anchor, positive[, negative])`` or ``(sentence1, sentence2, score)`` read on demand from the
    memory-mapped rows ``rows`` of ``data``; ``columns`` are the text columns in item order, ``score`` the score
    column or None. ``__getitems__`` reads a batch's rows in one Arrow gather."""

    def __init__(self, data: Any, rows: np.ndarray, columns: Sequence[str], score: str | None = None) -> None:
        self.columns, self.score = list(columns), score
        self.data = data.select_columns([*self.columns, *([score] if score else [])])
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def _items(self, table: dict[str, list]) -> list[tuple]:
        texts = [[str(v) for v in table[c]] for c in self.columns]
        if self.score:
            texts.append([float(v) for v in table[self.score]])
        return list(zip(*texts))

    def __getitems__(self, indices: Sequence[int]) -> list[tuple]:
        return self._items(self.data[[int(self.rows[i]) for i in indices]])

    def __getitem__(self, index: int) -> tuple:
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        return self.__getitems__([index])[0]

    def __iter__(self) -> Iterator[tuple]:
        for start in range(0, len(self), 1024):
            yield from self.__getitems__(range(start, min(start + 1024, len(self))))
