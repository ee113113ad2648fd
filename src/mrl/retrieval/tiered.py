"""Opening the on-disk rerank vectors of a memory-tiered funnel (`AdaptiveRetriever`'s ``rerank_arrays``).

A memory-tiered funnel keeps its first stage in RAM and reads the full vectors from a file for the shortlist only: a
few rows per query, scattered over gigabytes. Read through a plain memory map, each page fault on a file that is not
in the page cache also reads ahead around the faulted page (``/sys/block/<dev>/queue/read_ahead_kb``, up to
megabytes), bytes the query never uses. `open_rerank_memmap` maps the ``.npy`` file written by
`mrl.retrieval.funnel.write_rerank_memmap` read-only and, with ``random_access`` (the default), advises the kernel
``MADV_RANDOM`` on the mapping, so that a fault reads only the page it needs. Measured at 1,000,000 x 1024 from a
cold page cache (benchmarks/tiered_1m.py, RESULTS.md; medians of four runs each): one query at a time read 38 MiB
from disk and took 23.7 ms without the advice, 0.35 MiB and 5.6 ms with it; in a batch of 450, 5.2 against 2.8 ms a
query. Warm, or from the page cache, it costs nothing.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

from mrl.common.errors import InputError

__all__ = ["advise_random_access", "open_rerank_memmap"]


def _npy_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, offset of the data)`` of an ``.npy`` file."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except ValueError as error:
            raise InputError("path", path, f"not a .npy file ({error})") from None
        return shape, fortran, dtype, f.tell()


def open_rerank_memmap(
    path: str | Path, shape: tuple[int, int] | None = None, random_access: bool = True
) -> np.ndarray:
    """The float32 ``[N, D]`` array of the ``.npy`` file at ``path``, memory-mapped read-only (nothing read until a
    row is used), for `AdaptiveRetriever`'s ``rerank_arrays``. ``shape``: the ``(N, D)`` the caller expects (checked
    when given). ``random_access``: advise ``MADV_RANDOM`` on the mapping (no read-ahead around a faulted page);
    False keeps the kernel's default (``MADV_NORMAL``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("path", path, "no such file (write it with mrl.retrieval.funnel.write_rerank_memmap)")
    found, fortran, dtype, offset = _npy_header(path)
    if len(found) != 2 or dtype != np.float32 or fortran:
        raise InputError(
            "path", path, f"holds a {dtype} array of shape {found}{' (Fortran order)' if fortran else ''}: expected "
            "a C-ordered float32 [N, D] array (write_rerank_memmap writes one)"
        )  # fmt: skip
    if shape is not None and tuple(found) != tuple(shape):
        raise InputError("path", path, f"holds shape {tuple(found)}: expected {tuple(shape)}")
    if found[0] * found[1] == 0:
        raise InputError("path", path, f"holds an empty array of shape {tuple(found)}")
    if path.stat().st_size < offset + 4 * found[0] * found[1]:
        raise InputError("path", path, f"is {path.stat().st_size} bytes, short of its shape {tuple(found)}: truncated")
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # the mapping outlives the descriptor
    array = np.ndarray(found, dtype=np.float32, buffer=mapped, offset=offset, order="C")
    return advise_random_access(array) if random_access else array


def advise_random_access(array: np.ndarray) -> np.ndarray:
    """``array`` (a ``np.memmap``, or `open_rerank_memmap`'s array: its ``base`` is the ``mmap``) with
    ``MADV_RANDOM`` advised on its whole mapping."""
    mapped = array.base
    if not isinstance(mapped, mmap.mmap):
        raise ValueError(f"array.base={type(mapped).__name__}: not a memory map (np.load(path, mmap_mode='r') is one)")
    mapped.madvise(mmap.MADV_RANDOM)
    return array
