"""Nested linear classification heads: MRL, MRL-E, fixed-feature (FF) and standard.

Every head maps embeddings ``x[B, D]`` to logits ``[G, B, C]``, one row per entry of ``head.sizes``
(the embedding prefix that row reads). MRL-E computes all sizes from one pass over its shared
weight (the cost of one linear layer); MRL writes every size straight into one output with its own
autograd function (the cost of ``sum(sizes) / D`` linear layers, the arithmetic floor). Both keep
the parameter names of the reference code (RAIVNLab/MRL), so its checkpoints load with
:meth:`MatryoshkaHead.load_official_state_dict`.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from mrl.core.nesting import resolve_nesting, validate_nesting

__all__ = ["HEAD_KINDS", "FixedFeatureHead", "MatryoshkaHead", "StandardHead", "build_head"]

HEAD_KINDS = ("mrl", "mrl_e", "ff", "standard")


_MIN_MM_COLS = 16


def _mm_into(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    """``out = a @ b``; a ``b`` narrower than 16 columns is zero-padded first.

    Some BLAS builds (MKL on CPU) run a matmul with fewer than ~12 output columns several times
    slower than one with 16, and the first nesting sizes are often 8 wide.
    """
    n = b.shape[1]
    if n >= _MIN_MM_COLS:
        return torch.mm(a, b, out=out)
    return out.copy_(torch.mm(a, F.pad(b, (0, _MIN_MM_COLS - n)))[:, :n])


class _SharedPrefixLinear(torch.autograd.Function):
    """MRL-E: ``out[g] = x[:, :m_g] @ W[:, :m_g].T + b`` for all g from one pass over ``W``.

    Chunk j holds the columns between consecutive sizes; ``out[g]`` is ``out[g-1]`` plus chunk g's
    product (one ``addmm``), so the work is one ordinary linear layer. The backward pass runs the
    same chunks with suffix sums of the incoming gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, sizes: tuple[int, ...]) -> Tensor:
        out = x.new_empty(len(sizes), x.shape[0], weight.shape[0])
        start = 0
        for g, stop in enumerate(sizes):
            xs, wt = x[:, start:stop], weight[:, start:stop].t()
            if g > 0:
                torch.addmm(out[g - 1], xs, wt, out=out[g])
            elif bias is not None:
                torch.addmm(bias, xs, wt, out=out[0])
            else:
                torch.mm(xs, wt, out=out[0])
            start = stop
        ctx.save_for_backward(x, weight)
        ctx.sizes = sizes
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        sizes = ctx.sizes
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = x.new_zeros(x.shape) if need_x else None
        grad_w = torch.empty_like(weight) if need_w else None
        suffix = grad[-1].clone()  # sum of grad[g] over all g >= current chunk
        for g in reversed(range(len(sizes))):
            start, stop = (sizes[g - 1] if g else 0), sizes[g]
            if g < len(sizes) - 1:
                suffix.add_(grad[g])
            if need_x:
                _mm_into(suffix, weight[:, start:stop], grad_x[:, start:stop])
            if need_w:
                _mm_into(suffix.t(), x[:, start:stop], grad_w[:, start:stop])
        grad_b = suffix.sum(0) if need_b else None
        return grad_x, grad_w, grad_b, None


