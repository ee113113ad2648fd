"""CSR, Contrastive Sparse Representation (Wen et al., ICML 2025, arXiv 2503.01776): a TopK sparse autoencoder
over frozen embeddings and its losses, in plain torch.

The autoencoder keeps the ``k`` largest pre-activations of a wide hidden layer (ReLU after the selection), decodes
with the transposed encoder weight (tied), and trains on reconstruction at ``k`` and ``4k`` active units, an
auxiliary reconstruction of the residual from units that have not fired for a while (dead units), and a
contrastive loss on the non-negative sparse codes. The definitions follow sentence-transformers' ``CSRLoss``
(tests/test_posthoc.py checks losses and gradients against it on fixed inputs).

A k-sparse code is stored as its k indices and k values: :func:`sparse_bytes_per_vector` prices it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mrl.common.errors import ConfigError

__all__ = [
    "SparseCodes",
    "TopKSparseAutoencoder",
    "csr_loss",
    "csr_reconstruction_losses",
    "index_bytes",
    "normalized_mse",
    "sparse_bytes_per_vector",
    "sparse_contrastive_loss",
]


@dataclass
class SparseCodes:
    """What one training forward of the autoencoder gives: the dense k-code (the contrastive loss needs it), the
    reconstructions at k, 4k and from the dead units (``recon_k_no_bias``: the k-reconstruction before the decoder
    bias is added back), and the 4k and auxiliary codes as (indices, values) of width ``hidden_dim``."""

    x: torch.Tensor
    codes_k: torch.Tensor
    recon_k: torch.Tensor
    recon_4k: torch.Tensor
    recon_aux: torch.Tensor | None
    recon_k_no_bias: torch.Tensor
    top_4k: tuple[torch.Tensor, torch.Tensor]
    top_aux: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def codes_4k(self) -> torch.Tensor:
        """The dense 4k-sparse code ``[B, H]``."""
        return _scatter(self.codes_k, *self.top_4k)

    @property
    def codes_aux(self) -> torch.Tensor | None:
        """The dense code of the dead units ``[B, H]`` (None without an auxiliary loss)."""
        return None if self.top_aux is None else _scatter(self.codes_k, *self.top_aux)


def _scatter(like: torch.Tensor, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like).scatter(-1, indices, values)


class TopKSparseAutoencoder(nn.Module):
    """``x [B, D] -> codes [B, H]`` with at most ``k`` non-zero (non-negative) entries, and back.

    ``hidden_dim`` is the width of the sparse code (the paper uses 4 x the input width); ``k_aux`` units among
    the dead ones (no activation above 1e-5 for more than ``dead_threshold`` forward passes) reconstruct the
    residual, so dead units get a gradient again.
    """

    def __init__(self, input_dim: int, hidden_dim: int, k: int = 32, k_aux: int = 512, dead_threshold: int = 30):
        super().__init__()
        for key, value in {"input_dim": input_dim, "hidden_dim": hidden_dim, "k": k}.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"method.{key}", value, "expected a positive integer")
        if 4 * k > hidden_dim:
            raise ConfigError("method.k", k, f"expected 4 * k <= hidden_dim={hidden_dim} (reconstruction at 4k)")
        if not 0 <= k_aux <= hidden_dim:
            raise ConfigError("method.k_aux", k_aux, f"expected an integer in [0, hidden_dim={hidden_dim}]")
        self.input_dim, self.hidden_dim, self.k, self.k_aux = input_dim, hidden_dim, k, k_aux
        self.dead_threshold = dead_threshold
        self.pre_bias = nn.Parameter(torch.zeros(input_dim))
        self.encoder = nn.Linear(input_dim, hidden_dim, bias=False)
        self.latent_bias = nn.Parameter(torch.zeros(hidden_dim))
        # forward passes since each unit last fired
        self.register_buffer("steps_since_fired", torch.zeros(hidden_dim, dtype=torch.long))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x - self.pre_bias, self.encoder.weight, self.latent_bias)

    def keep_top(self, pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ReLU of the k largest pre-activations scattered into zeros, their indices)."""
        top = pre.topk(k, dim=-1)
        return _scatter(pre, top.indices, F.relu(top.values)), top.indices

    def _count_firing(self, pre: torch.Tensor, indices: torch.Tensor) -> None:
        if not (self.training and torch.is_grad_enabled()):
            return
        fired = torch.zeros_like(self.steps_since_fired)
        fired.scatter_add_(0, indices.reshape(-1), (pre.gather(-1, indices) > 1e-5).reshape(-1).to(fired.dtype))
        self.steps_since_fired.mul_(1 - fired.clamp(max=1)).add_(1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.encoder.weight + self.pre_bias

    def decode_top(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` of the code holding ``values`` at ``indices`` (``[B, k]`` each), without building it:
        k rows of the decoder per input instead of a product with the whole ``[H, D]`` matrix."""
        return F.embedding_bag(indices, self.encoder.weight, per_sample_weights=values, mode="sum") + self.pre_bias

    def encode(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """The k-sparse codes ``[B, H]`` (``k`` defaults to the trained one; any k up to ``hidden_dim`` works)."""
        return self.keep_top(self.pre_activation(x), k or self.k)[0]

    def forward(self, x: torch.Tensor, k: int | None = None) -> SparseCodes:
        """Everything the CSR losses need. In training, the firing counts are updated after the k and again after
        the 4k selection (the auxiliary units are the ones dead after the first), as sentence-transformers does."""
        return self.forward_many(x, [k or self.k])[0]

    def forward_many(self, x: torch.Tensor, ks: Sequence[int]) -> list[SparseCodes]:
        """:meth:`forward` at each k of ``ks``, the encoder and the top-4k selection run once: the k and 4k largest
        units of every k are the leading columns of one sorted top-(4 max k)."""
        for k in ks:
            if 4 * k > self.hidden_dim:
                raise ConfigError("k", k, f"expected 4 * k <= hidden_dim={self.hidden_dim}")
        pre = self.pre_activation(x)
        top = pre.topk(4 * max(ks), dim=-1, sorted=True)
        values = F.relu(top.values)
        return [self._forward_at(x, pre, top.indices, values, k) for k in ks]

    def forward_at(self, x: torch.Tensor, pre: torch.Tensor, k: int) -> SparseCodes:
        """:meth:`forward` from the pre-activations ``pre``."""
        if 4 * k > self.hidden_dim:
            raise ConfigError("k", k, f"expected 4 * k <= hidden_dim={self.hidden_dim}")
        top = pre.topk(4 * k, dim=-1, sorted=True)
        return self._forward_at(x, pre, top.indices, F.relu(top.values), k)

    def _forward_at(
        self, x: torch.Tensor, pre: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, k: int
    ) -> SparseCodes:
        index_k, value_k = indices[:, :k], values[:, :k]
        self._count_firing(pre, index_k)
        top_aux = recon_aux = None
        if self.k_aux:
            dead = self.steps_since_fired > self.dead_threshold
            aux = (pre * dead).topk(self.k_aux, dim=-1)
            top_aux = (aux.indices, F.relu(aux.values))
            recon_aux = self.decode_top(*top_aux)
        index_4k, value_4k = indices[:, : 4 * k], values[:, : 4 * k]
        self._count_firing(pre, index_4k)
        recon_k = self.decode_top(index_k, value_k)
        return SparseCodes(
            x=x,
            codes_k=_scatter(pre, index_k, value_k),
            recon_k=recon_k,
            recon_4k=self.decode_top(index_4k, value_4k),
            recon_aux=recon_aux,
            recon_k_no_bias=recon_k - self.pre_bias,
            top_4k=(index_4k, value_4k),
            top_aux=top_aux,
        )


def normalized_mse(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE divided by the MSE of predicting every row by the batch mean (1 when the batch has no variance)."""
    spread = ((target - target.mean(dim=0, keepdim=True)) ** 2).mean()
    constant = bool((target == target[:1]).all())
    spread = torch.ones_like(spread) if constant or spread.item() == 0 else spread
    return ((reconstruction - target) ** 2).mean() / spread


def csr_reconstruction_losses(outputs: Sequence[SparseCodes], beta: float = 0.1) -> dict[str, torch.Tensor]:
    """The reconstruction terms, each averaged over the columns (anchor, positive, ...):
    ``k``: MSE at k; ``4k``: MSE at 4k over 8; ``aux``: ``beta`` x the normalised MSE of the dead units'
    reconstruction against the residual the k-code leaves (the residual is not differentiated)."""
    k_terms, four_k_terms, aux_terms = [], [], []
    for out in outputs:
        k_terms.append(((out.recon_k - out.x) ** 2).mean())
        four_k_terms.append(((out.recon_4k - out.x) ** 2).mean())
        if out.recon_aux is None:
            aux_terms.append(torch.zeros_like(k_terms[-1]))
        else:
            aux_terms.append(normalized_mse(out.recon_aux, out.x - out.recon_k_no_bias.detach()))
    n = len(outputs)
    return {
        "reconstruction_k": sum(k_terms) / n,
        "reconstruction_4k": sum(four_k_terms) / n / 8.0,
        "reconstruction_aux": beta * sum(aux_terms) / n,
    }


def sparse_contrastive_loss(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None, scale: float = 1.0
) -> torch.Tensor:
    """In-batch-negatives cross-entropy on dot products of (non-negative) codes: row i's target is positive i
    among every positive (and every negative) of the batch."""
    documents = positives if negatives is None else torch.cat([positives, negatives])
    scores = scale * anchors @ documents.T
    return F.cross_entropy(scores, torch.arange(len(anchors), device=anchors.device))


def csr_loss(
    outputs: Sequence[SparseCodes], beta: float = 0.1, gamma: float = 1.0, scale: float = 1.0
) -> dict[str, torch.Tensor]:
    """The CSR terms of one batch (``outputs``: the anchor, positive[, negative] forwards): the reconstruction
    terms and ``contrastive`` (gamma x the sparse in-batch loss); their sum is the training loss."""
    terms = csr_reconstruction_losses(outputs, beta)
    negatives = outputs[2].codes_k if len(outputs) > 2 else None
    terms["contrastive"] = gamma * sparse_contrastive_loss(outputs[0].codes_k, outputs[1].codes_k, negatives, scale)
    return terms


def index_bytes(hidden_dim: int) -> int:
    """Bytes of one index into a code of width ``hidden_dim``: 1 (uint8), 2 (uint16) or 4 (int32)."""
    return 1 if hidden_dim <= 2**8 else 2 if hidden_dim <= 2**16 else 4


def sparse_bytes_per_vector(k: int, hidden_dim: int, value_dtype: str = "fp32") -> int:
    """Bytes of one k-sparse code stored as k (index, value) pairs: the smallest unsigned integer that holds an
    index below ``hidden_dim`` and ``value_dtype`` (fp32: 4 bytes, fp16: 2) per value."""
    values = {"fp32": 4, "fp16": 2}
    if value_dtype not in values:
        raise ConfigError("value_dtype", value_dtype, "expected fp32 or fp16")
    return int(k) * (index_bytes(hidden_dim) + values[value_dtype])
