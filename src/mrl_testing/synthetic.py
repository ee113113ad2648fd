"""Synthetic embeddings that behave like Matryoshka ones, for tests and benchmarks.

`make_mrl_like` draws labelled vectors whose class information is front-loaded: the class signal
in coordinate ``j`` has standard deviation ``separation / (1 + j / scale)`` while the per-sample
noise has standard deviation ``(1 + j / scale) ** -0.5``. The signal-to-noise ratio therefore
falls with the coordinate index, so a short prefix already separates the classes and every
further coordinate adds a little less (the accuracy-vs-size curve rises and saturates, as for a
trained MRL model), and the variance of the coordinates decays, as in a real MRL embedding.
"""

from __future__ import annotations

import numpy as np


def coordinate_profiles(
    dim: int, scale: float = 4.0, separation: float = 1.0, decay: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate standard deviations ``(signal, noise)`` used by `make_mrl_like`."""
    if dim <= 0:
        raise ValueError(f"dim must be positive, got {dim}")
    t = 1.0 + np.arange(dim, dtype=np.float64) / scale
    return (separation * t ** -(decay + 0.5)).astype(np.float32), (t**-decay).astype(np.float32)


def make_mrl_like(
    n: int,
    dim: int,
    n_classes: int = 100,
    seed: int = 0,
    separation: float = 2.5,
    scale: float = 4.0,
    decay: float = 1.0,
    centers_seed: int | None = None,
    chunk: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` labelled float32 vectors of width ``dim`` with front-loaded class information.

    Returns ``(x[n, dim] float32, labels[n] int64)``. Labels are uniform over ``n_classes``.
    Class centres come from ``centers_seed`` (default: ``seed``), so two calls with the same
    ``centers_seed`` and different ``seed`` give a database and a query set of the same classes.
    Generation is chunked, so peak memory stays close to the size of the output.
    """
    if n <= 0 or n_classes <= 0:
        raise ValueError(f"n and n_classes must be positive, got n={n}, n_classes={n_classes}")
    signal, noise = coordinate_profiles(dim, scale=scale, separation=separation, decay=decay)
    crng = np.random.default_rng(seed if centers_seed is None else centers_seed)
    centers = crng.standard_normal((n_classes, dim), dtype=np.float32) * signal
    rng = np.random.default_rng([seed, 1])
    labels = rng.integers(0, n_classes, size=n, dtype=np.int64)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        block *= noise
        block += centers[labels[start:stop]]
        x[start:stop] = block
    return x, labels


def make_mrl_split(
    n_db: int, n_queries: int, dim: int, n_classes: int = 100, seed: int = 0, **kwargs
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A database and a query set drawn around the same class centres: ``(db, db_y, q, q_y)``."""
    db, db_y = make_mrl_like(n_db, dim, n_classes, seed=seed, centers_seed=seed, **kwargs)
    q, q_y = make_mrl_like(n_queries, dim, n_classes, seed=seed + 10_000, centers_seed=seed, **kwargs)
    return db, db_y, q, q_y


def write_npz(path, x: np.ndarray, labels: np.ndarray | None, checkpoint: str = "model.ckpt"):
    """``x`` saved as ``make eval`` saves embeddings (fp32, with the meta a database load checks), at ``path``."""
    from mrl.evaluation.embeddings import save_embeddings

    meta = {"checkpoint": checkpoint, "embed_dim": x.shape[1], "count": len(x)}
    return save_embeddings(path, {"embeddings": x, "labels": labels}, meta, "fp32")
