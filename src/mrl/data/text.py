"""Text LightningDataModules: topic classification and sentence pairs, from local files, Hugging Face
datasets, or the small offline default built from the Python documentation shipped with CPython.

Sources
-------
``source`` is one of

* ``"builtin:python-docs"`` (or null), the offline default, described below;
* a local file, read by extension: ``.csv``, ``.tsv``, ``.jsonl`` / ``.json`` (JSON lines or a JSON list of
  records), ``.parquet`` (needs pyarrow); one file is split into train/val by ``val_fraction``;
* a Hugging Face dataset name (``datasets.load_dataset(source, subset, split=...)``) for users with the
  ``datasets`` package and a network or a filled cache; its own train/validation(/test) splits are used.

The offline default (``builtin:python-docs``)
----------------------------------------------
Real English prose from the Python Language and Library Reference: CPython ships the text of about
80 reference sections as ``pydoc_data.topics`` (it backs ``help("assert")``), so every Python install
has it and nothing is downloaded. It is rebuilt deterministically at run time:

1. each section is cut into paragraphs at blank lines; code samples (``>>>``), grammar rules (``::=``)
   and headings are dropped, hard-wrapped lines are joined;
2. paragraphs are split into sentences; a sentence is kept when it starts with a capital letter, ends with
   a full stop, has 6 to 60 words and is mostly words (not code);
3. *classification* (:class:`TextClassificationDataModule`): each sentence is labelled by the part of the
   reference its section belongs to (:data:`PYTHON_DOCS_CLASSES`: statements, expressions, data model,
   built-in types, execution model); sentences appearing under two labels are dropped, and at most
   ``max_per_class`` sentences per class are kept (seeded choice);
4. *pairs* (:class:`TextPairsDataModule`): (anchor, positive) = (a sentence, the next sentence of the same
   paragraph), over all sections, each anchor and each positive used once.

With Python 3.11 this gives about 1,100 labelled sentences and 850 pairs; the exact numbers follow the
installed Python's documentation (its licence: the PSF licence, like Python itself).

Batches
-------
Classification: ``(features, labels)``, ``features`` the tokenizer's dict (``input_ids``,
``attention_mask``[, ``token_type_ids``]). Pairs: ``(anchor, positive)`` or ``(anchor, positive,
negative)`` token dicts padded to one common length (so a model can concatenate them into one forward);
scored (STS-style) pairs: ``(sentence1, sentence2, scores)`` with float scores. The tokenizer is the
backbone's: ``tokenizer`` takes its name or path (``${model.backbone.name_or_path}`` in the configs; null
= the bundled all-MiniLM-L6-v2).
"""

from __future__ import annotations

import itertools
import json
import random
import re
import textwrap
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from mrl.data.base import SPLITS
from mrl.data.resume import ResumableLoader, ResumableOrder

__all__ = [
    "BUILTIN",
    "PYTHON_DOCS_CLASSES",
    "TextClassificationDataModule",
    "TextPairsDataModule",
    "python_docs_pairs",
    "python_docs_paragraphs",
    "python_docs_sentences",
    "read_table",
]

BUILTIN = "builtin:python-docs"
FILE_TYPES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")

# Sections of the Python reference (pydoc topic names) grouped by the part of the documentation they
# come from; the group is the class label of the offline classification set.
PYTHON_DOCS_CLASSES: dict[str, tuple[str, ...]] = {
    "statements": (
        "assert", "assignment", "augassign", "break", "continue", "del", "global", "import", "nonlocal",
        "pass", "raise", "return", "yield", "compound", "if", "else", "while", "for", "try", "with",
        "function", "class", "async",
    ),
    "expressions": (
        "atom-identifiers", "atom-literals", "attribute-references", "await", "binary", "bitwise",
        "booleans", "calls", "comparisons", "conversions", "exprlists", "in", "lambda", "lists", "dict",
        "operator-summary", "power", "shifting", "slicings", "subscriptions", "unary",
    ),
    "data model": (
        "objects", "types", "specialnames", "customization", "attribute-access", "callable-types",
        "context-managers", "numeric-types", "sequence-types",
    ),
    "built-in types": (
        "typesseq", "typesseq-mutable", "string-methods", "typesmapping", "truth", "typesfunctions",
        "typesmethods", "typesmodules", "bltin-code-objects", "bltin-ellipsis-object", "bltin-null-object",
        "bltin-type-objects", "specialattrs", "formatstrings",
    ),
    "execution model": ("execmodel", "naming", "dynamic-features", "exceptions"),
}

