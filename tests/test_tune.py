"""Funnel tuning (`mrl.tune_funnel`) on data where the right answer is known, checked against references computed
another way (brute-force numpy neighbours and recall by set intersection)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("faiss")

from mrl.common.errors import is_config_error  # noqa: E402
from mrl.retrieval import (  # noqa: E402
    AdaptiveRetriever,
    Funnel,
    TunedFunnel,
    TuneSettings,
    recall_against_exact,
    tune_funnel,
    tune_funnels,
)


def brute_top_k(db: np.ndarray, q: np.ndarray, k: int, size: int | None = None) -> np.ndarray:
    """Exact cosine top-k at a prefix in float64, the lowest id first among equal scores."""
    m = size or db.shape[1]
    d = db[:, :m].astype(np.float64)
    x = q[:, :m].astype(np.float64)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-300)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    scores = x @ d.T
    order = np.lexsort((np.broadcast_to(np.arange(len(db)), scores.shape), -scores), axis=1)
    return order[:, :k]


def set_recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))


def prefix_suffices(n=2000, nq=60, dim=64, informative=16, seed=0):
    """Vectors that are zero after their first ``informative`` coordinates: that prefix IS the vector, so a
    one-stage search at that size is exact search, and shorter prefixes (random coordinates) are not."""
    rng = np.random.default_rng(seed)
    db = np.zeros((n, dim), np.float32)
    db[:, :informative] = rng.standard_normal((n, informative))
    q = np.zeros((nq, dim), np.float32)
    q[:, :informative] = db[rng.choice(n, nq, replace=False), :informative] + 0.3 * rng.standard_normal(
        (nq, informative)
    )
    return db, q


def prefix_useless(n=2000, nq=60, dim=64, blank=16, seed=1):
    """Vectors whose first ``blank`` coordinates are the same constant for every item and query: a prefix that
    short scores every item alike, so it cannot shortlist; the information is all after it."""
    rng = np.random.default_rng(seed)
    db = rng.standard_normal((n, dim)).astype(np.float32)
    q = (db[rng.choice(n, nq, replace=False)] + 0.3 * rng.standard_normal((nq, dim))).astype(np.float32)
    db[:, :blank] = 1.0
    q[:, :blank] = 1.0
    return db, q


def test_a_prefix_that_holds_the_vector_is_found_exact_and_shorter_ones_are_not():
    db, q = prefix_suffices()
    tuned = tune_funnel(db, q, target=0.99, k=10, formats=("float",), repeats=1, holdout=0.25)
    rows = {(tuple(map(tuple, r["stages"])), r["format"]): r for r in tuned.table}
    assert rows[(((16, 10),), "float")]["recall"] == 1.0  # the 16-d prefix is the vector
    assert rows[(((8, 10),), "float")]["recall"] < 0.9  # 8 random coordinates are not
    assert rows[(((64, 10),), "float")]["recall"] == 1.0  # exact search is always in the table
    assert tuned.recall >= 0.99 and tuned.holdout_recall >= 0.99 and tuned.met and tuned.shortfall == 0
    # the choice is the fastest measured of the candidates that meet the target
    timed = [r for r in tuned.table if r["ms_per_query"] is not None and r["recall"] >= 0.99]
    assert tuned.ms_per_query == min(r["ms_per_query"] for r in timed)
    assert [r for r in tuned.table if r["chosen"]][0]["stages"] == [list(s) for s in tuned.funnel.stages]
    # the retriever is the funnel, ready to search; its neighbours are the brute-force ones
    _, ids = tuned.retriever.search(q, 10)
    assert set_recall(ids, brute_top_k(db, q, 10)) >= 0.99
    np.testing.assert_array_equal(ids, tuned.funnel.build(db).search(q, 10)[1])


def test_a_useless_short_prefix_forces_a_wider_funnel():
    db, q = prefix_useless()
    tuned = tune_funnel(db, q, target=0.95, k=10, formats=("float", "int8"), repeats=1)
    assert tuned.funnel.stages[0][0] > 16  # 8 or 16 constant coordinates cannot shortlist
    assert tuned.holdout_recall >= 0.95
    # a 16-d shortlist ties every item: it keeps the lowest ids, so its recall is the share of the true
    # neighbours among ids below c, known in advance
    exact = brute_top_k(db, q, 10)
    hold = tuned.holdout_queries
    for row in tuned.table:
        (m1, c), rest = row["stages"][0], row["stages"][1:]
        if m1 <= 16 and rest and row["format"] == "float":
            tuning = np.sort(np.random.default_rng(0).permutation(len(q))[hold:])
            assert row["recall"] == pytest.approx(np.mean((exact[tuning] < c).sum(1) / 10))


def test_table_recalls_are_those_of_the_funnels_built_and_searched():
    """Every kind of row (one stage, float / int8 / bits shortlists) against the real retriever's neighbours and a
    set-intersection recall against numpy brute force (holdout=0: every query tunes)."""
    rng = np.random.default_rng(3)
    from mrl_testing.synthetic import make_mrl_split

    db, _, q, _ = make_mrl_split(1500, 40, 64, n_classes=30, seed=2)
    tuned = tune_funnel(db, q, target=0.999, k=5, repeats=1, holdout=0.0, sizes=[8, 16, 64])
    assert tuned.holdout_recall is None and tuned.holdout_queries == 0 and "no held-out" in tuned.notes[0]
    exact = brute_top_k(db, q, 5)
    rows = tuned.table
    picks = [rows[0]] + [rows[i] for i in rng.choice(len(rows), 8, replace=False)]
    picks += [next(r for r in rows if r["format"] == f) for f in ("int8", "bits")]
    for row in picks:
        _, ids = Funnel.from_dict(row).build(db).search(q, 5)
        assert row["recall"] == pytest.approx(set_recall(ids, exact), abs=1e-9), row["funnel"]
        assert row["recall"] == pytest.approx(recall_against_exact(db, q, ids, 5), abs=1e-9)


def test_approximate_first_stages_are_tried_at_the_sizes_within_width_and_budget():
    from mrl.retrieval.tune import HNSW_MAX_SIZE, IVF_MAX_SIZE, approximate_sizes

    s = TuneSettings(sizes=(64, 8, 16, 32, 128))
    assert approximate_sizes(s, "hnsw", HNSW_MAX_SIZE, 1024) == [8, 16, 32]  # as listed, at most 32 wide
    assert approximate_sizes(s, "ivf", IVF_MAX_SIZE, 1024) == [64, 8, 16, 32]
    assert approximate_sizes(s, "ivf", IVF_MAX_SIZE, 32) == [8, 16]  # below the width only
    budget = dataclasses.replace(s, max_first_stage_bytes=64)  # float: 4 bytes a coordinate
    assert approximate_sizes(budget, "hnsw", HNSW_MAX_SIZE, 1024) == [8, 16]
    assert approximate_sizes(budget, "ivf", IVF_MAX_SIZE, 1024) == [8, 16]


def test_a_bytes_budget_is_kept_and_a_missed_target_is_said():
    db, q = prefix_suffices(informative=32)
    tuned = tune_funnel(db, q, target=0.99, k=10, repeats=1, max_first_stage_bytes=32)
    assert tuned.first_stage_bytes <= 32  # float 8-d (32 bytes), int8 <= 32-d, bits
    assert tuned.recall >= 0.99 and all(r["first_stage_bytes"] <= 32 for r in tuned.table if r["chosen"])
    # nothing within 1 byte per item reaches 0.999: the best within it, and a note saying so
    short = tune_funnel(db, q, target=0.999, k=10, repeats=1, formats=("bits",), max_first_stage_bytes=1)
    assert short.first_stage_bytes == 1 and not short.met and short.shortfall > 0
    assert any("no funnel tried reaches" in n for n in short.notes) and "MISSED by" in str(short)


def test_the_result_reports_a_held_out_miss_by_how_much():
    db, q = prefix_suffices(n=500, nq=20)
    funnel = Funnel(((16, 10),))
    result = TunedFunnel(0.99, 10, "cosine", funnel, funnel.build(db), [], recall=0.995, holdout_recall=0.97,
                         tuning_queries=14, holdout_queries=6, ms_per_query=0.1, exact_ms_per_query=0.5,
                         mflops_per_query=0.01, first_stage_bytes=64, bytes_per_item=64)  # fmt: skip
    assert not result.met and result.shortfall == pytest.approx(0.02) and result.speedup == pytest.approx(5.0)
    assert "target MISSED by 0.0200" in str(result) and result.summary()["met"] is False


def test_funnel_is_data_printable_and_reusable():
    funnel = Funnel(((16, 200), (2048, 10)), "int8")
    assert str(funnel) == "16-d int8 shortlist of 200 -> 2048-d float top 10"
    assert funnel.spec == "16:200,2048:10" and funnel.k == 10 and funnel.index == "int8"
    assert funnel.cli_args() == ["--funnel", "16:200,2048:10", "--index", "int8", "--metric", "cosine"]
    assert Funnel.from_dict(funnel.to_dict()) == funnel
    assert funnel.first_stage_bytes() == 16 and funnel.bytes_per_item() == 16 + 4 * 2048 + 4 * 256 + 4
    assert funnel.mflops_per_query(1000) == pytest.approx((1000 * 16 + 200 * 2048) / 1e6)
    db = np.random.default_rng(0).standard_normal((300, 2048)).astype(np.float32)
    retriever = funnel.build(db)
    assert isinstance(retriever, AdaptiveRetriever) and retriever.index_type == "int8"
    assert retriever.bytes_per_item() == funnel.bytes_per_item()


def test_tune_funnel_is_exported_from_the_package():
    import mrl

    assert mrl.tune_funnel is tune_funnel and "tune_funnel" in dir(mrl)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": 1.5}, r"^target=1.5: a recall@k to reach, in \(0, 1\]"),
        ({"k": 0}, r"^k=0: must be an integer in 1\.\.300"),
        ({"formats": ["fp4"]}, r"^formats=\['fp4'\]: expected some of float, int8, bits"),
        ({"shortlists": [5]}, r"^shortlists=\[5\]: candidate counts in 10\.\.300"),
        ({"sizes": [0, 8]}, r"^sizes=\[0, 8\]: prefix sizes in 1\.\.32"),
        ({"holdout": 1.0}, r"^holdout=1.0: the share of the queries kept aside"),
        ({"metric": "dot"}, r"^metric='dot': expected one of cosine, l2, ip"),
        ({"max_first_stage_bytes": 0}, r"^max_first_stage_bytes=0: a positive number"),
        (
            {"approximate": ["pq"]},
            r"^approximate=\['pq'\]: expected 'auto' \(hnsw and ivf from 20000 items\), \(\) for none, or some of "
            r"hnsw, ivf$",
        ),
        ({"approximate": "fast"}, r"^approximate='fast': expected 'auto'"),
        ({"approximate": 3}, r"^approximate=3: expected 'auto'"),
    ],
)
def test_wrong_settings_are_one_line_errors(kwargs, message):
    rng = np.random.default_rng(0)
    db, q = rng.standard_normal((300, 32)).astype(np.float32), rng.standard_normal((10, 32)).astype(np.float32)
    with pytest.raises(ValueError, match=message) as error:
        tune_funnel(db, q, **{"k": 10, **kwargs})
    assert is_config_error(error.value)
    with pytest.raises(ValueError, match=r"^queries.shape=\(10, 16\): expected \[Q, 32\]"):
        tune_funnel(db, q[:, :16])


def test_settings_and_keywords_are_the_same_tuning():
    """A `TuneSettings` value and the same fields as keywords grid the same funnels; keywords replace the value's
    fields; an unknown keyword names the valid ones."""
    db, q = prefix_suffices(n=800, nq=30)
    settings = TuneSettings(k=5, formats=("float", "int8"), sizes=(8, 16, 64), repeats=1, approximate=())
    by_value = tune_funnel(db, q, 0.99, settings=settings)
    by_keywords = tune_funnel(db, q, 0.99, k=5, formats=["float", "int8"], sizes=[64, 16, 8], repeats=1, approximate=())

    def grid(tuned):
        return [(r["funnel"], r["recall"]) for r in tuned.table]

    assert grid(by_value) == grid(by_keywords)  # the choice among them is timed: it may differ run to run
    both = tune_funnels(db, q, [0.9, 0.99], settings=settings, k=10)  # k replaced, the rest kept
    assert [t.target for t in both] == [0.9, 0.99] and {t.k for t in both} == {10}
    unchosen = [[{**row, "chosen": False} for row in t.table] for t in both]
    assert unchosen[0] == unchosen[1] and {r["format"] for r in unchosen[0]} == {"float", "int8"}  # one grid
    with pytest.raises(TypeError, match=r"^sizez=\[8\]: not a tuning setting; expected some of k, metric, sizes"):
        tune_funnel(db, q, sizez=[8])
    with pytest.raises(AttributeError):
        settings.k = 3  # frozen: one value shared by every step


def test_settings_resolve_their_defaults_against_the_database():
    resolved = TuneSettings(k=10).resolved(300, 64)
    assert resolved.sizes == (8, 16, 32, 64) and resolved.rerank_sizes == (64,)
    assert resolved.shortlists == (10, 20, 50, 100, 200, 300)  # k x 1, 2, 5, ... capped at the database size
    assert resolved.approximate == () and TuneSettings(approximate="hnsw").resolved(300, 64).approximate == ("hnsw",)
    assert TuneSettings().resolved(20_000, 8).approximate == ("hnsw", "ivf")  # "auto": both from 20,000 items on
    assert resolved.fits({"first_stage_bytes": 10**9})
    assert not TuneSettings(max_first_stage_bytes=16).resolved(300, 64).fits({"first_stage_bytes": 32})


def test_the_retrieval_package_exports_the_tuner_and_its_values():
    import mrl.retrieval as retrieval

    for name in ("tune_funnels", "tune_funnel", "Funnel", "TuneSettings", "TunedFunnel", "FORMATS"):
        assert name in retrieval.__all__ and getattr(retrieval, name) is not None


def test_l2_and_ip_metrics_tune_too():
    db, q = prefix_suffices(n=800, nq=30)
    for metric in ("l2", "ip"):
        tuned = tune_funnel(db, q, target=0.99, k=5, metric=metric, repeats=1, formats=("float", "int8"))
        assert tuned.metric == metric and tuned.funnel.metric == metric and tuned.recall >= 0.99
        _, ids = tuned.retriever.search(q, 5)
        both = (tuned.recall * tuned.tuning_queries + tuned.holdout_recall * tuned.holdout_queries) / len(q)
        assert recall_against_exact(db, q, ids, 5, metric=metric) == pytest.approx(both)


# --------------------------------------------------------------------------------------------- HNSW first stages
@pytest.fixture
def one_thread():
    """FAISS builds an HNSW graph in parallel, and with several threads two builds of it may differ: one thread
    makes a rebuilt funnel's graph the tuner's own."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def mrl_data(n=3000, nq=60, dim=64):
    from mrl_testing.synthetic import make_mrl_split

    db, _, q, _ = make_mrl_split(n, nq, dim, n_classes=30, seed=2)
    return db, q


