"""Adaptive classification by a confidence cascade over Matryoshka sizes (as in the MRL paper).

A sample is first classified with the smallest size. If that classifier's maximum softmax
probability reaches the size's threshold, its prediction is final; otherwise the sample moves on to
the next size. The largest size always predicts (its threshold is 0). The cost of a sample is the
size that predicted it; the *expected size* is the mean over samples.

Threshold rule (`fit_cascade_thresholds`), fitted on a held-out split only:

    target = accuracy of the largest size on the held-out split - tolerance   (unless given)
    for each size but the last, smallest first, among held-out samples not yet accepted:
        t_i = the smallest confidence value t such that the samples with confidence >= t
              are classified correctly at a rate >= target;
        if no such t exists, t_i = +inf (the size never predicts).

Taking the smallest qualifying t accepts the most samples the precision bound allows. A larger
``tolerance`` gives lower thresholds, smaller expected size and (usually) lower accuracy;
`cascade_curve` sweeps tolerances to trace that trade-off, fitting on one split and measuring on
another.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

DEFAULT_TOLERANCES = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 1.0)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def as_probs(scores: np.ndarray, from_logits: bool | None = None) -> np.ndarray:
    """``[G, N, C]`` probabilities from probabilities or logits.

    ``from_logits=None`` decides by content: values in [0, 1] whose rows sum to 1 (within 1e-3) are
    taken as probabilities, anything else as logits.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 3:
        raise ValueError(f"expected per-size scores of shape [G, N, C], got {s.shape}")
    if from_logits is None:
        from_logits = not (s.min() >= 0.0 and s.max() <= 1.0 and np.allclose(s.sum(-1), 1.0, atol=1e-3))
    return softmax(s) if from_logits else s


def _check(probs: np.ndarray, sizes: Sequence[int]) -> list[int]:
    sizes = [int(m) for m in sizes]
    if probs.shape[0] != len(sizes):
        raise ValueError(f"probs has {probs.shape[0]} sizes but sizes lists {len(sizes)}: {sizes}")
    if any(b <= a for a, b in pairwise(sizes)):
        raise ValueError(f"sizes must strictly increase, got {sizes}")
    return sizes


def fit_cascade_thresholds(
    probs_holdout: np.ndarray,
    labels_holdout: np.ndarray,
    sizes: Sequence[int],
    target: float | None = None,
    tolerance: float = 0.0,
    from_logits: bool | None = None,
) -> np.ndarray:
    """Per-size confidence thresholds ``[G]`` (last one 0.0, ``inf`` = never predict at that size).

    ``target`` is the required accuracy of the samples each size accepts; by default the held-out
    accuracy of the largest size minus ``tolerance``. Uses only the held-out arrays passed in.
    """
    p = as_probs(probs_holdout, from_logits)
    sizes = _check(p, sizes)
    y = np.asarray(labels_holdout).reshape(-1)
    if p.shape[1] != len(y):
        raise ValueError(f"probs_holdout has {p.shape[1]} samples but labels_holdout has {len(y)}")
    conf = p.max(axis=2)
    correct = p.argmax(axis=2) == y[None, :]
    if target is None:
        target = float(correct[-1].mean()) - float(tolerance)

    thresholds = np.zeros(len(sizes), dtype=np.float64)
    remaining = np.ones(len(y), dtype=bool)
    for g in range(len(sizes) - 1):
        c = conf[g, remaining]
        ok = correct[g, remaining]
        t = np.inf
        if c.size:
            order = np.argsort(-c, kind="stable")
            c_sorted, ok_sorted = c[order], ok[order]
            # Accepting every sample with conf >= c_sorted[j] accepts a prefix that ends at the last
            # index holding that value; evaluate precision only at those tie-group ends.
            ends = np.r_[np.nonzero(np.diff(c_sorted))[0], c_sorted.size - 1]
            prec = np.cumsum(ok_sorted)[ends] / (ends + 1.0)
            good = np.nonzero(prec >= target - 1e-12)[0]
            if good.size:
                t = float(c_sorted[ends[good[-1]]])
        thresholds[g] = t
        remaining &= ~(conf[g] >= t)
    thresholds[-1] = 0.0
    return thresholds


def run_cascade(
    probs: np.ndarray, thresholds: Sequence[float], sizes: Sequence[int], from_logits: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a cascade: ``(predictions[N], used_size[N])``. The last size always predicts."""
    p = as_probs(probs, from_logits)
    sizes = _check(p, sizes)
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.shape != (len(sizes),):
        raise ValueError(f"thresholds must have one value per size ({len(sizes)}), got shape {thr.shape}")
    conf = p.max(axis=2)
    pred_all = p.argmax(axis=2)
    n = p.shape[1]
    preds = pred_all[-1].copy()
    used = np.full(n, sizes[-1], dtype=np.int64)
    decided = np.zeros(n, dtype=bool)
    for g in range(len(sizes) - 1):
        take = ~decided & (conf[g] >= thr[g])
        preds[take] = pred_all[g, take]
        used[take] = sizes[g]
        decided |= take
    return preds, used


def cascade_curve(
    probs_fit: np.ndarray,
    labels_fit: np.ndarray,
    probs_eval: np.ndarray,
    labels_eval: np.ndarray,
    sizes: Sequence[int],
    tolerances: Sequence[float] = DEFAULT_TOLERANCES,
    from_logits: bool | None = None,
) -> list[dict]:
    """Accuracy vs expected size: fit thresholds on the fit split for each tolerance, evaluate on eval.

    Returns one dict per tolerance: ``tolerance``, ``target`` (fit-split accuracy bound),
    ``thresholds`` (list), ``expected_size`` (mean size used on eval), ``accuracy`` (eval top-1,
    a fraction) and ``size_fractions`` (share of eval samples decided at each size).
    """
    pf = as_probs(probs_fit, from_logits)
    pe = as_probs(probs_eval, from_logits)
    sizes = _check(pf, sizes)
    y_fit = np.asarray(labels_fit).reshape(-1)
    y_eval = np.asarray(labels_eval).reshape(-1)
    full_acc = float((pf[-1].argmax(-1) == y_fit).mean())
    rows = []
    for tol in tolerances:
        thr = fit_cascade_thresholds(pf, y_fit, sizes, tolerance=tol, from_logits=False)
        preds, used = run_cascade(pe, thr, sizes, from_logits=False)
        rows.append(
            {
                "tolerance": float(tol),
                "target": full_acc - float(tol),
                "thresholds": [float(t) for t in thr],
                "expected_size": float(used.mean()),
                "accuracy": float((preds == y_eval).mean()),
                "size_fractions": {m: float((used == m).mean()) for m in sizes},
            }
        )
    return rows
