"""Binary codes of a prefix: one bit per coordinate, set where it lies above the database's mean, searched by
Hamming distance (FAISS ``IndexBinaryFlat``: XOR + popcount). ``m / 8`` bytes per item, rounded up: 32x less
than the float32 prefix."""

from __future__ import annotations

import numpy as np

from mrl.retrieval.flat import faiss, require_faiss

__all__ = ["binary_index", "bit_center", "threshold_bits"]


def threshold_bits(x: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """``[N, m]`` floats -> ``[N, ceil(m / 8)]`` uint8 codes: bit j of a row is set where coordinate j exceeds
    ``center[j]`` (0 without a center).

    The last byte is padded with zero bits, which add nothing to the Hamming distance between two codes."""
    x = np.asarray(x)
    return np.packbits(x > (0 if center is None else center), axis=1, bitorder="little")


def bit_center(x: np.ndarray) -> np.ndarray:
    """The per-coordinate thresholds of `threshold_bits` fitted on a database: its mean. Embeddings read off a
    ReLU network (a ResNet's pooled features) are never negative, so bits taken at 0 would be nearly all
    ones; bits taken at the mean split every coordinate where the data lies (on the digits' 8-d MRL
    prefixes, 1-NN accuracy 96.7% against 95.3% at 0)."""
    return np.asarray(x, dtype=np.float64).mean(axis=0).astype(np.float32)


def binary_index(m: int):
    """An empty FAISS ``IndexBinaryFlat`` for the `threshold_bits` codes of ``m`` coordinates (whole bytes)."""
    require_faiss()
    return faiss.IndexBinaryFlat(8 * -(-int(m) // 8))
