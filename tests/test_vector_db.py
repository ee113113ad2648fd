"""The funnel served from a vector database (Milvus Lite, embedded, from a local file): parity with the in-process
funnel, recall of approximate indexes against exact search, resumable loading, one-line errors, the CLIs."""

from __future__ import annotations

import csv
import importlib.util

import numpy as np
import pytest

pytest.importorskip("faiss")
pymilvus = pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from mrl.common.errors import is_config_error  # noqa: E402
from mrl.retrieval import AdaptiveRetriever, Funnel, exact_search, recall_against_exact  # noqa: E402
from mrl.retrieval.milvus import MilvusFunnel, collection_name, load_into_milvus  # noqa: E402
from mrl_testing.configs import ROOT  # noqa: E402
from mrl_testing.synthetic import make_mrl_split, write_npz  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return make_mrl_split(2500, 40, 64, n_classes=20, seed=4)


@pytest.fixture(scope="module")
def loaded(data, tmp_path_factory):
    """One Milvus Lite file, one collection: the 8-d prefix indexed FLAT (exact), the full vectors."""
    db, db_y, _, _ = data
    uri = str(tmp_path_factory.mktemp("milvus") / "index.db")
    summary = load_into_milvus(db, uri, collection="flat", first_size=8, labels=db_y, batch_size=700, progress=False)
    return uri, summary


def test_exact_first_stage_returns_the_in_process_funnels_neighbours(data, loaded):
    db, db_y, q, _ = data
    uri, summary = loaded
    assert summary["inserted"] == len(db) and summary["skipped"] == 0 and summary["index"] == "FLAT"
    served = MilvusFunnel(uri)  # the only collection there
    assert served.funnel == Funnel(((8, 200), (64, 10))) and served.n == len(db)
    scores, ids = served.search(q, 10)
    ref_scores, ref_ids = AdaptiveRetriever(db, [(8, 200), (64, 10)]).search(q, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)  # the same kernels on the same float32 prefixes
    # the database's shortlist is the exact 8-d top 200
    _, shortlist = served.shortlist(q)
    _, exact8 = exact_search(db, q, 200, size=8)
    assert np.mean([len(set(a) & set(b)) / 200 for a, b in zip(shortlist, exact8)]) >= 0.999
    # three stages, another shortlist: still the in-process funnel's neighbours
    three = MilvusFunnel(uri, "flat", funnel=[(8, 300), (32, 50), (64, 5)])
    np.testing.assert_array_equal(
        three.search(q, 5)[1], AdaptiveRetriever(db, [(8, 300), (32, 50), (64, 5)]).search(q, 5)[1]
    )
    names, labels = served.items(ids[:3])
    np.testing.assert_array_equal(labels, db_y[ids[:3]])
    assert names[0, 0] == str(ids[0, 0])  # an array's rows are named by their index


@pytest.mark.parametrize(("fmt", "index"), [("float", "hnsw"), ("float", "ivf"), ("int8", "flat"), ("int8", "hnsw")])
def test_approximate_and_int8_first_stages_report_recall_against_exact(data, tmp_path, fmt, index):
    db, _, q, _ = data
    uri = str(tmp_path / "index.db")
    load_into_milvus(db, uri, collection="c", first_size=8, format=fmt, index=index, progress=False)
    served = MilvusFunnel(uri, "c", nprobe=64)
    _, ids = served.search(q, 10)
    recall = recall_against_exact(db, q, ids, 10)
    # the in-process funnel over the same first-stage format, exact, as the reference
    _, ref = AdaptiveRetriever(db, [(8, 200), (64, 10)], index="int8" if fmt == "int8" else "flat").search(q, 10)
    assert recall >= recall_against_exact(db, q, ref, 10) - 0.03, (fmt, index, recall)
    assert recall >= 0.9