def tuning_rows(nq: int, holdout: float, seed: int = 0) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(nq)
    return np.sort(order[int(round(nq * holdout)) :])


def test_hnsw_rows_report_the_recall_of_the_funnel_built_and_searched(one_thread):
    db, q = mrl_data()
    tuned = tune_funnel(db, q, target=0.99, k=10, repeats=1, holdout=0.25, sizes=[8, 16, 64], approximate=["hnsw"])
    rows = [r for r in tuned.table if r["index"] == "hnsw"]
    assert len(rows) >= 2 and all(r["format"] == "float" and len(r["stages"]) == 2 for r in rows)
    assert any("HNSW first stages" in n and "8-d M 8 efConstruction 128 in" in n for n in tuned.notes)  # build time
    assert {r["options"]["hnsw_m"] for r in rows} == {8, 32}  # each degree of hnsw_ms has its own graph
    assert {r["options"].get("ef_construction", 64) for r in rows} == {64, 128}  # ... each build beam too
    q_tune = q[tuning_rows(len(q), 0.25)]
    for row in rows:
        funnel = Funnel.from_dict(row)
        (m1, c), _ = funnel.stages
        retriever = funnel.build(db)  # a graph of its own, searched with efSearch = its shortlist
        assert retriever.index_type == "hnsw" and retriever.index.hnsw.efSearch == c
        _, ids = retriever.search(q_tune, 10)
        assert row["recall"] == recall_against_exact(db, q_tune, ids, 10), row["funnel"]
        assert row["mflops_per_query"] == pytest.approx(retriever.mflops_per_query())  # distances computed
        assert row["mflops_per_query"] < Funnel(funnel.stages).mflops_per_query(len(db))  # under a flat scan's
        assert row["first_stage_bytes"] == 4 * m1 and row["bytes_per_item"] == funnel.bytes_per_item()

    # shortlists grow until the highest target is met; sizes stop at the first that meets it with <= 5k candidates
    def graph(r):
        return r["stages"][0][0], r["options"]["hnsw_m"], r["options"].get("ef_construction", 64)

    for built in {graph(r) for r in rows}:
        recalls = [r["recall"] for r in rows if graph(r) == built]
        assert sum(r >= 0.99 for r in recalls) <= 1 and all(r < 0.99 for r in recalls[:-1])
    enough = [r["stages"][0][0] for r in rows if r["recall"] >= 0.99 and r["stages"][0][1] <= 50]
    assert all(r["stages"][0][0] <= min(enough) for r in rows if enough)