class _SeparatePrefixLinear(torch.autograd.Function):
    """MRL: ``out[g] = x[:, :m_g] @ W_g.T + b_g`` written straight into one ``[G, B, C]`` tensor.

    ``params`` is ``(W_0, b_0, W_1, b_1, ...)`` with biases, ``(W_0, W_1, ...)`` without.
    """

    @staticmethod
    def forward(ctx, x: Tensor, sizes: tuple[int, ...], has_bias: bool, *params: Tensor) -> Tensor:
        weights = params[0::2] if has_bias else params
        biases = params[1::2] if has_bias else [None] * len(weights)
        out = x.new_empty(len(sizes), x.shape[0], weights[0].shape[0])
        for out_g, m, w, b in zip(out.unbind(0), sizes, weights, biases):
            if b is None:
                torch.mm(x[:, :m], w.t(), out=out_g)
            else:
                torch.addmm(b, x[:, :m], w.t(), out=out_g)
        ctx.save_for_backward(x, *weights)
        ctx.sizes, ctx.has_bias = sizes, has_bias
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, *weights = ctx.saved_tensors
        sizes, has_bias = ctx.sizes, ctx.has_bias
        need_x = ctx.needs_input_grad[0]
        need_p = ctx.needs_input_grad[3:]
        grad_x = None
        grads: list[Tensor | None] = [None] * len(need_p)
        grad_g = grad.unbind(0)
        bias_grads = grad.sum(1).unbind(0) if has_bias and any(need_p[1::2]) else None
        step = 2 if has_bias else 1
        for g in reversed(range(len(sizes))):  # widest first: its weight is still cached from forward
            m, w, k = sizes[g], weights[g], step * g
            if need_x and grad_x is None and m == x.shape[1]:
                grad_x = torch.mm(grad_g[g], w)  # the full-width size sets every column
            elif need_x:
                if grad_x is None:
                    grad_x = x.new_zeros(x.shape)
                if m >= _MIN_MM_COLS:
                    grad_x[:, :m].addmm_(grad_g[g], w)
                else:
                    grad_x[:, :m] += _mm_into(grad_g[g], w, x.new_empty(x.shape[0], m))
            if need_p[k]:
                grads[k] = (
                    torch.mm(grad_g[g].t(), x[:, :m])
                    if m >= _MIN_MM_COLS
                    else _mm_into(grad_g[g].t(), x[:, :m], w.new_empty(w.shape))
                )
            if bias_grads is not None and need_p[k + 1]:
                grads[k + 1] = bias_grads[g]
        return (grad_x, None, None, *grads)


def _autocast_inputs(x: Tensor, *params: Tensor | None) -> tuple[Tensor | None, ...]:
    """Cast to the autocast dtype (as autograd ops), since the fused kernels run with autocast off."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return (x, *params)
    dtype = torch.get_autocast_dtype(device)
    return tuple(None if t is None else t.to(dtype) for t in (x, *params))


class MatryoshkaHead(nn.Module):
    """Nested classifier over the prefixes ``nesting`` of an ``in_features``-wide embedding.

    ``efficient=False`` (MRL): one ``nn.Linear(m, num_classes)`` per size m, named
    ``nesting_classifier_{i}``. ``efficient=True`` (MRL-E): a single ``nesting_classifier_0`` of
    width ``nesting[-1]`` whose first m columns (and its one shared bias) serve size m.
    ``forward(x[B, in_features]) -> logits[len(nesting), B, num_classes]``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        nesting: Sequence[int],
        efficient: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        self.sizes = validate_nesting(nesting, width=in_features, key="model.nesting")
        self.in_features, self.num_classes = in_features, num_classes
        self.efficient, self.has_bias = bool(efficient), bool(bias)
        widths = [self.sizes[-1]] if self.efficient else self.sizes
        for i, m in enumerate(widths):
            self.add_module(f"nesting_classifier_{i}", nn.Linear(m, num_classes, bias=bias))

    def classifiers(self) -> list[nn.Linear]:
        """The ``nn.Linear`` layers in order (one for MRL-E)."""
        n = 1 if self.efficient else len(self.sizes)
        return [getattr(self, f"nesting_classifier_{i}") for i in range(n)]

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"MatryoshkaHead expects embeddings [..., {self.in_features}], got {list(x.shape)}")
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        sizes = tuple(self.sizes)
        if self.efficient:
            fc = self.nesting_classifier_0
            x, w, b = _autocast_inputs(x, fc.weight, fc.bias)
            with torch.autocast(x.device.type, enabled=False):
                out = _SharedPrefixLinear.apply(x, w, b, sizes)
        else:
            params = [p for fc in self.classifiers() for p in (fc.weight, fc.bias) if p is not None]
            x, *params = _autocast_inputs(x, *params)
            with torch.autocast(x.device.type, enabled=False):
                out = _SeparatePrefixLinear.apply(x, sizes, self.has_bias, *params)
        return out.reshape(len(sizes), *lead, self.num_classes)

    def load_official_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True):
        """Load a RAIVNLab/MRL head from ``state_dict`` (a whole-model checkpoint is fine).

        Keys ``[module.][fc.]nesting_classifier_{i}.(weight|bias)`` are taken; other keys (the
        backbone's) are ignored. Shapes are checked; with ``strict`` a missing or extra head key is
        an error. Returns what ``nn.Module.load_state_dict`` returns.
        """
        pattern = re.compile(r"^(?:(?:module|fc)\.)*(nesting_classifier_\d+\.(?:weight|bias))$")
        found: dict[str, Tensor] = {}
        for key, value in state_dict.items():
            match = pattern.match(key)
            if match:
                found[match.group(1)] = value
        own = self.state_dict()
        layout = f"{'MRL-E' if self.efficient else 'MRL'} head, nesting={self.sizes}"
        unexpected = [name for name in found if name not in own]
        if strict and unexpected:
            raise KeyError(
                f"official checkpoint: unexpected head key {unexpected[0]!r} for this {layout} "
                f"(expects {sorted(own)}); check head.kind (mrl vs mrl_e) and the nesting list"
            )
        for name, value in found.items():
            if name in own and tuple(value.shape) != tuple(own[name].shape):
                raise ValueError(
                    f"official checkpoint: {name} has shape {list(value.shape)}, expected "
                    f"{list(own[name].shape)} for this {layout}, num_classes={self.num_classes}"
                )
        missing = [name for name in own if name not in found]
        if strict and missing:
            raise KeyError(
                f"official checkpoint: head key {missing[0]!r} is missing for this {layout} (keys may carry "
                f"'fc.' / 'module.' prefixes); found head keys: {sorted(found) or 'none'}"
            )
        return self.load_state_dict({k: v for k, v in found.items() if k in own}, strict=strict)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, nesting={self.sizes}, "
            f"efficient={self.efficient}, bias={self.has_bias}"
        )


