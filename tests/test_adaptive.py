"""Confidence-cascade adaptive classification: hand examples and held-out-only fitting."""

import numpy as np
import pytest

from mrl.evaluation.adaptive import as_probs, cascade_curve, fit_cascade_thresholds, run_cascade, softmax


def _two_class_probs(conf, pred):
    """[N, 2] probabilities whose argmax is ``pred`` with max probability ``conf``."""
    conf, pred = np.asarray(conf, float), np.asarray(pred)
    p = np.empty((len(conf), 2))
    p[np.arange(len(conf)), pred] = conf
    p[np.arange(len(conf)), 1 - pred] = 1 - conf
    return p


def test_thresholds_hand_computed():
    y = np.array([0, 0, 0, 0, 0])
    # size 8: confidences 0.9 .. 0.5, correct on samples 0, 1, 3 (predicts class 1 on 2 and 4)
    small = _two_class_probs([0.9, 0.8, 0.7, 0.6, 0.55], [0, 0, 1, 0, 1])
    big = _two_class_probs([0.99] * 5, [0] * 5)  # size 64 is always right -> accuracy 1.0
    probs = np.stack([small, big])
    # sorted by confidence, running precision: 1, 1, 2/3, 3/4, 3/5
    # tolerance 0 -> target 1.0 -> largest accepted prefix with precision >= 1 ends at 0.8
    thr = fit_cascade_thresholds(probs, y, [8, 64])
    np.testing.assert_allclose(thr, [0.8, 0.0])
    # tolerance 0.25 -> target 0.75 -> prefixes 1, 2 and 4 qualify; the largest ends at 0.6
    thr = fit_cascade_thresholds(probs, y, [8, 64], tolerance=0.25)
    np.testing.assert_allclose(thr, [0.6, 0.0])
    # an explicit target overrides the tolerance
    np.testing.assert_allclose(fit_cascade_thresholds(probs, y, [8, 64], target=0.6), [0.55, 0.0])


def test_ties_cannot_be_split_and_never_accept_is_inf():
    y = np.array([0, 0])
    small = _two_class_probs([0.9, 0.9], [0, 1])  # same confidence, one right one wrong
    big = _two_class_probs([0.9, 0.9], [0, 0])
    thr = fit_cascade_thresholds(np.stack([small, big]), y, [4, 8])
    assert thr[0] == np.inf and thr[1] == 0.0
    preds, used = run_cascade(np.stack([small, big]), thr, [4, 8])
    assert used.tolist() == [8, 8] and preds.tolist() == [0, 0]


def test_run_cascade_hand_computed():
    s1 = _two_class_probs([0.95, 0.6, 0.7], [1, 0, 0])
    s2 = _two_class_probs([0.9, 0.85, 0.6], [0, 1, 1])
    s3 = _two_class_probs([0.5, 0.5, 0.9], [0, 0, 0])
    preds, used = run_cascade(np.stack([s1, s2, s3]), [0.9, 0.8, 0.0], [8, 16, 32])
    # sample 0 stops at 8 (0.95 >= 0.9); sample 1 at 16 (0.85 >= 0.8); sample 2 falls through to 32
    assert used.tolist() == [8, 16, 32]
    assert preds.tolist() == [1, 1, 0]


def _synthetic(n, seed, accs=(0.6, 0.75, 0.9), classes=10):
    """Per-size logits whose confidence is informative: correct samples get larger margins."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = []
    for acc in accs:
        correct = rng.random(n) < acc
        wrong = (y + rng.integers(1, classes, n)) % classes
        pred = np.where(correct, y, wrong)
        z = rng.normal(0, 1, (n, classes))
        z[np.arange(n), pred] += np.where(correct, rng.uniform(1, 6, n), rng.uniform(0.5, 3, n))
        logits.append(z)
    return np.stack(logits), y


def test_thresholds_depend_only_on_holdout():
    fit_p, fit_y = _synthetic(2000, 0)
    ev_p, ev_y = _synthetic(1000, 1)
    sizes = [8, 64, 2048]
    a = cascade_curve(fit_p, fit_y, ev_p, ev_y, sizes)
    shuffled = np.random.default_rng(5).permutation(ev_y)
    b = cascade_curve(fit_p, fit_y, ev_p, shuffled, sizes)
    assert [r["thresholds"] for r in a] == [r["thresholds"] for r in b]
    assert [r["expected_size"] for r in a] == [r["expected_size"] for r in b]
    assert a[0]["accuracy"] != b[0]["accuracy"]  # eval labels do change the measured accuracy
    thr = fit_cascade_thresholds(fit_p, fit_y, sizes)
    np.testing.assert_array_equal(thr, a[0]["thresholds"])


def test_cascade_curve_trades_size_for_accuracy():
    fit_p, fit_y = _synthetic(3000, 0)
    ev_p, ev_y = _synthetic(3000, 1)
    sizes = [8, 64, 2048]
    rows = cascade_curve(fit_p, fit_y, ev_p, ev_y, sizes, tolerances=(0.0, 0.05, 0.2, 1.0))
    full_acc = float((ev_p[-1].argmax(-1) == ev_y).mean())
    assert rows[0]["expected_size"] < 2048  # confident easy samples stop early
    assert rows[0]["accuracy"] >= full_acc - 0.03
    first_thr = [r["thresholds"][0] for r in rows]
    assert first_thr == sorted(first_thr, reverse=True)  # looser tolerance -> lower first threshold
    assert rows[-1]["expected_size"] == pytest.approx(8)  # tolerance 1 -> everything stops at 8
    for r in rows:
        assert sum(r["size_fractions"].values()) == pytest.approx(1.0)
        assert 0.0 <= r["accuracy"] <= 1.0


def test_logits_and_probs_give_same_thresholds():
    fit_p, fit_y = _synthetic(500, 2)
    sizes = [8, 64, 2048]
    np.testing.assert_allclose(as_probs(fit_p), softmax(fit_p))
    a = fit_cascade_thresholds(fit_p, fit_y, sizes)
    b = fit_cascade_thresholds(softmax(fit_p), fit_y, sizes)
    np.testing.assert_array_equal(a, b)


def test_errors():
    p = np.full((2, 3, 4), 0.25)
    with pytest.raises(ValueError, match="sizes"):
        fit_cascade_thresholds(p, np.zeros(3), [8, 16, 32])
    with pytest.raises(ValueError, match="increase"):
        run_cascade(p, [0.5, 0.0], [16, 8])
    with pytest.raises(ValueError, match="thresholds"):
        run_cascade(p, [0.5], [8, 16])
