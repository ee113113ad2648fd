"""Text training at real lengths: per-part padding and packing, sizes in any order, the cached (GradCache) step,
sizes drawn per step, and their one-line config errors, each with real training steps on small data.

A tiny BERT (random weights, the MiniLM tokenizer) keeps the Trainer runs fast; the bundled MiniLM checks
packing on the real model."""

from __future__ import annotations

import copy
import json
import random

import lightning as L
import pytest
import torch
from torch import nn

from mrl.backbones import HFTextEncoder
from mrl.backbones.hf_text import Packing, pack_rows
from mrl.core.losses import MatryoshkaContrastiveLoss
from mrl.core.nesting import NestingError, sort_with_weights
from mrl.data.text import TextPairsDataModule, python_query_pairs
from mrl.training.classifier import MatryoshkaClassifier
from mrl.training.contrastive import MatryoshkaContrastiveModule, concat_features
from mrl.training.grad_cache import RandomState

QUERIES = ["What is a list?", "Sort in place.", "Open a file for reading, please", "Why?"]
DOCUMENTS = [
    "Lists are mutable sequences, typically used to store collections of homogeneous items that change.",
    "The sort method sorts the list in place, using only < comparisons between items of the list.",
    "open() returns a file object; the mode argument says whether the file is read, written or appended to.",
    "Because the reference says so, and the implementation follows the reference in every single detail.",
]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with random weights and the MiniLM tokenizer, saved as a model directory."""
    from transformers import BertConfig, BertModel

    from mrl.backbones.hf_text import load_tokenizer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(path)
    load_tokenizer(None).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def minilm() -> HFTextEncoder:
    return HFTextEncoder(None, max_length=32)


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """Short-query / long-document pairs from the Python reference (the fast part of builtin:python-queries)."""
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    pairs = python_query_pairs(docstrings=False)[:96]
    path.write_text("\n".join(json.dumps({"anchor": q, "positive": d}) for q, d in pairs) + "\n")
    return path


def _backbone(path: str, **kwargs) -> dict:
    return {"_target_": "mrl.backbones.HFTextEncoder", "name_or_path": path, "max_length": 32, **kwargs}


def _fit(module, datamodule, steps: int = 3, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule)
    return trainer


def _grads(module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


# --------------------------------------------------------------------------------------- padding per part
def test_pairs_are_padded_per_part_and_the_real_pairs_are_short_against_long(pairs_file):
    dm = TextPairsDataModule(str(pairs_file), batch_size=16, max_length=64, seed=0)
    anchor, positive = next(iter(dm.train_dataloader()))
    assert anchor["input_ids"].shape[1] == int(anchor["attention_mask"].sum(1).max())
    assert positive["input_ids"].shape[1] == int(positive["attention_mask"].sum(1).max())
    assert anchor["input_ids"].shape[1] < positive["input_ids"].shape[1]  # queries are not padded to documents
    queries = anchor["attention_mask"].sum(1).float().mean()
    documents = positive["attention_mask"].sum(1).float().mean()
    assert documents > 2 * queries


def test_builtin_query_pairs_source_and_unknown_builtin():
    pairs = python_query_pairs(docstrings=False)
    assert len(pairs) >= 150
    assert len({q for q, _ in pairs}) == len(pairs) == len({d for _, d in pairs})
    assert all(len(q.split()) <= 20 and len(d.split()) >= 25 for q, d in pairs)
    with pytest.raises(ValueError, match=r"^data\.source='builtin:nope': no such built-in set"):
        TextPairsDataModule("builtin:nope")
    with pytest.raises(ValueError, match="data.negative_column"):
        TextPairsDataModule("builtin:python-queries", negative_column="n")


@pytest.mark.slow
def test_builtin_query_pairs_data_module_reads_the_standard_library():
    dm = TextPairsDataModule("builtin:python-queries", max_pairs=300, seed=0)
    assert dm.name == "python-queries" and len(dm.split_items("train")) + len(dm.split_items("val")) == 300
    assert len(python_query_pairs()) >= 600  # docstrings of the standard library add most pairs


# ------------------------------------------------------------------------------------------------ packing
def test_pack_rows_first_fit_decreasing():
    assert pack_rows([64, 10, 30, 50, 14, 20], capacity=64) == ([0, 2, 2, 1, 1, 2], [0, 50, 0, 0, 50, 30], 3)
    rng = random.Random(0)
    for _ in range(100):
        lengths = [rng.randint(1, 64) for _ in range(rng.randint(1, 80))]
        rows, offsets, n = pack_rows(lengths, capacity=64)
        spans = sorted((r, o, o + length) for r, o, length in zip(rows, offsets, lengths))
        assert all(end <= 64 for _, _, end in spans) and sorted(set(rows)) == list(range(n))
        assert all(r1 != r2 or e1 <= s2 for (r1, _, e1), (r2, s2, _) in zip(spans, spans[1:]))  # no overlap
        assert n <= -(-sum(lengths) // 64) + len(lengths) // 4 + 1  # close to the fewest rows possible


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_packed_forward_equals_the_padded_forward(minilm, pooling):
    encoder = copy.deepcopy(minilm).eval().double()
    encoder.pooling = pooling
    assert encoder.packs  # a BERT model packs by default
    features = encoder.tokenize(QUERIES + DOCUMENTS)
    features["token_type_ids"] = features["token_type_ids"]
    packing = Packing(features["attention_mask"], 0)
    assert packing.rows < len(QUERIES + DOCUMENTS)  # the short queries share rows
    with torch.no_grad():
        packed = encoder(features)
        encoder.packs = False
        padded = encoder(features)
        alone = torch.cat([encoder(encoder.tokenize([t])) for t in QUERIES[:2]])
    torch.testing.assert_close(packed, padded, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(packed[:2], alone, rtol=1e-10, atol=1e-10)


def test_packed_gradients_equal_the_padded_ones(tiny_bert):
    torch.manual_seed(0)
    encoder = HFTextEncoder(tiny_bert, max_length=32).double().eval()
    features = encoder.tokenize(QUERIES + DOCUMENTS)
    grads = []
    for packs in (True, False):
        encoder.packs = packs
        encoder.zero_grad()
        (encoder(features) ** 2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-9, atol=1e-12)


def test_pack_option_errors_and_fallback(tiny_bert, tmp_path):
    with pytest.raises(ValueError, match=r"^model\.backbone\.pack='yes': expected auto, true or false"):
        HFTextEncoder(tiny_bert, pack="yes")
    assert not HFTextEncoder(tiny_bert, pack=False).packs
    eager = HFTextEncoder(tiny_bert, attn_implementation="eager")
    assert eager.packs  # a float mask for eager attention
    features = eager.tokenize(QUERIES + DOCUMENTS)
    eager.eval()
    with torch.no_grad():
        packed = eager(features)
        eager.packs = False
        torch.testing.assert_close(packed, eager(features), rtol=1e-5, atol=1e-5)
    from transformers import ElectraConfig, ElectraModel

    path = tmp_path / "electra"
    _save_tiny(ElectraModel(ElectraConfig(**TINY)), path)
    assert not HFTextEncoder(str(path)).packs  # auto: not a model packing is known to be exact for
    with pytest.raises(ValueError, match=r"^model\.backbone\.pack=true: electra is a 'electra' model"):
        HFTextEncoder(str(path), pack=True)


TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _save_tiny(model, path) -> str:
    from mrl.backbones.hf_text import load_tokenizer

    model.save_pretrained(path)
    load_tokenizer(None).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("family", ["roberta", "xlm-roberta", "camembert", "mpnet", "distilbert"])
def test_other_encoder_families_pack_exactly(family, tmp_path):
    """Each family in PACKABLE: random weights (position embeddings too), so a wrong first position or a mask the
    model reads differently shows; texts at offsets > 0 in their rows, so positions must restart per text."""
    import transformers as tf

    configs = {
        "roberta": (tf.RobertaConfig, tf.RobertaModel, TINY),
        "xlm-roberta": (tf.XLMRobertaConfig, tf.XLMRobertaModel, TINY),
        "camembert": (tf.CamembertConfig, tf.CamembertModel, TINY),
        "mpnet": (tf.MPNetConfig, tf.MPNetModel, TINY),  # relative attention bias, eager attention only
        "distilbert": (tf.DistilBertConfig, tf.DistilBertModel, dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64)),
    }
    config, model, kwargs = configs[family]
    torch.manual_seed(0)
    encoder = HFTextEncoder(_save_tiny(model(config(**kwargs)), tmp_path / family), max_length=32).double().eval()
    assert encoder.packs
    features = encoder.tokenize(QUERIES + DOCUMENTS)
    assert Packing(features["attention_mask"], 0).rows < len(QUERIES + DOCUMENTS)
    with torch.no_grad():
        packed = encoder(features)
        encoder.packs = False
        padded = encoder(features)
    torch.testing.assert_close(packed, padded, rtol=1e-10, atol=1e-10)


def test_a_packing_backbone_embeds_every_part_in_one_call(tiny_bert):
    module = MatryoshkaContrastiveModule(_backbone(tiny_bert), nesting=[8, 32])
    calls = []
    module.backbone.register_forward_hook(lambda m, args, out: calls.append(out.shape[0]))
    tokenize = module.backbone.tokenize
    a, p, n = tokenize(QUERIES), tokenize(DOCUMENTS), tokenize(DOCUMENTS[::-1])
    embeddings = module.encode_parts([a, p, n])
    assert calls == [12] and [e.shape[0] for e in embeddings] == [4, 4, 4]
    module.backbone.packs = False
    calls.clear()
    module.encode_parts([a, p, n])
    assert calls == [4, 8]  # unpacked: the anchors alone, the documents together


# ------------------------------------------------------------------------------------- sizes in any order
def test_sizes_in_any_order_keep_their_weights():
    assert sort_with_weights([768, 512, 64, 256, 128], [1, 2, 3, 4, 5], width=768) == (
        [64, 128, 256, 512, 768],
        [3.0, 5.0, 4.0, 2.0, 1.0],
    )
    with pytest.raises(NestingError, match=r"^model\.nesting=\[64, 8, 64\]: size 64 is given twice"):
        sort_with_weights([64, 8, 64])
    with pytest.raises(NestingError, match=r"^model\.nesting=\[768, 64\]: largest size 768 exceeds the embedding"):
        sort_with_weights([768, 64], width=384)
    with pytest.raises(NestingError, match=r"^model\.loss\.weights=\[1\.0\]: 1 weights for the 2 sizes"):
        sort_with_weights([64, 8], [1.0])
    torch.manual_seed(0)
    a, p = torch.randn(6, 32, dtype=torch.float64), torch.randn(6, 32, dtype=torch.float64)
    descending = MatryoshkaContrastiveLoss([32, 16, 4], weights=[1.0, 2.0, 3.0])
    ascending = MatryoshkaContrastiveLoss([4, 16, 32], weights=[3.0, 2.0, 1.0])
    assert descending.dims == [4, 16, 32]
    torch.testing.assert_close(descending(a, p), ascending(a, p))


def test_modules_sort_sizes_and_move_weights(tiny_bert):
    module = MatryoshkaContrastiveModule(_backbone(tiny_bert), nesting=[32, 16, 8], loss={"weights": [1.0, 2.0, 4.0]})
    assert module.sizes == [8, 16, 32] and module.criterion.weights.tolist() == [4.0, 2.0, 1.0]
    classifier = MatryoshkaClassifier(
        _backbone(tiny_bert), num_classes=3, nesting=[32, 8, 16], loss={"weights": [1.0, 4.0, 2.0]}
    )
    assert classifier.sizes == [8, 16, 32] and classifier.head.sizes == [8, 16, 32]  # heads get them ascending
    assert classifier.criterion.weights.tolist() == [4.0, 2.0, 1.0]
    with pytest.raises(NestingError, match=r"^model\.nesting=\[32, 32\]: size 32 is given twice"):
        MatryoshkaContrastiveModule(_backbone(tiny_bert), nesting=[32, 32])
    with pytest.raises(NestingError, match=r"^model\.nesting=\[64, 8\]: largest size 64 exceeds"):
        MatryoshkaClassifier(_backbone(tiny_bert), num_classes=3, nesting=[64, 8])


def test_descending_sizes_train(tiny_bert, pairs_file):
    torch.manual_seed(0)
    dm = TextPairsDataModule(str(pairs_file), batch_size=8, max_length=32, seed=0)
    module = MatryoshkaContrastiveModule(
        _backbone(tiny_bert), nesting=[32, 16, 8], loss={"weights": [1.0, 1.0, 2.0]}, optimizer={"name": "adamw"}
    )
    trainer = _fit(module, dm, steps=2)
    assert {"train/loss@8_step", "train/loss@16_step", "train/loss@32_step"} <= set(trainer.logged_metrics)


# --------------------------------------------------------------------------------------------- cached step
def _step_grads(module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    module.zero_grad(set_to_none=True)
    module.log = lambda *args, **kwargs: None
    loss = module.training_step(batch, 0)
    loss.backward()  # the cached step replays its mini-batches here
    return loss.detach(), _grads(module)


@pytest.mark.parametrize("with_negative", [False, True])
@pytest.mark.parametrize("mini_batch", [1, 3, 5])
def test_cached_step_gradients_equal_the_plain_step(tiny_bert, with_negative, mini_batch):
    torch.manual_seed(0)
    plain = MatryoshkaContrastiveModule(
        _backbone(tiny_bert), nesting=[32, 8, 16], loss={"weights": [1.0, 2.0, 0.5]}
    ).double()
    plain.eval()  # no dropout: both steps see the same network
    cached = copy.deepcopy(plain)
    cached.mini_batch_size = mini_batch
    tokenize = plain.backbone.tokenize
    batch = [tokenize(QUERIES), tokenize(DOCUMENTS)]
    if with_negative:
        batch.append(tokenize(DOCUMENTS[1:] + DOCUMENTS[:1]))
    loss, expected = _step_grads(plain, batch)
    cached_loss, got = _step_grads(cached, batch)
    torch.testing.assert_close(cached_loss, loss, rtol=1e-12, atol=1e-12)
    assert set(got) == set(expected) and len(got) > 10
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12)


def test_cached_step_replays_the_same_dropout():
    layer = nn.Dropout(0.5)
    x = torch.ones(1000)
    state = RandomState(torch.device("cpu"))
    first = layer(x)
    after_first = torch.rand(1)
    with state.replay():
        again = layer(x)
    torch.testing.assert_close(first, again)
    assert not torch.equal(after_first, torch.rand(1))  # the replay leaves the random stream where it was


class _SavedBytes:
    """Bytes of activations autograd holds for the backward pass (parameters left out), and their peak."""

    def __init__(self, module: nn.Module) -> None:
        self.params = {p.untyped_storage().data_ptr() for p in module.parameters()}
        self.live = self.peak = 0

    def pack(self, tensor):
        tracker = self
        size = 0 if tensor.untyped_storage().data_ptr() in self.params else tensor.numel() * tensor.element_size()

        class Held:
            def __init__(self):
                self.tensor = tensor
                tracker.live += size
                tracker.peak = max(tracker.peak, tracker.live)

            def __del__(self):
                tracker.live -= size

        return Held()

    @staticmethod
    def unpack(held):
        return held.tensor


def test_cached_step_memory_is_bounded_by_the_mini_batch(tiny_bert):
    torch.manual_seed(0)
    module = MatryoshkaContrastiveModule(_backbone(tiny_bert), nesting=[8, 32])
    tokenize = module.backbone.tokenize
    rng = random.Random(0)
    batch = [tokenize(rng.choices(QUERIES, k=32)), tokenize(rng.choices(DOCUMENTS, k=32))]
    calls = []
    module.backbone.register_forward_hook(lambda m, args, out: calls.append(out.shape[0]))
    peaks = {}
    for mini_batch in (None, 8):
        module.mini_batch_size = mini_batch
        calls.clear()
        saved = _SavedBytes(module)
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            _step_grads(module, batch)
        peaks[mini_batch] = saved.peak
        if mini_batch:
            assert calls == [8] * 16  # 64 texts: 8 no-grad mini-batches, then 8 replayed with gradients
        else:
            assert calls == [64]
    assert peaks[8] < 0.25 * peaks[None], peaks


def test_cached_step_trains_with_accumulation_and_clipping(tiny_bert, pairs_file):
    torch.manual_seed(0)
    dm = TextPairsDataModule(str(pairs_file), batch_size=16, max_length=32, seed=0)
    module = MatryoshkaContrastiveModule(
        _backbone(tiny_bert), nesting=[8, 32], loss={"mini_batch_size": 4}, optimizer={"name": "adamw", "lr": 1e-3}
    )
    calls = []
    module.backbone.register_forward_hook(lambda m, args, out: calls.append(out.shape[0]))
    before = copy.deepcopy(module.state_dict())
    trainer = _fit(module, dm, steps=2, accumulate_grad_batches=2, gradient_clip_val=1.0)
    assert max(calls) <= 4 and trainer.global_step == 2
    assert torch.isfinite(torch.tensor(float(trainer.logged_metrics["train/loss_step"])))
    changed = [k for k, v in module.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) > 10


@pytest.mark.parametrize("accumulate", [1, 2])
def test_cached_training_equals_plain_training(tiny_bert, pairs_file, accumulate):
    """Through Lightning (which zeroes the gradients between the step and its backward, and scales the loss for
    accumulation) the cached step trains the same weights as the plain one (no dropout, so both see one network)."""
    trained = []
    for mini_batch in (None, 3):
        torch.manual_seed(0)
        dm = TextPairsDataModule(str(pairs_file), batch_size=8, max_length=32, seed=0)
        backbone = _backbone(tiny_bert, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        module = MatryoshkaContrastiveModule(
            backbone, nesting=[8, 32], loss={"mini_batch_size": mini_batch}, optimizer={"name": "adamw", "lr": 1e-3}
        )
        _fit(module, dm, steps=2, accumulate_grad_batches=accumulate, gradient_clip_val=1.0)
        trained.append(module.state_dict())
    start = MatryoshkaContrastiveModule(_backbone(tiny_bert), nesting=[8, 32]).state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in trained[0].items() if v.is_floating_point())
    for key, value in trained[0].items():
        torch.testing.assert_close(trained[1][key], value, rtol=1e-3, atol=2e-5)  # Adam: float32 noise only


# ------------------------------------------------------------------------------------- sizes drawn per step
def test_n_dims_per_step_trains_the_drawn_sizes_only(tiny_bert, monkeypatch):
    torch.manual_seed(0)
    module = MatryoshkaContrastiveModule(
        _backbone(tiny_bert), nesting=[8, 16, 32], loss={"n_dims_per_step": 1, "weights": [1.0, 2.0, 3.0]}
    ).double()
    module.eval()
    batch = [module.backbone.tokenize(QUERIES), module.backbone.tokenize(DOCUMENTS)]
    monkeypatch.setattr(random, "sample", lambda population, k: [list(population)[1]])  # draw size 16
    loss, got = _step_grads(module, batch)
    reference = copy.deepcopy(module)
    reference.n_dims_per_step = None
    reference.zero_grad(set_to_none=True)
    per_size = reference.criterion.per_size(*reference.encode_parts(batch))
    (2.0 * per_size[1]).backward()
    torch.testing.assert_close(loss, 2.0 * per_size[1].detach())
    for name, grad in _grads(reference).items():
        torch.testing.assert_close(got[name], grad, rtol=1e-9, atol=1e-12)


def test_n_dims_per_step_in_training_logs_every_size(tiny_bert, pairs_file):
    torch.manual_seed(0)
    dm = TextPairsDataModule(str(pairs_file), batch_size=8, max_length=32, seed=0)
    module = MatryoshkaContrastiveModule(
        _backbone(tiny_bert), nesting=[8, 16, 32], loss={"n_dims_per_step": 2, "mini_batch_size": 4}
    )
    trainer = _fit(module, dm, steps=2)
    assert {"train/loss@8_step", "train/loss@16_step", "train/loss@32_step"} <= set(trainer.logged_metrics)
    assert (
        MatryoshkaContrastiveModule(_backbone(tiny_bert), nesting=[8, 32], loss={"n_dims_per_step": -1}).n_dims_per_step
        is None
    )


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ({"n_dims_per_step": 0}, r"^model\.loss\.n_dims_per_step=0: expected a positive integer or null"),
        ({"n_dims_per_step": 3}, r"^model\.loss\.n_dims_per_step=3: more than the 2 sizes"),
        ({"n_dims_per_step": "all"}, r"^model\.loss\.n_dims_per_step='all'"),
        ({"mini_batch_size": 0}, r"^model\.loss\.mini_batch_size=0: expected a positive integer or null"),
        ({"mini_batch_size": 2.5}, r"^model\.loss\.mini_batch_size=2\.5"),
        ({"mini_batchsize": 4}, r"^model\.loss\.mini_batchsize=4: unknown key"),
        ({"weights": [1.0]}, r"^model\.loss\.weights=\[1\.0\]: 1 weights for the 2 sizes"),
    ],
)
def test_loss_options_fail_fast_in_one_line(tiny_bert, loss, message):
    with pytest.raises(ValueError, match=message) as info:
        MatryoshkaContrastiveModule(_backbone(tiny_bert), nesting=[8, 32], loss=loss)
    assert "\n" not in str(info.value)


def test_concat_features_pads_to_the_longest_part():
    a = {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3, dtype=torch.long)}
    b = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    joined = concat_features([a, b])
    assert joined["input_ids"].shape == (4, 5) and int(joined["attention_mask"][:2].sum()) == 6


# ------------------------------------------------------------------------------------------------ benchmark
def test_text_benchmark_quick_runs_both_frameworks_side_by_side(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "text.py"
    spec = importlib.util.spec_from_file_location("bench_text", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    both = bench.sentence_transformers_ready() is None
    results = bench.main(["--quick"] if both else ["--quick", "--frameworks", "framework"])
    out = capsys.readouterr().out
    assert "pairs/s" in out and "MRR@10 per size" in out
    assert set(results["mrr"]["framework"]) == set(bench.SIZES)
    assert results["speed"]["framework"][0] > 0 and set(results["floor"]) == {"padded per part", "packed"}
    if both:
        assert results["ratio"] > 0 and "framework / sentence-transformers" in out
        assert set(results["mrr"]["sentence-transformers"]) == set(bench.SIZES)


# ------------------------------------------------------------------------------------------- 2D Matryoshka
def test_layer_loss_matches_its_definition(tiny_bert):
    """Last layer's loss + each earlier layer's weighted loss + the KL of its softened embedding."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    layers = {"n_layers_per_step": -1, "weighting": "linear", "prior_layers_weight": 0.5, "kl_temperature": 0.3}
    module = MatryoshkaContrastiveModule(_backbone(tiny_bert), nesting=[8, 32], loss={"layers": layers}).double()
    module.eval()
    module.log = lambda *args, **kwargs: None
    batch = [module.backbone.tokenize(QUERIES), module.backbone.tokenize(DOCUMENTS)]
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        per_layer = [module.backbone.forward_layers(part) for part in batch]  # [part][layer]
    last = torch.cat([per_layer[0][-1], per_layer[1][-1]])
    expected = module.criterion(per_layer[0][-1], per_layer[1][-1])
    target = torch.softmax(last / 0.3, dim=-1)
    for i in range(module.backbone.num_layers - 1):
        layer_loss = module.criterion(per_layer[0][i], per_layer[1][i])
        expected = expected + 0.5 * (1.0 / (1 + i)) / 1 * layer_loss
        log_probs = F.log_softmax(torch.cat([per_layer[0][i], per_layer[1][i]]) / 0.3, dim=-1)
        expected = expected + 0.3 * F.kl_div(log_probs, target, reduction="batchmean")
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-9, atol=1e-9)


