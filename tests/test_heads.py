"""Fused MRL / MRL-E heads against a naive per-size reference, plus FF, standard and checkpoint loading."""

import pytest
import torch

from mrl.core.heads import FixedFeatureHead, MatryoshkaHead, StandardHead, build_head
from mrl.core.losses import MatryoshkaCrossEntropy
from mrl.core.nesting import NestingError
from mrl_testing.reference import NaiveMatryoshkaCE, NaiveMRLLinear


def _pair(in_features, num_classes, nesting, efficient, bias, dtype=torch.float64, seed=0):
    """Our fused head and a naive reference head holding the very same weights."""
    torch.manual_seed(seed)
    ours = MatryoshkaHead(in_features, num_classes, nesting, efficient=efficient, bias=bias).to(dtype)
    if bias:  # nn.Linear's bias init is small; make it matter
        with torch.no_grad():
            for fc in ours.classifiers():
                fc.bias.normal_()
    naive = NaiveMRLLinear(nesting, num_classes, efficient=efficient, bias=bias).to(dtype)
    naive.load_state_dict(ours.state_dict())  # same parameter names as the reference code
    return ours, naive


CASES = [
    # in_features, nesting: chunks narrower than 16, inputs wider than the largest size
    (64, [8, 16, 32, 64]),
    (80, [4, 12, 40]),
    (48, [48]),
]


