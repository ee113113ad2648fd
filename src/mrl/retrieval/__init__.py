"""Every search over Matryoshka embeddings: the funnel (shortlist with a short prefix, rerank with longer ones),
its flat, int8, HNSW, IVF and binary first stages, funnel tuning to a recall target, exact kNN search on the CPU
or a GPU, and (:mod:`mrl.retrieval.lancedb`, :mod:`mrl.retrieval.milvus`, each imported on its own) the funnel
served from a vector database."""

from mrl.retrieval.baselines import TunedBaseline
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
    first_stage_bytes,
    funnel_bytes,
    funnel_mflops,
    rerank,
    validate_funnel,
    write_rerank_memmap,
)
from mrl.retrieval.funnel_spec import FORMATS, Funnel
from mrl.retrieval.int8 import Int8Index, dequantize_int8, quantize_int8
from mrl.retrieval.nearest import knn_search
from mrl.retrieval.ties import order_ties
from mrl.retrieval.torch_search import torch_search
from mrl.retrieval.tune import TunedFunnel, TuneSettings, recall_against_exact, tune_funnel, tune_funnels

__all__ = [
    "FORMATS",
    "INDEXES",
    "METRICS",
    "PRUNE_HEAD_FRACTION",
    "PRUNE_MIN_SIZE",
    "SCAN_MAX_SIZE",
    "AdaptiveRetriever",
    "FlatIndex",
    "Funnel",
    "Int8Index",
    "TuneSettings",
    "TunedBaseline",
    "TunedFunnel",
    "binary_index",
    "bit_center",
    "check_binary_funnel",
    "dequantize_int8",
    "exact_search",
    "first_stage_bytes",
    "flat_search_blocks",
    "funnel_bytes",
    "funnel_mflops",
    "knn_search",
    "order_ties",
    "prefix",
    "quantize_int8",
    "recall_against_exact",
    "rerank",
    "threshold_bits",
    "torch_search",
    "tune_funnel",
    "tune_funnels",
    "validate_funnel",
    "write_rerank_memmap",
]
