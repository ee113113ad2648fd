"""The funnel served from LanceDB (embedded, a local folder): parity with the in-process funnel for exact float and
bit first stages, recall of approximate indexes against exact search, resumable loading (interrupted, and killed
mid-write), one-line errors, the CLIs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("faiss")
lancedb = pytest.importorskip("lancedb")

from mrl.common.errors import is_config_error  # noqa: E402
from mrl.retrieval import AdaptiveRetriever, Funnel, exact_search, recall_against_exact  # noqa: E402
from mrl.retrieval.binary import bit_center, threshold_bits  # noqa: E402
from mrl.retrieval.flat import prefix  # noqa: E402
from mrl.retrieval.lancedb import LanceFunnel, collection_name, load_into_lancedb  # noqa: E402
from mrl_testing.configs import ROOT  # noqa: E402
from mrl_testing.synthetic import make_mrl_split, write_npz  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return make_mrl_split(2500, 40, 64, n_classes=20, seed=4)


@pytest.fixture(scope="module")
def loaded(data, tmp_path_factory):
    """One LanceDB folder, one table: the 8-d prefix scanned exactly, the full vectors."""
    db, db_y, _, _ = data
    uri = str(tmp_path_factory.mktemp("lance") / "index.lancedb")
    summary = load_into_lancedb(db, uri, collection="flat", first_size=8, labels=db_y, batch_size=700, progress=False)
    return uri, summary


def stored_ids(uri, name):
    table = lancedb.connect(uri).open_table(name)
    return np.sort(table.search().select(["id"]).limit(None).to_arrow()["id"].to_numpy())


def test_exact_first_stage_returns_the_in_process_funnels_neighbours(data, loaded):
    db, db_y, q, _ = data
    uri, summary = loaded
    assert summary["inserted"] == len(db) and summary["skipped"] == 0 and summary["index"] == "exact scan"
    served = LanceFunnel(uri)  # the only table there
    assert served.funnel == Funnel(((8, 200), (64, 10))) and served.n == len(db) and served.meta.complete
    scores, ids = served.search(q, 10)
    ref_scores, ref_ids = AdaptiveRetriever(db, [(8, 200), (64, 10)]).search(q, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)  # the rerank runs the same kernels on the same prefixes
    # the database's shortlist is the exact 8-d top 200, its scores the cosine similarities
    short_scores, shortlist = served.shortlist(q)
    exact_scores, exact8 = exact_search(db, q, 200, size=8)
    assert np.mean([len(set(a) & set(b)) / 200 for a, b in zip(shortlist, exact8)]) >= 0.999
    np.testing.assert_allclose(short_scores, exact_scores, atol=1e-5)
    # three stages, another shortlist, a batch size that splits the queries: still the same neighbours
    three = LanceFunnel(uri, "flat", funnel=[(8, 300), (32, 50), (64, 5)])
    np.testing.assert_array_equal(
        three.search(q, 5, batch_size=7)[1], AdaptiveRetriever(db, [(8, 300), (32, 50), (64, 5)]).search(q, 5)[1]
    )
    names, labels = served.items(ids[:3])
    np.testing.assert_array_equal(labels, db_y[ids[:3]])
    assert names[0, 0] == str(ids[0, 0])  # an array's rows are named by their index
    assert served.items(np.array([[-1, ids[0, 0]]]))[0][0, 0] is None


def test_rows_that_moved_between_shortlist_and_take_are_looked_up_by_id(data, loaded, monkeypatch):
    """A row address from the shortlist can be stale by the time its vector is taken (a compaction in between): the
    vectors are placed by the ids that come back, and the ids missing are looked up by id."""
    db, _, q, _ = data
    uri, _ = loaded
    served = LanceFunnel(uri)
    real_take = served.table.take_row_ids
    monkeypatch.setattr(served.table, "take_row_ids", lambda row_ids: real_take([r + 1 for r in row_ids]))
    looked_up = []
    real_lookup = served._lookup
    monkeypatch.setattr(
        served, "_lookup", lambda wanted, *rest: looked_up.append(len(wanted)) or real_lookup(wanted, *rest)
    )
    np.testing.assert_array_equal(served.search(q, 10)[1], AdaptiveRetriever(db, [(8, 200), (64, 10)]).search(q, 10)[1])
    assert looked_up and looked_up[0] > 0


def test_a_bit_first_stage_is_an_exact_hamming_scan(data, tmp_path):
    """Sign bits in the table: the shortlist is the exact top 200 by Hamming distance (numpy popcounts), the lowest
    ids first among equal distances as in process (32 bits make ties at every query's cut), so the neighbours are
    the in-process binary funnel's."""
    db, _, q, _ = data
    uri = str(tmp_path / "bits.lancedb")
    load_into_lancedb(db, uri, collection="bits", first_size=32, format="bits", batch_size=600, progress=False)
    served = LanceFunnel(uri)
    distance, ids = served.shortlist(q)
    first = prefix(db, 32, True)
    center = bit_center(first)
    codes, q_codes = threshold_bits(first, center), threshold_bits(prefix(q, 32, True), center)
    every = np.unpackbits(q_codes[:, None, :] ^ codes[None, :, :], axis=2).sum(axis=2)  # [Q, N] Hamming distances
    best = np.array([np.lexsort((np.arange(len(db)), row))[:200] for row in every])  # by distance, then id
    np.testing.assert_array_equal(ids, best)
    np.testing.assert_array_equal(distance, np.take_along_axis(every, best, axis=1))
    assert (np.sort(every, axis=1)[:, 199] == np.sort(every, axis=1)[:, 200]).all()  # a tie at every cut
    _, found = served.search(q, 10)
    _, ref = AdaptiveRetriever(db, [(32, 200), (64, 10)], index="binary").search(q, 10)
    np.testing.assert_array_equal(found, ref)


@pytest.mark.parametrize(
    ("fmt", "index", "first_size"),
    [("float", "hnsw", 8), ("float", "ivf", 8), ("int8", "flat", 8), ("int8", "hnsw", 8), ("bits", "ivf", 32)],
)
def test_approximate_and_int8_first_stages_report_recall_against_exact(data, tmp_path, fmt, index, first_size):
    db, _, q, _ = data
    uri = str(tmp_path / "index.lancedb")
    summary = load_into_lancedb(db, uri, collection="c", first_size=first_size, format=fmt, index=index,
                                progress=False)  # fmt: skip
    assert summary["index"].startswith("IVF_")
    served = LanceFunnel(uri, "c", nprobe=64)
    _, ids = served.search(q, 10)
    recall = recall_against_exact(db, q, ids, 10)
    # the in-process funnel over the same first-stage format, exact, as the reference
    in_process = {"float": "flat", "int8": "int8", "bits": "binary"}[fmt]
    _, ref = AdaptiveRetriever(db, [(first_size, 200), (64, 10)], index=in_process).search(q, 10)
    assert recall >= recall_against_exact(db, q, ref, 10) - 0.03, (fmt, index, recall)
    assert recall >= 0.85


def test_an_interrupted_load_resumes_without_duplicates(data, tmp_path, monkeypatch):
    from lancedb.table import LanceTable

    db, db_y, q, _ = data
    path = write_npz(tmp_path / "items.npz", db, db_y)
    uri = str(tmp_path / "index.lancedb")
    real_add = LanceTable.add
    calls = []

    def failing_add(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # stopped while loading the third batch
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(LanceTable, "add", failing_add)
    with pytest.raises(KeyboardInterrupt):
        load_into_lancedb(path, uri, batch_size=500, progress=False)
    monkeypatch.setattr(LanceTable, "add", real_add)
    name = collection_name(path)
    assert LanceFunnel(uri, name).meta.complete is False  # (and a warning says to run make index again)
    summary = load_into_lancedb(path, uri, batch_size=500, progress=False)
    assert summary["resumed"] and summary["skipped"] == 1000 and summary["inserted"] == len(db) - 1000
    served = LanceFunnel(uri, name)
    assert served.meta.complete
    np.testing.assert_array_equal(stored_ids(uri, name), np.arange(len(db)))  # every row once
    again = load_into_lancedb(path, uri, batch_size=500, progress=False)  # a finished load: nothing to do
    assert again["inserted"] == 0 and again["skipped"] == len(db)
    np.testing.assert_array_equal(stored_ids(uri, name), np.arange(len(db)))
    np.testing.assert_array_equal(
        served.search(q, 10)[1], AdaptiveRetriever(db, [(16, 200), (64, 10)]).search(q, 10)[1]
    )


KILLED_LOAD = """
    import os, signal, sys, threading
    from lancedb.table import LanceTable
    from mrl.retrieval.lancedb import load_into_lancedb

    real_add, calls = LanceTable.add, []

    def add(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the process dies while the third batch is being written
            threading.Timer(0.002, os.kill, (os.getpid(), signal.SIGKILL)).start()
        return real_add(self, *args, **kwargs)

    LanceTable.add = add
    load_into_lancedb(sys.argv[1], sys.argv[2], batch_size=500, progress=False)
    signal.pause()  # the timer kills the process whichever came first
"""


def test_a_load_killed_mid_write_resumes_without_duplicates(data, tmp_path):
    """A real crash: the loading process is SIGKILLed (no cleanup of any kind) while writing a batch. The table holds
    whole batches only, and the next load completes it with every row once."""
    db, db_y, q, _ = data
    path = write_npz(tmp_path / "items.npz", db, db_y)
    uri = str(tmp_path / "index.lancedb")
    script = tmp_path / "killed_load.py"
    script.write_text(textwrap.dedent(KILLED_LOAD))
    began = time.perf_counter()
    result = subprocess.run([sys.executable, str(script), str(path), uri], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert result.returncode == -9, (result.returncode, result.stderr[-2000:], time.perf_counter() - began)
    name = collection_name(path)
    held = stored_ids(uri, name)
    assert len(held) in (1000, 1500), len(held)  # batches are all or nothing
    np.testing.assert_array_equal(held, np.arange(len(held)))
    summary = load_into_lancedb(path, uri, batch_size=500, progress=False)
    assert summary["resumed"] and summary["skipped"] == len(held) and summary["inserted"] == len(db) - len(held)
    np.testing.assert_array_equal(stored_ids(uri, name), np.arange(len(db)))
    served = LanceFunnel(uri, name)
    assert served.meta.complete
    np.testing.assert_array_equal(
        served.search(q, 10)[1], AdaptiveRetriever(db, [(16, 200), (64, 10)]).search(q, 10)[1]
    )


def test_mismatches_are_one_line_errors(data, tmp_path):
    db, db_y, q, _ = data
    uri = str(tmp_path / "index.lancedb")
    path = write_npz(tmp_path / "items.npz", db, db_y)
    load_into_lancedb(path, uri, collection="c", progress=False)
    other = write_npz(tmp_path / "other.npz", db[:, :32], db_y)
    alien = write_npz(tmp_path / "b.npz", db, db_y, "other.ckpt")
    (tmp_path / "a_file").write_text("x")
    cases = [
        (lambda: load_into_lancedb(other, uri, collection="c", progress=False),
         r"^collection='c': holds 2500 64-wide embeddings of .*items.npz, not these 2500 32-wide ones; load it "),
        (lambda: load_into_lancedb(alien, uri, collection="c", progress=False),
         r"^collection='c': holds embeddings of model.ckpt, these are of other.ckpt"),
        (lambda: load_into_lancedb(path, uri, collection="c", first_size=32, progress=False),
         r"^first_size=32: collection='c' was built with first_size=16"),
        (lambda: load_into_lancedb(path, uri, collection="c", format="int8", progress=False),
         r"^format='int8': collection='c' was built with format='float'"),
        (lambda: load_into_lancedb(path, uri, collection="d", format="bits", index="hnsw", progress=False),
         r"^index='hnsw': LanceDB has no hnsw index over bits; use flat or ivf"),
        (lambda: load_into_lancedb(path, uri, collection="d", first_size=0, progress=False),
         r"^first_size=0: the indexed prefix's size, in 1\.\.64"),
        (lambda: load_into_lancedb(path, uri, collection="d", index="diskann", progress=False),
         r"^index='diskann': expected one of flat, hnsw, ivf"),
        (lambda: load_into_lancedb(path, uri, collection="d", batch_size=0, progress=False),
         r"^batch_size=0: rows per insert, a positive integer"),
        (lambda: load_into_lancedb(path, str(tmp_path / "a_file"), progress=False),
         r"^uri='.*a_file': a file; a LanceDB database is a folder"),
        (lambda: LanceFunnel(uri, "nope"), r"^collection='nope': not in .*index.lancedb \(it holds c\)"),
        (lambda: LanceFunnel(str(tmp_path / "none.lancedb")), r"^uri='.*none.lancedb': no such LanceDB folder"),
        (lambda: LanceFunnel(uri, "c", funnel=[(8, 100), (64, 10)]),
         r"^funnel='8:100,64:10': collection='c' indexes the first 16 coordinates"),
        (lambda: LanceFunnel(uri, "c").search(q[:, :32], 5), r"^queries.shape=\(40, 32\): expected \[Q, 64\]"),
        (lambda: LanceFunnel(uri, "c").search(q, 11), r"^k=11: must be an integer in 1\.\.10"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
            call()
        assert is_config_error(error.value), message
        assert "\n" not in str(error.value)
    # a table another program made is not resumed or served
    lancedb.connect(uri).create_table("theirs", data=[{"id": 1, "vector": [0.0, 1.0]}])
    lancedb.connect(uri).create_table("other", data=[{"key": 1, "vector": [0.0, 1.0]}])
    with pytest.raises(ValueError, match=r"^collection='theirs': exists and was not made by mrl"):
        load_into_lancedb(path, uri, collection="theirs", progress=False)
    assert LanceFunnel(uri).collection == "c"  # the only mrl table there


def native_threads() -> int:
    """Threads of this process, LanceDB's native ones included (Python's ``threading`` does not see those)."""
    return len(os.listdir("/proc/self/task"))


def test_objects_on_one_database_share_one_connection(data, loaded, tmp_path, monkeypatch):
    """Twenty more funnels on a folder open no new LanceDB connection and start no thread apiece; the same folder
    spelled relatively, or a store on it, gets the same connection; another api key gets its own."""
    from mrl.retrieval.lancedb import LanceFullWidth, LanceStore, connect

    db, _, q, _ = data
    uri, _ = loaded
    first = LanceFunnel(uri)
    first.search(q, 10)  # LanceDB starts its worker threads on first use
    assert LanceFunnel(uri, "flat").db is first.db
    monkeypatch.chdir(os.path.dirname(uri))
    relative = LanceFunnel("index.lancedb")
    monkeypatch.chdir(tmp_path)  # the shared connection names the folder by its resolved path
    assert relative.db is first.db and relative.search(q, 10)[1].shape == (len(q), 10)
    store = LanceStore(uri)
    store.connect(create=False)
    assert store.db is first.db and connect(uri, api_key="another") is not first.db

    opened = []
    real_connect = lancedb.connect
    monkeypatch.setattr(lancedb, "connect", lambda *a, **kw: opened.append(a) or real_connect(*a, **kw))
    threads = native_threads()
    made = [LanceFunnel(uri) for _ in range(20)]
    for funnel in made:
        funnel.search(q, 10)
    LanceFullWidth(uri, kind="IVF_FLAT")
    assert opened == [] and all(funnel.db is first.db for funnel in made)
    assert native_threads() - threads < 5, (threads, native_threads())
    np.testing.assert_array_equal(made[-1].search(q, 10)[1], first.search(q, 10)[1])


def test_a_removed_folder_is_missing_until_loaded_again(data, tmp_path):
    """The shared connection does not hide a removed folder: a search fails as it did, and the folder loaded
    again (other rows under the same names) is served from a fresh connection with the new rows."""
    import shutil

    db, _, q, _ = data
    uri = str(tmp_path / "index.lancedb")
    load_into_lancedb(db[:300], uri, collection="c", first_size=8, progress=False)
    before = LanceFunnel(uri)
    shutil.rmtree(uri)
    with pytest.raises(FileNotFoundError, match=r"^uri='.*index.lancedb': no such LanceDB folder"):
        LanceFunnel(uri)
    load_into_lancedb(db[300:800], uri, collection="c", first_size=8, progress=False)
    after = LanceFunnel(uri)
    assert after.db is not before.db and after.n == 500
    np.testing.assert_array_equal(
        after.search(q, 10)[1], AdaptiveRetriever(db[300:800], [(8, 200), (64, 10)]).search(q, 10)[1]
    )


def test_make_index_and_make_search_against_the_database(data, tmp_path, capsys):
    """The CLIs: a tuned index loaded from files, searched with --backend lancedb; the same rows as in process."""
    from mrl.cli.index import command as index_main
    from mrl.cli.search import command as search_main

    db, db_y, q, q_y = data
    items, queries = write_npz(tmp_path / "items.npz", db, db_y), write_npz(tmp_path / "queries.npz", q, q_y)
    summary = index_main([str(items), "--backend", "lancedb", "--queries", str(queries), "--target-recall", "0.99",
                          "--no-progress"])  # fmt: skip
    uri = str(tmp_path / "index.lancedb")  # the default: beside the embeddings
    assert summary["uri"] == uri and summary["backend"] == "lancedb"
    tuned = summary["tuned"]
    assert tuned.recall >= 0.99 and summary["funnel"] == tuned.funnel
    printed = capsys.readouterr().out
    assert "recall@10 >= 0.99" in printed and f'ARGS="--backend lancedb --uri {uri}"' in printed
    served = search_main([str(queries), "--backend", "lancedb", "--uri", uri, "--out", str(tmp_path / "db.csv"),
                          "--show", "2"])  # fmt: skip
    assert served["funnel"] == list(tuned.funnel.stages) and served["backend"] == "lancedb"
    assert "LanceDB collection mrl_items" in " ".join(capsys.readouterr().out.split())  # the table's title
    local = search_main([str(items), str(queries), "--funnel", tuned.funnel.spec, "--index", tuned.funnel.index,
                         "--out", str(tmp_path / "local.csv"), "--show", "0"])  # fmt: skip
    if tuned.funnel.format in ("float", "bits"):  # an exact first stage in both, ties kept alike: the same rows
        # (the scores to float rounding: a one-stage funnel, which the timing may choose, returns LanceDB's own)
        db_rows, local_rows = ([*csv.reader((tmp_path / n).read_text().splitlines())] for n in ("db.csv", "local.csv"))
        assert [r[:3] + r[4:] for r in db_rows] == [r[:3] + r[4:] for r in local_rows]
        db_scores, local_scores = ([float(r[3]) for r in rows[1:]] for rows in (db_rows, local_rows))
        np.testing.assert_allclose(db_scores, local_scores, atol=1e-5)
    rows = list(csv.DictReader((tmp_path / "db.csv").read_text().splitlines()))
    assert len(rows) == 10 * len(q) and rows[0].keys() == {"query", "rank", "id", "score", "label"}
    assert recall_against_exact(db, q, served["rows"], 10) >= 0.95
    assert recall_against_exact(db, q, local["rows"], 10) >= 0.95
    # an explicit exact float funnel: the CSVs are the same, byte for byte
    index_main([str(items), "--backend", "lancedb", "--uri", str(tmp_path / "f.lancedb"), "--first-size", "8",
                "--no-progress"])  # fmt: skip
    search_main([str(queries), "--backend", "lancedb", "--uri", str(tmp_path / "f.lancedb"), "--out",
                 str(tmp_path / "f.csv"), "--show", "0"])  # fmt: skip
    search_main([str(items), str(queries), "--funnel", "8:200,64:10", "--out", str(tmp_path / "f_local.csv"),
                 "--show", "0"])  # fmt: skip
    assert (tmp_path / "f.csv").read_text() == (tmp_path / "f_local.csv").read_text()


def test_search_cli_errors_with_the_database(data, tmp_path):
    from mrl.cli.index import run as index_run
    from mrl.cli.search import run

    db, db_y, q, q_y = data
    items = write_npz(tmp_path / "items.npz", db, db_y)
    uri = str(tmp_path / "index.lancedb")
    load_into_lancedb(items, uri, progress=False)
    narrow = write_npz(tmp_path / "narrow.npz", q[:, :32], q_y)
    alien = write_npz(tmp_path / "alien.npz", q, q_y, checkpoint="other.ckpt")
    queries = write_npz(tmp_path / "queries.npz", q, q_y)
    cases = [
        (lambda: run(None, str(narrow), backend="lancedb", uri=uri),
         r"^queries='.*narrow.npz': 32-wide embeddings against the 64-wide collection mrl_items"),
        (lambda: run(None, str(alien), backend="lancedb", uri=uri),
         r"^queries='.*alien.npz': embedded by other.ckpt, the database by model.ckpt"),
        (lambda: run(None, str(queries), backend="lancedb"), r"^uri=None: --backend lancedb needs --uri <its folder>"),
        (lambda: run(None, str(queries), backend="lancedb", uri=uri, target_recall=0.99),
         r"^target_recall=0.99: with --backend lancedb the funnel is tuned when the collection is built"),
        (lambda: run(str(narrow), str(queries), backend="lancedb", uri=uri),
         r"^database='.*narrow.npz': 40 32-wide embeddings, but collection mrl_items holds 2500 64-wide ones"),
        (lambda: run(str(items), str(queries), backend="qdrant"),
         r"^backend='qdrant': expected one of faiss, milvus, lancedb"),
        (lambda: index_run(str(items), backend="qdrant"), r"^backend='qdrant': expected one of milvus, lancedb"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert is_config_error(error.value), message
    # k beyond the recorded funnel's 10: the funnel keeps k
    result = run(None, str(queries), k=15, backend="lancedb", uri=uri, out=str(tmp_path / "r.csv"))
    assert result["funnel"] == [(16, 200), (64, 15)] and result["rows"].shape == (40, 15)
    np.testing.assert_array_equal(result["rows"], AdaptiveRetriever(db, [(16, 200), (64, 15)]).search(q, 15)[1])


def test_make_index_from_a_run_directory_with_lancedb(data, tmp_path):
    from mrl.cli.index import run

    db, db_y, q, q_y = data
    (tmp_path / "run" / "eval").mkdir(parents=True)
    write_npz(tmp_path / "run" / "eval" / "embeddings_train.npz", db, db_y)
    write_npz(tmp_path / "run" / "eval" / "embeddings_test.npz", q, q_y)
    summary = run(str(tmp_path / "run"), backend="lancedb", target_recall=0.95, first_size=8, progress=False)
    assert summary["uri"] == str(tmp_path / "run" / "eval" / "index.lancedb")
    assert summary["collection"] == "mrl_embeddings_train" and summary["tuned"].tuning_queries == 28
    served = LanceFunnel(summary["uri"])
    assert served.funnel == summary["tuned"].funnel
    assert recall_against_exact(db, q, served.search(q, 10)[1], 10) >= 0.9


def test_make_targets_pass_the_backend_through():
    from mrl_testing.configs import run_make

    lines = run_make("-n", "index", "DB=a.npz", "ARGS=--backend lancedb").stdout.splitlines()
    assert next(line for line in lines if "mrl.cli.index" in line).split()[-3:] == ["a.npz", "--backend", "lancedb"]
    lines = run_make("-n", "search", "QUERIES=q.npz", "ARGS=--backend lancedb --uri x.lancedb").stdout.splitlines()
    assert next(line for line in lines if "mrl.cli.search" in line).split()[-5:] == [
        "q.npz", "--backend", "lancedb", "--uri", "x.lancedb"
    ]  # fmt: skip


def test_retrieval_does_not_import_evaluation():
    """Layering: the vector-database backends read embeddings files through mrl.common, never mrl.evaluation."""
    code = (
        "import sys, mrl.retrieval.lancedb, mrl.retrieval.milvus, mrl.retrieval.backends; "
        "print(sorted(m for m in sys.modules if m.startswith(('mrl.evaluation', 'mrl.cli'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