_UNDERLINE = re.compile(r"^([*=\-~^#+\"'])\1{2,}$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"(*]*[A-Z])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Dr.")
_WORD = re.compile(r"^[(\"'*]*[A-Za-z][A-Za-z’'\-]*[)\"'*]*[,.;:?!)]*$")


# ------------------------------------------------------------------------------------------- offline set
def _paragraphs(text: str) -> list[str]:
    """Prose paragraphs of one pydoc topic: blank-line blocks, without headings, code or grammar."""
    out = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [line for line in block.split("\n") if line.strip()]
        if not lines or any(_UNDERLINE.match(line.strip()) for line in lines):
            continue
        if any(line.lstrip().startswith((">>>", "... ", "$ ")) or "::=" in line for line in lines):
            continue
        out.append(" ".join(textwrap.dedent("\n".join(lines)).split()))
    return out


def _is_prose(sentence: str) -> bool:
    words = sentence.split()
    if not 6 <= len(words) <= 60 or not sentence[0].isupper() or not sentence.endswith("."):
        return False
    return sum(bool(_WORD.match(w)) for w in words) >= 0.6 * len(words)


def _sentences(paragraph: str) -> list[str]:
    parts: list[str] = []
    for piece in _SENTENCE_END.split(paragraph):
        if parts and parts[-1].endswith(_ABBREVIATIONS):
            parts[-1] = f"{parts[-1]} {piece}"
        else:
            parts.append(piece)
    return [p.strip() for p in parts]


@lru_cache(maxsize=1)
def python_docs_paragraphs() -> dict[str, tuple[tuple[str, ...], ...]]:
    """``{topic: (paragraph, ...)}`` with each paragraph a tuple of its sentences (all, prose or not)."""
    try:
        from pydoc_data.topics import topics
    except ImportError as error:  # pragma: no cover - stripped-down Pythons only
        raise RuntimeError(
            f"data.source={BUILTIN!r}: this Python lacks pydoc_data (its documentation topics); "
            "use a local file or a Hugging Face dataset as data.source"
        ) from error
    return {name: tuple(tuple(_sentences(p)) for p in _paragraphs(topics[name])) for name in sorted(topics)}


def python_docs_sentences(max_per_class: int | None = None, seed: int = 0) -> tuple[list[str], list[int], list[str]]:
    """(texts, labels, class_names) of the offline classification set, deterministic for a given seed."""
    paragraphs = python_docs_paragraphs()
    class_names = list(PYTHON_DOCS_CLASSES)
    seen: dict[str, set[int]] = {}
    order: list[str] = []
    for label, name in enumerate(class_names):
        for topic in PYTHON_DOCS_CLASSES[name]:
            for paragraph in paragraphs.get(topic, ()):
                for sentence in paragraph:
                    if not _is_prose(sentence):
                        continue
                    if sentence not in seen:
                        seen[sentence] = set()
                        order.append(sentence)
                    seen[sentence].add(label)
    per_class: list[list[str]] = [[] for _ in class_names]
    for sentence in order:
        if len(seen[sentence]) == 1:  # a sentence under two labels says nothing about either
            per_class[next(iter(seen[sentence]))].append(sentence)
    rng = random.Random(seed)
    texts, labels = [], []
    for label, sentences in enumerate(per_class):
        if max_per_class is not None and len(sentences) > max_per_class:
            keep = sorted(rng.sample(range(len(sentences)), int(max_per_class)))
            sentences = [sentences[i] for i in keep]
        texts.extend(sentences)
        labels.extend([label] * len(sentences))
    return texts, labels, class_names


