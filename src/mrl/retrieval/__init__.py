"""Every search over Matryoshka embeddings: the funnel (shortlist with a short prefix, rerank with longer ones),
its flat, HNSW, IVF and binary first stages, exact kNN search on the CPU or a GPU."""

from mrl.retrieval.binary import binary_index, bit_center, threshold_bits
from mrl.retrieval.flat import SCAN_MAX_SIZE, FlatIndex, flat_search_blocks, prefix
from mrl.retrieval.funnel import (
    INDEXES,
    METRICS,
    PRUNE_HEAD_FRACTION,
    PRUNE_MIN_SIZE,
    AdaptiveRetriever,
    check_binary_funnel,
    exact_search,
    validate_funnel,
)
from mrl.retrieval.knn import knn_search
from mrl.retrieval.torch_search import torch_search

__all__ = [
    "INDEXES",
    "METRICS",
    "PRUNE_HEAD_FRACTION",
    "PRUNE_MIN_SIZE",
    "SCAN_MAX_SIZE",
    "AdaptiveRetriever",
    "FlatIndex",
    "binary_index",
    "bit_center",
    "check_binary_funnel",
    "exact_search",
    "flat_search_blocks",
    "knn_search",
    "prefix",
    "threshold_bits",
    "torch_search",
    "validate_funnel",
]
