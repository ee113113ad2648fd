"""Hard-negative mining (``make mine``): the funnel's negatives against a brute-force reference and against
sentence-transformers' ``mine_hard_negatives`` on the real MiniLM, every filter filtering, positives never
mined, and the written triplets training as ``data.source=<file> data.negative_column=negative``."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from mrl.data.text import TextPairsDataModule, python_query_pairs
from mrl.retrieval.mining import MiningSettings, mine, mining_problem, triplet_rows


def _problem(n_pairs: int = 60, extra: int = 40, duplicates: int = 10, seed: int = 0):
    """Pairs over a corpus of random texts ids, some anchors repeated (several positives), some anchors also in
    the corpus; embeddings with structure (clusters), so margins and ranks matter."""
    rng = np.random.default_rng(seed)
    anchors = [f"q{i}" for i in range(n_pairs)] + [f"q{i}" for i in range(duplicates)]
    positives = [f"d{i}" for i in range(n_pairs)] + [f"d{n_pairs + i}" for i in range(duplicates)]
    corpus = [f"d{n_pairs + duplicates + i}" for i in range(extra)] + ["q3", "q7"]
    problem = mining_problem(anchors, positives, corpus)
    centers = rng.normal(size=(8, 32))

    def emb(texts):
        return np.stack([centers[sum(map(ord, t)) % 8] + 0.8 * rng.normal(size=32) for t in texts]).astype(np.float32)

    return problem, emb(problem.queries), emb(problem.corpus)


def _brute_force(q, c, problem, s: MiningSettings):
    """One query at a time, in plain Python: the definition in mrl.retrieval.mining's docstring."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    range_max = s.resolved_range_max(problem.max_positives)
    out = []
    for row in range(len(problem.queries)):
        scores = cn @ qn[row]
        p = min(scores[i] for i in problem.positive_ids[row])
        ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: range_max + problem.max_positives + 1]
        kept = []
        for i in ranked:
            if i in problem.positive_ids[row] or i == problem.query_in_corpus[row]:
                continue
            if s.absolute_margin is not None and scores[i] + s.absolute_margin > p:
                continue
            if s.relative_margin is not None and scores[i] > p - abs(p) * s.relative_margin:
                continue
            if s.max_score is not None and scores[i] > s.max_score:
                continue
            if s.min_score is not None and scores[i] < s.min_score:
                continue
            kept.append(i)
        out.append(kept[:range_max][s.range_min :][: s.num_negatives])
    return out


