"""LanceDB's own indexes: the funnel's first stage served by the native index on the prefix column (and its plan
says so), the shortlist's full vectors read in the same request (``fetch="inline"``) or a second one, and the
full-width native indexes a LanceDB user would build without prefixes (`LanceFullWidth`), against exact search."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("lancedb")

from mrl.retrieval import AdaptiveRetriever, exact_search, recall_against_exact  # noqa: E402
from mrl.retrieval.lancedb import LanceFullWidth, LanceFunnel, load_into_lancedb  # noqa: E402
from mrl_testing.synthetic import make_mrl_split  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return make_mrl_split(3000, 60, 64, n_classes=30, seed=7)


@pytest.fixture(scope="module")
def uri(data, tmp_path_factory):
    """Two tables of the same items: the 8-d prefix under LanceDB's IVF_FLAT index (``ivf``), and scanned (``flat``)."""
    db, _, _, _ = data
    where = str(tmp_path_factory.mktemp("native") / "index.lancedb")
    for index in ("ivf", "flat"):
        load_into_lancedb(db, where, collection=index, first_size=8, index=index, progress=False)
    return where


def test_the_first_stage_is_served_by_the_native_index_on_the_prefix(data, uri):
    db, _, q, _ = data
    indexed, scanned = LanceFunnel(uri, "ivf", nprobe=8), LanceFunnel(uri, "flat")
    plan = indexed.first_stage_plan(q)
    assert "ANNIvfPartition" in plan and "ANNSubIndex" in plan, plan
    assert "KNNVectorDistance" not in plan  # no scan of every row's prefix
    assert "ANNIvfPartition" not in scanned.first_stage_plan(q)
    # the index's shortlist is approximate, and good: recall of the funnel against exact full-width search
    _, ids = indexed.search(q, 10)
    assert recall_against_exact(db, q, ids, 10) >= 0.95
    # more probes, more recall; all of them is the exact scan's shortlist
    _, all_probes = LanceFunnel(uri, "ivf", nprobe=10_000).search(q, 10)
    np.testing.assert_array_equal(all_probes, scanned.search(q, 10)[1])


def test_inline_fetch_returns_what_the_take_path_returns(data, uri):
    db, _, q, _ = data
    for name, nprobe in (("flat", None), ("ivf", 4)):
        took = LanceFunnel(uri, name, funnel=[(8, 50), (64, 10)], nprobe=nprobe)
        inline = LanceFunnel(uri, name, funnel=[(8, 50), (64, 10)], nprobe=nprobe, fetch="inline")
        s_take, i_take = took.search(q, 10)
        s_inline, i_inline = inline.search(q, 10)
        np.testing.assert_array_equal(i_inline, i_take)
        np.testing.assert_allclose(s_inline, s_take, rtol=1e-6, atol=1e-6)
    # the exact prefix scan reranked inline is the in-process funnel
    _, ref = AdaptiveRetriever(db, [(8, 50), (64, 10)]).search(q, 10)
    np.testing.assert_array_equal(
        LanceFunnel(uri, "flat", funnel=[(8, 50), (64, 10)], fetch="inline").search(q, 10)[1], ref
    )


@pytest.mark.parametrize(
    ("kind", "knobs", "least"),
    [
        ("IVF_FLAT", {"nprobes": 10_000}, 1.0),  # every partition probed: exact
        ("IVF_PQ", {"nprobes": 10_000, "refine_factor": 20}, 0.95),  # PQ shortlist of 200 re-scored exactly
        ("IVF_HNSW_SQ", {"ef": 200, "refine_factor": 5}, 0.95),
    ],
)
def test_native_full_width_indexes_against_exact_search(data, uri, kind, knobs, least):
    db, _, q, _ = data
    native = LanceFullWidth(uri, "flat", kind, **knobs)
    seconds = native.build(partitions=1 if kind == "IVF_HNSW_SQ" else 16, sub_vectors=8)
    assert seconds > 0 and native.index_bytes() > 0
    plan = native.plan()
    assert "ANNIvfPartition" in plan, plan
    assert ("KNNVectorDistance" in plan) == bool(knobs.get("refine_factor")), plan  # refine: exact re-scoring
    scores, ids = native.search(q, 10)
    assert recall_against_exact(db, q, ids, 10) >= least
    if least == 1.0:
        exact_scores, _ = exact_search(db, q, 10)
        np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


