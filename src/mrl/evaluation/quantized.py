"""Retrieval from compressed prefixes: every size stored as fp16, int8 or binary codes and searched as such.

Matryoshka sizes and quantisation multiply: a 64-d prefix in int8 is 64 bytes, 32x less than the 512-d
vector in fp32. This measures what each combination keeps. At each size m the prefixes are re-normalised
(as cosine search uses them) and then encoded:

* ``fp16``: cast to half precision.
* ``int8``: symmetric per-dimension scales fitted on the database prefixes (:func:`quantize_int8`); queries
  are quantised with the database's scales. Searched by the inner product of the dequantised vectors,
  which is what an int8 engine computes with the scales folded into the query.
* ``binary``: one bit per coordinate, set where it is above the database's mean of that coordinate
  (:func:`mrl.retrieval.bit_center`; queries use the database's thresholds), packed 8 to a byte and
  searched by Hamming distance with FAISS's ``IndexBinaryFlat`` (XOR + popcount, as a binary index serves
  them). At small m many database items share a distance, and which of them comes first is up to the
  search. `encode` also gives the codes as +-1 vectors, whose inner products ``m - 2 * hamming`` rank the
  same way.

The metrics are those of :func:`mrl.evaluation.knn_metrics.knn_metrics` (1-NN accuracy and mAP@k), keyed
``{codec}_knn_top1@{m}`` and ``{codec}_map@{k}@{m}``; as there, a query whose float prefix is all zeros is a miss,
and equal scores or distances go to the lowest database id.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrl.core.retrieval_metrics import average_precision_at_k, relevance_matrix, zero_prefix_rows
from mrl.evaluation.knn_metrics import knn_metrics
from mrl.retrieval import binary_index, bit_center, order_ties, prefix, quantize_int8, threshold_bits

CODECS = ("fp16", "int8", "binary")


def check_codecs(codecs: Sequence[str] | None) -> list[str]:
    codecs = list(codecs or [])
    bad = [c for c in codecs if c not in CODECS]
    if bad:
        raise ValueError(f"quantized={codecs}: unknown {bad[0]!r}; use a list of {', '.join(CODECS)} (or [] for none)")
    return codecs


def encode(db: np.ndarray, queries: np.ndarray, size: int, codec: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``size``-prefixes of ``db`` and ``queries``, re-normalised, encoded with ``codec`` and decoded back
    to float32 vectors whose inner products rank as the codes do."""
    check_codecs([codec])
    d, q = prefix(db, size, True), prefix(queries, size, True)
    if codec == "fp16":
        return d.astype(np.float16).astype(np.float32), q.astype(np.float16).astype(np.float32)
    if codec == "int8":
        d_codes, scale = quantize_int8(d)
        q_codes, _ = quantize_int8(q, scale)
        return d_codes.astype(np.float32) * scale, q_codes.astype(np.float32) * scale
    center = bit_center(d)
    return np.where(d > center, 1.0, -1.0).astype(np.float32), np.where(q > center, 1.0, -1.0).astype(np.float32)


def quantized_knn_metrics(
    db: np.ndarray,
    db_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    sizes: Sequence[int],
    codecs: Sequence[str] = CODECS,
    map_k: int = 10,
    device=None,
) -> dict[str, float]:
    """1-NN accuracy and mAP@``map_k`` at every size for every codec (see the module docstring); ``device``:
    where fp16 and int8 codes are searched (see :func:`mrl.retrieval.nearest.knn_search`)."""
    out: dict[str, float] = {}
    for codec in check_codecs(codecs):
        for m in sizes:
            if codec == "binary":
                out.update(binary_knn_metrics(db, db_labels, queries, query_labels, int(m), map_k))
                continue
            d, q = encode(db, queries, int(m), codec)
            q[zero_prefix_rows(queries, int(m))] = 0  # no information in the float prefix: a miss
            found = knn_metrics(d, db_labels, q, query_labels, [int(m)], metric="ip", ks=(), map_k=map_k, device=device)
            out.update({f"{codec}_{key}": value for key, value in found.items()})
    return out


def binary_knn_metrics(
    db: np.ndarray, db_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray, size: int, map_k: int = 10
) -> dict[str, float]:
    """``binary_knn_top1@size`` and ``binary_map@{map_k}@size`` from the packed bits of the re-normalised
    prefixes (set above the database's mean), searched by Hamming distance."""
    d, q = prefix(db, size, True), prefix(queries, size, True)
    center = bit_center(d)
    index = binary_index(size)
    index.add(threshold_bits(d, center))
    distances, ids = index.search(threshold_bits(q, center), min(max(1, map_k), len(db)))
    _, ids = order_ties(distances, ids, descending=False)
    rel = relevance_matrix(ids, np.asarray(db_labels).reshape(-1), np.asarray(query_labels).reshape(-1))
    rel[zero_prefix_rows(queries, size)] = False  # no information in the float prefix: a miss
    return {
        f"binary_knn_top1@{size}": float(rel[:, 0].mean()),
        f"binary_map@{map_k}@{size}": float(average_precision_at_k(rel, k=map_k).mean()),
    }
