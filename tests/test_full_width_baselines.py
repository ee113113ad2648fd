"""The full-width indexes the tuner measures funnels against (`mrl.retrieval.baselines`): each tuned setting is the
smallest of its ladder that meets the target, checked by a brute-force sweep of the whole ladder with recall counted
another way (numpy exact neighbours, set intersection), and it meets the target on the held-out queries too."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")

from mrl.retrieval import TuneSettings, tune_funnels  # noqa: E402
from mrl.retrieval.baselines import BASELINES, FullWidthIndex  # noqa: E402
from mrl.retrieval.tune import split_queries  # noqa: E402


def noisy_neighbours(n=4000, nq=400, dim=64, seed=0):
    """Isotropic vectors and queries near random items: a graph or inverted lists need a real beam to find the
    top 10 (no prefix shortcut, no ties)."""
    rng = np.random.default_rng(seed)
    db = rng.standard_normal((n, dim)).astype(np.float32)
    q = (db[rng.choice(n, nq, replace=False)] + 0.8 * rng.standard_normal((nq, dim))).astype(np.float32)
    return db, q


def exact_top_k(db: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    d = db / np.linalg.norm(db, axis=1, keepdims=True)
    x = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(x.astype(np.float64) @ d.T.astype(np.float64)), axis=1)[:, :k]


def set_recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_tuned_baseline_is_the_smallest_setting_meeting_the_target_and_holds_out(kind):
    db, q = noisy_neighbours()
    k, targets = 10, [0.9, 0.97]
    results = tune_funnels(db, q, targets, k=k, baselines=(kind,), approximate=(), repeats=1, holdout=0.5)
    settings = TuneSettings(k=k, holdout=0.5).resolved(*db.shape)
    tune_rows, hold_rows = split_queries(q, settings, [])
    exact = exact_top_k(db, q, k)
    index = results[0].baseline(kind).retriever.index  # the index the tuner built and timed
    ladder = [v for v in BASELINES[kind].ladder if kind == "hnsw" or v <= index.nlist]
    # brute force: every setting of the ladder, recall on the tuning queries counted here
    swept = {
        v: set_recall(FullWidthIndex(index, kind, v, True).search(q[tune_rows], k)[1], exact[tune_rows]) for v in ladder
    }
    for result, target in zip(results, targets):
        b = result.baseline(kind)
        assert b.value == min(v for v, r in swept.items() if r >= target), (b.value, swept)
        assert b.recall == pytest.approx(swept[b.value])
        _, ids = b.retriever.search(q[hold_rows], k)
        assert b.holdout_recall == pytest.approx(set_recall(ids, exact[hold_rows]))
        assert b.holdout_recall >= target - 0.01  # 200 held-out queries: within sampling noise of the target
        assert b.ms_per_query > 0 and b.build_seconds > 0 and b.index_bytes >= db.nbytes
        assert result.speedup_vs(kind) == pytest.approx(b.ms_per_query / result.ms_per_query)
        assert result.summary()[f"speedup_vs_{kind}"] == pytest.approx(result.speedup_vs(kind))
        assert f"{b.knob} {b.value}" in str(result)
    # the higher target needs a setting at least as large; the lower one is met with fewer visited items
    assert results[1].baseline(kind).value >= results[0].baseline(kind).value


def test_baselines_setting_is_checked_and_auto_follows_the_database_size():
    assert TuneSettings().resolved(1000, 16).baselines == ()
    assert TuneSettings().resolved(20_000, 16).baselines == ("hnsw", "ivf")
    assert TuneSettings(baselines="ivf").resolved(1000, 16).baselines == ("ivf",)
    with pytest.raises(ValueError, match="baselines=\\['pq'\\]: expected"):
        TuneSettings(baselines=["pq"]).resolved(1000, 16)


def test_eval_summary_gives_the_funnel_against_the_tuned_full_width_hnsw():
    from mrl.evaluation.render.markdown import tuned_funnel_lines
    from mrl.evaluation.suite import tuned_funnel_rows

    db, q = noisy_neighbours(n=2000, nq=100)
    labels = np.zeros(len(db), dtype=np.int64)
    rows, _ = tuned_funnel_rows(db, q, labels, labels[: len(q)], [0.95], k=10)
    row = rows[0]
    assert row["speedup_vs_hnsw"] == pytest.approx(row["hnsw_ms_per_query"] / row["ms_per_query"])
    assert row["hnsw_setting"].startswith("efSearch ") and row["hnsw_holdout_recall"] is not None
    text = "\n".join(tuned_funnel_lines(rows))
    assert "funnel vs it" in text and f"{row['speedup_vs_hnsw']:.2f}x |" in text and row["hnsw_setting"] in text
