"""Image LightningDataModules: the offline digits default, synthetic data, image folders, prepared
shards (mrl-prepare), torchvision sets.

Every module exposes `num_classes`, `in_chans` and `name` after construction, `class_names` after
`setup()`, takes the backbone's timm data config through `set_data_config(cfg)`, and serves
`train/val/test_dataloader()` plus `eval_dataloader(split)` (non-shuffled, eval transforms).
"""

from mrl.data.image.base import ImageDataModule
from mrl.data.image.digits import DigitsDataModule
from mrl.data.image.folder import ImageFolderDataModule, SafeImageDataset
from mrl.data.image.shards import ImageShardsDataModule
from mrl.data.image.synthetic import SyntheticDataModule
from mrl.data.image.torchvision_sets import SETS as TORCHVISION_SETS
from mrl.data.image.torchvision_sets import TorchvisionDataModule

__all__ = [
    "TORCHVISION_SETS",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImageShardsDataModule",
    "SafeImageDataset",
    "SyntheticDataModule",
    "TorchvisionDataModule",
]