def test_local_fetch_reranks_from_a_memmap_as_the_take_path_does(data, uri, tmp_path):
    """Memory-tiered: LanceDB's prefix index shortlists, the rows are read from a memmap of the full vectors here."""
    db, _, q, _ = data
    np.save(tmp_path / "full.npy", db)
    mapped = np.load(tmp_path / "full.npy", mmap_mode="r")
    for name, nprobe in (("flat", None), ("ivf", 4)):
        took = LanceFunnel(uri, name, funnel=[(8, 50), (64, 10)], nprobe=nprobe)
        local = LanceFunnel(uri, name, funnel=[(8, 50), (64, 10)], nprobe=nprobe, vectors=mapped)
        assert local.fetch == "local"
        s_take, i_take = took.search(q, 10)
        s_local, i_local = local.search(q, 10)
        np.testing.assert_array_equal(i_local, i_take)
        np.testing.assert_allclose(s_local, s_take, rtol=1e-6, atol=1e-6)
    # the rerank really reads the given vectors: a scrambled copy changes the answer
    scrambled = LanceFunnel(uri, "flat", funnel=[(8, 50), (64, 10)], vectors=db[::-1].copy())
    assert (scrambled.search(q, 10)[1] != i_take).any()
    with pytest.raises(ValueError, match=r"^vectors.shape=\(3000, 32\): expected \(3000, 64\)"):
        LanceFunnel(uri, "flat", vectors=db[:, :32])
    with pytest.raises(ValueError, match=r"^fetch='local': 'local' reads the full vectors from vectors="):
        LanceFunnel(uri, "flat", fetch="local")


def test_bad_kind_and_fetch_are_one_line_errors(uri):
    with pytest.raises(ValueError, match=r"^kind='DISKANN': expected one of IVF_PQ, IVF_HNSW_SQ, IVF_FLAT$"):
        LanceFullWidth(uri, "flat", "DISKANN")
    with pytest.raises(ValueError, match=r"^fetch='both': expected one of take, inline, local$"):
        LanceFunnel(uri, "flat", fetch="both")


def test_the_benchmark_builds_and_tunes_one_ivf_pq_per_sub_vector_count(tmp_path, capsys):
    """benchmarks/lancedb_native.py --pq-sub-vectors: each count its own table, index and tuned row; finer codes
    (more sub-vectors) take more bytes per row."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "lancedb_native.py"
    spec = importlib.util.spec_from_file_location("bench_lancedb_native", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    shape = ["--n", "2000", "--dim", "64", "--queries", "40", "--classes", "20", "--repeats", "1", "--single", "3"]
    out = bench.main([*shape, "--kinds", "IVF_FLAT,IVF_PQ", "--pq-sub-vectors", "4,16", "--where", str(tmp_path)])
    assert {"funnel", "ivf_flat", "ivf_pq_m4", "ivf_pq_m16"} <= set(out) and "ivf_pq" not in out
    for name in ("ivf_pq_m4", "ivf_pq_m16"):
        assert out[name]["recall"] >= 0.99 and out[name]["holdout"] >= 0.9, out[name]
    uri = str(tmp_path / "bench.lancedb")
    codes = {m: LanceFullWidth(uri, f"ivf_pq_m{m}", "IVF_PQ").index_bytes() for m in (4, 16)}
    assert codes[16] - codes[4] >= 2000 * (16 - 4), codes  # one byte per sub-vector per row
    printed = capsys.readouterr().out
    assert "ivf_pq_m16 table loaded in" in printed and "(nprobes, refine)" in printed
    with pytest.raises(SystemExit):
        bench.parse_args(["--dim", "64", "--pq-sub-vectors", "5"])  # must divide the width
