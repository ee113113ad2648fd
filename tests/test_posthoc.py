"""Post-hoc methods over frozen embeddings: CSR (a TopK sparse autoencoder) and the Matryoshka-Adaptor.

The CSR losses and gradients are checked against sentence-transformers' ``CSRLoss`` on fixed inputs; the adaptor's
losses against loops over pairs written out one by one.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mrl.common.errors import ConfigError
from mrl.core.adaptor import (
    MatryoshkaAdaptor,
    adaptor_unsupervised_losses,
    pairwise_similarity_loss,
    ranking_loss,
    reconstruction_loss,
    topk_similarity_loss,
)
from mrl.core.sparse import (
    TopKSparseAutoencoder,
    csr_loss,
    normalized_mse,
    sparse_bytes_per_vector,
)

D, H, K, K_AUX = 12, 48, 3, 8


def _pair(autoencoder: TopKSparseAutoencoder):
    """Our autoencoder and sentence-transformers' with the same weights and the same dead units."""
    from sentence_transformers.sparse_encoder.modules import SparseAutoEncoder

    theirs = SparseAutoEncoder(D, H, k=K, k_aux=K_AUX, dead_threshold=30)
    with torch.no_grad():
        theirs.pre_bias.copy_(autoencoder.pre_bias)
        theirs.encoder.weight.copy_(autoencoder.encoder.weight)
        theirs.latent_bias.copy_(autoencoder.latent_bias)
        theirs.stats_last_nonzero.copy_(autoencoder.steps_since_fired)
    return theirs


def _ours() -> TopKSparseAutoencoder:
    torch.manual_seed(0)
    ours = TopKSparseAutoencoder(D, H, k=K, k_aux=K_AUX, dead_threshold=30)
    with torch.no_grad():
        ours.pre_bias.normal_(0, 0.1)
        ours.latent_bias.normal_(0, 0.1)
        # half the units dead (fired more than 30 passes ago), so the auxiliary loss has units to use
        ours.steps_since_fired.copy_(torch.where(torch.arange(H) % 2 == 0, 100, 3))
    return ours


