"""Text data: the offline corpus built from the Python documentation, tables read from files or the Hugging
Face hub, and the classification and sentence-pair data modules."""

from mrl.data.text.corpus import (
    BUILTIN,
    BUILTIN_QUERIES,
    PYTHON_DOCS_CLASSES,
    python_docs_pairs,
    python_docs_paragraphs,
    python_docs_sentences,
    python_query_pairs,
)
from mrl.data.text.datamodules import TextClassificationDataModule, TextPairsDataModule
from mrl.data.text.tables import FILE_TYPES, read_table

__all__ = [
    "BUILTIN",
    "BUILTIN_QUERIES",
    "FILE_TYPES",
    "PYTHON_DOCS_CLASSES",
    "TextClassificationDataModule",
    "TextPairsDataModule",
    "python_docs_pairs",
    "python_docs_paragraphs",
    "python_docs_sentences",
    "python_query_pairs",
    "read_table",
]
