"""Truncation / PCA / random-projection baselines, linear probes, and storage arithmetic."""

import numpy as np
import pytest

from mrl.evaluation.baselines import (
    baseline_curves,
    fit_pca,
    linear_probe_accuracy,
    random_projection,
    sample_rows,
    truncate,
)
from mrl.evaluation.storage import bytes_per_vector, dequantize_int8, quantize_int8, storage_table


def _low_rank(n, seed, d=96, r=4, classes=6, noise=3.0):
    """Labels from a rank-r latent spread over all d coordinates, plus isotropic noise."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(100).standard_normal((r, d)) * 3.0  # same mixing for every split
    centers = np.random.default_rng(101).standard_normal((classes, r)) * 1.5
    y = rng.integers(0, classes, n)
    z = centers[y] + 0.5 * rng.standard_normal((n, r))
    return (z @ mix + noise * rng.standard_normal((n, d))).astype(np.float32), y


def test_truncate_and_projections_shapes():
    x = np.arange(24, dtype=np.float64).reshape(3, 8)
    t = truncate(x, 3)
    assert t.shape == (3, 3) and t.dtype == np.float32 and t.flags.c_contiguous
    np.testing.assert_array_equal(t, x[:, :3])
    with pytest.raises(ValueError, match="size m"):
        truncate(x, 9)
    rp1, rp2 = random_projection(8, 4, seed=7), random_projection(8, 4, seed=7)
    np.testing.assert_array_equal(rp1.matrix, rp2.matrix)
    assert not np.array_equal(rp1.matrix, random_projection(8, 4, seed=8).matrix)
    assert rp1(x).shape == (3, 4)


def test_pca_recovers_principal_directions():
    rng = np.random.default_rng(0)
    # variance 9 along e0, 4 along e1, 1e-2 elsewhere
    x = rng.standard_normal((2000, 5)) * np.array([3.0, 2.0, 0.1, 0.1, 0.1])
    pca = fit_pca(x, 2)
    np.testing.assert_allclose(np.abs(pca.matrix), np.eye(5)[:, :2], atol=0.05)
    z = pca(x)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.var(0), [9.0, 4.0], rtol=0.1)
    # fewer samples than dimensions goes through the SVD path
    assert fit_pca(x[:3], 2).matrix.shape == (5, 2)


def test_pca_beats_random_projection_at_small_m():
    tr_x, tr_y = _low_rank(1500, 0)
    te_x, te_y = _low_rank(800, 1)
    m = 4
    pca = fit_pca(tr_x, m)
    rp = random_projection(tr_x.shape[1], m, seed=0)
    acc_pca = linear_probe_accuracy(pca(tr_x), tr_y, pca(te_x), te_y)["top1"]
    acc_rp = linear_probe_accuracy(rp(tr_x), tr_y, rp(te_x), te_y)["top1"]
    # measured 0.99 vs 0.82: PCA keeps the whole rank-4 signal and only 4 dims of noise, a random
    # projection keeps 4/96 of both, so its signal-to-noise ratio is ~24x worse
    assert acc_pca > acc_rp + 0.08, (acc_pca, acc_rp)


def test_linear_probe_top5_and_determinism():
    tr_x, tr_y = _low_rank(600, 0, d=32)
    te_x, te_y = _low_rank(300, 1, d=32)
    a = linear_probe_accuracy(tr_x, tr_y, te_x, te_y)
    b = linear_probe_accuracy(tr_x, tr_y, te_x, te_y)
    assert a == b
    assert set(a) == {"top1", "top5"} and a["top5"] >= a["top1"]
    two = linear_probe_accuracy(tr_x, tr_y % 2, te_x, te_y % 2)
    assert set(two) == {"top1"}


def test_baseline_curves_keys():
    tr_x, tr_y = _low_rank(400, 0, d=32)
    te_x, te_y = _low_rank(200, 1, d=32)
    out = baseline_curves(tr_x, tr_y, te_x, te_y, sizes=[2, 8], seed=0)
    for m in (2, 8):
        for name in ("trunc", "pca", "rp"):
            assert 0.0 <= out[f"probe_{name}_top1@{m}"] <= out[f"probe_{name}_top5@{m}"] <= 1.0


def test_baseline_curves_on_a_sample_of_the_training_rows():
    tr_x, tr_y = _low_rank(400, 0, d=32)
    te_x, te_y = _low_rank(200, 1, d=32)
    rows = sample_rows(400, 120, seed=3)
    assert len(rows) == len(set(rows.tolist())) == 120 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, sample_rows(400, 120, seed=3)) and sample_rows(400, 400) is None
    sampled = baseline_curves(tr_x, tr_y, te_x, te_y, sizes=[2, 8], seed=3, max_train=120)
    assert sampled == baseline_curves(tr_x[rows], tr_y[rows], te_x, te_y, sizes=[2, 8], seed=3)
    assert sampled != baseline_curves(tr_x, tr_y, te_x, te_y, sizes=[2, 8], seed=3)
    assert baseline_curves(tr_x, tr_y, te_x, te_y, sizes=[8], max_train=10_000) == baseline_curves(
        tr_x, tr_y, te_x, te_y, sizes=[8]
    )
    with pytest.raises(ValueError, match=r"^baselines\.max_train=0: use a positive number"):
        sample_rows(400, 0)


def test_storage_bytes():
    assert bytes_per_vector(2048, "fp32") == 8192
    assert bytes_per_vector(2048, np.float16) == 4096
    assert bytes_per_vector(16, "int8") == 16
    assert bytes_per_vector(12, "binary") == 2
    with pytest.raises(ValueError, match="dtype"):
        bytes_per_vector(8, "int4")
    rows = storage_table([16, 2048], n_vectors=1000)
    full = next(r for r in rows if r["size"] == 2048 and r["dtype"] == "fp32")
    small = next(r for r in rows if r["size"] == 16 and r["dtype"] == "int8")
    assert full["total_bytes"] == 8_192_000 and full["fraction_of_full"] == 1.0
    assert small["fraction_of_full"] == pytest.approx(16 / 8192)


def test_int8_roundtrip():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 16)).astype(np.float32)
    x[:, 3] = 0.0
    q, scale = quantize_int8(x)
    assert q.dtype == np.int8 and scale.shape == (16,)
    assert np.all(np.abs(dequantize_int8(q, scale) - x) <= scale / 2 + 1e-6)
    q2, _ = quantize_int8(x * 2, scale=scale)  # out-of-range values clip
    assert q2.min() >= -127 and q2.max() <= 127
