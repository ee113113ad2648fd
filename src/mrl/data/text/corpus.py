"""The offline text corpus: sentences and pairs from the Python documentation shipped with CPython.

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
"""

from __future__ import annotations

import itertools
import random
import re
import textwrap
from functools import lru_cache

__all__ = ["BUILTIN", "PYTHON_DOCS_CLASSES", "python_docs_pairs", "python_docs_paragraphs", "python_docs_sentences"]

BUILTIN = "builtin:python-docs"

# Sections of the Python reference (pydoc topic names) grouped by the part of the documentation they
# come from; the group is the class label of the offline classification set.
PYTHON_DOCS_CLASSES: dict[str, tuple[str, ...]] = {
    "statements": (
        "assert",
        "assignment",
        "augassign",
        "break",
        "continue",
        "del",
        "global",
        "import",
        "nonlocal",
        "pass",
        "raise",
        "return",
        "yield",
        "compound",
        "if",
        "else",
        "while",
        "for",
        "try",
        "with",
        "function",
        "class",
        "async",
    ),
    "expressions": (
        "atom-identifiers",
        "atom-literals",
        "attribute-references",
        "await",
        "binary",
        "bitwise",
        "booleans",
        "calls",
        "comparisons",
        "conversions",
        "exprlists",
        "in",
        "lambda",
        "lists",
        "dict",
        "operator-summary",
        "power",
        "shifting",
        "slicings",
        "subscriptions",
        "unary",
    ),
    "data model": (
        "objects",
        "types",
        "specialnames",
        "customization",
        "attribute-access",
        "callable-types",
        "context-managers",
        "numeric-types",
        "sequence-types",
    ),
    "built-in types": (
        "typesseq",
        "typesseq-mutable",
        "string-methods",
        "typesmapping",
        "truth",
        "typesfunctions",
        "typesmethods",
        "typesmodules",
        "bltin-code-objects",
        "bltin-ellipsis-object",
        "bltin-null-object",
        "bltin-type-objects",
        "specialattrs",
        "formatstrings",
    ),
    "execution model": ("execmodel", "naming", "dynamic-features", "exceptions"),
}

_UNDERLINE = re.compile(r"^([*=\-~^#+\"'])\1{2,}$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"(*]*[A-Z])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Dr.")
_WORD = re.compile(r"^[(\"'*]*[A-Za-z][A-Za-z’'\-]*[)\"'*]*[,.;:?!)]*$")


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
