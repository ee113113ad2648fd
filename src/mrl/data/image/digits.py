"""The offline default image set: scikit-learn's handwritten digits, prepared for timm backbones."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from mrl.common.errors import ConfigError
from mrl.data.image.base import ImageDataModule


class _ShiftAugment(Dataset):
    """Random translation by up to `max_shift` pixels; the uncovered border gets `fill`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, max_shift: int, fill: float) -> None:
        self.images, self.labels = images, labels
        self.max_shift, self.fill = int(max_shift), float(fill)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[index]
        s = self.max_shift
        if s > 0:
            _, h, w = img.shape
            dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
            padded = F.pad(img, (s, s, s, s), value=self.fill)
            img = padded[:, dy : dy + h, dx : dx + w]
        return img, self.labels[index]


def upsample_scans(scans: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[N, 1, 8, 8]`` scans in [0, 1] to ``size`` (bilinear), clamped to [0, 1]."""
    if tuple(size) != (8, 8):
        scans = F.interpolate(scans, size=size, mode="bilinear", align_corners=False)
    return scans.clamp_(0.0, 1.0)


class DigitsImageTransform:
    """A PIL image -> the input of a model trained on the digits, prepared as the set's own scans are.

    A scan counts the ink pixels (0-16) in each 4x4 block of a 32x32 bitmap, bright ink on a dark ground;
    so an image is read as grayscale, box-averaged to 8x8 and scaled to [0, 1], then upsampled and
    normalised with the training split's statistics like the set itself.
    """

    def __init__(self, size: tuple[int, int], mean: float, std: float, in_chans: int) -> None:
        self.size, self.mean, self.std, self.in_chans = tuple(size), float(mean), float(std), int(in_chans)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Upsampled ``[N, 1, H, W]`` images -> normalised ``[N, in_chans, H, W]``."""
        return ((images - self.mean) / self.std).expand(-1, self.in_chans, -1, -1).contiguous()

    def __call__(self, image: Image.Image) -> torch.Tensor:
        scan = np.asarray(image.convert("L").resize((8, 8), Image.BOX), dtype=np.float32) / 255.0
        return self.normalize(upsample_scans(torch.from_numpy(scan).view(1, 1, 8, 8), self.size))[0]


class DigitsDataModule(ImageDataModule):
    """scikit-learn's handwritten digits (1797 real 8x8 images, 10 classes), fully in memory.

    Stratified, seeded train/val split; pixels scaled to [0, 1], upsampled (bilinear) to `image_size`,
    repeated to `in_chans` channels and normalised with the train split's mean and std. The set has no
    test split: test is val. Bundled with scikit-learn, so it never downloads.
    """

    def __init__(
        self,
        image_size: int | None = 32,
        in_chans: int = 3,
        val_fraction: float = 0.2,
        augment: bool = False,
        max_shift: int | None = None,
        **loader_options: Any,
    ) -> None:
        super().__init__(**loader_options)
        self.save_hyperparameters()
        if not 0.0 < float(val_fraction) < 1.0:
            raise ConfigError("data.val_fraction", val_fraction, "use a fraction in (0, 1)")
        if int(in_chans) < 1:
            raise ConfigError("data.in_chans", in_chans, "use a positive integer (1 or 3)")
        if image_size is not None and int(image_size) < 8:
            raise ConfigError("data.image_size", image_size, "use an integer >= 8 or null")
        self.name = "digits"
        self.num_classes = 10
        self.in_chans = int(in_chans)
        self.image_size = None if image_size is None else int(image_size)
        self.val_fraction = float(val_fraction)
        self.augment = bool(augment)
        self.max_shift = max_shift
        self.mean: float | None = None
        self.std: float | None = None
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _build(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N,1,8,8]
        labels = torch.as_tensor(digits.target, dtype=torch.long)
        n_val = round(self.val_fraction * len(labels))
        if n_val < self.num_classes or len(labels) - n_val < self.num_classes:
            raise ValueError(
                f"data.val_fraction={self.val_fraction} leaves {n_val} of {len(labels)} images for val; "
                f"both splits need at least {self.num_classes} (one per class)"
            )
        idx_train, idx_val = train_test_split(
            torch.arange(len(labels)).numpy(),
            test_size=n_val,
            stratify=labels.numpy(),
            random_state=self.seed,
        )
        size = self._config_size(self.image_size, default=32)
        images = upsample_scans(images, size)
        idx_train_t, idx_val_t = torch.as_tensor(idx_train), torch.as_tensor(idx_val)
        train_x = images[idx_train_t]
        self.mean, self.std = train_x.mean().item(), train_x.std().item()
        self.image_transform = DigitsImageTransform(size, self.mean, self.std, self.in_chans)
        prep = self.image_transform.normalize
        self._tensors = {
            "train": (prep(train_x), labels[idx_train_t]),
            "val": (prep(images[idx_val_t]), labels[idx_val_t]),
        }
        self.class_names = [str(i) for i in range(self.num_classes)]

    @classmethod
    def file_transform(cls, settings: Mapping[str, Any], data_config: Mapping[str, Any] | None = None) -> Callable:
        """The evaluation preprocessing (see the base class): :class:`DigitsImageTransform` with the statistics
        of the run's training split (rebuilt from scikit-learn's copy with the run's seed and split)."""
        keys = ("image_size", "in_chans", "val_fraction", "seed")
        datamodule = cls(**{key: settings[key] for key in keys if key in settings})
        datamodule.set_data_config(dict(data_config) if data_config else None)
        datamodule.setup()
        return datamodule.image_transform

    def _dataset(self, split: str, train: bool) -> Dataset:
        x, y = self._tensors["val" if split == "test" else split]
        if train and self.augment:
            assert self.mean is not None and self.std is not None, "setup() computes the normalisation first"
            shift = self.max_shift if self.max_shift is not None else max(1, x.shape[-1] // 8)
            return _ShiftAugment(x, y, max_shift=shift, fill=-self.mean / self.std)
        return TensorDataset(x, y)