SETTINGS = [
    MiningSettings(),
    MiningSettings(num_negatives=5, range_min=3, range_max=30),
    MiningSettings(num_negatives=4, absolute_margin=0.05),
    MiningSettings(num_negatives=4, relative_margin=0.1, range_max=40),
    MiningSettings(num_negatives=4, max_score=0.5, min_score=0.2),
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_exact_funnel_equals_brute_force(settings):
    problem, q, c = _problem()
    mined = mine(q, c, problem, settings, funnel="exact")
    expected = _brute_force(q, c, problem, settings)
    got = [[int(i) for i in row if i >= 0] for row in mined.ids]
    assert got == expected
    assert sum(map(len, got)) > 0


def test_prefix_funnel_with_a_shortlist_over_the_whole_corpus_is_exact():
    problem, q, c = _problem()
    settings = MiningSettings(num_negatives=4, range_min=1, relative_margin=0.05)
    exact = mine(q, c, problem, settings, funnel="exact")
    funnel = mine(q, c, problem, settings, funnel=[(8, len(problem.corpus)), (32, 10)])
    assert funnel.funnel[0] == (8, len(problem.corpus))
    np.testing.assert_array_equal(funnel.ids, exact.ids)
    np.testing.assert_allclose(funnel.scores, exact.scores, atol=1e-6)


def test_every_filter_filters_and_positives_never_come_back():
    problem, q, c = _problem()
    base = mine(q, c, problem, MiningSettings(num_negatives=5, range_max=60), funnel="exact")
    qn, cn = q / np.linalg.norm(q, axis=1, keepdims=True), c / np.linalg.norm(c, axis=1, keepdims=True)
    for row, ids in enumerate(base.ids):
        assert not set(ids.tolist()) & set(problem.positive_ids[row])
        assert problem.query_in_corpus[row] not in ids or problem.query_in_corpus[row] == -1
    assert (problem.query_in_corpus >= 0).sum() == 2  # q3 and q7 are in the corpus: never their own negative
    p = base.positive_scores[:, None]
    np.testing.assert_allclose(
        p[:, 0], [min(cn[i] @ qn[r] for i in ps) for r, ps in enumerate(problem.positive_ids)], atol=1e-6
    )
    cases = {
        "absolute_margin": (MiningSettings(num_negatives=5, range_max=60, absolute_margin=0.1), lambda s: s + 0.1 <= p),
        "relative_margin": (
            MiningSettings(num_negatives=5, range_max=60, relative_margin=0.2),
            lambda s: s <= p - np.abs(p) * 0.2,
        ),
        "max_score": (MiningSettings(num_negatives=5, range_max=60, max_score=0.4), lambda s: s <= 0.4),
        "min_score": (MiningSettings(num_negatives=5, range_max=60, min_score=0.5), lambda s: s >= 0.5),
    }
    for name, (settings, holds) in cases.items():
        mined = mine(q, c, problem, settings, funnel="exact")
        found = mined.ids >= 0
        assert mined.skipped[name] > 0, name
        assert holds(mined.scores)[found].all(), name
        assert (base.scores[base.ids >= 0] > -np.inf).all()
        assert not np.array_equal(mined.ids, base.ids), name  # the filter changed what was mined
    # ranks: range_min skips the hardest, range_max bounds the window
    shifted = mine(q, c, problem, MiningSettings(num_negatives=2, range_min=3, range_max=60), funnel="exact")
    np.testing.assert_array_equal(shifted.ids, base.ids[:, 3:5])
    narrow = mine(q, c, problem, MiningSettings(num_negatives=2, range_min=1, range_max=3), funnel="exact")
    np.testing.assert_array_equal(narrow.ids, base.ids[:, 1:3])


def test_random_sampling_is_seeded_and_stays_in_the_window():
    problem, q, c = _problem()
    window = mine(q, c, problem, MiningSettings(num_negatives=10, range_max=10), funnel="exact")
    settings = MiningSettings(num_negatives=3, range_max=10, sampling="random", seed=1)
    a = mine(q, c, problem, settings, funnel="exact")
    b = mine(q, c, problem, settings, funnel="exact")
    other = mine(q, c, problem, MiningSettings(num_negatives=3, range_max=10, sampling="random", seed=2), "exact")
    np.testing.assert_array_equal(a.ids, b.ids)
    assert not np.array_equal(a.ids, other.ids)
    for row in range(len(problem.queries)):
        assert set(a.ids[row].tolist()) <= set(window.ids[row].tolist())
        assert (np.diff(a.scores[row]) <= 0).all()  # best first
    top = mine(q, c, problem, MiningSettings(num_negatives=3, range_max=10), funnel="exact")
    assert not np.array_equal(a.ids, top.ids)


def test_duplicate_queries_and_corpus():
    problem = mining_problem(["a", "b", "a", "a"], ["x", "y", "z", "x"], ["w", "x", "v"])
    assert problem.queries == ["a", "b"]
    assert problem.corpus == ["w", "x", "v", "y", "z"]
    assert problem.positive_ids == [[1, 4], [3]]
    assert problem.query_in_corpus.tolist() == [-1, -1]
    with pytest.raises(ValueError, match="range_min=5"):
        MiningSettings(range_min=5, range_max=5).resolved_range_max(1)
    with pytest.raises(ValueError, match="sampling="):
        MiningSettings(sampling="hard").resolved_range_max(1)


@pytest.fixture(scope="module")
def real_pairs():
    return python_query_pairs(docstrings=False)[:48]


def test_same_negatives_as_sentence_transformers_on_real_minilm(real_pairs):
    """The parity that matters: the stock MiniLM embedded our way, mined through our search, gives exactly the
    triplets of sentence-transformers' mine_hard_negatives with the same settings."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from mrl.backbones import default_minilm_path
    from mrl.cli.mine import embed_unique, load_encoder

    anchors = [a for a, _ in real_pairs] + [real_pairs[0][0]]  # one anchor with two positives
    positives = [p for _, p in real_pairs] + [real_pairs[1][1]]
    kw = {"range_min": 1, "range_max": 12, "relative_margin": 0.05, "num_negatives": 3}
    st = SentenceTransformer(default_minilm_path(), device="cpu")
    reference = mine_hard_negatives(
        Dataset.from_dict({"anchor": anchors, "positive": positives}), st, verbose=False, batch_size=64, **kw
    )
    encode, tokenize, device = load_encoder(None, None)
    problem = mining_problem(anchors, positives)
    texts = list(dict.fromkeys(problem.queries + problem.corpus))
    z = embed_unique(texts, encode, tokenize, device=device)
    where = {t: i for i, t in enumerate(texts)}
    for funnel in ("exact", None):
        mined = mine(
            z[[where[t] for t in problem.queries]],
            z[[where[t] for t in problem.corpus]],
            problem,
            MiningSettings(**kw),
            funnel=funnel,
        )
        ours = [(r["anchor"], r["positive"], r["negative"]) for r in triplet_rows(problem, mined)]
        assert ours == [(r["anchor"], r["positive"], r["negative"]) for r in reference]
    assert len(ours) > 90


def test_mined_file_trains(tmp_path, real_pairs):
    from transformers import BertConfig, BertModel

    from mrl.backbones.hf_text import load_tokenizer
    from mrl.cli.mine import command
    from mrl.training.contrastive import MatryoshkaContrastiveModule

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": q, "positive": d}) + "\n" for q, d in real_pairs[:48]))
    out = tmp_path / "triplets.jsonl"
    summary = command([str(pairs), "--out", str(out), "--num-negatives", "2", "--quiet"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["triplets"] == len(rows) == 96
    assert all(set(r) == {"anchor", "positive", "negative"} and r["negative"] != r["positive"] for r in rows)

    torch.manual_seed(0)
    tiny = tmp_path / "tiny_bert"
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(tiny)
    load_tokenizer(None).save_pretrained(tiny)
    dm = TextPairsDataModule(str(out), negative_column="negative", batch_size=8, max_length=32, seed=0)
    backbone = {"_target_": "mrl.backbones.HFTextEncoder", "name_or_path": str(tiny), "max_length": 32}
    module = MatryoshkaContrastiveModule(backbone, nesting=[8, 16, 32], optimizer={"name": "adamw"})
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, dm)
    assert trainer.global_step == 2
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 3  # anchor, positive, negative parts


def test_cli_one_line_error(tmp_path, capsys):
    from mrl.cli.mine import main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"anchor": "a", "positive": "b"}) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(pairs), "--range-min", "9", "--range-max", "3"])
    assert exit_info.value.code == 1
    assert "range_min=9" in capsys.readouterr().err


def test_make_mine_passes_input_run_out_and_args():
    from mrl_testing.configs import run_make

    words = run_make("-n", "mine", "INPUT=pairs.jsonl", "RUN=runs/a", "OUT=t.jsonl", "ARGS=--num-negatives 5").stdout
    assert "-m mrl.cli.mine pairs.jsonl --run runs/a --out t.jsonl --num-negatives 5" in words
    plain = run_make("-n", "mine", "INPUT=pairs.jsonl").stdout
    assert plain.splitlines()[-1].split()[-2:] == ["mrl.cli.mine", "pairs.jsonl"]
    assert "make mine: give INPUT=" in plain  # the check that runs first (make -n prints it)
    assert "benchmarks/mine.py --corpus 10" in run_make("-n", "bench-mine", "ARGS=--corpus 10").stdout


def test_a_trained_run_mines_with_its_own_embedding(tmp_path, real_pairs):
    """``--run``: the run's checkpoint embeds (a projection to 48 here), the same negatives as its module.embed."""
    from mrl.cli.mine import command
    from mrl.training.contrastive import MatryoshkaContrastiveModule

    torch.manual_seed(0)
    backbone = {"_target_": "mrl.backbones.HFTextEncoder", "name_or_path": None, "max_length": 64, "embed_dim": 48}
    module = MatryoshkaContrastiveModule(backbone, nesting=[12, 24, 48]).eval()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)},
        run / "checkpoints" / "epoch_000.ckpt",
    )
    pairs = real_pairs[:24]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"anchor": q, "positive": d}) + "\n" for q, d in pairs))
    summary = command([str(path), "--run", str(run), "--num-negatives", "2", "--quiet", "--batch-size", "5"])
    rows = [json.loads(line) for line in open(summary["output"])]
    problem = mining_problem([q for q, _ in pairs], [d for _, d in pairs])
    with torch.no_grad():
        q = module.embed(module.backbone.tokenize(problem.queries)).numpy()
        c = module.embed(module.backbone.tokenize(problem.corpus)).numpy()
    expected = triplet_rows(problem, mine(q, c, problem, MiningSettings(num_negatives=2), funnel="exact"))
    assert rows == expected and len(rows) == 48


