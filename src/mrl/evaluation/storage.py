"""Storage cost of Matryoshka prefixes; the int8 codec that shows compressed retrieval is
:mod:`mrl.retrieval.int8`'s (`quantize_int8`, `dequantize_int8`), the one the int8 first stage searches.

Bytes per vector are the raw payload: ``m * 4`` (fp32), ``m * 2`` (fp16), ``m`` (int8; the int8
scales are one float per dimension for the whole collection, not per vector, so they are not
counted per vector), ``ceil(m / 8)`` (binary, one bit per dimension). No index overhead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrl.retrieval.int8 import dequantize_int8, quantize_int8

__all__ = ["bytes_per_vector", "dequantize_int8", "quantize_int8", "storage_table"]

_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "binary": 1}
_ALIASES = {
    "float32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "float": "fp32",
    "bit": "binary",
    "ubinary": "binary",
}


def _dtype_name(dtype) -> str:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype.lower()
    name = _ALIASES.get(name, name)
    if name not in _BITS:
        raise ValueError(f"dtype must be one of {sorted(_BITS)} (or float32/float16), got {dtype!r}")
    return name


def bytes_per_vector(m: int, dtype="fp32") -> int:
    """Bytes to store one ``m``-dimensional vector in ``dtype`` (fp32, fp16, int8, binary)."""
    if m < 1:
        raise ValueError(f"size m must be positive, got {m}")
    bits = _BITS[_dtype_name(dtype)] * int(m)
    return (bits + 7) // 8


def storage_table(sizes: Sequence[int], n_vectors: int, dtypes: Sequence[str] = ("fp32", "fp16", "int8")) -> list[dict]:
    """One row per (size, dtype): ``size``, ``dtype``, ``bytes_per_vector``, ``total_bytes``,
    ``total_mib`` and ``fraction_of_full`` (relative to the largest size in fp32)."""
    full = bytes_per_vector(max(sizes), "fp32") * n_vectors
    rows = []
    for m in sizes:
        for dt in dtypes:
            b = bytes_per_vector(m, dt)
            rows.append(
                {
                    "size": int(m),
                    "dtype": _dtype_name(dt),
                    "bytes_per_vector": b,
                    "total_bytes": b * int(n_vectors),
                    "total_mib": b * int(n_vectors) / 2**20,
                    "fraction_of_full": b * int(n_vectors) / full,
                }
            )
    return rows
