"""Matryoshka losses against per-size references (and sentence-transformers' MatryoshkaLoss)."""

import pytest
import torch
import torch.nn.functional as F

from mrl.core.losses import MatryoshkaContrastiveLoss, MatryoshkaCrossEntropy
from mrl.core.nesting import NestingError
from mrl_testing.reference import NaiveMatryoshkaCE


@pytest.mark.parametrize("weights", [None, [1.0, 0.5, 2.0, 0.25]])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_matches_per_size_reference(weights, label_smoothing):
    torch.manual_seed(0)
    logits = torch.randn(4, 16, 9, dtype=torch.float64)
    target = torch.randint(0, 9, (16,))
    l1 = logits.clone().requires_grad_()
    l2 = logits.clone().requires_grad_()
    crit = MatryoshkaCrossEntropy(weights, label_smoothing=label_smoothing)
    loss = crit(l1, target)
    ref = NaiveMatryoshkaCE(weights, label_smoothing=label_smoothing)(list(l2), target)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(l1.grad, l2.grad)
    expected = torch.stack([F.cross_entropy(logits[g], target, label_smoothing=label_smoothing) for g in range(4)])
    torch.testing.assert_close(crit.last_per_size, expected)
    assert not crit.last_per_size.requires_grad
    per_size = crit.per_size(l1, target)
    assert per_size.shape == (4,) and per_size.requires_grad
    torch.testing.assert_close(crit.reduce(per_size), loss)


def test_cross_entropy_soft_targets():
    torch.manual_seed(0)
    logits = torch.randn(3, 8, 5)
    probs = torch.softmax(torch.randn(8, 5), dim=-1)
    per_size = MatryoshkaCrossEntropy().per_size(logits, probs)
    torch.testing.assert_close(per_size, torch.stack([F.cross_entropy(logits[g], probs) for g in range(3)]))


