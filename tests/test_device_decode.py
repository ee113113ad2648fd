"""data.decode=device: the training JPEGs decoded, cropped and resized on the trainer's device, here the CPU (the
same code path as nvjpeg's on a GPU); the crops are the CPU path's, and training runs on them."""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
import pytest
import torch

from mrl.common.errors import ConfigError
from mrl.data.image.decode import TrainDecode, open_item, resized_crop
from mrl.data.image.device_decode import EncodedCrop, collate_encoded, decode_batch, is_encoded
from mrl.data.image.shard_writer import prepare
from mrl.data.image.shards import ImageShardsDataModule
from mrl.training.procedure import build_datamodule, build_model
from mrl_testing.images import image_folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Shards with about half the images stored as raw pixels, half as JPEG."""
    tmp = tmp_path_factory.mktemp("device_decode")
    prepare(image_folder(tmp / "src"), tmp / "out", max_side=64, raw_fraction=0.5, workers=1, progress=False)
    return tmp / "out"


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_device_crops_are_the_cpu_paths_crops_of_the_same_boxes(shards, interpolation):
    """Random crop boxes: each JPEG decoded in one batched call, cropped and resized on the device, equals the CPU
    path's crop of the same box to within one level of rounding; raw items and the batch order are kept."""
    from litdata import StreamingDataset

    dataset = StreamingDataset(str(shards / "train"))
    items = [dataset[i] for i in range(len(dataset))]
    assert 0 < sum(item["raw"] for item in items) < len(items)
    random.seed(0)
    encoded = [EncodedCrop(TrainDecode(24, interpolation=interpolation, draft=False))(item) for item in items]
    x, labels = decode_batch(collate_encoded(encoded), torch.device("cpu"), interpolation)
    assert x.shape == (len(items), 3, 24, 24) and x.dtype == torch.uint8
    assert labels.tolist() == [int(item["label"]) for item in items]
    for got, item, enc in zip(x, items, encoded):
        if item["raw"]:
            assert torch.equal(got, enc["image"])
            continue
        image = open_item(item["data"], False, int(item["h"]), int(item["w"]))
        expected = resized_crop(image, tuple(enc["box"]), (24, 24), interpolation, draft=False)
        assert (got.int() - expected.int()).abs().max() <= 1


def test_training_decodes_on_the_device(shards, make_cfg):
    """A real run with data.decode=device: the loader's workers hand over JPEG bytes and boxes, the data module
    decodes them on the trainer's device before the model's hook, and training steps run on the crops."""
    cfg = make_cfg(
        "data=image_shards",
        f"data.root={shards}",
        "data.decode=device",
        "data.batch_size=4",
        "data.num_workers=1",
        "data.persistent_workers=false",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
    )
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    loaded, reached = [], []
    decode = datamodule.on_before_batch_transfer

    def before(batch, dataloader_idx):
        loaded.append(is_encoded(batch))
        return decode(batch, dataloader_idx)

    convert = model.on_after_batch_transfer

    def after(batch, dataloader_idx):
        reached.append((tuple(batch[0].shape), batch[0].dtype, batch[0].device.type))
        return convert(batch, dataloader_idx)

    datamodule.on_before_batch_transfer, model.on_after_batch_transfer = before, after
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 3
    assert loaded == [True, True, True, False]  # three training batches encoded; the validation batch is not
    assert reached[:3] == [((4, 3, 16, 16), torch.uint8, "cpu")] * 3


def test_decode_option_fails_fast(shards):
    with pytest.raises(ConfigError, match=r"^data.decode='gpu': use one of cpu, device"):
        ImageShardsDataModule(str(shards), decode="gpu")
    with pytest.raises(ConfigError, match=r"^data.interpolation='lanczos': with data.decode=device"):
        ImageShardsDataModule(str(shards), decode="device", interpolation="lanczos")
