"""Matryoshka-Adaptor (Yoon et al., 2024, arXiv 2407.20243): a small residual network over frozen embeddings,
``f(e) = e + MLP(e)``, trained so that every prefix of ``f(e)`` keeps what the full ``e`` knew.

Unsupervised, at every size m of the nesting list (cosine similarities, ``s_m`` on the first m coordinates of
the adapted embeddings, ``s`` on the full original ones):

- pairwise: ``mean_{i != j} |s(e_i, e_j) - s_m(f(e_i), f(e_j))|``
- top-k: the same, only over each row's ``top_k`` nearest neighbours in the original space
- reconstruction: ``mean_i |f(e_i) - e_i|`` (a regulariser: the adaptor stays close to the identity)

Supervised adds a ranking loss on (query, positive) pairs: for each query and each in-batch document that is not
its positive, ``softplus(scale * (s_m(q, d) - s_m(q, d+)))``: the positive must outrank every other document.

The paper sums over pairs and sizes; here each term is a mean over pairs and sizes, so a weight means the same at
any batch size and nesting list.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mrl.common.errors import ConfigError

__all__ = [
    "MatryoshkaAdaptor",
    "adaptor_unsupervised_losses",
    "pairwise_similarity_loss",
    "ranking_loss",
    "reconstruction_loss",
    "topk_similarity_loss",
]


class MatryoshkaAdaptor(nn.Module):
    """``e -> e + W2 relu(W1 e + b1) + b2`` at the width of ``e``; the output layer starts at zero, so an untrained
    adaptor is the identity."""

    def __init__(self, dim: int, hidden_dim: int | None = None):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError("method.dim", dim, "expected a positive integer")
        hidden_dim = hidden_dim or dim
        self.dim = dim
        self.inner = nn.Linear(dim, hidden_dim)
        self.outer = nn.Linear(hidden_dim, dim)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.outer(F.relu(self.inner(x)))


def _cosine_matrix(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    a = F.normalize(a, dim=-1)
    return a @ (a if b is None else F.normalize(b, dim=-1)).T


def _check_sizes(sizes: Sequence[int], width: int) -> list[int]:
    sizes = [int(m) for m in sizes]
    if not sizes or any(m < 1 or m > width for m in sizes):
        raise ConfigError("sizes", sizes, f"expected sizes in [1, {width}]")
    return sizes


def pairwise_similarity_loss(original: torch.Tensor, adapted: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Mean over sizes and over ordered pairs i != j of ``|s(e_i, e_j) - s_m(f(e_i), f(e_j))|``."""
    sizes = _check_sizes(sizes, adapted.shape[1])
    target = _cosine_matrix(original)
    off_diagonal = ~torch.eye(len(original), dtype=torch.bool, device=original.device)
    terms = [(target - _cosine_matrix(adapted[:, :m])).abs()[off_diagonal].mean() for m in sizes]
    return torch.stack(terms).mean()


def topk_similarity_loss(
    original: torch.Tensor, adapted: torch.Tensor, sizes: Sequence[int], top_k: int = 10
) -> torch.Tensor:
    """The pairwise loss over each row's ``top_k`` nearest other rows (by the original cosine) only."""
    sizes = _check_sizes(sizes, adapted.shape[1])
    target = _cosine_matrix(original)
    k = min(int(top_k), len(original) - 1)
    if k < 1:
        return adapted.sum() * 0.0
    self_masked = target - 3.0 * torch.eye(len(original), device=original.device)  # cosine >= -1: never chosen
    neighbours = self_masked.topk(k, dim=1).indices
    wanted = target.gather(1, neighbours)
    terms = [(wanted - _cosine_matrix(adapted[:, :m]).gather(1, neighbours)).abs().mean() for m in sizes]
    return torch.stack(terms).mean()


def reconstruction_loss(original: torch.Tensor, adapted: torch.Tensor) -> torch.Tensor:
    """Mean absolute change the adaptor makes (``mean_i |f(e_i) - e_i|``, averaged over coordinates)."""
    return (adapted - original).abs().mean()


def adaptor_unsupervised_losses(
    original: torch.Tensor,
    adapted: torch.Tensor,
    sizes: Sequence[int],
    top_k: int = 10,
    pairwise_weight: float = 1.0,
    reconstruction_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The unsupervised terms, weighted (their sum is the loss): ``topk``, ``pairwise``, ``reconstruction``."""
    return {
        "topk": topk_similarity_loss(original, adapted, sizes, top_k),
        "pairwise": pairwise_weight * pairwise_similarity_loss(original, adapted, sizes),
        "reconstruction": reconstruction_weight * reconstruction_loss(original, adapted),
    }


def ranking_loss(
    queries: torch.Tensor, documents: torch.Tensor, sizes: Sequence[int], scale: float = 20.0
) -> torch.Tensor:
    """Pairwise logistic ranking loss at every size: query i's positive is document i; for every other document
    j, ``softplus(scale * (s_m(q_i, d_j) - s_m(q_i, d_i)))``, averaged over (i, j) and over sizes."""
    sizes = _check_sizes(sizes, queries.shape[1])
    n = len(queries)
    if n < 2:
        return queries.sum() * 0.0
    others = ~torch.eye(n, len(documents), dtype=torch.bool, device=queries.device)
    terms = []
    for m in sizes:
        scores = _cosine_matrix(queries[:, :m], documents[:, :m])
        positive = scores.diagonal()[:n].unsqueeze(1)
        terms.append(F.softplus(scale * (scores - positive))[others].mean())
    return torch.stack(terms).mean()
