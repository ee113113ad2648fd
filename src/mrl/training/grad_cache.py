"""The cached training step (GradCache, as sentence-transformers' ``CachedMultipleNegativesRankingLoss``): a batch
too large to embed with gradients at once is embedded a mini-batch at a time without gradients, the loss is taken
over the whole batch, and its backward replays each mini-batch with gradients (same dropout masks) and
back-propagates the loss's gradient for that mini-batch's embeddings into the encoder. The gradients equal the
plain step's; the memory is one mini-batch's."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["RandomState", "ReplayGradients", "cached_loss", "chunk_slices", "take_rows"]


def take_rows(features: Any, rows: slice) -> Any:
    """Rows of a token dict (every tensor sliced along the batch) or of a tensor."""
    if isinstance(features, Mapping):
        return {k: v[rows] for k, v in features.items()}
    return features[rows]


def chunk_slices(rows: int, step: int | None) -> list[slice]:
    """``rows`` cut into consecutive slices of at most ``step`` rows (one slice when ``step`` is None)."""
    step = step or rows
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


class ReplayGradients(torch.autograd.Function):
    """The cached step's loss: its value in the forward, and in the backward ``replay(grad_output)``, which runs the
    mini-batches again with gradients (a re-entrant backward, as activation checkpointing does)."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, anchor: torch.Tensor, replay) -> torch.Tensor:
        ctx.replay = replay
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        ctx.replay(grad_output)
        return None, None, None


class RandomState:
    """The random state before a forward, to replay it (same dropout masks) when the cached step re-runs it."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.get_rng_state()
        self.device = device if device.type == "cuda" else None
        self.cuda = torch.cuda.get_rng_state(device) if self.device is not None else None

    @contextmanager
    def replay(self):
        with torch.random.fork_rng(devices=[self.device] if self.device is not None else []):
            torch.set_rng_state(self.cpu)
            if self.device is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


EmbedLayers = Callable[[Any], Sequence[torch.Tensor]]
"""Features -> the embeddings ``[B, D]`` of one forward: one tensor, or one per transformer layer."""


def embed_without_gradients(
    joined: Any, chunks: list[slice], embed: EmbedLayers, device: torch.device
) -> tuple[list[RandomState], list[torch.Tensor]]:
    """Each chunk's random state and its embeddings; per layer, the whole batch's as one leaf that will hold the
    loss's gradient."""
    states, pieces = [], []
    with torch.no_grad():
        for rows in chunks:
            states.append(RandomState(device))
            pieces.append(embed(take_rows(joined, rows)))
    return states, [torch.cat(layer).detach().requires_grad_() for layer in zip(*pieces)]


def replay_chunks(
    module: nn.Module,
    joined: Any,
    chunks: list[slice],
    states: list[RandomState],
    embed: EmbedLayers,
    grads: Sequence[torch.Tensor | None],
    scale: torch.Tensor,
) -> None:
    """Re-run each chunk with gradients (its own random state) and accumulate into ``module``'s weights the
    gradient of the loss through that chunk's embeddings, times ``scale`` (what Lightning's backward gives the
    loss: 1 / accumulated batches, the AMP loss scale)."""
    weights = [w for w in module.parameters() if w.requires_grad]
    totals: list[torch.Tensor | None] = [None] * len(weights)
    for rows, state in zip(chunks, states):
        with torch.enable_grad():  # a backward runs without gradients; the replay needs them
            with state.replay():
                piece = embed(take_rows(joined, rows))
            # the surrogate's gradient for the piece is the loss's for those embeddings, times the scale
            surrogate = sum(
                (layer * (grad[rows] * scale).to(layer.dtype)).sum()
                for layer, grad in zip(piece, grads)
                if grad is not None
            )
            found = torch.autograd.grad(surrogate, weights, allow_unused=True)
        totals[:] = [t if g is None else g if t is None else t + g for t, g in zip(totals, found)]
    # One accumulation per weight: DDP's gradient hooks fire once each, so it averages the sums over processes as
    # it does for a plain step.
    used = [(w, t) for w, t in zip(weights, totals) if t is not None]
    torch.autograd.backward([w for w, _ in used], [t for _, t in used])


def cached_loss(
    module: nn.Module,
    joined: Any,
    counts: list[int],
    mini_batch_size: int | None,
    embed: EmbedLayers,
    loss_of: Callable[[list[list[torch.Tensor]]], torch.Tensor],
    device: torch.device,
) -> torch.Tensor:
    """The loss of the whole batch ``joined`` (its parts ``counts`` rows each, concatenated), embedded at most
    ``mini_batch_size`` rows at a time without gradients; its backward (Lightning's, after it zeroed the gradients)
    replays each mini-batch with gradients into ``module``'s weights.

    ``loss_of`` takes the embeddings as ``[layer][part] -> [B_i, D]`` (one layer unless ``embed`` returns one per
    transformer layer); a layer it leaves unused (not drawn this step) gets no gradient."""
    chunks = chunk_slices(sum(counts), mini_batch_size)
    states, embeddings = embed_without_gradients(joined, chunks, embed, device)
    loss = loss_of([list(torch.split(layer, counts, dim=0)) for layer in embeddings])
    grads = torch.autograd.grad(loss, embeddings, allow_unused=True)

    def replay(scale: torch.Tensor) -> None:
        replay_chunks(module, joined, chunks, states, embed, grads, scale)

    anchor = torch.zeros((), device=loss.device, requires_grad=True)
    return ReplayGradients.apply(loss.detach(), anchor, replay)
