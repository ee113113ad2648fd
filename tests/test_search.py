"""`make search`: funnel search over embedding files, checked against brute-force cosine search in numpy."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mrl.cli.search import command as search_main
from mrl.cli.search import parse_funnel
from mrl.cli.search import run as search_run


def _write(path, embeddings, ids=None, labels=None, meta=None):
    arrays = {"embeddings": embeddings, "meta": np.array(json.dumps(meta or {"checkpoint": "model.ckpt"}))}
    if ids is not None:
        arrays["ids"] = np.array(ids, dtype=str)
    arrays["labels"] = np.full(len(embeddings), -1) if labels is None else np.asarray(labels)
    np.savez(path, **arrays)
    return str(path)


def _mrl_like(n, dim=64, seed=0):
    """Vectors whose energy falls with the coordinate, as trained Matryoshka embeddings' does."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim)) * (1.0 / np.sqrt(1 + np.arange(dim)))).astype(np.float32)


def _brute_force(db, q, k):
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    scores = unit(q) @ unit(db).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1)


def test_exact_funnel_matches_brute_force_and_names_rows(tmp_path, capsys):
    db, q = _mrl_like(500), _mrl_like(30, seed=1)
    names = [f"item{i:04d}" for i in range(500)]
    database = _write(tmp_path / "db.npz", db, ids=names, labels=np.arange(500) % 7)
    queries = _write(tmp_path / "q.npz", q, ids=[f"q{i}" for i in range(30)])
    result = search_main([database, queries, "--k", "5", "--funnel", "64:5"])
    order, scores = _brute_force(db, q, 5)
    np.testing.assert_array_equal(result["rows"], order)
    np.testing.assert_allclose(result["scores"], scores, atol=1e-5)
    with open(tmp_path / "q_top5.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 150 and rows[0]["query"] == "q0" and rows[0]["rank"] == "1"
    assert rows[0]["id"] == names[order[0, 0]] and rows[0]["label"] == str(order[0, 0] % 7)
    assert float(rows[6]["score"]) == pytest.approx(scores[1, 1], abs=1e-5)
    out = capsys.readouterr().out
    assert "top 3 of 500 items, funnel 64d:5" in out and "30 queries" in out


def test_default_funnel_shortlists_with_16_coordinates(tmp_path):
    db, q = _mrl_like(2000), _mrl_like(50, seed=2)
    database, queries = _write(tmp_path / "db.npz", db), _write(tmp_path / "q.npz", q)
    result = search_run(database, queries, k=3, out=str(tmp_path / "r.csv"))
    assert result["funnel"] == [(16, 200), (64, 3)]
    order, _ = _brute_force(db, q, 3)
    # rows without ids are named by position; the 16-d shortlist of 200 keeps nearly every true neighbour
    assert (result["rows"][:, 0] == order[:, 0]).mean() >= 0.9
    assert result["mflops_per_query"] < 2 * 64 * 2000 / 1e6 / 2
    with open(tmp_path / "r.csv") as handle:
        assert next(csv.reader(handle)) == ["query", "rank", "id", "score"]  # no labels in this database


def test_binary_index_shortlists_with_threshold_bits(tmp_path):
    db, q = _mrl_like(2000), _mrl_like(50, seed=2)
    database, queries = _write(tmp_path / "db.npz", db), _write(tmp_path / "q.npz", q)
    result = search_main([database, queries, "--k", "3", "--index", "binary", "--show", "0"])
    assert result["funnel"] == [(32, 200), (64, 3)]  # half the width in bits, at most 128
    order, _ = _brute_force(db, q, 3)
    # every result was among the 200 items whose 32 sign bits differ least from the query's ...
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    center = unit(db[:, :32]).mean(0)  # bits are set above the database's mean
    ham = ((unit(q[:, :32]) > center)[:, None, :] != (unit(db[:, :32]) > center)[None, :, :]).sum(-1)
    cut = np.sort(ham, axis=1)[:, 199:200]
    assert (np.take_along_axis(ham, result["rows"], axis=1) <= cut).all()
    # ... and is scored by its full 64-d cosine. On these unclustered vectors 4-byte codes keep the true
    # neighbour for about half the queries (a random shortlist of 200 in 2000 would keep 10%)
    cos = np.take_along_axis(unit(q) @ unit(db).T, result["rows"], axis=1)
    np.testing.assert_allclose(result["scores"], cos, atol=1e-5)
    assert (result["rows"][:, 0] == order[:, 0]).mean() >= 0.4
    narrow = [_write(tmp_path / "narrow.npz", db[:, :8]), _write(tmp_path / "nq.npz", q[:, :8]), "--show", "0"]
    assert search_main([*narrow, "--index", "binary"])["funnel"] == [(4, 200), (8, 10)]  # half a byte of bits
    with pytest.raises(SystemExit):  # bits alone give Hamming distances, not scores
        search_main([*narrow, "--index", "binary", "--funnel", "8:10"])


def test_funnel_text_and_its_defaults():
    assert parse_funnel(None, 2048, 10) == [(16, 200), (2048, 10)]
    assert parse_funnel(None, 2048, 10, n=50) == [(16, 50), (2048, 10)]
    assert parse_funnel(None, 12, 5) == [(12, 5)]
    assert parse_funnel("8:100, 64:20,256", 256, 10) == [(8, 100), (64, 20), (256, 10)]
    with pytest.raises(ValueError, match=r"^funnel='8:x': stage 1 is '8:x'"):
        parse_funnel("8:x", 64, 10)
    with pytest.raises(ValueError, match=r"^funnel='32:100,16:10': funnel sizes must strictly increase"):
        parse_funnel("32:100,16:10", 64, 10)
    with pytest.raises(ValueError, match=r"^funnel='16:200,64:5': the last stage keeps 5 candidates, fewer than k=10"):
        parse_funnel("16:200,64:5", 64, 10)


def test_mismatched_files_fail_with_one_line(tmp_path):
    db = _write(tmp_path / "db.npz", _mrl_like(100))
    narrow = _write(tmp_path / "narrow.npz", _mrl_like(5, dim=16))
    other = _write(tmp_path / "other.npz", _mrl_like(5), meta={"checkpoint": "another.ckpt"})
    with pytest.raises(ValueError, match=r"^queries='.*narrow.npz': 16-wide embeddings against a 64-wide database"):
        search_run(db, narrow)
    with pytest.raises(ValueError, match=r"embedded by another.ckpt, the database by model.ckpt"):
        search_run(db, other)
    with pytest.raises(ValueError, match=r"^k=101: must be in 1..100"):
        search_run(db, db, k=101)
    with pytest.raises(FileNotFoundError, match=r"^embeddings='.*missing.npz': no such file"):
        search_run(db, str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match=r"^metric='dot'"):
        search_run(db, db, metric="dot")


def test_target_recall_tunes_the_funnel_and_prints_it(tmp_path, capsys):
    db, q = _mrl_like(1500), _mrl_like(120, seed=2)
    names = [f"item{i:04d}" for i in range(1500)]
    db_path, q_path = _write(tmp_path / "db.npz", db, ids=names), _write(tmp_path / "q.npz", q)
    result = search_main([db_path, q_path, "--k", "5", "--target-recall", "0.99", "--show", "0"])
    tuned = result["tuned"]
    assert tuned.target == 0.99 and tuned.recall >= 0.99 and result["funnel"] == list(tuned.funnel.stages)
    assert result["index"] == tuned.funnel.index and tuned.tuning_queries + tuned.holdout_queries == 120
    expected, _ = _brute_force(db, q, 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(result["rows"], expected)])
    both = (tuned.recall * tuned.tuning_queries + tuned.holdout_recall * tuned.holdout_queries) / 120
    assert recall == pytest.approx(both)  # the rows written are the tuned funnel's
    with open(result["output"]) as handle:
        assert next(csv.DictReader(handle))["id"].startswith("item")
    printed = capsys.readouterr().out
    assert "recall@5 >= 0.99:" in printed and "held-out queries" in printed and "make search ARGS=" in printed


def test_target_recall_errors_are_one_line(tmp_path):
    db = _write(tmp_path / "db.npz", _mrl_like(100))
    with pytest.raises(ValueError, match=r"^target=1.5: a recall@k to reach, in \(0, 1\]"):
        search_run(db, db, target_recall=1.5)
    with pytest.raises(ValueError, match=r"^target_recall=0.9: --funnel and --target-recall both choose a funnel"):
        search_run(db, db, target_recall=0.9, funnel="16:50,64:10")
    with pytest.raises(ValueError, match=r"^database=None: give the database's embeddings .npz"):
        search_run(None, db)
