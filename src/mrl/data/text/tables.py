"""Reading text tables: local files by extension, or one split of a Hugging Face dataset.

Sources
-------
``source`` is one of

* ``"builtin:python-docs"`` (or null), the offline default, described below;
* a local file, read by extension: ``.csv``, ``.tsv``, ``.jsonl`` / ``.json`` (JSON lines or a JSON list of
  records), ``.parquet`` (needs pyarrow); one file is split into train/val by ``val_fraction``;
* a directory written by ``datasets.Dataset.save_to_disk`` (needs ``datasets``), split like a file; one written by
  ``DatasetDict.save_to_disk`` with several splits has them chosen by name, as a Hugging Face dataset's;
* a Hugging Face dataset name (``datasets.load_dataset(source, subset, split=...)``) for users with the
  ``datasets`` package and a network or a filled cache; its own train/validation(/test) splits are used.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mrl.common.errors import InputError
from mrl.data.text.arrow_pairs import is_saved_dataset, open_arrow, saved_splits
from mrl.data.text.corpus import BUILTIN

__all__ = ["FILE_TYPES", "read_table"]

FILE_TYPES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def is_builtin(source: str | None) -> bool:
    return source is None or str(source).strip().lower() in (BUILTIN, "builtin", "null", "")


def is_file_source(source: str) -> bool:
    return Path(source).suffix.lower() in FILE_TYPES or Path(source).expanduser().exists()


def is_single_table(source: str) -> bool:
    """A local source of one table (a file, a saved Dataset, a saved DatasetDict of one split), which training
    splits by ``val_fraction``; a saved DatasetDict of several splits has them chosen by name instead."""
    return is_file_source(source) and len(saved_splits(source) or ()) <= 1


def require_split(source: str, split: str, key: str) -> None:
    """Fail in one line when ``source`` is a saved DatasetDict without ``split`` (``key`` names the setting)."""
    names = saved_splits(source)
    if names is not None and split not in names:
        problem = f"not a split of the DatasetDict saved in {source}; its splits: {', '.join(names)}"
        raise InputError(key, split, problem)


def require_datasets(source: str | None, key: str = "data.source") -> None:
    """Fail fast (before any training) when a Hugging Face dataset name is given without ``datasets``."""
    if source is None or is_builtin(source) or is_file_source(str(source)):
        return
    if importlib.util.find_spec("datasets") is None:
        _import_datasets(key, str(source))


def _import_datasets(key: str, source: str):
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            f"{key}={source!r}: a Hugging Face dataset name needs the `datasets` package; "
            "`pip install datasets` (or give a local .csv/.jsonl/.parquet file)"
        ) from error
    return datasets


def _read_json_rows(path: Path, key: str, source: str) -> list[dict[str, Any]]:
    """Rows of a JSON array or a JSON-lines file; a line that does not parse is named with its number."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(key, source, "not UTF-8 text; a .json/.jsonl table is UTF-8 JSON") from None
    if text.lstrip().startswith("["):
        try:
            return list(json.loads(text))
        except json.JSONDecodeError as error:
            raise InputError(key, source, f"not valid JSON at line {error.lineno}: {error.msg}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(key, source, f"line {number} is not a JSON object ({error.msg})") from None
            if not isinstance(row, dict):
                raise InputError(key, source, f"line {number} is a JSON {type(row).__name__}, not an object")
            rows.append(row)
    return rows


def read_table(
    source: str, key: str = "data.source", subset: str | None = None, split: str | None = None
) -> list[dict[str, Any]]:
    """Rows (dicts) of a local file (by extension) or of one split of a Hugging Face dataset."""
    source = str(source)
    if is_file_source(source):
        path = Path(source).expanduser()
        if is_saved_dataset(path):  # a directory written by datasets' save_to_disk
            return open_arrow(source, key=key, split=split).to_list()
        if not path.is_file():
            raise FileNotFoundError(f"{key}={source!r}: no such file")
        suffix = path.suffix.lower()
        if suffix not in FILE_TYPES:
            raise ValueError(f"{key}={source!r}: unknown file type {suffix!r}; use one of {', '.join(FILE_TYPES)}")
        import pandas as pd

        if suffix in (".csv", ".tsv"):
            try:
                frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise InputError(key, source, f"not a readable {suffix[1:]} table ({first[:200]})") from None
        elif suffix == ".parquet":
            try:
                frame = pd.read_parquet(path)
            except ImportError as error:
                raise ImportError(f"{key}={source!r}: reading parquet needs pyarrow; `pip install pyarrow`") from error
        else:
            return _read_json_rows(path, key, source)
        return frame.to_dict(orient="records")
    datasets = _import_datasets(key, source)
    try:
        data = datasets.load_dataset(source, subset, split=split)
    except Exception as error:  # the library raises many types; keep the message one line
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise RuntimeError(
            f"{key}={source!r} (subset={subset!r}, split={split!r}): could not load ({first[:200]})"
        ) from error
    return data.to_list()


def check_columns(rows: list[dict], columns: Mapping[str, str | None], key_prefix: str, source: str) -> None:
    if not rows:
        raise ValueError(f"{key_prefix}source={source!r}: no rows")
    available = sorted(rows[0])
    for key, column in columns.items():
        if column is not None and column not in rows[0]:
            raise KeyError(
                f"{key_prefix}{key}={column!r}: no such column in {source!r}; "
                f"available: {', '.join(map(str, available))}"
            )


def has_split(source: str, subset: str | None, split: str | None) -> bool:
    """Whether a Hugging Face dataset or a saved DatasetDict has ``split`` (local files have only one table)."""
    if split is not None and (names := saved_splits(source)) is not None:
        return split in names
    if split is None or is_builtin(source) or is_file_source(source):
        return False
    datasets = _import_datasets("data.source", source)
    try:
        return split in datasets.get_dataset_split_names(source, subset)
    except Exception:  # noqa: BLE001 - offline or unknown: treat as absent, the load itself will say why
        return False
