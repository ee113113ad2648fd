"""Retrieval from fp16, int8 and binary prefixes, checked against the codes computed by hand in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from mrl.evaluation.knn_metrics import knn_metrics
from mrl.evaluation.quantized import check_codecs, encode, quantized_knn_metrics
from mrl.retrieval import knn_search


def _clusters(n, dim=32, classes=5, seed=0):
    """Points around five fixed centres (the same for every seed), with their centre as label."""
    centers = np.random.default_rng(123).standard_normal((classes, dim))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    return (centers[labels] + 0.8 * rng.standard_normal((n, dim))).astype(np.float32), labels


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_fp16_and_int8_codes():
    db, _ = _clusters(200)
    q, _ = _clusters(20, seed=1)
    q[0, 0] = 50.0  # far outside the database's range in its first coordinate
    d16, q16 = encode(db, q, 8, "fp16")
    np.testing.assert_array_equal(d16, _unit(db[:, :8]).astype(np.float16).astype(np.float32))
    d8, q8 = encode(db, q, 8, "int8")
    scale = np.abs(_unit(db[:, :8])).max(0) / 127  # one scale per dimension, from the database
    assert np.abs(d8 - _unit(db[:, :8])).max() <= scale.max() / 2 + 1e-7
    np.testing.assert_allclose(d8 / scale, np.rint(d8 / scale), atol=1e-4)  # on the int8 grid
    assert q8[0, 0] == pytest.approx(127 * scale[0])  # a query is clipped at the database's range
    inside = (np.abs(_unit(q[1:, :8])) <= 127 * scale).all(1)  # queries within the database's range
    assert inside.sum() >= 10
    assert np.abs(q8[1:][inside] - _unit(q[1:, :8])[inside]).max() <= scale.max() / 2 + 1e-7


def test_binary_search_finds_the_nearest_in_hamming_distance():
    db, db_labels = _clusters(300, dim=64)
    q, q_labels = _clusters(40, dim=64, seed=2)
    right = db_labels[None, :] == q_labels[:, None]
    for m in (24, 20):  # 3 whole bytes; 20 bits padded to 3 bytes with zero bits on both sides
        center = _unit(db[:, :m]).mean(0)  # a bit is set above the database's mean of its coordinate
        bits_db, bits_q = _unit(db[:, :m]) > center, _unit(q[:, :m]) > center
        hamming = (bits_q[:, None, :] != bits_db[None, :, :]).sum(-1)  # [Q, N], counted bit by bit
        nearest = hamming == hamming.min(1, keepdims=True)
        surely = (nearest & right).sum(1) == nearest.sum(1)  # every tied nearest item has the query's label
        maybe = (nearest & right).any(1)
        found = quantized_knn_metrics(db, db_labels, q, q_labels, [m], ["binary"], map_k=5)[f"binary_knn_top1@{m}"]
        assert surely.mean() <= found <= maybe.mean(), m
        assert (maybe & ~surely).sum() <= 10, m  # ties leave the outcome open for few queries
    d, qq = encode(db, q, 20, "binary")
    assert set(np.unique(d)) == {-1.0, 1.0}
    _, ids = knn_search(d, qq, 20, 1, metric="ip")
    assert (hamming[np.arange(40), ids[:, 0]] == hamming.min(1)).all()


def test_bits_of_features_that_are_never_negative_split_at_the_mean():
    """A ResNet's pooled features come out of a ReLU: bits taken at 0 would all be ones."""
    db, db_labels = _clusters(400)
    q, q_labels = _clusters(60, seed=3)
    shift = 1.0 - min(db.min(), q.min())
    db, q = db + shift, q + shift  # every coordinate positive
    d, _ = encode(db, q, 32, "binary")
    assert 0.3 < (d > 0).mean() < 0.7  # bits split the data, they are not all ones
    metrics = quantized_knn_metrics(db, db_labels, q, q_labels, [32], ["binary"])
    full = knn_metrics(db, db_labels, q, q_labels, [32], ks=())
    assert metrics["binary_knn_top1@32"] >= full["knn_top1@32"] - 0.1  # at 0: one class for everything


def test_metric_names_and_what_quantisation_keeps():
    db, db_labels = _clusters(400)
    q, q_labels = _clusters(60, seed=3)
    metrics = quantized_knn_metrics(db, db_labels, q, q_labels, [4, 32], map_k=10)
    assert set(metrics) == {
        f"{c}_{k}@{m}" for c in ("fp16", "int8", "binary") for k in ("knn_top1", "map@10") for m in (4, 32)
    }
    full = knn_metrics(db, db_labels, q, q_labels, [32], ks=(), map_k=10)
    assert metrics["fp16_knn_top1@32"] == full["knn_top1@32"]
    assert abs(metrics["int8_map@10@32"] - full["map@10@32"]) < 0.02
    assert metrics["binary_map@10@4"] < metrics["binary_map@10@32"]  # 4 bits say little


def test_unknown_codec_is_a_one_line_error():
    assert check_codecs(None) == [] and check_codecs(["int8"]) == ["int8"]
    with pytest.raises(ValueError, match=r"^quantized=\['int4'\]: unknown 'int4'; use a list of fp16, int8, binary"):
        check_codecs(["int4"])


def test_queries_with_an_all_zero_prefix_are_misses_in_every_format():
    """Class 0's 8-d prefixes are all zeros, in the database and in the queries: their codes match each other in
    every format (zero vectors, identical bits), but they carry no information, so they are misses."""
    db, db_labels = _clusters(300)
    q, q_labels = _clusters(40, seed=4)
    db, q = np.abs(db), np.abs(q)  # ReLU-like
    db[db_labels == 0, :8] = 0
    q[q_labels == 0, :8] = 0
    blank = q_labels == 0
    assert blank.sum() >= 5
    metrics = quantized_knn_metrics(db, db_labels, q, q_labels, [8], map_k=5)
    alone = quantized_knn_metrics(db, db_labels, q[~blank], q_labels[~blank], [8], map_k=5)
    share = (~blank).mean()  # the other queries score as they do on their own
    for codec in ("fp16", "int8", "binary"):
        assert metrics[f"{codec}_knn_top1@8"] == pytest.approx(share * alone[f"{codec}_knn_top1@8"]), codec
        assert metrics[f"{codec}_map@5@8"] == pytest.approx(share * alone[f"{codec}_map@5@8"]), codec