def test_hnsw_wins_when_fastest_and_is_confirmed_on_held_out_queries(one_thread, monkeypatch):
    import mrl.retrieval.tune as tune

    timed = {}

    def hnsw_fastest(retrievers, queries, k, repeats):  # the timing step, made to favour the graph
        timed.update(retrievers)
        return {i: 0.01 if r.index_type == "hnsw" else 1.0 for i, r in retrievers.items()}

    monkeypatch.setattr(tune, "time_side_by_side", hnsw_fastest)
    db, q = mrl_data()
    tuned = tune_funnel(db, q, target=0.95, k=10, repeats=1, holdout=0.25, sizes=[8, 16, 64], approximate="hnsw")
    assert tuned.funnel.index == "hnsw" and tuned.retriever.index_type == "hnsw" and tuned.ms_per_query == 0.01
    assert any(tuned.retriever is r for r in timed.values())  # the funnel timed is the one returned, as built
    assert [r for r in tuned.table if r["chosen"]][0]["index"] == "hnsw"
    assert "--index hnsw" in str(tuned) and tuned.summary()["index"] == "hnsw"
    hold = np.setdiff1d(np.arange(len(q)), tuning_rows(len(q), 0.25))
    _, ids = tuned.retriever.search(q[hold], 10)
    assert tuned.holdout_queries == len(hold) and tuned.holdout_recall == recall_against_exact(db, q[hold], ids, 10)
    assert tuned.met == (tuned.holdout_recall >= 0.95)