def test_cross_entropy_weight_count_must_match_sizes():
    crit = MatryoshkaCrossEntropy(weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="loss.weights has 2 entries but the head gives 3 sizes"):
        crit(torch.randn(3, 4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[G, B, C\]"):
        crit(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))


def test_cross_entropy_weights_are_a_non_persistent_buffer():
    crit = MatryoshkaCrossEntropy(weights=[1.0, 2.0]).to(torch.float64)
    assert "weights" not in crit.state_dict()
    loss = crit(torch.zeros(2, 3, 4, dtype=torch.float64), torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(loss, torch.tensor(3 * torch.log(torch.tensor(4.0)).item(), dtype=torch.float64))


def _naive_contrastive(anchor, positive, negative, dims, weights, scale):
    """Independent per-size in-batch-negatives loss, written out longhand."""
    total = 0.0
    for m, w in zip(dims, weights):
        a = anchor[:, :m] / anchor[:, :m].norm(dim=1, keepdim=True)
        docs = positive if negative is None else torch.cat([positive, negative])
        d = docs[:, :m] / docs[:, :m].norm(dim=1, keepdim=True)
        scores = scale * a @ d.T
        total = total + w * (torch.logsumexp(scores, 1) - scores.diagonal()[: len(a)]).mean()
    return total


@pytest.mark.parametrize("with_negative", [False, True])
def test_contrastive_matches_naive(with_negative):
    torch.manual_seed(0)
    a, p, n = (torch.randn(6, 32, dtype=torch.float64) for _ in range(3))
    dims, weights = [4, 8, 32], [1.0, 0.5, 2.0]
    crit = MatryoshkaContrastiveLoss(dims, weights=weights, scale=20.0)
    loss = crit(a, p, n if with_negative else None)
    ref = _naive_contrastive(a, p, n if with_negative else None, dims, weights, 20.0)
    torch.testing.assert_close(loss, ref)
    assert crit.last_per_size.shape == (3,)


def test_contrastive_validates_dims_and_weights():
    with pytest.raises(NestingError, match=r"^loss\.dims=\[32, 8, 32\]: size 32 is given twice"):
        MatryoshkaContrastiveLoss([32, 8, 32])
    with pytest.raises(ValueError, match=r"^loss\.weights=\[1\.0\]: 1 weights for the 2 sizes of loss\.dims"):
        MatryoshkaContrastiveLoss([8, 16], weights=[1.0])
    with pytest.raises(ValueError, match="loss.dims"):
        MatryoshkaContrastiveLoss([8, 64])(torch.randn(2, 32), torch.randn(2, 32))


@pytest.mark.parametrize("with_negative", [False, True])
def test_contrastive_sizes_in_any_order_match_naive(with_negative):
    """Sizes as sentence-transformers users list them (large to small); each weight stays with its size."""
    torch.manual_seed(0)
    a, p, n = (torch.randn(6, 32, dtype=torch.float64) for _ in range(3))
    crit = MatryoshkaContrastiveLoss([32, 4, 8], weights=[2.0, 1.0, 0.5], scale=20.0)
    assert crit.dims == [4, 8, 32] and crit.weights.tolist() == [1.0, 0.5, 2.0]
    loss = crit(a, p, n if with_negative else None)
    ref = _naive_contrastive(a, p, n if with_negative else None, [4, 8, 32], [1.0, 0.5, 2.0], 20.0)
    torch.testing.assert_close(loss, ref)


def test_contrastive_gradients_match_per_size_reference():
    """One fused pass over all sizes (nested products, one softmax) gives the longhand per-size gradients,
    also through a zero prefix (F.normalize's epsilon)."""
    torch.manual_seed(0)
    a, p = torch.randn(5, 16, dtype=torch.float64), torch.randn(5, 16, dtype=torch.float64)
    a[0, :4] = 0.0
    ours = [a.clone().requires_grad_(), p.clone().requires_grad_()]
    theirs = [a.clone().requires_grad_(), p.clone().requires_grad_()]
    dims = [4, 8, 16]
    MatryoshkaContrastiveLoss(dims, weights=[1.0, 2.0, 3.0])(*ours).backward()
    total = 0.0
    for w, m in zip([1.0, 2.0, 3.0], dims):
        sims = 20.0 * F.normalize(theirs[0][:, :m], dim=-1) @ F.normalize(theirs[1][:, :m], dim=-1).T
        total = total + w * F.cross_entropy(sims, torch.arange(5))
    total.backward()
    for x, y in zip(ours, theirs):
        assert torch.isfinite(x.grad).all()
        torch.testing.assert_close(x.grad, y.grad)


def test_contrastive_reduce_keeps_the_active_sizes():
    crit = MatryoshkaContrastiveLoss([4, 8, 16], weights=[1.0, 2.0, 3.0])
    per_size = torch.tensor([1.0, 10.0, 100.0])
    assert float(crit.reduce(per_size)) == 321.0
    assert float(crit.reduce(per_size, torch.tensor([False, True, True]))) == 320.0


_PAIRS = [
    ("how do I sort a list", "sorted() returns a new list in order", "the weather is cold today"),
    ("read a file line by line", "iterate over the open file object", "a recipe for bread"),
    ("convert a string to int", "int('42') parses the number", "football scores of the week"),
    ("reverse a dictionary", "swap keys and values in a comprehension", "a song about the sea"),
    ("measure elapsed time", "time.perf_counter() before and after", "mountains in the north"),
]


@pytest.mark.parametrize("with_negative", [False, True])
def test_contrastive_matches_sentence_transformers(with_negative):
    """Our loss on the real MiniLM's embeddings against sentence-transformers' public MatryoshkaLoss(MNRL) on
    the same SentenceTransformer: the loss and the gradient of every encoder weight, in float64."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    try:
        from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    except ImportError:  # before sentence-transformers 6
        from sentence_transformers.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    from mrl.backbones import default_minilm_path

    model = sentence_transformers.SentenceTransformer(default_minilm_path(), device="cpu").double().eval()
    dims, weights = [8, 32, 128, 384], [1.0, 0.5, 2.0, 1.5]
    columns = list(zip(*_PAIRS))[: 3 if with_negative else 2]
    features = [model.tokenize(list(texts)) for texts in columns]

    st_loss = MatryoshkaLoss(
        model, MultipleNegativesRankingLoss(model, scale=20.0), matryoshka_dims=dims, matryoshka_weights=weights
    )
    expected = st_loss(features, None)
    expected.backward()
    theirs = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    embeddings = [model(dict(f))["sentence_embedding"] for f in features]
    loss = MatryoshkaContrastiveLoss(dims, weights=weights, scale=20.0)(*embeddings)
    loss.backward()
    ours = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    torch.testing.assert_close(loss, expected)
    assert ours.keys() == theirs.keys() and len(ours) > 50
    for name, grad in ours.items():
        torch.testing.assert_close(grad, theirs[name], rtol=1e-6, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_extreme_logits_stay_exact(label_smoothing):
    # Row 0's target probability underflows to 0 in float32 (exp(-300)), row 1's is tiny but
    # representable (exp(-60)), row 2 is ordinary: all must match F.cross_entropy.
    logits = torch.tensor(
        [
            [[0.0, 300.0, -50.0], [1e4, -1e4, 0.0], [0.3, -0.2, 0.1]],
            [[0.0, 60.0, 1.0], [2.0, 1.0, 0.0], [-1e4, 1e4, 0.0]],
        ],
        requires_grad=True,
    )
    target = torch.tensor([0, 1, 0])
    crit = MatryoshkaCrossEntropy(label_smoothing=label_smoothing)
    loss = crit(logits, target)
    ref_logits = logits.detach().clone().requires_grad_()
    ref = [F.cross_entropy(ref_logits[g], target, label_smoothing=label_smoothing) for g in range(2)]
    torch.testing.assert_close(crit.last_per_size, torch.stack(ref).detach())
    loss.backward()
    sum(ref).backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)


def test_cross_entropy_bf16_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 8, 5).to(torch.bfloat16).requires_grad_()
    target = torch.randint(0, 5, (8,))
    loss = MatryoshkaCrossEntropy()(logits, target)
    loss.backward()
    ref = sum(F.cross_entropy(logits[g].float(), target) for g in range(2))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=1e-2, atol=1e-2)
    assert logits.grad.dtype == torch.bfloat16
