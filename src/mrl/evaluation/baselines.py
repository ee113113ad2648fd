"""Baselines for a standard (non-Matryoshka) model's features at reduced sizes, as compared in the MRL paper.

Three ways to get an ``m``-dimensional feature from a ``d``-dimensional one: keep the first ``m``
coordinates (`truncate`), project onto the top-``m`` principal directions of the training features
(`fit_pca`, the paper's SVD baseline), or a seeded Gaussian random projection
(`random_projection`). Each is scored by refitting a linear probe on the reduced training features
(`linear_probe_accuracy`).

The probe is scikit-learn's multinomial ``LogisticRegression`` with the L-BFGS solver on standardised
features: deterministic for a given input, no learning-rate schedule to tune, and fast at the sizes
these baselines are run at (thousands of samples, up to a few thousand dimensions).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


class LinearProjection:
    """``x -> (x - mean) @ matrix`` as a callable; ``matrix`` is ``[d_in, m]``."""

    def __init__(self, matrix: np.ndarray, mean: np.ndarray | None = None) -> None:
        self.matrix = np.asarray(matrix, dtype=np.float32)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.matrix.shape[0]:
            raise ValueError(f"expected inputs of width {self.matrix.shape[0]}, got {x.shape[-1]}")
        if self.mean is not None:
            x = x - self.mean
        return x @ self.matrix


def _check_m(m: int, d: int) -> int:
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= d:
        raise ValueError(f"size m must be an integer in [1, {d}], got {m!r}")
    return int(m)


def truncate(x: np.ndarray, m: int) -> np.ndarray:
    """The first ``m`` coordinates, as a contiguous float32 array."""
    x = np.asarray(x)
    m = _check_m(m, x.shape[-1])
    return np.ascontiguousarray(x[..., :m], dtype=np.float32)


def fit_pca(train_x: np.ndarray, m: int, center: bool = True) -> LinearProjection:
    """Projection onto the top-``m`` principal directions of ``train_x`` (an SVD of the centred data).

    Computed from the ``d x d`` covariance in float64 (``eigh``) when there are more samples than
    dimensions, else from the thin SVD of the centred data. The sign of each direction is fixed so
    its largest-magnitude entry is positive, which makes the result deterministic.
    """
    x = np.asarray(train_x, dtype=np.float64)
    n, d = x.shape
    m = _check_m(m, d)
    mean = x.mean(axis=0) if center else np.zeros(d)
    xc = x - mean
    if n > d:
        evals, evecs = np.linalg.eigh(xc.T @ xc)
        comps = evecs[:, np.argsort(evals)[::-1][:m]]
    else:
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        comps = vt[:m].T
        if comps.shape[1] < m:  # fewer samples than m: pad with zero directions
            comps = np.pad(comps, ((0, 0), (0, m - comps.shape[1])))
    flip = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(comps.shape[1])])
    comps = comps * np.where(flip == 0, 1.0, flip)
    return LinearProjection(comps, mean if center else None)


def random_projection(d_in: int, m: int, seed: int = 0) -> LinearProjection:
    """Gaussian random projection ``[d_in, m]`` with i.i.d. ``N(0, 1/m)`` entries, seeded."""
    m = _check_m(m, int(d_in))
    rng = np.random.default_rng(seed)
    return LinearProjection(rng.standard_normal((int(d_in), m)) / np.sqrt(m))


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    c: float = 1.0,
    max_iter: int = 300,
    standardize: bool = True,
) -> dict[str, float]:
    """Fit a multinomial logistic-regression probe on train, return ``{"top1", ["top5"]}`` on test.

    ``top5`` is reported when there are at least 5 classes. Test samples whose label never appears
    in train count as errors. Accuracies are fractions in [0, 1].
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xtr = np.asarray(train_x, dtype=np.float64)
    xte = np.asarray(test_x, dtype=np.float64)
    ytr = np.asarray(train_y).reshape(-1)
    yte = np.asarray(test_y).reshape(-1)
    if standardize:
        scaler = StandardScaler().fit(xtr)
        xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    clf = LogisticRegression(C=c, max_iter=max_iter, solver="lbfgs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(xtr, ytr)
    scores = clf.decision_function(xte)
    classes = clf.classes_
    if scores.ndim == 1:  # binary: column of the positive class
        scores = np.stack([-scores, scores], axis=1)
    out = {"top1": float((classes[scores.argmax(axis=1)] == yte).mean())}
    if len(classes) >= 5:
        top5 = classes[np.argsort(-scores, axis=1)[:, :5]]
        out["top5"] = float((top5 == yte[:, None]).any(axis=1).mean())
    return out


def sample_rows(n: int, limit: int | None, seed: int = 0) -> np.ndarray | None:
    """Sorted indices of ``limit`` of ``n`` rows drawn without replacement (None: all rows are kept)."""
    if limit is None or limit >= n:
        return None
    if limit < 1:
        raise ValueError(f"baselines.max_train={limit}: use a positive number of training samples or null")
    return np.sort(np.random.default_rng(seed).choice(n, size=int(limit), replace=False))


def baseline_curves(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    sizes: Sequence[int],
    seed: int = 0,
    max_train: int | None = None,
    **probe_kwargs,
) -> dict[str, float]:
    """Probe accuracy of truncation, PCA and random projection at each size.

    Keys: ``probe_trunc_top1@{m}``, ``probe_pca_top1@{m}``, ``probe_rp_top1@{m}`` (and the matching
    ``top5`` keys when there are >= 5 classes). PCA is fitted on ``train_x`` only; the random
    projection for size ``m`` uses ``seed``. ``max_train`` fits PCA and the probes on that many training
    rows, drawn with ``seed``: 27 probes on ImageNet's 1.28M x 2048 features would take days.
    """
    rows = sample_rows(len(train_x), max_train, seed)
    if rows is not None:
        train_x, train_y = np.asarray(train_x)[rows], np.asarray(train_y)[rows]
    train_x = np.asarray(train_x, dtype=np.float32)
    test_x = np.asarray(test_x, dtype=np.float32)
    d = train_x.shape[1]
    sizes = [_check_m(m, d) for m in sizes]
    # Principal directions are nested: decompose once at the largest size, slice for the others.
    full_pca = fit_pca(train_x, max(sizes))
    out: dict[str, float] = {}
    for m in sizes:
        pca = LinearProjection(full_pca.matrix[:, :m], full_pca.mean)
        rp = random_projection(d, m, seed=seed)
        for name, f in (("trunc", lambda x, m=m: truncate(x, m)), ("pca", pca), ("rp", rp)):
            acc = linear_probe_accuracy(f(train_x), train_y, f(test_x), test_y, **probe_kwargs)
            for key, value in acc.items():
                out[f"probe_{name}_{key}@{m}"] = value
    return out
