"""kNN retrieval metrics: hand-computed examples and agreement with brute force."""

import numpy as np
import pytest

from mrl.core.retrieval_metrics import (
    average_precision_at_k,
    count_relevant,
    hit_at_k,
    precision_at_k,
    recall_at_k,
    relevance_matrix,
    zero_prefix_counts,
    zero_prefix_rows,
)
from mrl.evaluation.knn_metrics import knn_metrics
from mrl.retrieval.nearest import knn_search

pytest.importorskip("faiss")

# Three queries, 4 retrieved items each (1 = same label as the query):
#   A: [1, 0, 1, 1]  P@1 = 1, P@3 = 2/3, P@4 = 3/4 -> sum = 29/12
#      reference AP@4 = (29/12) / 4 = 29/48; textbook with 3 relevant in db: (29/12) / 3 = 29/36
#   B: [0, 0, 1, 0]  P@3 = 1/3 -> reference AP@4 = 1/12; textbook with 5 relevant: (1/3) / 4 = 1/12
#   C: [0, 0, 0, 0]  AP = 0
REL = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=bool)


def test_average_precision_reference_normalisation():
    ap = average_precision_at_k(REL)
    np.testing.assert_allclose(ap, [29 / 48, 1 / 12, 0.0])
    # AP@2 only looks at the first two positions: A -> (1) / 2, B -> 0
    np.testing.assert_allclose(average_precision_at_k(REL, k=2), [0.5, 0.0, 0.0])
    # all relevant -> 1; a single hit at rank 1 -> 1/k
    assert average_precision_at_k(np.ones((1, 10), bool))[0] == pytest.approx(1.0)
    assert average_precision_at_k(np.eye(1, 10, dtype=bool))[0] == pytest.approx(0.1)


def test_average_precision_textbook_normalisation():
    ap = average_precision_at_k(REL, n_relevant=np.array([3, 5, 0]))
    np.testing.assert_allclose(ap, [29 / 36, 1 / 12, 0.0])