def test_layer_loss_trains_and_validates_a_grid(tiny_bert, pairs_file):
    torch.manual_seed(0)
    dm = TextPairsDataModule(str(pairs_file), batch_size=8, max_length=32, seed=0, val_fraction=0.2)
    module = MatryoshkaContrastiveModule(
        _backbone(tiny_bert), nesting=[8, 32], loss={"layers": {"weighting": "log"}, "n_dims_per_step": 1}
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        val_check_interval=2,
    )
    trainer.fit(module, dm)
    metrics = trainer.callback_metrics
    assert "train/loss_2d_step" in trainer.logged_metrics
    for m in (8, 32):  # the (layers, size) grid: layer 1 of 2, and the full model
        assert f"val/layer1/mrr@10@{m}" in metrics and f"val/mrr@10@{m}" in metrics


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ({"weighting": "square"}, r"^model\.loss\.layers\.weighting='square': expected one of uniform, log, linear"),
        ({"n_layers_per_step": 2}, r"^model\.loss\.layers\.n_layers_per_step=2: expected 1\.\.1"),
        ({"n_layers_per_step": 0}, r"^model\.loss\.layers\.n_layers_per_step=0"),
        ({"kl_temperature": -1.0}, r"^model\.loss\.layers\.kl_temperature=-1\.0: expected a number >= 0"),
        ({"layer": 1}, r"^model\.loss\.layers\.layer=1: unknown key"),
        (True, r"^model\.loss\.layers=True: expected a mapping"),
    ],
)
def test_layer_options_fail_fast_in_one_line(tiny_bert, layers, message):
    with pytest.raises(ValueError, match=message):
        MatryoshkaContrastiveModule(_backbone(tiny_bert), nesting=[8, 32], loss={"layers": layers})


