"""Optimizers and learning-rate schedules from plain config dicts (the reference recipe and common options)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "linear", "step", "constant")


def parameter_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict]:
    """Split trainable parameters so that norms and biases (1-d tensors) get no weight decay."""
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 and not decay_norm_and_bias else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def scaled_lr(cfg: Mapping, global_batch: int | None) -> float:
    """``lr``, scaled linearly from the global batch ``lr_batch`` it was set for to ``global_batch``.

    Without ``lr_batch`` (null) the rate is taken as it is. With it, the rate follows the batch, so
    running a recipe on another number of GPUs keeps its learning rate per example.
    """
    lr = float(cfg.get("lr", 0.1))
    lr_batch = cfg.get("lr_batch")
    if lr_batch is None:
        return lr
    if isinstance(lr_batch, bool) or not isinstance(lr_batch, int) or lr_batch < 1:
        raise ValueError(f"model.optimizer.lr_batch={lr_batch!r}: use a positive global batch size or null")
    if not global_batch:
        raise ValueError(
            f"model.optimizer.lr_batch={lr_batch}: the global batch is unknown (no data module with a "
            f"batch_size); set lr_batch=null and give the learning rate itself"
        )
    return lr * global_batch / lr_batch


def build_optimizer(model: nn.Module, cfg: Mapping, global_batch: int | None = None) -> torch.optim.Optimizer:
    name = str(cfg.get("name", "sgd")).lower()
    lr = scaled_lr(cfg, global_batch)
    wd = float(cfg.get("weight_decay", 0.0))
    groups = parameter_groups(model, wd, bool(cfg.get("decay_norm_and_bias", False)))
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=float(cfg.get("momentum", 0.9)), nesterov=bool(cfg.get("nesterov", False))
        )
    if name == "adamw":
        betas = tuple(cfg.get("betas", (0.9, 0.999)))
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=float(cfg.get("eps", 1e-8)))
    raise ValueError(f"model.optimizer.name={name!r}: expected one of {', '.join(OPTIMIZERS)}")


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int,
    schedule: str,
    min_factor: float = 0.0,
    milestones: Iterable[int] = (),
    gamma: float = 0.1,
    warmup_start: float = 0.0,
) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up, then the chosen decay."""
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return gamma ** sum(step >= m for m in milestones)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_factor + (1.0 - min_factor) * (1.0 - progress)
    raise ValueError(f"model.scheduler.name={schedule!r}: expected one of {', '.join(SCHEDULES)}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping, total_steps: int, steps_per_epoch: float):
    """A per-step LambdaLR; warm-up and step milestones are given in epochs and converted to steps."""
    schedule = str(cfg.get("name", "cosine")).lower()
    if schedule not in SCHEDULES:
        raise ValueError(f"model.scheduler.name={schedule!r}: expected one of {', '.join(SCHEDULES)}")
    warmup = int(round(float(cfg.get("warmup_epochs", 0.0)) * steps_per_epoch))
    milestones = [int(round(float(e) * steps_per_epoch)) for e in cfg.get("milestones", ())]
    kwargs = dict(
        total_steps=max(1, total_steps),
        warmup_steps=warmup,
        schedule=schedule,
        min_factor=float(cfg.get("min_lr_ratio", 0.0)),
        milestones=milestones,
        gamma=float(cfg.get("gamma", 0.1)),
        warmup_start=float(cfg.get("warmup_start_factor", 0.0)),
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, **kwargs))
