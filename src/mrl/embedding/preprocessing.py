"""How ``make embed`` prepares an image file: as the run prepared its own evaluation images (rebuilt from its
``config.yaml``), or, for an official RAIVNLab/MRL checkpoint without a run, as the reference evaluates ImageNet."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from mrl.common.configs import config_dir
from mrl.data.image.folder import ImageFolderDataModule

__all__ = ["image_transform", "reference_transform"]


def reference_transform(module: torch.nn.Module) -> Callable:
    """ImageNet's evaluation preprocessing as ``conf/data/imagenet.yaml`` sets it (the reference protocol: resize
    to 256, center 224, bilinear), for an official RAIVNLab/MRL checkpoint that comes without a run."""
    imagenet = OmegaConf.load(config_dir() / "data" / "imagenet.yaml")
    settings = {key: imagenet[key] for key in ("image_size", "crop_pct", "interpolation")}
    return ImageFolderDataModule.file_transform(settings, getattr(module.backbone, "data_config", None))


def image_transform(run_dir: Path, module: torch.nn.Module) -> Callable:
    """The run's evaluation preprocessing for an image file, from its ``config.yaml``'s ``data`` section."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(
            f"run={str(run_dir)!r}: no config.yaml; images are prepared as the run prepared its "
            "own, so give the run directory (or a checkpoint inside its checkpoints/)"
        )
    data = OmegaConf.to_container(OmegaConf.load(config).data, resolve=True)
    cls = get_class(data.pop("_target_"))
    return cls.file_transform(data, getattr(module.backbone, "data_config", None))