def test_without_approximate_stages_the_grid_is_the_exact_scans_alone(monkeypatch):
    import mrl.retrieval.tune as tune

    db, q = mrl_data(n=1500, nq=40)
    kwargs = {"target": 0.99, "k": 5, "repeats": 1, "sizes": [8, 16, 64]}

    def grid(table):
        return [(r["funnel"], r["recall"], r["mflops_per_query"]) for r in table if r["index"] != "hnsw"]

    off = tune_funnel(db, q, approximate=(), **kwargs)
    auto = tune_funnel(db, q, **kwargs)  # 1,500 items: below HNSW_MIN_ITEMS, no graph
    on = tune_funnel(db, q, approximate=("hnsw",), **kwargs)
    assert {r["index"] for r in off.table} == {"flat", "int8", "binary"} and not any("HNSW" in n for n in off.notes)
    assert grid(auto.table) == grid(off.table) == [row[:3] for row in grid(on.table)]
    assert len(auto.table) == len(off.table) < len(on.table)
    monkeypatch.setattr(tune, "HNSW_MIN_ITEMS", 1000)  # "auto" tries it from that many items on
    assert any(r["index"] == "hnsw" for r in tune_funnel(db, q, **kwargs).table)


def test_an_hnsw_funnel_round_trips_and_reproduces_its_search_command():
    from mrl.cli.search import parse_funnel

    funnel = Funnel(((16, 200), (2048, 10)), "float", "cosine", "hnsw")
    assert str(funnel) == "16-d float HNSW shortlist of 200 -> 2048-d float top 10"
    assert funnel.to_dict() == {
        "stages": [[16, 200], [2048, 10]],
        "format": "float",
        "metric": "cosine",
        "index": "hnsw",
    }
    assert Funnel.from_dict(funnel.to_dict()) == funnel and Funnel.from_dict(funnel.to_dict()).index == "hnsw"
    assert funnel.cli_args() == ["--funnel", "16:200,2048:10", "--index", "hnsw", "--metric", "cosine"]
    assert parse_funnel(funnel.spec, 2048, 10) == list(funnel.stages)
    assert funnel != Funnel(funnel.stages) and funnel.first_stage_bytes() == 64
    # funnels saved before HNSW first stages (no "index") are the exact scans they were
    assert Funnel.from_dict({"stages": [[16, 200], [2048, 10]], "format": "int8"}).index == "int8"
    assert Funnel.from_dict({"stages": [[16, 200], [2048, 10]]}) == Funnel(funnel.stages, "float", "cosine", "flat")
    db = np.random.default_rng(0).standard_normal((300, 2048)).astype(np.float32)
    retriever = funnel.build(db)
    assert retriever.index_type == "hnsw" and retriever.index.hnsw.efSearch == 200


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "int8", "index": "hnsw"}, r"^index='hnsw': expected int8 with format='int8'$"),
        ({"index": "binary"}, r"^index='binary': expected flat or hnsw or ivf with format='float'$"),
    ],
)
def test_a_funnel_with_a_wrong_first_stage_index_is_a_one_line_error(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        Funnel(((16, 200), (64, 10)), **kwargs)
    assert is_config_error(error.value)


def test_ivf_rows_report_the_recall_of_the_funnel_built_and_searched(one_thread):
    """AdANNS-IVF first stages: each row's recall is that of its funnel built and searched on its own (its own
    k-means, seeded), and probes rise only until a shortlist meets the target."""
    db, q = mrl_data()
    tuned = tune_funnel(
        db, q, target=0.99, k=10, repeats=1, holdout=0.25, sizes=[8, 16, 64], approximate=["ivf"],
        middle_formats=(), score_gaps=False,  # the IVF scorer's rows alone (tests/test_tune_stages.py: the others)
    )  # fmt: skip
    rows = [r for r in tuned.table if r["index"] == "ivf"]
    assert rows and all(r["format"] == "float" and len(r["stages"]) == 2 for r in rows)
    assert any("IVF first stages trained at 8-d" in note for note in tuned.notes)
    q_tune = q[tuning_rows(len(q), 0.25)]
    for row in rows:
        funnel = Funnel.from_dict(row)
        assert funnel.index == "ivf" and dict(funnel.options) == row["options"] and "IVF (" in str(funnel)
        coarse = row["options"].get("coarse_size")  # lists assigned on another prefix (AdANNS-IVF)
        assert coarse != row["stages"][0][0] and (coarse is None) == ("lists on the first" not in str(funnel))
        retriever = funnel.build(db)
        assert retriever.index.nprobe == row["options"]["nprobe"]
        _, ids = retriever.search(q_tune, 10)
        assert row["recall"] == pytest.approx(recall_against_exact(db, q_tune, ids, 10)), row["funnel"]
    assert {r["options"].get("coarse_size") for r in rows if r["stages"][0][0] == 16} == {None, 8, 32}  # half, twice
    assert any("16-d on lists of the first 32" in note for note in tuned.notes)
    for lists in {(r["stages"][0][0], r["options"].get("coarse_size")) for r in rows}:
        same = [r for r in rows if (r["stages"][0][0], r["options"].get("coarse_size")) == lists]
        probes = [r["options"]["nprobe"] for r in same]
        met = [r["options"]["nprobe"] for r in same if r["recall"] >= 0.99]
        assert not met or max(probes) == min(met)  # no more probes once one count of them meets the target


def test_index_options_round_trip_and_reach_the_retriever():
    db, _ = mrl_data()
    funnel = Funnel(((16, 50), (64, 10)), "float", "cosine", "hnsw", {"hnsw_m": 8, "ef_construction": 40})
    assert funnel.options == (("ef_construction", 40), ("hnsw_m", 8)) and str(funnel).startswith("16-d float HNSW (")
    assert Funnel.from_dict(funnel.to_dict()) == funnel and funnel.to_dict()["options"] == {
        "hnsw_m": 8,
        "ef_construction": 40,
    }
    assert funnel.build(db).index.hnsw.nb_neighbors(0) == 2 * 8  # layer 0 holds 2 M links per node
    with pytest.raises(ValueError, match=r"index='flat' takes positive integers for no options"):
        Funnel(((16, 50), (64, 10)), options={"nprobe": 4})
    with pytest.raises(ValueError, match=r"index='ivf' takes positive integers for nlist, nprobe"):
        Funnel(((16, 50), (64, 10)), index="ivf", options={"nprobe": 0})
