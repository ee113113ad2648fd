"""Where and in what precision evaluation runs the model: ``device`` and ``precision`` of conf/eval.yaml.

Only the model runs there; embeddings and logits come back to the CPU as float32 for the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or None): the GPU when there is one, else the CPU; otherwise a torch device name."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError:
        raise ValueError(f"device={name!r}: expected auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r}: this machine has no CUDA device; use device=auto or device=cpu")
    return device


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def inference_autocast(module: torch.nn.Module, precision: str = "fp32"):
    """Autocast on the module's device for ``bf16``/``fp16``; a no-op context for ``fp32``."""
    device = next(module.parameters()).device
    dtype = PRECISIONS[check_precision(precision)]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def to_device(value: Any, device: torch.device) -> Any:
    """A tensor, or a mapping of them (a tokenizer's output), on ``device``; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    return value
