"""Text LightningDataModules: topic classification and sentence pairs.

Text LightningDataModules: topic classification and sentence pairs, from local files, Hugging Face
datasets, or the small offline default built from the Python documentation shipped with CPython.

Batches
-------
Classification: ``(features, labels)``, ``features`` the tokenizer's dict (``input_ids``,
``attention_mask``[, ``token_type_ids``]). Pairs: ``(anchor, positive)`` or ``(anchor, positive,
negative)`` token dicts, each part tokenized on its own and padded to its own longest text (a short query is
not padded to the length of the documents); scored (STS-style) pairs: ``(sentence1, sentence2, scores)`` with
float scores. The tokenizer is the
backbone's: ``tokenizer`` takes its name or path (``${model.backbone.name_or_path}`` in the configs; null
= the bundled all-MiniLM-L6-v2).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mrl.backbones.hf_text import load_tokenizer
from mrl.common.errors import ConfigError, InputError
from mrl.data.base import MatryoshkaDataModule, check_split
from mrl.data.text.arrow_pairs import (
    ArrowPairs,
    open_arrow,
    require_memory_map,
    sample_rows,
    split_rows,
    valid_rows,
)
from mrl.data.text.corpus import (
    BUILTIN,
    BUILTIN_QUERIES,
    PYTHON_DOCS_CLASSES,
    python_docs_pairs,
    python_docs_sentences,
    python_query_pairs,
)
from mrl.data.text.tables import (
    check_columns,
    has_split,
    is_builtin,
    is_file_source,
    is_single_table,
    read_table,
    require_datasets,
    require_split,
)

__all__ = ["TextClassificationDataModule", "TextPairsDataModule"]

# Each split needs two pairs at least: a training batch of one pair has no in-batch negative, and retrieval among one
# validation positive is right every time (a 2-pair set "trained" to 100% on every metric).
MIN_SPLIT_PAIRS = 2


def _too_few(count: int, n_val: int, val_fraction: float) -> str:
    """The one line for a pair set too small to split: how many it has and how many would do."""

    def smallest_split(n: int) -> int:
        held_out = max(1, round(val_fraction * n))
        return min(held_out, n - held_out)

    needed = next(n for n in range(2, 100_000) if smallest_split(n) >= MIN_SPLIT_PAIRS)
    return (
        f"{count} pair(s) split into {count - n_val} to train and {n_val} to validate; each needs at least "
        f"{MIN_SPLIT_PAIRS} (in-batch negatives, retrieval among the validation positives): give at least {needed} "
        f"pairs at data.val_fraction={val_fraction}"
    )


class _ListDataset(Dataset):
    def __init__(self, items: Sequence) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


class _Collate:
    """Tokenizes a batch of items. ``kind``: "classification" (text, label), "pairs" (a, p[, n]) or
    "scored" (a, b, score). Each part of a pair is tokenized on its own, padded to its own longest text."""

    def __init__(self, tokenizer, max_length: int, kind: str) -> None:
        self.tokenizer, self.max_length, self.kind = tokenizer, int(max_length), kind

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(
            self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        )

    def __call__(self, items: list[tuple]):
        if self.kind == "classification":
            texts, labels = zip(*items)
            return self._tokenize(list(texts)), torch.tensor(labels, dtype=torch.long)
        if self.kind == "scored":
            a, b, scores = zip(*items)
            return self._tokenize(list(a)), self._tokenize(list(b)), torch.tensor(scores, dtype=torch.float32)
        return tuple(self._tokenize(list(part)) for part in zip(*items))


# ------------------------------------------------------------------------------------------ base module
class _TextDataModule(MatryoshkaDataModule):
    """Loader options, the tokenizer and the split contract shared by the text data modules."""

    name: str
    num_classes: int
    in_chans = None  # text: no image channels
    kind: str
    loader_defaults = {"batch_size": 32}

    def __init__(
        self,
        tokenizer: str | None,
        max_length: int,
        val_fraction: float,
        **loader_options: Any,
    ) -> None:
        super().__init__(**loader_options)
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"data.val_fraction={val_fraction} is invalid; use a fraction in (0, 1)")
        if int(max_length) < 2:
            raise ValueError(f"data.max_length={max_length} is invalid; use an integer >= 2")
        self.tokenizer_name = tokenizer
        self.max_length = int(max_length)
        self.val_fraction = float(val_fraction)
        self._tokenizer = None
        self._splits: dict[str, list] = {}

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name, key="data.tokenizer")
        return self._tokenizer

    def setup(self, stage: str | None = None) -> None:
        if not self._splits:
            self._splits = self._build()

    def _build(self) -> dict[str, list]:  # pragma: no cover - abstract
        raise NotImplementedError

    def split_items(self, split: str) -> list:
        """The raw items (texts, labels, scores) of a split: test falls back to val when there is none."""
        self.setup(check_split(split))
        return self._splits.get(split) or self._splits["val"]

    def _collate_kind(self, split: str) -> str:
        return self.kind

    def split_dataset(self, split: str, train: bool) -> Dataset:
        items = self.split_items(split)
        return items if isinstance(items, Dataset) else _ListDataset(items)

    def collate_fn(self, split: str) -> _Collate:
        return _Collate(self.tokenizer, self.max_length, self._collate_kind(split))


# ------------------------------------------------------------------------------------- classification
class TextClassificationDataModule(_TextDataModule):
    """Texts with class labels. ``num_classes``, ``class_names`` and ``name`` are known after construction
    (the table is read then; it is small for the default and cached by ``datasets`` otherwise).

    Labels may be integers or strings; they are mapped to ``0..C-1`` in sorted order (``class_names``).
    A single table (local file, the offline default, a Hugging Face set without ``val_split``) is split
    into train/val with a stratified, seeded ``val_fraction``; ``test_split`` names a Hugging Face test split
    (else test is val). ``max_samples`` caps the training rows (seeded choice) for quick runs.
    """

    kind = "classification"

    def __init__(
        self,
        source: str | None = BUILTIN,
        text_column: str = "text",
        label_column: str = "label",
        tokenizer: str | None = None,
        max_length: int = 128,
        val_fraction: float = 0.2,
        subset: str | None = None,
        train_split: str = "train",
        val_split: str | None = "validation",
        test_split: str | None = None,
        max_per_class: int | None = None,
        max_samples: int | None = None,
        **loader_options: Any,
    ) -> None:
        super().__init__(tokenizer, max_length, val_fraction, **loader_options)
        self.save_hyperparameters()
        self.source = BUILTIN if is_builtin(source) else str(source)
        require_datasets(self.source)
        self.text_column, self.label_column = text_column, label_column
        self.max_samples = max_samples
        tables = self._read(subset, train_split, val_split, test_split, max_per_class)
        labels = sorted({row[1] for rows in tables.values() for row in rows}, key=lambda v: (str(type(v)), v))
        if len(labels) < 2:
            raise ValueError(
                f"data.label_column={label_column!r}: {len(labels)} distinct label(s) in "
                f"{self.source!r}; classification needs at least 2"
            )
        if self.source == BUILTIN:
            self.class_names = list(PYTHON_DOCS_CLASSES)
            index = {i: i for i in range(len(self.class_names))}
        else:
            self.class_names = [str(v) for v in labels]
            index = {v: i for i, v in enumerate(labels)}
        self._tables = {split: [(text, index[label]) for text, label in rows] for split, rows in tables.items()}
        self.num_classes = len(self.class_names)
        self.name = "python-docs-topics" if self.source == BUILTIN else Path(self.source).stem or self.source

    def _read(self, subset, train_split, val_split, test_split, max_per_class) -> dict[str, list]:
        if self.source == BUILTIN:
            texts, labels, _ = python_docs_sentences(max_per_class, self.seed)
            return {"all": list(zip(texts, labels))}
        columns = {"text_column": self.text_column, "label_column": self.label_column}

        def rows(split):
            table = read_table(self.source, subset=subset, split=split)
            check_columns(table, columns, "data.", self.source)
            return [
                (str(r[self.text_column]), r[self.label_column])
                for r in table
                if r[self.text_column] is not None and r[self.label_column] is not None
            ]

        if is_single_table(self.source):
            return {"all": rows(None)}
        require_split(self.source, train_split, "data.train_split")
        if test_split is not None:
            require_split(self.source, test_split, "data.test_split")
        tables = {"train": rows(train_split)}
        if has_split(self.source, subset, val_split):
            tables["val"] = rows(val_split)
        else:
            tables = {"all": tables["train"]}
        if has_split(self.source, subset, test_split):
            tables["test"] = rows(test_split)
        return tables

    def _build(self) -> dict[str, list]:
        splits = dict(self._tables)
        if "all" in splits:
            from sklearn.model_selection import train_test_split

            items = splits.pop("all")
            labels = [y for _, y in items]
            counts = torch.bincount(torch.tensor(labels), minlength=self.num_classes)
            n_val = max(1, round(self.val_fraction * len(items)))
            stratify = labels if int(counts.min()) >= 2 and n_val >= self.num_classes else None
            train, val = train_test_split(items, test_size=n_val, stratify=stratify, random_state=self.seed)
            splits["train"], splits["val"] = list(train), list(val)
        if self.max_samples is not None and len(splits["train"]) > int(self.max_samples):
            rng = random.Random(self.seed)
            splits["train"] = rng.sample(splits["train"], int(self.max_samples))
        return splits


# ------------------------------------------------------------------------------------------------ pairs
class TextPairsDataModule(_TextDataModule):
    """Sentence pairs for contrastive training, or scored pairs (STS-style) for evaluation.

    Training items are ``(anchor, positive)`` or, with ``negative_column``, ``(anchor, positive, negative)``.
    With ``score_column`` every split is scored: items ``(sentence1, sentence2, score)``, used for
    evaluation (Spearman correlation of cosine similarity with the gold score), not for training.
    ``eval_source`` (a dict with ``source``, ``subset``, ``split``, ``test_split``, ``anchor_column``,
    ``positive_column``, ``score_column``) takes val/test from another set, e.g. train on AllNLI triplets and
    evaluate on STS-benchmark. ``num_classes`` is 0 (no classes); ``kind`` is "pairs" or "scored" and
    ``eval_kind`` the kind of the val/test splits.

    ``memory_map``: read the pairs from memory-mapped Arrow files (converted once by ``datasets``) instead of into
    Python tuples, for corpora larger than memory; the splits are then :class:`~mrl.data.text.arrow_pairs.
    ArrowPairs` over row numbers and the training order is the same resumable, seeded, sharded order
    (:mod:`mrl.data.text.arrow_pairs`). ``eval_source`` is still read into memory (an evaluation set is small).
    """

    num_classes = 0

    def __init__(  # noqa: PLR0913 - the data config group's keys
        self,
        source: str | None = BUILTIN,
        anchor_column: str = "anchor",
        positive_column: str = "positive",
        negative_column: str | None = None,
        score_column: str | None = None,
        eval_source: Mapping | None = None,
        tokenizer: str | None = None,
        max_length: int = 128,
        val_fraction: float = 0.2,
        subset: str | None = None,
        train_split: str = "train",
        val_split: str | None = "validation",
        test_split: str | None = None,
        max_pairs: int | None = None,
        memory_map: bool = False,
        **loader_options: Any,
    ) -> None:
        super().__init__(tokenizer, max_length, val_fraction, **loader_options)
        self.save_hyperparameters()
        self.source = BUILTIN if is_builtin(source) else str(source)
        self.builtin = self.source in (BUILTIN, BUILTIN_QUERIES)
        if not isinstance(memory_map, bool):
            raise ConfigError("data.memory_map", memory_map, "expected true or false")
        if memory_map and self.builtin:
            raise ConfigError(
                "data.memory_map",
                memory_map,
                f"the built-in pairs ({self.source}) are small and built in memory; "
                "memory-map a .jsonl/.parquet/.csv file, a save_to_disk directory or a hub data set",
            )
        self.memory_map = memory_map
        if memory_map:
            require_memory_map(self.source)
        if self.source.startswith("builtin:") and not self.builtin:
            raise ValueError(
                f"data.source={self.source!r}: no such built-in set; the offline pairs are {BUILTIN} "
                f"(next sentences) and {BUILTIN_QUERIES} (short queries, paragraph-long documents)"
            )
        if not self.builtin:
            require_datasets(self.source)
        if eval_source:
            require_datasets(eval_source.get("source"), "data.eval_source.source")
        if self.builtin and (negative_column or score_column):
            raise ValueError(
                "data.negative_column / data.score_column: the offline pairs "
                f"({self.source}) have neither; set them to null or use another data.source"
            )
        self.columns = {
            "anchor_column": anchor_column,
            "positive_column": positive_column,
            "negative_column": negative_column,
            "score_column": score_column,
        }
        self.subset, self.train_split, self.val_split, self.test_split = subset, train_split, val_split, test_split
        self.max_pairs = max_pairs
        self.kind = "scored" if score_column else "pairs"
        self.eval_source = dict(eval_source) if eval_source else None
        if self.eval_source is not None:
            unknown = set(self.eval_source) - {
                "source",
                "subset",
                "split",
                "test_split",
                "anchor_column",
                "positive_column",
                "score_column",
            }
            if unknown or "source" not in self.eval_source:
                raise ValueError(
                    f"data.eval_source={self.eval_source!r}: needs 'source' and may have subset, "
                    "split, test_split, anchor_column, positive_column, score_column"
                )
        self.eval_kind = (
            ("scored" if self.eval_source.get("score_column") else "pairs") if self.eval_source else self.kind
        )
        builtin_names = {BUILTIN: "python-docs-pairs", BUILTIN_QUERIES: "python-queries"}
        self.name = builtin_names.get(self.source) or Path(self.source).stem or self.source
        if self.builtin or is_file_source(self.source):
            self.setup()  # small: read now so column errors surface before training starts

    def _collate_kind(self, split: str) -> str:
        return self.kind if split == "train" else self.eval_kind

    @staticmethod
    def _items(table: list[dict], columns: Mapping[str, str | None], prefix: str, source: str) -> list[tuple]:
        check_columns(table, columns, prefix, source)
        names = [
            c
            for c in (columns.get("anchor_column"), columns.get("positive_column"), columns.get("negative_column"))
            if c
        ]
        score = columns.get("score_column")
        items = []
        for row in table:
            values = [row[c] for c in names]
            if any(v is None for v in values) or (score and row[score] is None):
                continue
            item = tuple(str(v) for v in values)
            items.append((*item, float(row[score])) if score else item)
        return items

    def _table(self, split: str | None, source: str | None = None, subset: str | None = None):
        return read_table(source or self.source, key="data.source", subset=subset or self.subset, split=split)

    def _split(self, split: str | None):
        """One table of ``data.source`` as items: a list of tuples, or (``memory_map``) ``(data, rows)``, the
        memory-mapped data set and the row numbers with every needed column filled in."""
        if not self.memory_map:
            return self._items(self._table(split), self.columns, "data.", self.source)
        data = open_arrow(self.source, key="data.source", subset=self.subset, split=split)
        check_columns([dict.fromkeys(data.column_names)] if len(data) else [], self.columns, "data.", self.source)
        return data, valid_rows(data, [c for c in self.columns.values() if c])

    def _arrow_pairs(self, data, rows) -> ArrowPairs:
        texts = [self.columns[k] for k in ("anchor_column", "positive_column", "negative_column") if self.columns[k]]
        return ArrowPairs(data, rows, texts, self.columns["score_column"])

    def _checked_val_count(self, count: int) -> int:
        """How many of ``count`` pairs ``val_fraction`` holds out, once both splits are known to be usable."""
        n_val = max(1, round(self.val_fraction * count))
        if count - n_val < 1:
            raise ValueError(f"data.val_fraction={self.val_fraction}: leaves no training pairs of {count}")
        if min(n_val, count - n_val) < MIN_SPLIT_PAIRS:
            raise InputError("data.source", self.source, _too_few(count, n_val, self.val_fraction))
        return n_val

    def _build(self) -> dict[str, list]:
        if self.source == BUILTIN:
            splits = {"all": python_docs_pairs(self.max_pairs, self.seed)}
        elif self.source == BUILTIN_QUERIES:
            splits = {"all": python_query_pairs(self.max_pairs, self.seed)}
        elif is_single_table(self.source):
            splits = {"all": self._split(None)}
        else:
            splits = self._named_splits()
        if self.memory_map:
            splits = self._mapped_splits(splits)
        elif "all" in splits:
            items = splits.pop("all")
            rng = random.Random(self.seed)
            order = list(range(len(items)))
            rng.shuffle(order)
            n_val = self._checked_val_count(len(items))
            splits["val"] = [items[i] for i in sorted(order[:n_val])]
            splits["train"] = [items[i] for i in sorted(order[n_val:])]
        if (
            self.max_pairs is not None
            and not self.builtin
            and not self.memory_map
            and len(splits["train"]) > int(self.max_pairs)
        ):
            splits["train"] = random.Random(self.seed).sample(splits["train"], int(self.max_pairs))
        if self.eval_source is not None:
            splits.update(self._eval_splits())
        return splits

    def _named_splits(self) -> dict:
        """The splits of a Hugging Face dataset or a saved DatasetDict, by ``data.train_split`` / ``val_split`` /
        ``test_split``; a saved DatasetDict without the validation split has ``val_fraction`` of its training
        split held out (``"all"``), as a single file."""
        require_split(self.source, self.train_split, "data.train_split")
        if self.test_split is not None:
            require_split(self.source, self.test_split, "data.test_split")
        splits = {"train": self._split(self.train_split)}
        if self.eval_source is None and has_split(self.source, self.subset, self.val_split):
            splits["val"] = self._split(self.val_split)
        elif self.eval_source is None and is_file_source(self.source):  # a saved DatasetDict without validation
            splits["all"] = splits.pop("train")
        if self.eval_source is None and has_split(self.source, self.subset, self.test_split):
            splits["test"] = self._split(self.test_split)
        return splits

    def _mapped_splits(self, tables: dict[str, tuple]) -> dict[str, ArrowPairs]:
        """The memory-mapped splits: a single table split by ``val_fraction`` (seeded), ``max_pairs`` a seeded
        choice of the training rows; every split a view of row numbers, no text read."""
        if "all" in tables:
            data, rows = tables.pop("all")
            self._checked_val_count(len(rows))
            train, val = split_rows(rows, self.val_fraction, self.seed)
            tables = {**tables, "train": (data, train), "val": (data, val)}
        data, train = tables["train"]
        if not len(train):
            raise InputError("data.source", self.source, "no training rows with every column filled in")
        if self.max_pairs is not None and len(train) > int(self.max_pairs):
            tables["train"] = (data, sample_rows(train, int(self.max_pairs), self.seed))
        return {split: self._arrow_pairs(*table) for split, table in tables.items()}

    def _eval_splits(self) -> dict[str, list]:
        spec = self.eval_source
        columns = {
            "anchor_column": spec.get("anchor_column", "sentence1"),
            "positive_column": spec.get("positive_column", "sentence2"),
            "score_column": spec.get("score_column"),
        }
        out = {}
        for split, name in (("val", spec.get("split", "validation")), ("test", spec.get("test_split"))):
            if name is None and split == "test":
                continue
            table = read_table(
                spec["source"],
                key="data.eval_source.source",
                subset=spec.get("subset"),
                split=None if is_single_table(str(spec["source"])) else name,
            )
            out[split] = self._items(table, columns, "data.eval_source.", str(spec["source"]))
        return out
