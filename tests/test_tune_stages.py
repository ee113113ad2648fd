"""Three-stage funnels with float / fp16 / int8 middle stages and shortlists sized per query from their score gap:
the stage's scores and the cut against references computed another way (numpy on the decoded codes, a loop per
query), the built retriever against the tuner's rows, and the command line and database guards."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("faiss")

from mrl.cli.search import run as search_run  # noqa: E402
from mrl.common.errors import is_config_error  # noqa: E402
from mrl.retrieval import AdaptiveRetriever, Funnel, recall_against_exact, tune_funnel  # noqa: E402
from mrl.retrieval.compact import CompactStage  # noqa: E402
from mrl.retrieval.flat import prefix  # noqa: E402
from mrl.retrieval.funnel import cut_by_gap, exact_search  # noqa: E402
from mrl.retrieval.int8 import quantize_int8  # noqa: E402
from mrl_testing.synthetic import make_mrl_split  # noqa: E402


def mrl_data(n=3000, nq=80, dim=64, seed=2):
    db, _, q, _ = make_mrl_split(n, nq, dim, n_classes=30, seed=seed)
    return db, q


def score(x: np.ndarray, q: np.ndarray, l2: bool) -> np.ndarray:
    q = q.astype(np.float64)
    return ((x - q) ** 2).sum(1) if l2 else x @ q


def margin(s: np.ndarray, order: np.ndarray, keep: int) -> float:
    """How far apart the last kept score and the first dropped one are."""
    return float("inf") if keep >= len(s) else abs(float(s[order[keep - 1]] - s[order[keep]]))


def decoded(x: np.ndarray, fmt: str) -> np.ndarray:
    """The rows a compact stage scores, decoded in float64 another way than the stage does."""
    if fmt == "fp16":
        return x.astype(np.float16).astype(np.float64)
    codes, scale = quantize_int8(x)
    return codes.astype(np.float64) * scale.astype(np.float64)


@pytest.mark.parametrize("fmt", ["fp16", "int8"])
@pytest.mark.parametrize("l2", [False, True])
def test_a_compact_stage_scores_the_decoded_rows(fmt, l2):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 48)).astype(np.float32)
    q = rng.standard_normal((70, 48)).astype(np.float32)  # more than one block of 64 queries
    ids = rng.integers(0, 500, (70, 9))
    ids[3, 4:] = -1  # no candidate there
    stage = CompactStage(x, fmt, l2=l2)
    scores = stage.scores(q, ids)
    ref_x = decoded(x, fmt)[np.maximum(ids, 0)]
    qd = q.astype(np.float64)[:, None, :]
    ref = ((ref_x - qd) ** 2).sum(-1) if l2 else (ref_x * qd).sum(-1)
    valid = ids >= 0
    np.testing.assert_allclose(scores[valid], ref[valid], rtol=1e-4, atol=1e-4)
    assert np.all(scores[~valid] == (np.inf if l2 else -np.inf))
    assert stage.bytes_per_item == 48 * (2 if fmt == "fp16" else 1) + (4 if l2 else 0)
    with pytest.raises(ValueError, match=r"^format='bits': a compact middle stage is one of fp16, int8"):
        CompactStage(x, "bits", l2=False)


def test_the_gap_cut_keeps_what_a_loop_per_query_keeps():
    rng = np.random.default_rng(1)
    scores = -np.sort(-rng.random((40, 30)).astype(np.float32), axis=1)  # best first
    ids = rng.permutation(2000)[:1200].reshape(40, 30)
    ids[5, 20:], scores[5, 20:] = -1, -np.finfo(np.float32).max  # a row that ran out of candidates
    for gap in (0.0, 0.05, 0.2, 10.0):
        cut = cut_by_gap(scores, ids, 4, gap, descending=True)
        for row in range(40):
            want = [i for s, i in zip(scores[row], ids[row]) if i >= 0 and s >= scores[row, 3] - gap]
            kept = [i for i in cut[row] if i >= 0]
            assert kept == want
        assert cut.shape[1] == max(len([i for i in r if i >= 0]) for r in cut)  # no column of -1 alone
    distances = -scores  # lower is better: the same cut
    np.testing.assert_array_equal(
        cut_by_gap(distances, ids, 4, 0.05, descending=False), cut_by_gap(scores, ids, 4, 0.05, True)
    )


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_a_wide_gap_changes_nothing_and_a_zero_gap_reranks_the_first_k(metric):
    db, q = mrl_data()
    plain = AdaptiveRetriever(db, [(8, 300), (64, 10)], metric=metric)
    wide = AdaptiveRetriever(db, [(8, 300), (64, 10)], metric=metric, shortlist_gap=1e30)
    for a, b in zip(plain.search(q, 10), wide.search(q, 10)):
        np.testing.assert_array_equal(a, b)
    assert wide.mflops_per_query() == pytest.approx(plain.mflops_per_query())  # all 300 kept
    zero = AdaptiveRetriever(db, [(8, 300), (64, 10)], metric=metric, shortlist_gap=0.0)
    _, ids = zero.search(q, 10)
    _, first = plain.shortlist(q, 10)  # no ties among these float scores: the first stage's top 10, reranked
    assert all(set(a) == set(b) for a, b in zip(ids, first))
    assert zero.mflops_per_query() == pytest.approx((3000 * 8 + 10 * 64) / 1e6)  # 10 kept per query
    assert "shortlist_gap=0" in repr(zero)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("middle", ["float", "fp16", "int8"])
def test_a_middle_stage_narrows_as_its_decoded_rows_rank(metric, middle):
    """The middle stage keeps the candidates its (decoded) 32-d prefix ranks best; the last stage scores those
    in float32: scores of the returned ids are their exact full-width ones."""
    db, q = mrl_data()
    retriever = AdaptiveRetriever(db, [(8, 200), (32, 40), (64, 10)], metric=metric, middle=middle)
    scores, ids = retriever.search(q, 10)
    _, short = AdaptiveRetriever(db, [(8, 200), (64, 10)], metric=metric).shortlist(q)
    normalize, l2 = metric == "cosine", metric == "l2"
    mid_db = prefix(db, 32, normalize)  # the float32 prefix the stage encodes; decoded and scored here in float64
    mid_db = decoded(mid_db, middle) if middle != "float" else mid_db.astype(np.float64)
    mid_q, full_db, full_q = prefix(q, 32, normalize), prefix(db, 64, normalize), prefix(q, 64, normalize)
    checked = 0
    for row in range(len(q)):
        cand = short[row]
        s = score(mid_db[cand], mid_q[row], l2)
        order = np.argsort(s if l2 else -s, kind="stable")
        kept = cand[order[:40]]
        f = score(full_db[kept].astype(np.float64), full_q[row], l2)
        final = np.argsort(f if l2 else -f, kind="stable")
        if margin(s, order, 40) < 1e-5 * np.abs(s).max() or margin(f, final, 10) < 1e-5 * np.abs(f).max():
            continue  # float rounding may order a near-tie either way
        assert set(ids[row]) == set(kept[final[:10]]), row
        checked += 1
    assert checked >= 0.9 * len(q)
    full_scores = exact_search(db, q, 3000, metric)  # the returned scores are the exact full-width scores
    lookup = {(r, i): s for r in range(len(q)) for s, i in zip(full_scores[0][r], full_scores[1][r])}
    np.testing.assert_allclose(scores, [[lookup[(r, i)] for i in ids[r]] for r in range(len(q))], rtol=1e-4, atol=1e-5)
    per_item = {"float": 4 * 32, "fp16": 2 * 32, "int8": 32}[middle] + (
        4 if metric == "l2" and middle != "float" else 0
    )
    assert retriever.bytes_per_item() == 4 * 8 + per_item + 4 * 64
    assert retriever.resident_bytes() == 3000 * retriever.bytes_per_item()


def test_funnel_data_carries_the_middle_format_and_the_gap():
    funnel = Funnel(((16, 300), (128, 50), (512, 10)), middle="int8", gap=0.04)
    assert Funnel.from_dict(json.loads(json.dumps(funnel.to_dict()))) == funnel
    assert str(funnel) == "16-d float shortlist of up to 300 within 0.04 -> 128-d int8 top 50 -> 512-d float top 10"
    assert funnel.cli_args()[-4:] == ["--middle", "int8", "--gap", "0.04"]
    assert funnel.bytes_per_item() == 4 * 16 + 128 + 4 * 512 + 4 * 64 + 4  # int8 middle, pruned float last stage
    retriever = funnel.build(np.random.default_rng(0).standard_normal((400, 512)).astype(np.float32))
    assert retriever.middle == "int8" and retriever.shortlist_gap == 0.04
    assert Funnel.from_dict({"stages": [[16, 300], [512, 10]]}).gap is None  # saved before gaps existed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"middle": "int8"}, r"^middle='int8': the funnel \[\(16, 200\), \(64, 10\)\] has no middle stage"),
        ({"middle": "bf16"}, r"^middle='bf16': expected one of float, fp16, int8"),
        ({"gap": -0.1}, r"^gap=-0.1: a score difference >= 0"),
        ({"gap": float("inf")}, r"^gap=inf: a score difference >= 0"),
    ],
)
def test_a_bad_middle_or_gap_is_a_one_line_error(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        Funnel(((16, 200), (64, 10)), **kwargs)
    assert is_config_error(error.value)


def test_every_three_stage_and_gap_row_is_the_recall_of_its_funnel_built_and_searched():
    db, q = mrl_data()
    tuned = tune_funnel(
        db, q, target=0.995, k=10, repeats=1, holdout=0.0, sizes=[8, 16], formats=("float", "bits"), approximate=(),
        middle_sizes=[32], baselines=(),
    )  # fmt: skip
    three = [r for r in tuned.table if len(r["stages"]) == 3]
    gaps = [r for r in tuned.table if r["gap"] is not None]
    assert {r["middle"] for r in three} == {"float", "fp16", "int8"} and gaps
    assert any("three-stage funnels scored" in n for n in tuned.notes)
    assert any("sized per query from their score gap" in n for n in tuned.notes)
    for row in three + gaps:
        retriever = Funnel.from_dict(row).build(db)
        _, ids = retriever.search(q, 10)
        assert row["recall"] == pytest.approx(recall_against_exact(db, q, ids, 10), abs=1e-9), row["funnel"]
        if row["gap"] is not None:  # MFLOPs count the candidates kept, as the retriever does
            assert row["mflops_per_query"] == pytest.approx(retriever.mflops_per_query())
            assert 10 <= row["mean_candidates"] <= row["stages"][0][1]
    # a grown funnel is timed (a candidate) only where it needs fewer MFLOPs than every other funnel meeting the target
    floor = min(r["mflops_per_query"] for r in tuned.table if r["recall"] >= 0.995 and len(r["stages"]) < 3
                and r["gap"] is None)  # fmt: skip
    timed = [r for r in three + gaps if r["ms_per_query"] is not None]
    assert all(r["mflops_per_query"] < floor for r in timed)
    assert any(r["recall"] >= 0.995 and r["mflops_per_query"] >= floor for r in three + gaps)  # some were left out
    # a middle stage is only tried where two stages need a shortlist of over 5 k
    for row in three:
        two = [r for r in tuned.table if len(r["stages"]) == 2 and r["gap"] is None and r["recall"] >= 0.995
               and r["stages"][0][0] == row["stages"][0][0] and r["format"] == row["format"]]  # fmt: skip
        assert two and min(r["stages"][0][1] for r in two) > 50
    # each gap row's structure stops at the first gap meeting the target
    for cap_key in {(r["format"], r["stages"][0][0], r["stages"][0][1]) for r in gaps}:
        recalls = [r["recall"] for r in gaps if (r["format"], r["stages"][0][0], r["stages"][0][1]) == cap_key]
        assert all(r < 0.995 for r in recalls[:-1])


@pytest.mark.parametrize("kind", ["gap", "middle"])
def test_the_tuner_serves_a_gap_or_three_stage_funnel_when_it_is_fastest(kind, monkeypatch):
    import mrl.retrieval.tune as tune

    def favour(retrievers, queries, k, repeats):  # the timing step, made to favour the kind under test
        fast = lambda r: r.shortlist_gap is not None if kind == "gap" else len(r.funnel) == 3  # noqa: E731
        return {i: 0.01 if getattr(r, "funnel", None) and fast(r) else 1.0 for i, r in retrievers.items()}

    monkeypatch.setattr(tune, "time_side_by_side", favour)
    db, q = mrl_data()
    tuned = tune_funnel(db, q, target=0.99, k=10, repeats=1, holdout=0.3, sizes=[8, 16], approximate=(), baselines=())
    assert (tuned.funnel.gap is not None) if kind == "gap" else (len(tuned.funnel.stages) == 3)
    assert tuned.retriever.shortlist_gap == tuned.funnel.gap and tuned.retriever.middle == tuned.funnel.middle
    hold = tuned.holdout_queries
    order = np.random.default_rng(0).permutation(len(q))
    _, ids = tuned.funnel.build(db).search(q[np.sort(order[:hold])], 10)
    assert tuned.holdout_recall == pytest.approx(recall_against_exact(db, q[np.sort(order[:hold])], ids, 10))
    if kind == "gap":
        assert "--gap" in str(tuned)


def test_make_search_takes_a_middle_format_and_a_gap(tmp_path):
    db, q = mrl_data(n=1500, nq=20)
    meta = np.array(json.dumps({"checkpoint": "model.ckpt"}))
    np.savez(tmp_path / "db.npz", embeddings=db, labels=np.full(len(db), -1), meta=meta)
    np.savez(tmp_path / "q.npz", embeddings=q, labels=np.full(len(q), -1), meta=meta)
    database, queries = str(tmp_path / "db.npz"), str(tmp_path / "q.npz")
    result = search_run(database, queries, k=5, funnel="8:200,32:40,64:5", middle="int8", gap=0.05)
    want = AdaptiveRetriever(db, [(8, 200), (32, 40), (64, 5)], middle="int8", shortlist_gap=0.05).search(q, 5)[1]
    np.testing.assert_array_equal(result["rows"], want)
    with pytest.raises(ValueError, match=r"^middle='int8': the funnel \[\(16, 200\), \(64, 5\)\] has no middle"):
        search_run(database, queries, k=5, middle="int8")
    with pytest.raises(ValueError, match=r"^gap=0.1: the database funnel serves float stages and fixed shortlists"):
        search_run(None, queries, backend="lancedb", uri=str(tmp_path / "x.lancedb"), gap=0.1)
    with pytest.raises(ValueError, match=r"^middle='fp16': --target-recall chooses the whole funnel"):
        search_run(database, queries, target_recall=0.9, middle="fp16")


def test_a_database_funnel_refuses_what_it_cannot_serve():
    from mrl.retrieval.database import LoadSpec, prepare_load

    db, _ = mrl_data(n=500)
    spec = LoadSpec(first_size=16, funnel=Funnel(((16, 100), (64, 10)), gap=0.05))
    with pytest.raises(ValueError, match=r"^funnel='16:100,64:10' \(gap=0.05\): a database funnel reranks"):
        prepare_load(db, spec, "LanceDB", [("float", "flat")])
