"""Exact search as torch products (evaluation on a GPU), checked against FAISS on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrl.evaluation.knn_metrics import knn_metrics
from mrl.evaluation.runner import knn_device
from mrl.retrieval import knn_search
from mrl.retrieval.torch_search import torch_search

faiss = pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(7)
    return rng.standard_normal((503, 24)).astype(np.float32), rng.standard_normal((61, 24)).astype(np.float32)


@pytest.mark.parametrize("l2", [False, True])
def test_blockwise_top_k_equals_faiss_flat(vectors, l2):
    db, q = vectors
    index = faiss.IndexFlatL2(24) if l2 else faiss.IndexFlatIP(24)
    index.add(db)
    ref_s, ref_i = index.search(q, 9)
    # blocks that do not divide the sizes, so the running top-k is merged across many tiles
    scores, ids = torch_search(db, q, 9, l2=l2, q_block=16, db_block=50)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-5)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    whole_s, whole_i = torch_search(db, q, 9, l2=l2)  # one tile
    np.testing.assert_array_equal(whole_i, ids)


def test_bad_shapes_and_k_are_one_line_errors(vectors):
    db, q = vectors
    with pytest.raises(ValueError, match=r"k=504: must be in 1..503"):
        torch_search(db, q, 504)
    with pytest.raises(ValueError, match=r"must be \[N, m\] and \[Q, m\]"):
        torch_search(db, q[:, :8], 3)


def test_knn_metrics_on_a_device_match_faiss(vectors):
    db, q = vectors
    db_labels, q_labels = np.arange(503) % 7, np.arange(61) % 7
    for metric in ("cosine", "l2"):
        on_cpu = knn_metrics(db, db_labels, q, q_labels, [8, 24], metric=metric, ks=(10, 25))
        on_torch = knn_metrics(db, db_labels, q, q_labels, [8, 24], metric=metric, ks=(10, 25), device="cpu")
        assert on_torch == pytest.approx(on_cpu), metric
    # leave-one-out drops each item's own id on this path too
    _, ids = knn_search(db, db, 16, 5, exclude_self=True, device="cpu")
    _, ref = knn_search(db, db, 16, 5, exclude_self=True)
    np.testing.assert_array_equal(ids, ref)
    assert not (ids == np.arange(503)[:, None]).any()


def test_where_evaluation_searches():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert knn_device("auto", cpu) is None and knn_device(None, cpu) is None  # FAISS on the CPU
    assert knn_device("auto", gpu) == gpu  # the model's GPU
    assert knn_device("cpu", gpu) is None


@pytest.mark.without_cuda
def test_a_cuda_search_device_without_cuda_is_one_line():
    with pytest.raises(ValueError, match=r"^knn.device='cuda': this machine has no CUDA device"):
        knn_device("cuda", torch.device("cpu"))


@pytest.mark.requires_cuda
@pytest.mark.parametrize("l2", [False, True])
def test_search_on_the_gpu_equals_faiss_on_the_cpu(vectors, l2):
    db, q = vectors
    index = faiss.IndexFlatL2(24) if l2 else faiss.IndexFlatIP(24)
    index.add(db)
    ref_s, ref_i = index.search(q, 9)
    scores, ids = torch_search(db, q, 9, l2=l2, device=torch.device("cuda"), q_block=16, db_block=50)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-4, atol=1e-4)
    assert knn_device("cuda", torch.device("cpu")) == torch.device("cuda")


@pytest.mark.parametrize("l2", [False, True])
def test_ties_keep_the_lowest_ids_across_blocks_as_faiss_does(l2):
    """Integer vectors, each repeated many times: equal scores are exact in any summation order. Across tiles
    the running top-k keeps the lowest ids at the cut and lists ties by id, as `FlatIndex` does."""
    from mrl.retrieval import FlatIndex

    rng = np.random.default_rng(3)
    base = rng.integers(-3, 4, (6, 24)).astype(np.float32)
    db = base[rng.integers(0, 6, 400)]
    q = np.concatenate([base[:4] + np.eye(4, 24, dtype=np.float32), np.zeros((1, 24), np.float32)])
    x, qq = db.astype(np.float64), q.astype(np.float64)
    ref = ((qq[:, None] - x[None]) ** 2).sum(-1) if l2 else qq @ x.T
    for k in (1, 5, 70, 150):
        _, ids = torch_search(db, q, k, l2=l2, q_block=2, db_block=37)
        expected = np.lexsort((np.broadcast_to(np.arange(400), ref.shape), ref if l2 else -ref), axis=1)[:, :k]
        np.testing.assert_array_equal(ids, expected)
        np.testing.assert_array_equal(ids, FlatIndex(db, l2=l2).search(q, k)[1])