@pytest.mark.parametrize("efficient", [False, True], ids=["mrl", "mrl_e"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(("in_features", "nesting"), CASES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_fused_head_and_loss_match_naive_reference(efficient, bias, in_features, nesting, label_smoothing):
    num_classes, batch = 7, 12
    ours, naive = _pair(in_features, num_classes, nesting, efficient, bias)
    weights = [0.5 + i for i in range(len(nesting))]
    torch.manual_seed(1)
    x = torch.randn(batch, in_features, dtype=torch.float64)
    target = torch.randint(0, num_classes, (batch,))

    x1 = x.clone().requires_grad_()
    logits = ours(x1)
    assert logits.shape == (len(nesting), batch, num_classes)
    assert ours.sizes == nesting
    loss = MatryoshkaCrossEntropy(weights, label_smoothing=label_smoothing)(logits, target)
    loss.backward()

    x2 = x.clone().requires_grad_()
    ref_logits = naive(x2)
    ref_loss = NaiveMatryoshkaCE(weights, label_smoothing=label_smoothing)(ref_logits, target)
    ref_loss.backward()

    torch.testing.assert_close(logits, torch.stack(ref_logits), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-10)
    ref_params = dict(naive.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("efficient", [False, True], ids=["mrl", "mrl_e"])
def test_fused_head_float32_matches_reference(efficient):
    ours, naive = _pair(96, 11, [8, 16, 48, 96], efficient, True, dtype=torch.float32)
    x = torch.randn(32, 96)
    grad = torch.randn(4, 32, 11)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(x1).backward(grad)
    torch.stack(naive(x2)).backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)
    ref_params = dict(naive.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("efficient", [False, True], ids=["mrl", "mrl_e"])
def test_gradcheck(efficient):
    torch.manual_seed(0)
    head = MatryoshkaHead(20, 3, [2, 5, 16], efficient=efficient).double()
    names = [name for name, _ in head.named_parameters()]
    inputs = (torch.randn(4, 20, dtype=torch.float64, requires_grad=True), *head.parameters())

    def fn(x, *params):
        return torch.func.functional_call(head, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(fn, inputs)


def test_input_without_grad_and_frozen_params():
    head = MatryoshkaHead(32, 5, [8, 32], efficient=True)
    head.nesting_classifier_0.bias.requires_grad_(False)
    head(torch.randn(3, 32)).sum().backward()
    assert head.nesting_classifier_0.weight.grad is not None
    assert head.nesting_classifier_0.bias.grad is None


def test_mrl_e_has_one_shared_weight_and_bias():
    head = MatryoshkaHead(64, 5, [8, 16, 64], efficient=True)
    assert list(head.state_dict()) == ["nesting_classifier_0.weight", "nesting_classifier_0.bias"]
    assert head.nesting_classifier_0.weight.shape == (5, 64)
    with torch.no_grad():
        head.nesting_classifier_0.weight.zero_()
        head.nesting_classifier_0.bias.copy_(torch.arange(5.0))
    logits = head(torch.randn(4, 64))
    for g in range(3):  # the one bias is added, once, to every size
        torch.testing.assert_close(logits[g], torch.arange(5.0).expand(4, 5))


def test_mrl_has_one_linear_per_size():
    head = MatryoshkaHead(64, 5, [8, 16, 64])
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "nesting_classifier_0.weight": (5, 8),
        "nesting_classifier_0.bias": (5,),
        "nesting_classifier_1.weight": (5, 16),
        "nesting_classifier_1.bias": (5,),
        "nesting_classifier_2.weight": (5, 64),
        "nesting_classifier_2.bias": (5,),
    }


def test_prefix_semantics_each_size_reads_only_its_prefix():
    torch.manual_seed(0)
    for efficient in (False, True):
        head = MatryoshkaHead(32, 4, [8, 16, 32], efficient=efficient)
        x = torch.randn(6, 32)
        x2 = x.clone()
        x2[:, 16:] += 1.0
        a, b = head(x), head(x2)
        torch.testing.assert_close(a[:2], b[:2])
        assert not torch.allclose(a[2], b[2])


def test_leading_dims_and_wide_input():
    head = MatryoshkaHead(40, 3, [8, 32], efficient=True)
    x = torch.randn(2, 5, 40)
    out = head(x)
    assert out.shape == (2, 2, 5, 3)
    torch.testing.assert_close(out.reshape(2, 10, 3), head(x.reshape(10, 40)))


def test_bf16_autocast_on_cpu():
    head = MatryoshkaHead(32, 4, [8, 16, 32])
    x = torch.randn(5, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32
    assert head.nesting_classifier_0.weight.grad.dtype == torch.float32


def test_head_rejects_wrong_input_width():
    with pytest.raises(ValueError, match=r"expects embeddings \[\.\.\., 64\], got \[2, 32\]"):
        MatryoshkaHead(64, 5, [8, 64], efficient=True)(torch.randn(2, 32))


def test_head_rejects_bad_nesting():
    with pytest.raises(NestingError, match="model.nesting"):
        MatryoshkaHead(64, 5, [8, 128])
    with pytest.raises(NestingError, match="model.nesting"):
        MatryoshkaHead(64, 5, [16, 8, 16])
    assert MatryoshkaHead(64, 5, [16, 8]).sizes == [8, 16]  # any order: the head keeps them ascending


def _official_checkpoint(head, prefix):
    """A whole-model state_dict as the reference training scripts save it (DataParallel + ResNet)."""
    sd = {f"{prefix}{k}": v.clone() for k, v in head.state_dict().items()}
    sd[prefix.replace("fc.", "") + "conv1.weight"] = torch.randn(4, 3, 3, 3)
    sd[prefix.replace("fc.", "") + "layer1.0.bn1.running_mean"] = torch.randn(4)
    return sd


@pytest.mark.parametrize("efficient", [False, True], ids=["mrl", "mrl_e"])
@pytest.mark.parametrize("prefix", ["module.fc.", "fc.", "module.", ""])
def test_load_official_state_dict_round_trip(efficient, prefix):
    torch.manual_seed(0)
    source = MatryoshkaHead(64, 10, [8, 16, 32, 64], efficient=efficient)
    target = MatryoshkaHead(64, 10, [8, 16, 32, 64], efficient=efficient)
    target.load_official_state_dict(_official_checkpoint(source, prefix))
    for (k, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    x = torch.randn(3, 64)
    torch.testing.assert_close(source(x), target(x))


def test_load_official_state_dict_errors_name_the_key():
    source = MatryoshkaHead(64, 10, [8, 16, 32, 64])
    sd = _official_checkpoint(source, "module.fc.")
    wrong_classes = MatryoshkaHead(64, 1000, [8, 16, 32, 64])
    with pytest.raises(ValueError, match=r"nesting_classifier_0\.weight has shape \[10, 8\], expected \[1000, 8\]"):
        wrong_classes.load_official_state_dict(sd)
    sd.pop("module.fc.nesting_classifier_3.bias")
    target = MatryoshkaHead(64, 10, [8, 16, 32, 64])
    with pytest.raises(KeyError, match=r"nesting_classifier_3\.bias"):
        target.load_official_state_dict(sd)
    result = target.load_official_state_dict(sd, strict=False)
    assert result.missing_keys == ["nesting_classifier_3.bias"]
    efficient = MatryoshkaHead(64, 10, [8, 16, 32, 64], efficient=True)
    with pytest.raises(KeyError, match="nesting_classifier_1"):  # an MRL checkpoint into an MRL-E head
        efficient.load_official_state_dict(_official_checkpoint(source, "fc."))


def test_fixed_feature_head_uses_only_its_prefix():
    torch.manual_seed(0)
    head = FixedFeatureHead(64, 5, dim=16)
    assert head.sizes == [16]
    x = torch.randn(4, 64)
    out = head(x)
    assert out.shape == (1, 4, 5)
    x_tail = x.clone()
    x_tail[:, 16:] = torch.randn(4, 48)
    torch.testing.assert_close(head(x_tail), out)
    x_head = x.clone()
    x_head[:, :16] = torch.randn(4, 16)
    assert not torch.allclose(head(x_head), out)
    with pytest.raises(ValueError, match="head.dim"):
        FixedFeatureHead(64, 5, dim=128)


def test_standard_head_is_a_plain_linear():
    head = StandardHead(32, 6)
    x = torch.randn(3, 32)
    assert head.sizes == [32]
    torch.testing.assert_close(head(x)[0], torch.nn.functional.linear(x, head.linear.weight, head.linear.bias))


def test_build_head():
    mrl = build_head("mrl", 512, 10)
    assert isinstance(mrl, MatryoshkaHead) and not mrl.efficient and mrl.sizes == [8, 16, 32, 64, 128, 256, 512]
    mrl_e = build_head("mrl_e", 768, 10, nesting=[12, 768], bias=False)
    assert mrl_e.efficient and mrl_e.sizes == [12, 768] and mrl_e.nesting_classifier_0.bias is None
    assert build_head("ff", 512, 10, dim=64).sizes == [64]
    assert build_head("standard", 512, 10).sizes == [512]
    with pytest.raises(ValueError, match=r"^head\.kind='x': expected one of mrl, mrl_e, ff, standard$"):
        build_head("x", 512, 10)
    with pytest.raises(ValueError, match="head.dim"):
        build_head("ff", 512, 10)
    with pytest.raises(NestingError):
        build_head("mrl", 512, 10, nesting=[8, 8])