class FixedFeatureHead(nn.Module):
    """FF baseline: one ``nn.Linear(dim, num_classes)`` over ``x[:, :dim]``; logits ``[1, B, C]``."""

    def __init__(self, in_features: int, num_classes: int, dim: int, bias: bool = True):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not 0 < dim <= in_features:
            raise ValueError(f"head.dim={dim!r}: must be an integer in 1..{in_features} (the embedding width)")
        self.sizes = [int(dim)]
        self.in_features, self.num_classes = in_features, num_classes
        self.linear = nn.Linear(dim, num_classes, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x[..., : self.sizes[0]]).unsqueeze(0)


class StandardHead(FixedFeatureHead):
    """Standard classifier: one ``nn.Linear`` over all ``in_features``; logits ``[1, B, C]``."""

    def __init__(self, in_features: int, num_classes: int, bias: bool = True):
        super().__init__(in_features, num_classes, dim=in_features, bias=bias)


def build_head(
    kind: str,
    in_features: int,
    num_classes: int,
    nesting: list[int] | None = None,
    dim: int | None = None,
    bias: bool = True,
) -> nn.Module:
    """Build a head by ``kind`` (``mrl``, ``mrl_e``, ``ff``, ``standard``).

    ``nesting=None`` means :func:`mrl.core.nesting.default_nesting` of ``in_features`` for MRL heads.
    """
    if kind in ("mrl", "mrl_e"):
        sizes = resolve_nesting(nesting, in_features)
        return MatryoshkaHead(in_features, num_classes, sizes, efficient=kind == "mrl_e", bias=bias)
    if kind == "ff":
        if dim is None:
            raise ValueError(f"head.dim is required for head.kind='ff': give an integer in 1..{in_features}")
        return FixedFeatureHead(in_features, num_classes, dim, bias=bias)
    if kind == "standard":
        return StandardHead(in_features, num_classes, bias=bias)
    raise ValueError(f"head.kind={kind!r}: expected one of {', '.join(HEAD_KINDS)}")
