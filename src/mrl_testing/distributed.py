"""Two CPU processes (gloo) running the contrastive module's training step on halves of one batch, for the test
that compares them with one process on the whole batch (tests/test_gather.py)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from mrl.training.contrastive import MatryoshkaContrastiveModule


class LinearEncoder(nn.Linear):
    """A backbone that embeds feature vectors linearly (``embed_dim`` wide)."""

    @property
    def embed_dim(self) -> int:
        return self.out_features


def contrastive_module(loss: dict, seed: int = 0) -> MatryoshkaContrastiveModule:
    torch.manual_seed(seed)
    return MatryoshkaContrastiveModule(LinearEncoder(12, 32), nesting=[8, 16, 32], loss=loss).double()


def gather_worker(rank: int, world_size: int, init_file: str, out: str):
    """:func:`mrl.training.gather.gather_rows` of uneven shares (rank r holds r + 2 rows of value r), and the
    gradient each process gets back for its own rows from a loss on the gathered rows; saved per rank."""
    from mrl.training.gather import gather_rows

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        mine = torch.full((rank + 2, 3), float(rank), dtype=torch.float64, requires_grad=True)
        rows, offset = gather_rows(mine)
        weights = torch.arange(1, rows.shape[0] + 1, dtype=torch.float64)[:, None] * (rank + 1)
        (rows * weights).sum().backward()
        torch.save((rows.detach(), offset, mine.grad), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def training_step_grads(module: MatryoshkaContrastiveModule, parts: list[torch.Tensor]):
    """The loss and the weights' gradients of one training step on ``parts`` (anchors, positives[, negatives])."""
    module.zero_grad(set_to_none=True)
    loss = module.training_step(parts, 0)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


def worker(rank: int, world_size: int, init_file: str, loss: dict, parts: list[torch.Tensor], rows: list, out: str):
    """One process: its ``rows`` slice of every part, the training step, the gradients averaged over processes
    as DDP averages them; rank 0 saves (mean loss, gradients) to the file ``out``."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        module = contrastive_module(loss)
        mine = [part[rows[rank]] for part in parts]
        loss_value, grads = training_step_grads(module, mine)
        for grad in grads.values():
            dist.all_reduce(grad)
            grad /= world_size
        dist.all_reduce(loss_value)
        if rank == 0:
            torch.save((loss_value / world_size, grads), out)
    finally:
        dist.destroy_process_group()
