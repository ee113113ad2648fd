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

Short queries against long documents (``builtin:python-queries``)
------------------------------------------------------------------
Next-sentence pairs have similar lengths on both sides; real retrieval pairs do not. :func:`python_query_pairs`
pairs a short query (about 10 tokens) with a paragraph-long document (about 64 tokens and more), from two
sources on every Python install: the docstrings of the standard library (read with ``ast``, nothing
imported), whose one-line summary is the query and whose following prose paragraphs are the document
(``"Return the value of the header matching *name*."`` against what the function does when several or none
match), and the reference above, where a paragraph's short first sentence is the query and the rest of the
paragraph the document. Queries that occur twice are dropped (ambiguous), documents are cut at 120 words.
With Python 3.11 this gives about 1,300 pairs; building them takes a few seconds (cached per process).
"""

from __future__ import annotations

import ast
import itertools
import random
import re
import sysconfig
import textwrap
from functools import lru_cache
from pathlib import Path

try:
    from pydoc_data.topics import topics as PYDOC_TOPICS
except ImportError:  # pragma: no cover - stripped-down Pythons (some distributions split pydoc_data off)
    PYDOC_TOPICS = None

__all__ = [
    "BUILTIN",
    "BUILTIN_QUERIES",
    "PYTHON_DOCS_CLASSES",
    "python_docs_pairs",
    "python_docs_paragraphs",
    "python_docs_sentences",
    "python_query_pairs",
]

BUILTIN = "builtin:python-docs"
BUILTIN_QUERIES = "builtin:python-queries"

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
    if PYDOC_TOPICS is None:  # pragma: no cover - stripped-down Pythons only
        raise RuntimeError(
            f"data.source={BUILTIN!r}: this Python lacks pydoc_data (its documentation topics); "
            "use a local file or a Hugging Face dataset as data.source"
        )
    topics = PYDOC_TOPICS
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


# ------------------------------------------------------------------------------- short query, long document
_QUERY_WORDS = (3, 20)  # the query: a docstring summary or a paragraph's first sentence
_DOC_WORDS = (25, 120)  # the document: at least this many words of prose, cut at the upper bound
_SKIP_PARTS = {"test", "tests", "site-packages", "dist-packages", "idlelib", "lib2to3", "turtledemo", "__phello__"}


def _is_query(text: str) -> bool:
    words = text.split()
    if not _QUERY_WORDS[0] <= len(words) <= _QUERY_WORDS[1] or not text[0].isupper():
        return False
    return ">>>" not in text and sum(bool(_WORD.match(w)) for w in words) >= 0.6 * len(words)


def _document(paragraphs: list[str]) -> str | None:
    """The prose paragraphs from the start of ``paragraphs`` (stopping at code, lists or tables), joined and cut
    at the word limit; None when they are shorter than a document."""
    words: list[str] = []
    for block in paragraphs:
        lines = block.split("\n")
        if any(line[:1].isspace() or line.lstrip().startswith((">>>", "-", "*", "+", "|", "..")) for line in lines):
            break
        text = " ".join(block.split())
        if not text or sum(bool(_WORD.match(w)) for w in text.split()) < 0.6 * len(text.split()):
            break
        words.extend(text.split())
        if text.endswith("::") or len(words) >= _DOC_WORDS[1]:
            break
    if len(words) < _DOC_WORDS[0]:
        return None
    return " ".join(words[: _DOC_WORDS[1]]).removesuffix(":")


def _docstring_pairs() -> list[tuple[str, str]]:
    """(summary line, following prose) of every docstring of the standard library's Python files."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not _SKIP_PARTS & set(p.relative_to(root).parts))
    pairs = []
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            docstring = ast.get_docstring(node)
            if not docstring:
                continue
            blocks = [b for b in re.split(r"\n[ \t]*\n", docstring.strip()) if b.strip()]
            query = " ".join(blocks[0].split())
            if len(blocks) < 2 or not _is_query(query):
                continue
            document = _document(blocks[1:])
            if document:
                pairs.append((query, document))
    return pairs


def _reference_pairs() -> list[tuple[str, str]]:
    """(a paragraph's short first sentence, the rest of the paragraph) over the Python reference's topics."""
    pairs = []
    for paragraphs in python_docs_paragraphs().values():
        for paragraph in paragraphs:
            if len(paragraph) >= 2 and _is_query(paragraph[0]):
                rest = " ".join(paragraph[1:]).split()
                if len(rest) >= _DOC_WORDS[0]:
                    pairs.append((paragraph[0], " ".join(rest[: _DOC_WORDS[1]])))
    return pairs


@lru_cache(maxsize=2)
def _query_pairs(docstrings: bool) -> tuple[tuple[str, str], ...]:
    pairs = _reference_pairs() + (_docstring_pairs() if docstrings else [])
    queries: dict[str, int] = {}
    documents: dict[str, int] = {}
    for query, document in pairs:
        queries[query] = queries.get(query, 0) + 1
        documents[document] = documents.get(document, 0) + 1
    return tuple((q, d) for q, d in pairs if queries[q] == 1 and documents[d] == 1)


def python_query_pairs(max_pairs: int | None = None, seed: int = 0, docstrings: bool = True) -> list[tuple[str, str]]:
    """(short query, paragraph-long document) pairs from the standard library's docstrings and the Python
    reference (``builtin:python-queries``); every query and every document occurs once. ``docstrings=False``
    keeps the reference's pairs alone (about 250, built in a fraction of a second)."""
    pairs = list(_query_pairs(bool(docstrings)))
    if max_pairs is not None and len(pairs) > max_pairs:
        keep = sorted(random.Random(seed).sample(range(len(pairs)), int(max_pairs)))
        pairs = [pairs[i] for i in keep]
    return pairs
