"""Synthetic, deterministic, learnable images for tests and benchmarks (no files, no downloads)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from mrl.common.errors import ConfigError
from mrl.data.image.base import ImageDataModule


def _prototypes(num_classes: int, in_chans: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """One smooth pattern per class: a class-specific grating plus upsampled low-resolution noise,
    standardised to zero mean and unit variance per class."""
    coords = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    protos = []
    for c in range(num_classes):
        angle = math.pi * c / max(num_classes, 1)
        freq = 1.0 + (c % 4)
        phase = float(torch.rand((), generator=generator)) * 2 * math.pi
        grating = torch.sin(math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
        blobs = torch.randn(1, in_chans, 4, 4, generator=generator)
        blobs = F.interpolate(blobs, size=(size, size), mode="bilinear", align_corners=False)[0]
        proto = grating.expand(in_chans, -1, -1) + blobs
        protos.append((proto - proto.mean()) / proto.std().clamp_min(1e-6))
    return torch.stack(protos)


class SyntheticDataModule(ImageDataModule):
    """Class-dependent patterns plus Gaussian noise: `x = a * prototype[y] + noise * eps`, `a ~ U(0.5, 1.5)`.

    Deterministic in `seed`; train and val are drawn from separate streams, so val does not change when
    `train_size` does. Balanced classes (round-robin labels). Test is val. `noise` sets the difficulty.
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        in_chans: int = 3,
        train_size: int = 512,
        val_size: int = 128,
        noise: float = 1.0,
        **loader_options: Any,
    ) -> None:
        super().__init__(**loader_options)
        self.save_hyperparameters()
        for key, value, low in (
            ("num_classes", num_classes, 2),
            ("image_size", image_size, 4),
            ("in_chans", in_chans, 1),
            ("train_size", train_size, 1),
            ("val_size", val_size, 1),
        ):
            if int(value) < low:
                raise ConfigError(f"data.{key}", value, f"use an integer >= {low}")
        if float(noise) < 0:
            raise ConfigError("data.noise", noise, "use a non-negative float")
        self.name = "synthetic"
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.in_chans = int(in_chans)
        self.train_size = int(train_size)
        self.val_size = int(val_size)
        self.noise = float(noise)
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _sample(self, n: int, protos: torch.Tensor, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1000 + stream)
        labels = torch.arange(n) % self.num_classes
        labels = labels[torch.randperm(n, generator=g)]
        scale = 0.5 + torch.rand(n, 1, 1, 1, generator=g)
        eps = torch.randn(n, *protos.shape[1:], generator=g)
        x = scale * protos[labels] + self.noise * eps
        return (x / math.sqrt(1.0 + self.noise**2)).float(), labels.long()

    def _build(self) -> None:
        g = torch.Generator().manual_seed(self.seed * 1000)
        protos = _prototypes(self.num_classes, self.in_chans, self.image_size, g)
        self._tensors = {
            "train": self._sample(self.train_size, protos, stream=1),
            "val": self._sample(self.val_size, protos, stream=2),
        }
        self.class_names = [f"class_{i}" for i in range(self.num_classes)]

    def _dataset(self, split: str, train: bool) -> Dataset:
        return TensorDataset(*self._tensors["val" if split == "test" else split])
