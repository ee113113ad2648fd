"""BlurPool: a fixed 3x3 binomial low-pass filter in front of every strided convolution.

The reference MRL ResNet-50s were trained with FFCV's ImageNet recipe, which blurs the input of
each convolution that has a stride above 1 and reads at least 16 channels (so not the RGB stem).
A blurred layer keeps its convolution as ``.conv`` and the filter as a ``blur_filter`` buffer: the
key layout the reference checkpoints are saved in, so they load key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BlurConv2d", "apply_blurpool", "should_blur"]

_MIN_CHANNELS = 16


def _binomial_kernel(channels: int) -> Tensor:
    """The 3x3 kernel ``[1, 2, 1]^T [1, 2, 1] / 16``, one copy per channel (a depthwise filter)."""
    row = torch.tensor([1.0, 2.0, 1.0])
    kernel = torch.outer(row, row) / row.sum() ** 2
    return kernel.expand(channels, 1, 3, 3).clone()


class BlurConv2d(nn.Module):
    """``conv(blur(x))``: a per-channel binomial blur (stride 1, same size) before ``conv``."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        self.blur_filter: Tensor
        self.register_buffer("blur_filter", _binomial_kernel(conv.in_channels))

    def forward(self, x: Tensor) -> Tensor:
        blurred = F.conv2d(x, self.blur_filter, padding=1, groups=self.conv.in_channels)
        return self.conv(blurred)


def should_blur(module: nn.Module) -> bool:
    """FFCV's rule: a ``Conv2d`` with a stride above 1 that reads at least 16 channels."""
    return isinstance(module, nn.Conv2d) and max(module.stride) > 1 and module.in_channels >= _MIN_CHANNELS


def apply_blurpool(model: nn.Module) -> list[str]:
    """Wrap, in place, every convolution of ``model`` that :func:`should_blur`; return their names."""
    names = [name for name, module in model.named_modules() if name and should_blur(module)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, BlurConv2d(getattr(parent, child)))
    return names