def test_an_interrupted_load_resumes_without_duplicates(data, tmp_path, monkeypatch):
    db, db_y, q, _ = data
    path = write_npz(tmp_path / "items.npz", db, db_y)
    uri = str(tmp_path / "index.db")
    real_insert = pymilvus.MilvusClient.insert
    calls = []

    def failing_insert(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # stopped while loading the third batch
        return real_insert(self, *args, **kwargs)

    monkeypatch.setattr(pymilvus.MilvusClient, "insert", failing_insert)
    with pytest.raises(KeyboardInterrupt):
        load_into_milvus(path, uri, batch_size=500, progress=False)
    monkeypatch.setattr(pymilvus.MilvusClient, "insert", real_insert)
    name = collection_name(path)
    assert MilvusFunnel(uri, name).meta.complete is False  # (and a warning says to run make index again)
    summary = load_into_milvus(path, uri, batch_size=500, progress=False)
    assert summary["resumed"] and summary["skipped"] == 1000 and summary["inserted"] == len(db) - 1000
    served = MilvusFunnel(uri, name)
    assert served.meta.complete
    ids = [r["id"] for r in served.client.query(name, filter="id >= 0", output_fields=["id"], limit=16384)]
    assert sorted(ids) == list(range(len(db)))  # every row once
    again = load_into_milvus(path, uri, batch_size=500, progress=False)  # a finished load: nothing to do
    assert again["inserted"] == 0 and again["skipped"] == len(db)
    np.testing.assert_array_equal(
        served.search(q, 10)[1], AdaptiveRetriever(db, [(16, 200), (64, 10)]).search(q, 10)[1]
    )


def test_mismatches_are_one_line_errors(data, tmp_path):
    db, db_y, q, _ = data
    uri = str(tmp_path / "index.db")
    path = write_npz(tmp_path / "items.npz", db, db_y)
    load_into_milvus(path, uri, collection="c", progress=False)
    other = write_npz(tmp_path / "other.npz", db[:, :32], db_y)
    alien = write_npz(tmp_path / "b.npz", db, db_y, "other.ckpt")
    cases = [
        (lambda: load_into_milvus(other, uri, collection="c", progress=False),
         r"^collection='c': holds 2500 64-wide embeddings of .*items.npz, not these 2500 32-wide ones; load it "),
        (lambda: load_into_milvus(alien, uri, collection="c", progress=False),
         r"^collection='c': holds embeddings of model.ckpt, these are of other.ckpt"),
        (lambda: load_into_milvus(path, uri, collection="c", first_size=32, progress=False),
         r"^first_size=32: collection='c' was built with first_size=16"),
        (lambda: load_into_milvus(path, uri, collection="d", format="bits", progress=False),
         r"^format='bits': Milvus Lite .* has no binary vector fields"),
        (lambda: load_into_milvus(path, uri, collection="d", first_size=0, progress=False),
         r"^first_size=0: the indexed prefix's size, in 1\.\.64"),
        (lambda: load_into_milvus(path, uri, collection="d", index="diskann", progress=False),
         r"^index='diskann': expected one of flat, hnsw, ivf"),
        (lambda: load_into_milvus(path, str(tmp_path / "x.sqlite"), progress=False),
         r"^uri='.*x.sqlite': a Milvus Lite file ends in .db"),
        (lambda: MilvusFunnel(uri, "nope"), r"^collection='nope': not in .*index.db \(it holds c\)"),
        (lambda: MilvusFunnel(str(tmp_path / "none.db")), r"^uri='.*none.db': no such Milvus Lite file"),
        (lambda: MilvusFunnel(uri, "c", funnel=[(8, 100), (64, 10)]),
         r"^funnel='8:100,64:10': collection='c' indexes the first 16 coordinates"),
        (lambda: MilvusFunnel(uri, "c").search(q[:, :32], 5), r"^queries.shape=\(40, 32\): expected \[Q, 64\]"),
        (lambda: MilvusFunnel(uri, "c").search(q, 11), r"^k=11: must be an integer in 1\.\.10"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
            call()
        assert is_config_error(error.value), message


def test_make_index_and_make_search_against_the_database(data, tmp_path, capsys):
    """The CLIs: a tuned index loaded from files, searched with --backend milvus; the same rows as in process."""
    from mrl.cli.index import command as index_main
    from mrl.cli.search import command as search_main

    db, db_y, q, q_y = data
    items, queries = write_npz(tmp_path / "items.npz", db, db_y), write_npz(tmp_path / "queries.npz", q, q_y)
    uri = str(tmp_path / "index.db")
    summary = index_main([str(items), "--backend", "milvus", "--uri", uri, "--queries", str(queries),
                          "--target-recall", "0.99", "--no-progress"])  # fmt: skip
    tuned = summary["tuned"]
    assert tuned.recall >= 0.99 and summary["funnel"] == tuned.funnel and tuned.funnel.format != "bits"
    printed = capsys.readouterr().out
    assert "recall@10 >= 0.99" in printed and "make search QUERIES=<queries .npz>" in printed
    served = search_main([str(queries), "--backend", "milvus", "--uri", uri, "--out", str(tmp_path / "db.csv"),
                          "--show", "0"])  # fmt: skip
    assert served["funnel"] == list(tuned.funnel.stages)
    local = search_main([str(items), str(queries), "--funnel", tuned.funnel.spec, "--index", tuned.funnel.index,
                         "--out", str(tmp_path / "local.csv"), "--show", "0"])  # fmt: skip
    if tuned.funnel.format == "float":  # an exact first stage in both: the same rows
        # (the scores to float rounding: a one-stage funnel, which the timing may choose, returns Milvus's own)
        db_rows, local_rows = ([*csv.reader((tmp_path / n).read_text().splitlines())] for n in ("db.csv", "local.csv"))
        assert [r[:3] + r[4:] for r in db_rows] == [r[:3] + r[4:] for r in local_rows]
        db_scores, local_scores = ([float(r[3]) for r in rows[1:]] for rows in (db_rows, local_rows))
        np.testing.assert_allclose(db_scores, local_scores, atol=1e-5)
    rows = list(csv.DictReader(open(tmp_path / "db.csv")))
    assert len(rows) == 10 * len(q) and rows[0].keys() == {"query", "rank", "id", "score", "label"}
    assert recall_against_exact(db, q, served["rows"], 10) >= 0.95
    assert recall_against_exact(db, q, local["rows"], 10) >= 0.95


def test_search_cli_errors_with_the_database(data, tmp_path, capsys):
    from mrl.cli.search import run

    db, db_y, q, q_y = data
    items = write_npz(tmp_path / "items.npz", db, db_y)
    uri = str(tmp_path / "index.db")
    load_into_milvus(items, uri, progress=False)
    narrow = write_npz(tmp_path / "narrow.npz", q[:, :32], q_y)
    alien = write_npz(tmp_path / "alien.npz", q, q_y, checkpoint="other.ckpt")
    queries = write_npz(tmp_path / "queries.npz", q, q_y)
    cases = [
        (lambda: run(None, str(narrow), backend="milvus", uri=uri),
         r"^queries='.*narrow.npz': 32-wide embeddings against the 64-wide collection mrl_items"),
        (lambda: run(None, str(alien), backend="milvus", uri=uri),
         r"^queries='.*alien.npz': embedded by other.ckpt, the database by model.ckpt"),
        (lambda: run(None, str(queries), backend="milvus"), r"^uri=None: --backend milvus needs --uri"),
        (lambda: run(None, str(queries), backend="milvus", uri=uri, target_recall=0.99),
         r"^target_recall=0.99: with --backend milvus the funnel is tuned when the collection is built"),
        (lambda: run(str(items), str(queries), uri=uri), r"^uri='.*': --uri and --collection name a vector database"),
        (lambda: run(str(items), str(queries), backend="qdrant"), r"^backend='qdrant': expected one of faiss, milvus"),
        (lambda: run(str(narrow), str(queries), backend="milvus", uri=uri),
         r"^database='.*narrow.npz': 40 32-wide embeddings, but collection mrl_items holds 2500 64-wide ones"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert is_config_error(error.value), message
    # k beyond the recorded funnel's 10: the funnel keeps k
    result = run(None, str(queries), k=15, backend="milvus", uri=uri, out=str(tmp_path / "r.csv"))
    assert result["funnel"] == [(16, 200), (64, 15)] and result["rows"].shape == (40, 15)


def test_make_index_from_a_run_directory_uses_its_eval_embeddings(data, tmp_path):
    from mrl.cli.index import run

    db, db_y, q, q_y = data
    (tmp_path / "run" / "eval").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"^embeddings='.*run': no eval/embeddings_train.npz in this run"):
        run(str(tmp_path / "run"))
    write_npz(tmp_path / "run" / "eval" / "embeddings_train.npz", db, db_y)
    write_npz(tmp_path / "run" / "eval" / "embeddings_test.npz", q, q_y)
    summary = run(str(tmp_path / "run"), backend="milvus", target_recall=0.95, first_size=8, progress=False)
    assert summary["uri"] == str(tmp_path / "run" / "eval" / "index.db")
    assert summary["collection"] == "mrl_embeddings_train" and summary["tuned"].tuning_queries == 28
    with pytest.raises(ValueError, match=r"^target_recall=0.9: tuning needs sample queries"):
        run(str(tmp_path / "run" / "eval" / "embeddings_train.npz"), target_recall=0.9)


def test_make_index_target(tmp_path):
    from mrl_testing.configs import run_make

    lines = run_make("-n", "index", "DB=a.npz", "QUERIES=q.npz", "ARGS=--target-recall 0.99").stdout.splitlines()
    command = next(line for line in lines if "mrl.cli.index" in line).split()
    assert command[-5:] == ["a.npz", "--queries", "q.npz", "--target-recall", "0.99"]
    lines = run_make("-n", "search", "QUERIES=q.npz", "ARGS=--backend milvus --uri x.db").stdout.splitlines()
    assert next(line for line in lines if "mrl.cli.search" in line).split()[-5:] == [
        "q.npz", "--backend", "milvus", "--uri", "x.db"
    ]  # fmt: skip


def test_benchmark_has_database_and_tuned_rows(capsys):
    spec = importlib.util.spec_from_file_location("bench_retrieval", ROOT / "benchmarks" / "retrieval.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--n", "3000", "--dim", "64", "--queries", "60", "--classes", "50", "--repeats", "1",
                          "--shortlist", "100", "--binary-size", "32", "--no-hnsw-full", "--db-n", "1500",
                          "--db-queries", "20", "--targets", "0.95,0.99"])  # fmt: skip
    assert {"tuned 0.95", "tuned 0.99", "milvus funnel", "exact flat (database section)"} <= set(results)
    for key in ("tuned 0.95", "tuned 0.99"):
        row = results[key]
        assert row["recall"] >= float(key.split()[1]) - 0.05 and row["qps"] > 0 and row["first_stage_bytes"] > 0
    assert results["milvus funnel"]["same_as_funnel"] == 1.0 and results["milvus funnel"]["recall"] >= 0.95
    out = capsys.readouterr().out
    assert "database funnel: 1500 items x 64 loaded into Milvus Lite" in out and "tuned funnels for recall@10" in out
    if importlib.util.find_spec("lancedb"):  # the LanceDB rows: the same neighbours as in process, float and bits
        assert results["lancedb funnel"]["same_as_funnel"] == 1.0 and results["lancedb funnel"]["recall"] >= 0.95
        assert results["lancedb bits funnel"]["same_as_funnel"] == 1.0
        assert results["lancedb bits funnel"]["first_stage_bytes"] == 4 and results["lancedb funnel"]["qps"] > 0
        assert "database funnel: 1500 items x 64 loaded into LanceDB" in out