def python_docs_pairs(max_pairs: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """(sentence, next sentence of the same paragraph) over all topics; every text used once per side."""
    pairs, anchors, positives = [], set(), set()
    for paragraphs in python_docs_paragraphs().values():
        for paragraph in paragraphs:
            for a, b in itertools.pairwise(paragraph):
                if _is_prose(a) and _is_prose(b) and a not in anchors and b not in positives and a != b:
                    anchors.add(a)
                    positives.add(b)
                    pairs.append((a, b))
    if max_pairs is not None and len(pairs) > max_pairs:
        keep = sorted(random.Random(seed).sample(range(len(pairs)), int(max_pairs)))
        pairs = [pairs[i] for i in keep]
    return pairs


# ---------------------------------------------------------------------------------------------- reading
def _is_builtin(source: str | None) -> bool:
    return source is None or str(source).strip().lower() in (BUILTIN, "builtin", "null", "")


def _is_file_source(source: str) -> bool:
    return Path(source).suffix.lower() in FILE_TYPES or Path(source).expanduser().exists()


def _require_datasets(source: str | None, key: str = "data.source") -> None:
    """Fail fast (before any training) when a Hugging Face dataset name is given without ``datasets``."""
    if source is None or _is_builtin(source) or _is_file_source(str(source)):
        return
    import importlib.util

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


def read_table(source: str, key: str = "data.source", subset: str | None = None,
               split: str | None = None) -> list[dict[str, Any]]:
    """Rows (dicts) of a local file (by extension) or of one split of a Hugging Face dataset."""
    source = str(source)
    if _is_file_source(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{key}={source!r}: no such file")
        suffix = path.suffix.lower()
        if suffix not in FILE_TYPES:
            raise ValueError(f"{key}={source!r}: unknown file type {suffix!r}; use one of {', '.join(FILE_TYPES)}")
        import pandas as pd

        if suffix in (".csv", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        elif suffix == ".parquet":
            try:
                frame = pd.read_parquet(path)
            except ImportError as error:
                raise ImportError(f"{key}={source!r}: reading parquet needs pyarrow; `pip install pyarrow`") from error
        else:
            text = path.read_text(encoding="utf-8")
            stripped = text.lstrip()
            if stripped.startswith("["):
                return list(json.loads(text))
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return frame.to_dict(orient="records")
    datasets = _import_datasets(key, source)
    try:
        data = datasets.load_dataset(source, subset, split=split)
    except Exception as error:  # the library raises many types; keep the message one line
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise RuntimeError(f"{key}={source!r} (subset={subset!r}, split={split!r}): could not load ({first[:200]})") \
            from error
    return data.to_list()


def _check_columns(rows: list[dict], columns: Mapping[str, str | None], key_prefix: str, source: str) -> None:
    if not rows:
        raise ValueError(f"{key_prefix}source={source!r}: no rows")
    available = sorted(rows[0])
    for key, column in columns.items():
        if column is not None and column not in rows[0]:
            raise KeyError(f"{key_prefix}{key}={column!r}: no such column in {source!r}; "
                           f"available: {', '.join(map(str, available))}")


def _has_split(source: str, subset: str | None, split: str | None) -> bool:
    """Whether a Hugging Face dataset has ``split`` (local files have only one table)."""
    if split is None or _is_builtin(source) or _is_file_source(source):
        return False
    datasets = _import_datasets("data.source", source)
    try:
        return split in datasets.get_dataset_split_names(source, subset)
    except Exception:  # noqa: BLE001 - offline or unknown: treat as absent, the load itself will say why
        return False


# ----------------------------------------------------------------------------------------- collation
class _ListDataset(Dataset):
    def __init__(self, items: Sequence) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


class _Collate:
    """Tokenizes a batch of items. ``kind``: "classification" (text, label), "pairs" (a, p[, n]) or
    "scored" (a, b, score). Pair texts are tokenized in one call, so every part has one length."""

    def __init__(self, tokenizer, max_length: int, kind: str) -> None:
        self.tokenizer, self.max_length, self.kind = tokenizer, int(max_length), kind

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def __call__(self, items: list[tuple]):
        if self.kind == "classification":
            texts, labels = zip(*items)
            return self._tokenize(list(texts)), torch.tensor(labels, dtype=torch.long)
        if self.kind == "scored":
            a, b, scores = zip(*items)
            features = self._tokenize([*a, *b])
            n = len(items)
            return (_rows(features, 0, n), _rows(features, n, 2 * n), torch.tensor(scores, dtype=torch.float32))
        parts = len(items[0])
        n = len(items)
        features = self._tokenize([text for part in range(parts) for text in (item[part] for item in items)])
        return tuple(_rows(features, i * n, (i + 1) * n) for i in range(parts))


def _rows(features: Mapping[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {k: v[start:stop] for k, v in features.items()}


# ------------------------------------------------------------------------------------------ base module
class _TextDataModule(ResumableOrder, L.LightningDataModule):
    """Loader options, the tokenizer and the split contract shared by the text data modules."""

    name: str
    num_classes: int
    in_chans = None  # text: no image channels
    kind: str

    def __init__(self, tokenizer: str | None, max_length: int, val_fraction: float, batch_size: int,
                 num_workers: int, pin_memory: bool, persistent_workers: bool, seed: int) -> None:
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"data.batch_size={batch_size} is invalid; use a positive integer")
        if int(num_workers) < 0:
            raise ValueError(f"data.num_workers={num_workers} is invalid; use 0 or a positive integer")
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"data.val_fraction={val_fraction} is invalid; use a fraction in (0, 1)")
        if int(max_length) < 2:
            raise ValueError(f"data.max_length={max_length} is invalid; use an integer >= 2")
        self.tokenizer_name = tokenizer
        self.max_length = int(max_length)
        self.val_fraction = float(val_fraction)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.seed = int(seed)
        self._tokenizer = None
        self._splits: dict[str, list] = {}

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from mrl.backbones.hf_text import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_name, key="data.tokenizer")
        return self._tokenizer

    def set_tokenizer(self, tokenizer) -> None:
        """Use an already loaded tokenizer (e.g. the backbone's) instead of loading ``data.tokenizer``."""
        self._tokenizer = tokenizer

    def setup(self, stage: str | None = None) -> None:
        if not self._splits:
            self._splits = self._build()

    def _build(self) -> dict[str, list]:  # pragma: no cover - abstract
        raise NotImplementedError

    def split_items(self, split: str) -> list:
        """The raw items (texts, labels, scores) of a split: test falls back to val when there is none."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not a data split; valid: {', '.join(SPLITS)}")
        self.setup(split)
        return self._splits.get(split) or self._splits["val"]

    def _collate_kind(self, split: str) -> str:
        return self.kind

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        items = _ListDataset(self.split_items(split))
        return (ResumableLoader if shuffle else DataLoader)(
            items,
            batch_size=self.batch_size,
            sampler=self.training_sampler(items) if shuffle else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=_Collate(self.tokenizer, self.max_length, self._collate_kind(split)),
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def eval_dataloader(self, split: str) -> DataLoader:
        """Non-shuffled loader over ``split`` (train, val or test; test is val when the data has none)."""
        return self._loader(split, shuffle=False)


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
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(tokenizer, max_length, val_fraction, batch_size, num_workers, pin_memory,
                         persistent_workers, seed)
        self.save_hyperparameters()
        self.source = BUILTIN if _is_builtin(source) else str(source)
        _require_datasets(self.source)
        self.text_column, self.label_column = text_column, label_column
        self.max_samples = max_samples
        tables = self._read(subset, train_split, val_split, test_split, max_per_class)
        labels = sorted({row[1] for rows in tables.values() for row in rows}, key=lambda v: (str(type(v)), v))
        if len(labels) < 2:
            raise ValueError(f"data.label_column={label_column!r}: {len(labels)} distinct label(s) in "
                             f"{self.source!r}; classification needs at least 2")
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
            _check_columns(table, columns, "data.", self.source)
            return [(str(r[self.text_column]), r[self.label_column]) for r in table
                    if r[self.text_column] is not None and r[self.label_column] is not None]

        if _is_file_source(self.source):
            return {"all": rows(None)}
        tables = {"train": rows(train_split)}
        if _has_split(self.source, subset, val_split):
            tables["val"] = rows(val_split)
        else:
            tables = {"all": tables["train"]}
        if _has_split(self.source, subset, test_split):
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
    """

    num_classes = 0

    def __init__(
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
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(tokenizer, max_length, val_fraction, batch_size, num_workers, pin_memory,
                         persistent_workers, seed)
        self.save_hyperparameters()
        self.source = BUILTIN if _is_builtin(source) else str(source)
        _require_datasets(self.source)
        if eval_source:
            _require_datasets(eval_source.get("source"), "data.eval_source.source")
        if self.source == BUILTIN and (negative_column or score_column):
            raise ValueError("data.negative_column / data.score_column: the offline pairs "
                             f"({BUILTIN}) have neither; set them to null or use another data.source")
        self.columns = {"anchor_column": anchor_column, "positive_column": positive_column,
                        "negative_column": negative_column, "score_column": score_column}
        self.subset, self.train_split, self.val_split, self.test_split = subset, train_split, val_split, test_split
        self.max_pairs = max_pairs
        self.kind = "scored" if score_column else "pairs"
        self.eval_source = dict(eval_source) if eval_source else None
        if self.eval_source is not None:
            unknown = set(self.eval_source) - {"source", "subset", "split", "test_split", "anchor_column",
                                               "positive_column", "score_column"}
            if unknown or "source" not in self.eval_source:
                raise ValueError(f"data.eval_source={self.eval_source!r}: needs 'source' and may have subset, "
                                 "split, test_split, anchor_column, positive_column, score_column")
        self.eval_kind = ("scored" if self.eval_source.get("score_column") else "pairs") if self.eval_source \
            else self.kind
        self.name = "python-docs-pairs" if self.source == BUILTIN else Path(self.source).stem or self.source
        if _is_file_source(self.source) or self.source == BUILTIN:
            self.setup()  # small: read now so column errors surface before training starts

    def _collate_kind(self, split: str) -> str:
        return self.kind if split == "train" else self.eval_kind

    @staticmethod
    def _items(table: list[dict], columns: Mapping[str, str | None], prefix: str, source: str) -> list[tuple]:
        _check_columns(table, columns, prefix, source)
        names = [c for c in (columns.get("anchor_column"), columns.get("positive_column"),
                             columns.get("negative_column")) if c]
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

    def _build(self) -> dict[str, list]:
        if self.source == BUILTIN:
            pairs = python_docs_pairs(self.max_pairs, self.seed)
            splits = {"all": pairs}
        elif _is_file_source(self.source):
            splits = {"all": self._items(self._table(None), self.columns, "data.", self.source)}
        else:
            splits = {"train": self._items(self._table(self.train_split), self.columns, "data.", self.source)}
            if self.eval_source is None and _has_split(self.source, self.subset, self.val_split):
                splits["val"] = self._items(self._table(self.val_split), self.columns, "data.", self.source)
            if self.eval_source is None and _has_split(self.source, self.subset, self.test_split):
                splits["test"] = self._items(self._table(self.test_split), self.columns, "data.", self.source)
        if "all" in splits:
            items = splits.pop("all")
            rng = random.Random(self.seed)
            order = list(range(len(items)))
            rng.shuffle(order)
            n_val = max(1, round(self.val_fraction * len(items)))
            if len(items) - n_val < 1:
                raise ValueError(f"data.val_fraction={self.val_fraction}: leaves no training pairs of {len(items)}")
            splits["val"] = [items[i] for i in sorted(order[:n_val])]
            splits["train"] = [items[i] for i in sorted(order[n_val:])]
        if self.max_pairs is not None and self.source != BUILTIN and len(splits["train"]) > int(self.max_pairs):
            splits["train"] = random.Random(self.seed).sample(splits["train"], int(self.max_pairs))
        if self.eval_source is not None:
            splits.update(self._eval_splits())
        return splits

    def _eval_splits(self) -> dict[str, list]:
        spec = self.eval_source
        columns = {"anchor_column": spec.get("anchor_column", "sentence1"),
                   "positive_column": spec.get("positive_column", "sentence2"),
                   "score_column": spec.get("score_column")}
        out = {}
        for split, name in (("val", spec.get("split", "validation")), ("test", spec.get("test_split"))):
            if name is None and split == "test":
                continue
            table = read_table(spec["source"], key="data.eval_source.source", subset=spec.get("subset"),
                               split=None if _is_file_source(str(spec["source"])) else name)
            out[split] = self._items(table, columns, "data.eval_source.", str(spec["source"]))
        return out