def test_mined_negatives_benchmark_trains_on_pairs_and_on_their_mined_triplets(tmp_path, capsys):
    """``benchmarks/mined_negatives.py --quick``: both runs train, the triplets come from the training pairs only
    (no held-out text is ever a negative), and the last line is the mean of the per-size differences."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "mined_negatives.py"
    spec = importlib.util.spec_from_file_location("bench_mined_negatives", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--quick", "--work-dir", str(tmp_path)])
    sizes = bench.text_benchmark().SIZES
    assert {"stock all-MiniLM-L6-v2", "pairs, seed 0", "mined, seed 0"} <= set(results["mrr"])
    assert all(set(row) == set(sizes) for row in results["mrr"].values())
    expected = [results["mrr"]["mined, seed 0"][m] - results["mrr"]["pairs, seed 0"][m] for m in sizes]
    assert results["mean_difference"] == pytest.approx(sum(expected) / len(expected))
    pairs = [json.loads(line) for line in open(tmp_path / "pairs.jsonl")]
    triplets = [json.loads(line) for line in open(tmp_path / "triplets.jsonl")]
    documents = {row["positive"] for row in pairs}
    assert triplets and all(row["negative"] in documents and row["negative"] != row["positive"] for row in triplets)
    assert all(seconds > 0 for seconds in results["seconds"]["pairs"] + results["seconds"]["mined"])
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("mined - pairs, MRR@10 mean over 7 sizes")