def test_precision_recall_hit():
    np.testing.assert_allclose(precision_at_k(REL, 4), [3 / 4, 1 / 4, 0.0])
    np.testing.assert_allclose(precision_at_k(REL, 2), [1 / 2, 0.0, 0.0])
    np.testing.assert_allclose(recall_at_k(REL, 4, np.array([3, 5, 0])), [1.0, 1 / 5, 0.0])
    np.testing.assert_allclose(hit_at_k(REL, 2), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(hit_at_k(REL, 3), [1.0, 1.0, 0.0])


def test_relevance_and_counts():
    ids = np.array([[2, 1, -1]])
    rel = relevance_matrix(ids, np.array([7, 8, 7]), np.array([7]))
    assert rel.tolist() == [[True, False, False]]  # -1 (missing neighbour) is never relevant
    assert count_relevant(np.array([1, 1, 2, 5]), np.array([1, 2, 3, 5])).tolist() == [2, 1, 0, 1]


def test_knn_metrics_hand_computed_l2():
    # Points on a line; the second coordinate is 0 so sizes 1 and 2 give the same neighbours.
    db = np.array([[1, 0], [2, 0], [3, 0], [4, 0], [5, 0]], dtype=np.float32)
    db_y = np.array([0, 1, 0, 0, 1])
    q = np.array([[0, 0], [5.9, 0]], dtype=np.float32)
    q_y = np.array([0, 1])
    # query 0 (label 0): order ids 0,1,2,3 -> labels 0,1,0,0 -> rel [1,0,1,1]; class 0 has 3 items
    #   AP@4 = (1 + 2/3 + 3/4) / 4 = 29/48; P@2 = 1/2, P@4 = 3/4; R@2 = 1/3, R@4 = 3/3
    # query 1 (label 1): order ids 4,3,2,1 -> labels 1,0,0,1 -> rel [1,0,0,1]; class 1 has 2 items
    #   AP@4 = (1 + 2/4) / 4 = 3/8; P@2 = 1/2, P@4 = 1/2; R@2 = 1/2, R@4 = 2/2
    out = knn_metrics(db, db_y, q, q_y, sizes=[1, 2], metric="l2", ks=(2, 4), map_k=4)
    for m in (1, 2):
        assert out[f"knn_top1@{m}"] == pytest.approx(1.0)
        assert out[f"map@4@{m}"] == pytest.approx((29 / 48 + 3 / 8) / 2)
        assert out[f"precision@2@{m}"] == pytest.approx(0.5)
        assert out[f"precision@4@{m}"] == pytest.approx((3 / 4 + 1 / 2) / 2)
        assert out[f"recall@2@{m}"] == pytest.approx((1 / 3 + 1 / 2) / 2)
        assert out[f"recall@4@{m}"] == pytest.approx(1.0)
        assert out[f"hit@2@{m}"] == pytest.approx(1.0)
    assert all(0.0 <= v <= 1.0 for v in out.values())


def test_exclude_self_leave_one_out():
    x = np.array([[0.0], [1.0], [2.1], [10.0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    # Without self: nearest to 0 is 1 (label 0), to 1 is 0, to 2.1 is 1 (label 0), to 10 is 2.1 (label 1)
    out = knn_metrics(x, y, x, y, sizes=[1], metric="l2", ks=(1,), map_k=1, exclude_self=True)
    assert out["knn_top1@1"] == pytest.approx(3 / 4)
    # recall@1: each class has 1 other member -> hits/1 -> same as top1 here
    assert out["recall@1@1"] == pytest.approx(3 / 4)
    with_self = knn_metrics(x, y, x, y, sizes=[1], metric="l2", ks=(1,), map_k=1)
    assert with_self["knn_top1@1"] == pytest.approx(1.0)


def test_cosine_prefix_is_renormalised_and_matches_brute_force():
    rng = np.random.default_rng(0)
    db = rng.standard_normal((300, 16)).astype(np.float32)
    q = rng.standard_normal((20, 16)).astype(np.float32)
    m, k = 5, 7
    _, ids = knn_search(db, q, m, k, metric="cosine")
    a = db[:, :m] / np.linalg.norm(db[:, :m], axis=1, keepdims=True)
    b = q[:, :m] / np.linalg.norm(q[:, :m], axis=1, keepdims=True)
    expected = np.argsort(-(b @ a.T), axis=1)[:, :k]
    np.testing.assert_array_equal(ids, expected)


def test_knn_metrics_keys_and_errors():
    rng = np.random.default_rng(1)
    db = rng.standard_normal((200, 8)).astype(np.float32)
    y = rng.integers(0, 4, 200)
    out = knn_metrics(db, y, db[:10], y[:10], sizes=[2, 8], ks=(10, 25))
    assert {"knn_top1@2", "map@10@8", "precision@25@2", "recall@10@8", "hit@25@8"} <= set(out)
    with pytest.raises(ValueError, match="sizes"):
        knn_metrics(db, y, db[:10], y[:10], sizes=[9])
    with pytest.raises(ValueError, match="exceeds"):
        knn_metrics(db[:50], y[:50], db[:10], y[:10], sizes=[8], ks=(100,))


def degenerate_prefixes(seed=0):
    """A ReLU-like set: class 0's 8-d prefixes are all zeros (database and queries), the rest random; the full
    vectors still tell every class apart. The issue's symptom: all-zero prefixes tie every cosine score at 0."""
    rng = np.random.default_rng(seed)
    centers = np.abs(rng.standard_normal((4, 32))) * 3
    db_y, q_y = np.arange(400) % 4, np.arange(40) % 4
    db = (centers[db_y] + np.abs(rng.standard_normal((400, 32)))).astype(np.float32)
    q = (centers[q_y] + np.abs(rng.standard_normal((40, 32)))).astype(np.float32)
    db[db_y == 0, :8] = 0
    q[q_y == 0, :8] = 0
    return db, db_y, q, q_y


def test_an_all_zero_query_prefix_is_a_miss_and_a_top1_does_not_depend_on_k():
    db, db_y, q, q_y = degenerate_prefixes()
    # the search itself: the first neighbour is the same whether 1 or 100 are asked for (ties by lowest id)
    for device in (None, "cpu"):
        _, one = knn_search(db, q, 8, 1, device=device)
        _, many = knn_search(db, q, 8, 100, device=device)
        np.testing.assert_array_equal(one[:, 0], many[:, 0])
        blank = zero_prefix_rows(q, 8)
        np.testing.assert_array_equal(many[blank], np.broadcast_to(np.arange(100), (blank.sum(), 100)))
    # the metric: the 10 zero-prefix queries are misses at size 8 (before, their tied "neighbour" 0 was of
    # class 0 and counted as a hit), and knn_top1 is the same however many neighbours are searched
    a = knn_metrics(db, db_y, q, q_y, [8, 32], ks=(), map_k=1)
    b = knn_metrics(db, db_y, q, q_y, [8, 32], ks=(100,), map_k=10)
    assert a["knn_top1@8"] == b["knn_top1@8"] and a["knn_top1@32"] == b["knn_top1@32"]
    unit = db[:, :8] / np.maximum(np.linalg.norm(db[:, :8], axis=1, keepdims=True), 1e-30)
    uq = q[:, :8] / np.maximum(np.linalg.norm(q[:, :8], axis=1, keepdims=True), 1e-30)
    nearest = np.lexsort((np.broadcast_to(np.arange(400), (40, 400)), -(uq @ unit.T)), axis=1)[:, 0]
    expected = np.mean((db_y[nearest] == q_y) & ~zero_prefix_rows(q, 8))
    assert a["knn_top1@8"] == pytest.approx(expected) and expected <= 0.75
    assert b["map@10@8"] <= 0.75 and a["knn_top1@32"] == 1.0  # the full vectors carry the class
    assert knn_metrics(db, db_y, q, q_y, [8, 32], ks=(), map_k=1, device="cpu") == pytest.approx(a)
    # under L2 the origin is a point like any other: a zero prefix ranks items by their norm, and is scored
    l2 = knn_metrics(db, db_y, q, q_y, [8], metric="l2", ks=(), map_k=1)
    _, ids = knn_search(db, q, 8, 1, metric="l2")
    assert l2["knn_top1@8"] == pytest.approx(np.mean(db_y[ids[:, 0]] == q_y))


def test_zero_prefix_counts_per_size():
    db, _, q, _ = degenerate_prefixes()
    counts = zero_prefix_counts(db, q, [4, 8, 16])
    assert counts == {
        "zero_prefix_db@4": 100, "zero_prefix_queries@4": 10,
        "zero_prefix_db@8": 100, "zero_prefix_queries@8": 10,
        "zero_prefix_db@16": 0, "zero_prefix_queries@16": 0,
    }  # fmt: skip