@pytest.mark.parametrize(
    ("layers", "mini_batch", "with_negative"),
    [
        ({}, 3, False),
        ({"n_layers_per_step": -1, "kl_temperature": 0.5, "kl_div_weight": 0.3}, 5, True),
        ({"n_layers_per_step": 1, "weighting": "log"}, 1, True),
    ],
)
def test_cached_2d_step_gradients_equal_the_plain_2d_step(tiny_bert3, layers, mini_batch, with_negative):
    """The cached step with 2D Matryoshka (``mini_batch_size`` and ``layers``): the same loss and gradients as the
    plain 2D step, the same layers drawn (float64)."""
    torch.manual_seed(0)
    plain = MatryoshkaContrastiveModule(
        _backbone(tiny_bert3), nesting=[32, 8, 16], loss={"weights": [1.0, 2.0, 0.5], "layers": layers}
    ).double()
    plain.eval()
    cached = copy.deepcopy(plain)
    cached.mini_batch_size = mini_batch
    tokenize = plain.backbone.tokenize
    batch = [tokenize(QUERIES), tokenize(DOCUMENTS)]
    if with_negative:
        batch.append(tokenize(DOCUMENTS[1:] + DOCUMENTS[:1]))
    random.seed(3)
    loss, expected = _step_grads(plain, batch)
    random.seed(3)
    cached_loss, got = _step_grads(cached, batch)
    torch.testing.assert_close(cached_loss, loss, rtol=1e-9, atol=1e-12)
    assert set(got) == set(expected) and len(got) > 10
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=1e-12)