class _Wrapper(nn.Module):
    """What CSRLoss calls as its model: the sentence features in, the autoencoder's outputs out."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, features: dict) -> dict:
        return self.module(features)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("with_negative", [False, True])
def test_csr_loss_and_gradients_match_sentence_transformers(training, with_negative):
    from sentence_transformers.sparse_encoder.losses import CSRLoss

    ours = _ours()
    theirs = _pair(ours)
    ours.train(training)
    theirs.train(training)
    torch.manual_seed(1)
    columns = [torch.randn(6, D) for _ in range(3 if with_negative else 2)]

    their_terms = CSRLoss(_Wrapper(theirs), beta=0.1, gamma=1.0)([{"sentence_embedding": c} for c in columns], None)
    our_terms = csr_loss([ours(c) for c in columns], beta=0.1, gamma=1.0)
    names = {
        "reconstruction_loss_k": "reconstruction_k",
        "reconstruction_loss_4k": "reconstruction_4k",
        "reconstruction_loss_aux": "reconstruction_aux",
        "base_loss": "contrastive",
    }
    for their_name, our_name in names.items():
        torch.testing.assert_close(our_terms[our_name], their_terms[their_name], atol=1e-5, rtol=1e-5)
    assert our_terms["reconstruction_aux"].item() > 0 and our_terms["contrastive"].item() > 0

    sum(their_terms.values()).backward()
    sum(our_terms.values()).backward()
    for ours_p, theirs_p in [
        (ours.pre_bias, theirs.pre_bias),
        (ours.encoder.weight, theirs.encoder.weight),
        (ours.latent_bias, theirs.latent_bias),
    ]:
        assert ours_p.grad is not None and ours_p.grad.abs().sum() > 0
        torch.testing.assert_close(ours_p.grad, theirs_p.grad, atol=1e-5, rtol=1e-5)
    # the dead-unit counts move the same way in training, and not at all in evaluation
    torch.testing.assert_close(ours.steps_since_fired, theirs.stats_last_nonzero)


def test_inference_codes_match_sentence_transformers_at_any_k():
    ours = _ours().eval()
    theirs = _pair(ours).eval()
    x = torch.randn(5, D)
    for k in (1, 3, 7):
        with torch.inference_mode():
            theirs_codes = theirs({"sentence_embedding": x.clone()}, max_active_dims=k)["sentence_embedding"]
            codes = ours.encode(x, k)
        torch.testing.assert_close(codes, theirs_codes)
        assert ((codes != 0).sum(1) <= k).all() and (codes >= 0).all()


def test_one_forward_at_several_k_equals_separate_dense_forwards():
    """forward_many shares one sorted top-(4 max k) and decodes from (index, value) pairs: the same codes,
    reconstructions, losses, gradients and dead-unit counts as one dense forward per k (sentence-transformers'
    way, checked above at one k), the counts updated in the same order."""
    shared, separate = _ours().train(), _ours().train()
    x = torch.randn(6, D)
    many = shared.forward_many(x, [1, 2, 3])
    for k, out in zip([1, 2, 3], many, strict=True):
        pre = separate.pre_activation(x)
        codes_k, top_k = separate.keep_top(pre, k)
        separate._count_firing(pre, top_k)
        dead = separate.steps_since_fired > separate.dead_threshold
        codes_aux = separate.keep_top(pre * dead, separate.k_aux)[0]
        codes_4k, top_4k = separate.keep_top(pre, 4 * k)
        separate._count_firing(pre, top_4k)
        torch.testing.assert_close(out.codes_k, codes_k)
        torch.testing.assert_close(out.codes_4k, codes_4k)
        torch.testing.assert_close(out.codes_aux, codes_aux)
        torch.testing.assert_close(out.recon_k, separate.decode(codes_k))
        torch.testing.assert_close(out.recon_4k, separate.decode(codes_4k))
        torch.testing.assert_close(out.recon_aux, separate.decode(codes_aux))
    torch.testing.assert_close(shared.steps_since_fired, separate.steps_since_fired)
    loss = sum(sum(csr_loss([out, out]).values()) for out in many)
    loss.backward()
    assert shared.encoder.weight.grad is not None and shared.encoder.weight.grad.abs().sum() > 0


def test_normalized_mse_falls_back_to_mse_on_a_constant_batch():
    target = torch.ones(4, 3)
    recon = torch.zeros(4, 3)
    assert normalized_mse(recon, target).item() == pytest.approx(1.0)
    target = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    # the batch mean (1, 1) misses each entry by 1: the normaliser is 1, so the loss is the plain MSE
    assert normalized_mse(torch.zeros(2, 2), target).item() == pytest.approx(2.0)


def test_autoencoder_refuses_bad_settings():
    with pytest.raises(ConfigError, match="method.k"):
        TopKSparseAutoencoder(8, 16, k=8)
    with pytest.raises(ConfigError, match="method.hidden_dim"):
        TopKSparseAutoencoder(8, 0, k=1)


def test_sparse_storage_prices_indices_and_values():
    assert sparse_bytes_per_vector(32, 2048) == 32 * (2 + 4)  # uint16 index + fp32 value
    assert sparse_bytes_per_vector(32, 2048, "fp16") == 32 * 4
    assert sparse_bytes_per_vector(8, 256) == 8 * 5
    assert sparse_bytes_per_vector(8, 100_000) == 8 * 8


# ------------------------------------------------------------------------------------------ adaptor
def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _reference_pairwise(e, f, sizes):
    n = len(e)
    per_size = []
    for m in sizes:
        diffs = [abs(_cos(e[i], e[j]) - _cos(f[i, :m], f[j, :m])) for i, j in itertools.permutations(range(n), 2)]
        per_size.append(sum(diffs) / len(diffs))
    return sum(per_size) / len(per_size)


def _reference_topk(e, f, sizes, k):
    n = len(e)
    per_size = []
    for m in sizes:
        diffs = []
        for i in range(n):
            others = sorted((j for j in range(n) if j != i), key=lambda j: -_cos(e[i], e[j]))[:k]
            diffs += [abs(_cos(e[i], e[j]) - _cos(f[i, :m], f[j, :m])) for j in others]
        per_size.append(sum(diffs) / len(diffs))
    return sum(per_size) / len(per_size)


def _reference_ranking(q, d, sizes, scale):
    n = len(q)
    per_size = []
    for m in sizes:
        terms = []
        for i in range(n):
            positive = _cos(q[i, :m], d[i, :m])
            terms += [
                math.log1p(math.exp(scale * (_cos(q[i, :m], d[j, :m]) - positive))) for j in range(len(d)) if j != i
            ]
        per_size.append(sum(terms) / len(terms))
    return sum(per_size) / len(per_size)


def test_adaptor_losses_match_loops_over_pairs():
    torch.manual_seed(0)
    e = torch.randn(7, 10, dtype=torch.float64)
    f = e + 0.3 * torch.randn(7, 10, dtype=torch.float64)
    sizes = [2, 5, 10]
    assert pairwise_similarity_loss(e, f, sizes).item() == pytest.approx(_reference_pairwise(e, f, sizes), rel=1e-9)
    assert topk_similarity_loss(e, f, sizes, 3).item() == pytest.approx(_reference_topk(e, f, sizes, 3), rel=1e-9)
    assert reconstruction_loss(e, f).item() == pytest.approx(float((f - e).abs().sum()) / f.numel(), rel=1e-9)
    docs = torch.randn(9, 10, dtype=torch.float64)  # 7 positives and 2 extra negatives
    assert ranking_loss(f, docs, sizes, 5.0).item() == pytest.approx(_reference_ranking(f, docs, sizes, 5.0), rel=1e-9)


def test_adaptor_starts_as_the_identity_and_its_losses_vanish_there():
    adaptor = MatryoshkaAdaptor(10)
    e = torch.randn(6, 10)
    torch.testing.assert_close(adaptor(e), e)
    losses = adaptor_unsupervised_losses(e, adaptor(e), [10], top_k=3)
    assert all(value.item() == pytest.approx(0.0, abs=1e-6) for value in losses.values())


def test_adaptor_training_makes_short_prefixes_keep_the_neighbours():
    """Data whose similarity lives in the last coordinates: truncation loses it, the adaptor moves it forward."""
    torch.manual_seed(0)
    e = torch.cat([0.05 * torch.randn(64, 12), torch.randn(64, 4)], dim=1)
    adaptor = MatryoshkaAdaptor(16, 32)
    optimizer = torch.optim.Adam(adaptor.parameters(), lr=1e-2)
    sizes = [4, 8, 16]
    before = pairwise_similarity_loss(e, e, [4]).item()
    for _ in range(200):
        optimizer.zero_grad()
        sum(adaptor_unsupervised_losses(e, adaptor(e), sizes, top_k=5, reconstruction_weight=0.01).values()).backward()
        optimizer.step()
    with torch.no_grad():
        after = pairwise_similarity_loss(e, adaptor(e), [4]).item()
    assert after < 0.5 * before


# ------------------------------------------------------------------------------ training and evaluation
def test_inverted_index_finds_what_dense_search_over_the_same_codes_finds():
    from mrl.posthoc.sparse_index import InvertedIndex, dense_search

    rng = np.random.default_rng(0)
    db = rng.random((200, 64)).astype(np.float32) * (rng.random((200, 64)) < 0.1)
    queries = rng.random((30, 64)).astype(np.float32) * (rng.random((30, 64)) < 0.1)
    index = InvertedIndex(db)
    assert index.posting_lengths.sum() == (db != 0).sum()
    scores, ids = index.search(queries, 5)
    dense_scores, dense_ids = dense_search(db, queries, 5)
    np.testing.assert_allclose(scores, dense_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ids, dense_ids)
    brute = np.argsort(-(queries @ db.T), axis=1, kind="stable")[:, 0]
    np.testing.assert_array_equal(ids[:, 0], brute)


def _posthoc_cfg(tmp_path, overrides):
    from omegaconf import open_dict

    from mrl_testing.configs import compose_train

    overrides = [*overrides, "logger=none", "print_config=false", f"paths.log_dir={tmp_path}"]
    cfg = compose_train(overrides, tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.log_dir = str(tmp_path)
    return cfg


def _eval_settings():
    from mrl.evaluation.settings import eval_config
    from mrl_testing.configs import eval_cfg

    return eval_config(eval_cfg(None))


@pytest.mark.parametrize("method", ["csr", "adaptor_supervised", "pca"])
def test_digits_post_hoc_run_trains_on_cached_frozen_embeddings_and_evaluates(tmp_path, method):
    from mrl.evaluation.runner import evaluate_runs
    from mrl.posthoc.evaluate import PostHocMethod, evaluate_any_run, is_posthoc_run
    from mrl.posthoc.frozen import load_frozen
    from mrl.posthoc.procedure import run_posthoc
    from mrl_testing.configs import FAST, eval_cfg

    overrides = [o for o in FAST if not o.startswith(("logger", "print_config"))]
    cfg = _posthoc_cfg(
        tmp_path,
        ["experiment=digits_csr", f"method={method}", *overrides, "trainer.max_epochs=1"]
        + (["method.max_epochs=2", "method.sizes=[8,16,64]"] if method != "pca" else ["method.sizes=[8,16,64]"]),
    )
    results = run_posthoc(cfg, tmp_path / "run")
    assert results["head"] == method and results["sizes"] == [8, 16, 64]
    frozen = load_frozen(results["frozen_embeddings"])
    assert frozen.kind == "classes" and frozen["train_anchor"].shape[0] == len(frozen["train_labels"])
    assert Path(results["frozen_source"]).parent.name == "frozen"  # the standard source run, cached under log_dir
    written = Path(results["frozen_embeddings"]).stat().st_mtime_ns
    again = run_posthoc(cfg, tmp_path / "run2")  # a second run reuses the source and its embeddings
    assert again["frozen_embeddings"] == results["frozen_embeddings"]
    assert Path(results["frozen_embeddings"]).stat().st_mtime_ns == written

    assert is_posthoc_run(tmp_path / "run")
    # as `make eval run=<run>` does it: the command line's evaluator sends a post-hoc run to evaluate_posthoc
    (result,) = evaluate_runs(eval_cfg(tmp_path / "run"), evaluate_any_run)
    loaded = PostHocMethod(results["best_checkpoint"])
    for m in (8, 16, 64):
        assert 0.1 < result.metrics[f"eval/knn_top1@{m}"] <= 1.0
        assert f"eval/probe_top1@{m}" in result.metrics and f"eval/map@10@{m}" in result.metrics
        codes = loaded.represent(frozen["val_anchor"][:20], m)
        if method == "csr":
            assert codes.shape[1] == 4 * frozen.dim and ((codes != 0).sum(1) <= m).all()
            assert result.metrics[f"eval/bytes_per_vector@{m}"] == 6 * m
        else:
            assert codes.shape[1] == m and result.metrics[f"eval/bytes_per_vector@{m}"] == 4 * m
    written = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert [row["size"] for row in written["search_cost"]] == [8, 16, 64]
    assert all(row["ms_per_query"] > 0 for row in written["search_cost"])
    if method == "pca":  # the first principal direction's 1-NN equals one computed here from the frozen embeddings
        from mrl.evaluation.baselines import fit_pca
        from mrl.evaluation.knn_metrics import knn_metrics

        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        projection = fit_pca(unit(frozen["train_anchor"]), 8)
        expected = knn_metrics(
            projection(unit(frozen["train_anchor"])), frozen["train_labels"],
            projection(unit(frozen["val_anchor"])), frozen["val_labels"], [8], ks=[10],
        )  # fmt: skip
        assert result.metrics["eval/knn_top1@8"] == pytest.approx(expected["knn_top1@8"])


@pytest.mark.parametrize("experiment", ["text_pairs_csr", "text_pairs_adaptor"])
def test_text_pairs_post_hoc_run_on_the_stock_encoder(tmp_path, experiment):
    from omegaconf import open_dict

    from mrl.core.retrieval_metrics import retrieval_metrics
    from mrl.posthoc.evaluate import evaluate_posthoc
    from mrl.posthoc.frozen import load_frozen
    from mrl.posthoc.procedure import run_posthoc

    cfg = _posthoc_cfg(
        tmp_path,
        [f"experiment={experiment}", "data.max_pairs=120", "method.max_epochs=2", "method.batch_size=16",
         "method.sizes=[8,32]", "trainer.accelerator=cpu"],
    )  # fmt: skip
    results = run_posthoc(cfg, tmp_path / "run")
    frozen = load_frozen(results["frozen_embeddings"])
    assert frozen.kind == "pairs" and frozen.dim == 384 and results["global_step"] > 0
    result = evaluate_posthoc(_eval_settings(), results["best_checkpoint"], tmp_path / "run", tmp_path / "run" / "eval")
    for m in (8, 32):
        assert 0.0 < result.metrics[f"eval/mrr@10@{m}"] <= 1.0
    # truncation, evaluated the same way, equals the metric computed here on the frozen embeddings' prefixes
    with open_dict(cfg):
        cfg.method = {"name": "truncate", "source": None, "sizes": [8, 32]}
    truncated = run_posthoc(cfg, tmp_path / "truncate")
    assert truncated["frozen_embeddings"] == results["frozen_embeddings"]
    measured = evaluate_posthoc(_eval_settings(), truncated["best_checkpoint"], tmp_path / "t", tmp_path / "t" / "eval")
    anchors, positives = frozen["val_anchor"], frozen["val_positive"]
    direct = retrieval_metrics(anchors, positives, np.arange(len(anchors)), [8, 32])
    assert direct["mrr@10@32"] > 0.3
    for m in (8, 32):
        assert measured.metrics[f"eval/mrr@10@{m}"] == pytest.approx(direct[f"mrr@10@{m}"])


def test_report_puts_dense_and_sparse_runs_on_one_bytes_axis(tmp_path):
    from mrl.evaluation.comparison import write_report

    def run(name, head, seed, metrics, priced=None):
        folder = tmp_path / name
        (folder / "eval").mkdir(parents=True)
        (folder / "config.yaml").write_text(f"experiment_name: digits\nseed: {seed}\n")
        (folder / "results.json").write_text(json.dumps({"head": head, "sizes": [8, 16], "metrics": {}}))
        body = {"checkpoint": "x", "metrics": metrics, **({"bytes_per_vector": priced} if priced else {})}
        (folder / "eval" / "results.json").write_text(json.dumps(body))

    run("mrl0", "mrl", 0, {"eval/knn_top1@8": 0.80, "eval/knn_top1@16": 0.90})
    run("mrl1", "mrl", 1, {"eval/knn_top1@8": 0.70, "eval/knn_top1@16": 0.80})
    run("csr0", "csr", 0, {"eval/knn_top1@8": 0.85}, {"8": 48})
    report = write_report(tmp_path)
    curves = report["curves"]["bytes_knn_top1"]
    assert curves["MRL"] == {32: pytest.approx(0.75), 64: pytest.approx(0.85)}
    assert curves["CSR"] == {48: pytest.approx(0.85)}
    assert report["spread"]["bytes_knn_top1"]["MRL"][32] == pytest.approx(np.std([0.8, 0.7], ddof=1))
    text = (tmp_path / "report.md").read_text()
    assert "against bytes per vector" in text and (tmp_path / "report_bytes_knn_top1.png").is_file()
