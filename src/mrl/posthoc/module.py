"""The post-hoc methods as one LightningModule over frozen embeddings: only the sparse autoencoder (CSR) or the
adaptor trains; the encoder that produced the embeddings is not loaded at all.

Methods (``method.name``):

- ``csr``: :class:`~mrl.core.sparse.TopKSparseAutoencoder` with the CSR loss (:func:`~mrl.core.sparse.csr_loss`)
  averaged over the active-unit counts ``train_sizes`` (default: ``sizes``); one model is then evaluated at every k
  of ``sizes`` (the k largest units kept). ``train_sizes: [32]`` is the paper's one-k model, whose loss equals
  sentence-transformers' ``CSRLoss``.
- ``adaptor``: :class:`~mrl.core.adaptor.MatryoshkaAdaptor` with the unsupervised losses at every size of
  ``sizes``; ``adaptor_supervised`` adds the ranking loss on (anchor, positive) pairs.
- ``truncate`` and ``pca``: nothing to train (the first m coordinates; the top-m principal directions of the
  training embeddings), there so the rigid model's baselines are runs of their own on the same frozen embeddings.

The contrastive and ranking terms need pairs: text pairs give them; labelled images pair each embedding with
another of the same class, drawn anew at every epoch (:class:`PairedEmbeddings`).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mrl.common.errors import ConfigError
from mrl.core.adaptor import MatryoshkaAdaptor, adaptor_unsupervised_losses, ranking_loss
from mrl.core.sparse import TopKSparseAutoencoder, csr_loss

__all__ = ["METHODS", "PairedEmbeddings", "PostHocModule", "TRAINED_METHODS"]

TRAINED_METHODS = ("csr", "adaptor", "adaptor_supervised")
METHODS = (*TRAINED_METHODS, "truncate", "pca")


class PairedEmbeddings(Dataset):
    """``(anchor, positive)`` rows: the given positives, or another row of the same label (a row alone in its
    class is its own positive)."""

    def __init__(self, anchors: np.ndarray, positives: np.ndarray | None = None, labels: np.ndarray | None = None):
        self.anchors = torch.as_tensor(np.asarray(anchors, dtype=np.float32))
        self.positives = None if positives is None else torch.as_tensor(np.asarray(positives, dtype=np.float32))
        self.by_label: list[torch.Tensor] = []
        self.labels = None
        if self.positives is None:
            if labels is None:
                raise ValueError("PairedEmbeddings needs positives or labels")
            self.labels = torch.as_tensor(np.asarray(labels))
            self.by_label = {int(c): torch.nonzero(self.labels == c).view(-1) for c in self.labels.unique()}

    def __len__(self) -> int:
        return len(self.anchors)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.positives is not None:
            return self.anchors[i], self.positives[i]
        same = self.by_label[int(self.labels[i])]
        j = same[torch.randint(len(same), ()).item()]
        return self.anchors[i], self.anchors[j]


class PostHocModule(L.LightningModule):
    """A CSR autoencoder or a Matryoshka-Adaptor trained on frozen ``input_dim``-wide embeddings.

    ``sizes``: the active-unit counts (CSR) or the prefix sizes (adaptor) it is trained and evaluated at.
    """

    def __init__(  # noqa: PLR0913 - the method config group's keys, saved as hyperparameters
        self,
        name: str,
        input_dim: int,
        sizes: Sequence[int],
        train_sizes: Sequence[int] | None = None,
        hidden_dim: int | None = None,
        k_aux: int = 512,
        dead_threshold: int = 30,
        beta: float = 0.1,
        gamma: float = 1.0,
        scale: float = 1.0,
        top_k: int = 10,
        pairwise_weight: float = 1.0,
        reconstruction_weight: float = 1.0,
        unsupervised_weight: float = 1.0,
        normalize_input: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        frozen_embeddings: str | None = None,
    ) -> None:
        super().__init__()
        if name not in TRAINED_METHODS:
            raise ConfigError("method.name", name, f"expected one of {', '.join(METHODS)}")
        self.save_hyperparameters()
        self.sizes = sorted(int(m) for m in sizes)
        self.train_sizes = sorted(int(m) for m in (train_sizes or self.sizes))
        if name == "csr":
            hidden = int(hidden_dim or 4 * input_dim)
            self.net = TopKSparseAutoencoder(
                input_dim, hidden, k=max(self.train_sizes), k_aux=min(k_aux, hidden), dead_threshold=dead_threshold
            )
        else:
            if max(self.sizes) > input_dim:
                raise ConfigError("method.sizes", list(self.sizes), f"expected sizes up to the width {input_dim}")
            self.net = MatryoshkaAdaptor(input_dim, hidden_dim)

    @property
    def code_dim(self) -> int:
        """The width of what :meth:`transform` returns (the sparse code's width for CSR)."""
        return self.net.hidden_dim if self.hparams.name == "csr" else self.net.dim

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.hparams.normalize_input else x

    @torch.no_grad()
    def transform(self, x: torch.Tensor, size: int) -> torch.Tensor:
        """The representation at ``size``: a k-sparse code ``[B, H]`` (CSR) or the adapted prefix ``[B, m]``."""
        x = self.prepare(x)
        if self.hparams.name == "csr":
            return self.net.encode(x, size)
        return self.net(x)[:, :size]

    def losses(self, anchors: torch.Tensor, positives: torch.Tensor) -> dict[str, torch.Tensor]:
        a, p = self.prepare(anchors), self.prepare(positives)
        hp = self.hparams
        if hp.name == "csr":
            terms: dict[str, torch.Tensor] = {}
            ks = self.train_sizes
            for out_a, out_p in zip(self.net.forward_many(a, ks), self.net.forward_many(p, ks), strict=True):
                for key, value in csr_loss([out_a, out_p], hp.beta, hp.gamma, hp.scale).items():
                    terms[key] = terms.get(key, 0) + value / len(ks)
            return terms
        adapted = self.net(a)
        terms = adaptor_unsupervised_losses(
            a, adapted, self.sizes, hp.top_k, hp.pairwise_weight, hp.reconstruction_weight
        )
        if hp.name == "adaptor_supervised":
            terms = {key: hp.unsupervised_weight * value for key, value in terms.items()}
            terms["ranking"] = ranking_loss(adapted, self.net(p), self.sizes, scale=20.0)
        return terms

    def _step(self, batch, split: str) -> torch.Tensor:
        terms = self.losses(*batch)
        loss = sum(terms.values())
        on_step = split == "train"
        for key, value in terms.items():
            self.log(f"{split}/{key}", value, on_step=on_step, on_epoch=True, batch_size=len(batch[0]))
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(batch[0]))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