def test_layer_loss_refuses_non_transformers():
    class Plain(nn.Module):
        embed_dim = 8

        def forward(self, x):
            return x

    with pytest.raises(ValueError, match=r"^model\.loss\.layers=\{\}: 2D Matryoshka needs a transformer backbone"):
        MatryoshkaContrastiveModule(Plain(), nesting=[8], loss={"layers": {}})


def test_export_of_a_model_cut_to_its_first_layers(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer

    from mrl.interop.sentence_transformers import export_sentence_transformer

    module = MatryoshkaContrastiveModule(_backbone(tiny_bert), nesting=[8, 32]).eval()
    out = export_sentence_transformer(module, tmp_path / "cut", layers=1)
    info = json.loads((out / "mrl_export.json").read_text())
    assert info["layers"] == 1
    texts = QUERIES + DOCUMENTS
    with torch.no_grad():
        expected = module.backbone.forward_layers(module.backbone.tokenize(texts))[0]
    model = SentenceTransformer(str(out), device="cpu")
    torch.testing.assert_close(model.encode(texts, convert_to_tensor=True), expected, atol=1e-5, rtol=1e-4)
    assert module.backbone.num_layers == 2  # the trained model is untouched
    with pytest.raises(ValueError, match=r"^--layers=3: must lie in 1\.\.2"):
        export_sentence_transformer(module, tmp_path / "bad", layers=3)


# ------------------------------------------------------------------------------------------- distillation
def test_distillation_loss_per_size():
    import torch.nn.functional as F

    from mrl.core.losses import MatryoshkaDistillationLoss

    torch.manual_seed(0)
    student, teacher = torch.randn(6, 16, dtype=torch.float64), torch.randn(6, 24, dtype=torch.float64)
    similarity = MatryoshkaDistillationLoss([16, 4], weights=[1.0, 2.0])
    target = F.normalize(teacher, dim=-1) @ F.normalize(teacher, dim=-1).T
    expected = [
        (F.normalize(student[:, :m], dim=-1) @ F.normalize(student[:, :m], dim=-1).T - target).pow(2).mean()
        for m in (4, 16)
    ]
    torch.testing.assert_close(similarity.per_size(student, teacher), torch.stack(expected))
    torch.testing.assert_close(similarity(student, teacher), 2.0 * expected[0] + expected[1])
    mse = MatryoshkaDistillationLoss([4, 16], mode="mse")
    torch.testing.assert_close(mse.per_size(student, teacher)[0], F.mse_loss(student[:, :4], teacher[:, :4]))
    assert float(mse.per_size(teacher[:, :16], teacher).sum()) == 0.0
    with pytest.raises(ValueError, match=r"^model\.loss\.distill\.mode='kl': expected one of similarity, mse"):
        MatryoshkaDistillationLoss([4], mode="kl")
    with pytest.raises(ValueError, match=r"^model\.loss\.distill\.mode=mse: the teacher's embeddings are 24 wide"):
        MatryoshkaDistillationLoss([32], mode="mse").per_size(torch.randn(3, 32), torch.randn(3, 24))


def test_distillation_trains_from_cached_teacher_embeddings(tiny_bert, pairs_file, tmp_path, monkeypatch):
    from mrl.backbones import hf_text

    torch.manual_seed(0)
    cache = tmp_path / "teacher.pt"
    distill = {"teacher": tiny_bert, "mode": "similarity", "contrastive": False, "cache": str(cache)}

    def fit(steps: int):
        dm = TextPairsDataModule(str(pairs_file), batch_size=8, max_length=32, seed=0)
        module = MatryoshkaContrastiveModule(
            _backbone(tiny_bert),
            nesting=[4, 32],
            loss={"distill": distill, "mini_batch_size": 4},
            optimizer={"name": "adamw", "lr": 3e-3},
        )
        trainer = _fit(module, dm, steps=steps)
        return module, trainer

    calls = []
    original = hf_text.HFTextEncoder.__init__

    def counting(self, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("name_or_path"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(hf_text.HFTextEncoder, "__init__", counting)
    module, trainer = fit(6)
    assert cache.is_file() and calls.count(tiny_bert) == 2  # the student's backbone, then the teacher once
    saved = torch.load(cache, weights_only=True)
    assert saved["embeddings"].shape == (len(saved["texts"]), 32)
    assert "train/distill_step" in trainer.logged_metrics
    # At the start the student is the teacher: its full width has nothing to learn, its 4-prefix has; a few steps
    # on one batch (no dropout) teach the 4-prefix the teacher's similarities.
    dm = TextPairsDataModule(str(pairs_file), batch_size=8, max_length=32, seed=0)
    batch = next(iter(dm.train_dataloader()))
    student = MatryoshkaContrastiveModule(_backbone(tiny_bert), nesting=[4, 32], loss={"distill": distill}).eval()
    student._targets = module._targets
    student.log = lambda *args, **kwargs: None
    teacher = torch.cat([student._targets(part) for part in batch])

    def per_size():
        return student.distiller.per_size(torch.cat(student.encode_parts(batch)), teacher)

    with torch.no_grad():
        before = per_size()
    optimizer = torch.optim.AdamW(student.parameters(), lr=2e-3)
    for _ in range(10):
        optimizer.zero_grad()
        student.training_step(batch, 0).backward()
        optimizer.step()
    with torch.no_grad():
        after = per_size()
    assert float(before[1]) < 1e-10 and float(before[0]) > 1e-5
    assert float(after[0]) < 0.7 * float(before[0]), (before, after)
    calls.clear()
    fit(1)
    assert calls.count(tiny_bert) == 1  # the second run read the teacher's embeddings from the cache


@pytest.mark.parametrize(
    ("distill", "message"),
    [
        ({"mode": "kl"}, r"^model\.loss\.distill\.mode='kl': expected one of similarity, mse"),
        ({"teacher": "./no/such/teacher"}, r"^model\.loss\.distill\.teacher='\./no/such/teacher': no such model"),
        ({"weight": -1}, r"^model\.loss\.distill\.weight=-1: expected a number >= 0"),
        ({"pooling": "max"}, r"^model\.loss\.distill\.pooling='max': expected one of mean, cls"),
        ({"teachr": None}, r"^model\.loss\.distill\.teachr=None: unknown key"),
        ("yes", r"^model\.loss\.distill='yes': expected a mapping"),
    ],
)
def test_distillation_options_fail_fast_in_one_line(tiny_bert, distill, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        MatryoshkaContrastiveModule(_backbone(tiny_bert), nesting=[8, 32], loss={"distill": distill})


# ------------------------------------------------------------------------------------- per-size logging
def _logged_run(module_class, module_kwargs, datamodule, tmp_path, monkeypatch, **trainer_kwargs):
    """Train with a CSV logger; the rows of its metrics.csv, the trainer's last metrics, and self.log calls made."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    calls = []
    log = L.LightningModule.log
    monkeypatch.setattr(
        L.LightningModule, "log", lambda self, name, *a, **k: calls.append(name) or log(self, name, *a, **k)
    )
    torch.manual_seed(0)
    random.seed(0)
    module = module_class(**module_kwargs)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=5,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        log_every_n_steps=3,
        logger=CSVLogger(str(tmp_path)),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule)
    with open(trainer.logger.log_dir + "/metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    ended = {k: float(v) for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}
    return rows, ended, dict(trainer.progress_bar_metrics), calls


@pytest.mark.parametrize("kind", ["classifier", "pairs"])
def test_per_size_training_logs_equal_logging_every_step(tiny_bert, pairs_file, tmp_path, monkeypatch, kind):
    """Per-size values handed to self.log only on the steps Lightning writes (and once per epoch) log exactly what
    logging every value every step logs: the same step rows, epoch means, accuracies and progress bar."""
    from mrl.data.text import TextClassificationDataModule
    from mrl_testing.every_step_logging import ClassifierLoggingEveryStep, ContrastiveLoggingEveryStep

    if kind == "classifier":
        data = TextClassificationDataModule(max_per_class=12, batch_size=8, tokenizer=tiny_bert, max_length=32)
        kwargs = {"backbone": _backbone(tiny_bert), "num_classes": 5, "nesting": [8, 16, 32]}
        classes, reference = MatryoshkaClassifier, ClassifierLoggingEveryStep
        trainer_kwargs = {}
    else:
        data = TextPairsDataModule(str(pairs_file), batch_size=8, max_length=32, seed=0, tokenizer=tiny_bert)
        kwargs = {"backbone": _backbone(tiny_bert), "nesting": [8, 16, 32]}
        classes, reference = MatryoshkaContrastiveModule, ContrastiveLoggingEveryStep
        trainer_kwargs = {"accumulate_grad_batches": 2}  # written steps count optimizer steps, not batches
    rows, ended, bar, calls = _logged_run(classes, kwargs, data, tmp_path / "new", monkeypatch, **trainer_kwargs)
    monkeypatch.undo()
    rows_ref, ended_ref, bar_ref, calls_ref = _logged_run(
        reference, kwargs, data, tmp_path / "ref", monkeypatch, **trainer_kwargs
    )
    assert rows == rows_ref  # every row of metrics.csv: step values on the written steps and the epoch values
    stepped = [row for row in rows if row.get("train/loss@8_step")]
    assert len(stepped) >= 2 and all(row.get("train/loss@32_step") for row in stepped)
    assert sum(bool(row.get("train/loss@8_epoch")) for row in rows) == 2
    if kind == "classifier":
        assert sum(bool(row.get("train/top1@8")) for row in rows) == 2
    assert ended == ended_ref and bar == bar_ref
    trained = [name for name in calls if name.startswith("train/")]
    assert len(trained) < len([name for name in calls_ref if name.startswith("train/")])  # the point


# ------------------------------------------------------------------ make eval: the (layers, size) grid
GRID_SIZES = [8, 16, 32]


@pytest.fixture(scope="module")
def tiny_bert3(tmp_path_factory) -> str:
    """As ``tiny_bert`` with 3 layers, so that a chosen layer can leave another out, and larger random weights, so
    that each layer changes the embedding (and the grid's rows differ)."""
    from transformers import BertConfig, BertModel

    from mrl.backbones.hf_text import load_tokenizer

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tiny_bert3")
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        initializer_range=0.3,
    )
    BertModel(config).save_pretrained(path)
    load_tokenizer(None).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def run_2d(tiny_bert3, pairs_file, tmp_path_factory):
    """A 2D Matryoshka run (``model.loss.layers={}``) of ``experiment=text_pairs_mrl``, trained a few steps by the
    training procedure, as `make train` leaves it."""
    from mrl.training.procedure import run_training
    from mrl_testing.configs import compose_train

    run_dir = tmp_path_factory.mktemp("run_2d")
    overrides = [
        "experiment=text_pairs_mrl",
        f"model.backbone.name_or_path={tiny_bert3}",
        "model.backbone.max_length=32",
        f"model.nesting=[{','.join(map(str, GRID_SIZES))}]",
        "model.loss.layers={}",
        f"data.source={pairs_file}",
        "data.max_pairs=null",
        "data.val_fraction=0.5",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.num_sanity_val_steps=0",
        "callbacks=default",
        "callbacks.rich_progress_bar=null",
        "callbacks.rich_model_summary=null",
        "logger=none",
        "print_config=false",
        "test=false",
    ]
    run_training(compose_train(overrides, run_dir), run_dir)
    return run_dir


def _cut_metrics(run_dir, layers: int) -> dict[str, float]:
    """``make eval``'s per-size metrics of the run's model actually cut to its first ``layers`` layers (as
    ``export_sentence_transformer(..., layers=k)`` cuts it), from one plain forward per batch."""
    from mrl.evaluation.runner import build_eval_data
    from mrl.evaluation.text import evaluate_text_run
    from mrl.interop.sentence_transformers import cut_layers
    from mrl.runs import find_checkpoint, load_module
    from mrl_testing.configs import eval_cfg

    module = load_module(find_checkpoint(run_dir)).eval()
    cut_layers(module.backbone.model, layers)
    return evaluate_text_run(module, build_eval_data(eval_cfg(run_dir), run_dir, module), GRID_SIZES)


def test_eval_of_a_2d_run_writes_the_layers_by_sizes_grid(run_2d, tmp_path, monkeypatch, capsys):
    import csv

    from sentence_transformers import SentenceTransformer

    from mrl.cli.evaluate import show
    from mrl.core.retrieval_metrics import retrieval_metrics
    from mrl.evaluation.runner import evaluate_run
    from mrl.interop.sentence_transformers import export_sentence_transformer
    from mrl.runs import find_checkpoint, load_module
    from mrl_testing.configs import eval_cfg
    from mrl_testing.wandb_records import read_finished_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    result = evaluate_run(eval_cfg(run_2d, wandb=True))  # layers=null: every layer, the run was trained 2D
    plain = evaluate_run(eval_cfg(run_2d, layers=[], output_dir=str(tmp_path / "plain")))
    assert plain.layer_grid == [] and not any("layer" in key for key in plain.metrics)
    assert not (tmp_path / "plain" / "layer_grid.csv").exists()

    # The grid: every layer count (3 of 3) at every size; the last row is the model's own per-size metrics
    grid = result.layer_grid
    assert [(row["layers"], row["size"]) for row in grid] == [(k, m) for k in (1, 2, 3) for m in GRID_SIZES]
    assert {k: v for k, v in result.metrics.items() if "/layer" not in k} == plain.metrics
    for row in grid:
        assert row["relative_cost"] == pytest.approx(row["layers"] / 3)
        for name in ("mrr@10", "ndcg@10", "recall@1", "recall@10", "recall@100"):
            key = (
                f"eval/{name}@{row['size']}"
                if row["layers"] == 3
                else f"eval/layer{row['layers']}/{name}@{row['size']}"
            )
            assert row[name] == result.metrics[key]
            if row["layers"] == 3:
                assert row[name] == plain.metrics[key]
    # An earlier layer's row is the model cut to that many layers (and not another layer's)
    rows = {k: [row["mrr@10"] for row in grid if row["layers"] == k] for k in (1, 2, 3)}
    assert rows[1] != rows[2] != rows[3]
    for k in (1, 2):
        cut = _cut_metrics(run_2d, k)
        assert {key: result.metrics[key.replace("eval/", f"eval/layer{k}/")] for key in cut} == pytest.approx(
            cut, abs=1e-6
        )
        assert [cut[f"eval/mrr@10@{m}"] for m in GRID_SIZES] != rows[3 - k]
    # ... and the sentence-transformers export of the first layer
    module = load_module(find_checkpoint(run_2d)).eval()
    exported = SentenceTransformer(str(export_sentence_transformer(module, tmp_path / "cut1", layers=1)), device="cpu")
    from mrl.evaluation.runner import build_eval_data

    items = build_eval_data(eval_cfg(run_2d), run_2d, module).split_items("val")
    anchors, positives = (exported.encode([item[i] for item in items], convert_to_tensor=True) for i in (0, 1))
    reference = retrieval_metrics(anchors, positives, torch.arange(len(items)), GRID_SIZES, ks=(1, 10, 100))
    assert {k: result.metrics[f"eval/layer1/{k}"] for k in reference} == pytest.approx(reference, abs=1e-4)

    # Written: summary.md's table (rows layers with their cost, columns sizes), layer_grid.csv, results.json/.csv
    out = run_2d / "eval"
    summary = (out / "summary.md").read_text()
    assert "## Layers x sizes: mrr@10 % of the model cut to its first k of 3 layers" in summary
    assert "| layers | cost | 8 | 16 | 32 |" in summary
    row1 = next(row for row in grid if row["layers"] == 1 and row["size"] == 8)
    assert f"| 1 | 0.33x | {100 * row1['mrr@10']:.2f} |" in summary and "| 3 | 1.00x |" in summary
    with open(out / "layer_grid.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and float(rows[0]["mrr@10"]) == grid[0]["mrr@10"] and rows[0]["layers"] == "1"
    assert json.loads((out / "results.json").read_text())["layer_grid"] == grid
    assert "layer2/mrr@10" in (out / "results.csv").read_text().splitlines()[0]
    capsys.readouterr()
    show(result)  # make eval prints the grid under the per-size table
    printed = capsys.readouterr().out
    assert "Layers x sizes" in printed and "0.33x" in printed
    # W&B: the grid table with the other eval tables, its metrics in the summary
    files = sorted(run_2d.glob("wandb/offline-run-*/run-*.wandb"))
    run = read_finished_run(files[-1])
    assert any(k.startswith("eval/layer_grid") for k in run["history_keys"])
    assert "eval/layer1/mrr@10@8" in run["summary"]


def test_eval_layers_option_on_any_text_model_and_scored_pairs(tiny_bert3, tmp_path):
    """``layers=`` chooses the rows for any text model (here one trained without model.loss.layers); scored pairs
    (STS) get the Spearman grid; a layer's values are the cut model's."""
    from mrl.evaluation.settings import eval_config
    from mrl.evaluation.text import evaluate_text, evaluate_text_run
    from mrl.interop.sentence_transformers import cut_layers
    from mrl_testing.configs import eval_cfg

    sts = tmp_path / "sts.csv"
    texts = QUERIES + DOCUMENTS
    lines = ["sentence1,sentence2,score"] + [
        f'"{a}","{texts[(i + j) % len(texts)]}",{1.0 - 0.2 * j}' for i, a in enumerate(texts) for j in range(3)
    ]
    sts.write_text("\n".join(lines) + "\n")
    columns = {"anchor_column": "sentence1", "positive_column": "sentence2"}
    data = TextPairsDataModule(
        str(sts), batch_size=4, max_length=32, tokenizer=tiny_bert3, **columns,
        eval_source={"source": str(sts), **columns, "score_column": "score"},
    )  # fmt: skip
    module = MatryoshkaContrastiveModule(_backbone(tiny_bert3), nesting=[8, 32]).eval()

    def evaluate(**overrides):
        return evaluate_text(eval_config(eval_cfg(None, **overrides)), module, data, "x.ckpt")

    assert evaluate().layer_grid == []  # null: no grid for a model trained without model.loss.layers
    chosen = evaluate(layers=[2])
    assert [(row["layers"], row["size"]) for row in chosen.layer_grid] == [(2, 8), (2, 32), (3, 8), (3, 32)]
    assert set(chosen.metrics) == {f"eval/{p}spearman@{m}" for p in ("", "layer2/") for m in (8, 32)}
    cut = copy.deepcopy(module)
    cut_layers(cut.backbone.model, 2)
    reference = evaluate_text_run(cut, data, [8, 32])
    assert {k: chosen.metrics[k.replace("eval/", "eval/layer2/")] for k in reference} == pytest.approx(reference)
    assert chosen.metrics["eval/layer2/spearman@32"] != chosen.metrics["eval/spearman@32"]
    assert {k: v for k, v in chosen.metrics.items() if "layer" not in k} == evaluate().metrics
    everything = evaluate(layers="all")
    assert sorted({row["layers"] for row in everything.layer_grid}) == [1, 2, 3]
    assert everything.metrics["eval/layer2/spearman@8"] == chosen.metrics["eval/layer2/spearman@8"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "some",
            r"^layers='some': expected all, a list of layer counts \(e\.g\. \[2, 4, 6\]\), \[\] for none, or null",
        ),
        ([0, 2], r"^layers=\[0, 2\]: expected all, a list of layer counts"),
        (2, r"^layers=2: expected all, a list of layer counts"),
        ([1.5], r"^layers=\[1\.5\]: expected all"),
    ],
)
def test_bad_eval_layers_values_fail_in_one_line(value, message):
    from mrl.common.errors import is_config_error
    from mrl.evaluation.settings import eval_config
    from mrl_testing.configs import eval_cfg

    with pytest.raises(ValueError, match=message) as error:
        eval_config(eval_cfg(None, layers=value))
    assert is_config_error(error.value) and "\n" not in str(error.value)


def test_eval_layers_that_do_not_fit_the_run_fail_in_one_line(run_2d, tiny_bert3):
    from mrl.common.errors import is_config_error
    from mrl.evaluation.layer_grid import layer_counts
    from mrl.evaluation.runner import evaluate_run
    from mrl_testing.configs import eval_cfg

    with pytest.raises(
        ValueError, match=r"^layers=\[2, 4\]: layer 4 is beyond this model's 3 transformer layers; give co"
    ):
        evaluate_run(eval_cfg(run_2d, layers=[2, 4], output_dir=str(run_2d / "bad")))
    classifier = MatryoshkaClassifier(_backbone(tiny_bert3), num_classes=3, nesting=[8, 32])
    with pytest.raises(
        ValueError, match=r"^layers='all': the \(layers, size\) grid is measured for text embedding"
    ) as e:
        layer_counts("all", classifier, None)
    assert is_config_error(e.value)
    assert layer_counts(None, classifier, None) == [] and layer_counts((), classifier, None) == []
    pairs = MatryoshkaContrastiveModule(_backbone(tiny_bert3), nesting=[8], loss={"layers": {}})
    with pytest.raises(ValueError, match=r"^layers=\[1\]: the evaluation data are labelled sentences"):
        layer_counts((1,), pairs, "classification")
    assert layer_counts(None, pairs, "classification") == [] and layer_counts(None, pairs, "pairs") == [1, 2, 3]
