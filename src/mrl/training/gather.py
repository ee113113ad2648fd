"""Rows from every process, in rank order, with gradients that flow back to the process that produced them: the
in-batch negatives of a contrastive loss under DDP come from the whole global batch, not one device's share."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather


def distributed_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's rows of ``tensor`` concatenated in rank order, and where this process's rows start.

    Differentiable: the gradient of each gathered row goes back to the process that owns it, summed over the
    processes whose loss used it (with DDP's gradient averaging, every weight's gradient is then the gradient of
    the mean loss over the global batch). Processes may hold different numbers of rows (a short last batch)."""
    rank, world_size = distributed_world()
    if world_size == 1:
        return tensor, 0
    rows = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(rows) for _ in range(world_size)]
    dist.all_gather(counts, rows)
    counts = [int(c.item()) for c in counts]
    longest = max(counts)
    padded = tensor
    if tensor.shape[0] < longest:
        padding = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, padding])
    pieces = all_gather(padded)
    return torch.cat([piece[:count] for piece, count in zip(pieces, counts)]), sum(counts[:rank])
