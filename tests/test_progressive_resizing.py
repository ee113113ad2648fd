"""Progressive resizing: FFCV's schedule, crops that follow it in running workers, and resumed runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from mrl.common.errors import ConfigError, is_config_error
from mrl.data.image import ImageFolderDataModule
from mrl.training.callbacks import ProgressiveResizing
from mrl.training.procedure import build_datamodule, build_model


def ffcv_size(epoch, start_size, end_size, start_epoch, end_epoch, multiple=32):
    """FFCV's get_resolution, restated with numpy's interpolation and rounding."""
    if epoch <= start_epoch:
        return start_size
    if epoch >= end_epoch:
        return end_size
    return int(np.round(np.interp(epoch, [start_epoch, end_epoch], [start_size, end_size]) / multiple)) * multiple


@pytest.mark.parametrize("schedule", [(160, 192, 29, 34), (160, 192, 65, 76), (128, 256, 3, 13), (64, 64, 0, 0)])
def test_schedule_matches_ffcv(schedule):
    callback = ProgressiveResizing(*schedule)
    assert [callback.size_at(e) for e in range(90)] == [ffcv_size(e, *schedule) for e in range(90)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start_size": 0}, r"^callbacks\.progressive_resizing\.start_size=0 is invalid"),
        ({"multiple": 2.5}, r"^callbacks\.progressive_resizing\.multiple=2\.5 is invalid"),
        ({"start_epoch": 5, "end_epoch": 3}, r"^callbacks\.progressive_resizing\.start_epoch=5, end_epoch=3"),
    ],
)
def test_bad_schedules_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProgressiveResizing(**{"start_size": 16, "end_size": 32, "start_epoch": 0, "end_epoch": 2, **kwargs})


def image_folder(root: Path, classes=("cat", "dog"), per_class=6) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for j in range(per_class):
                pixels = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{j}.png")
    return root


def test_reference_evaluation_transform(tmp_path):
    """data=imagenet's settings give the reference protocol: resize to 256, center 224, bilinear."""
    dm = ImageFolderDataModule(
        root=str(image_folder(tmp_path)), image_size=224, crop_pct=0.875, interpolation="bilinear", color_jitter=0.0
    )
    dm.set_data_config(
        {
            "input_size": (3, 224, 224),
            "interpolation": "bicubic",
            "crop_pct": 0.95,
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
        }
    )  # a timm resnet50's
    reference = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    torch.testing.assert_close(dm._transform(is_training=False)(image), reference(image))
    train = dm._transform(is_training=True)
    assert not any(getattr(t, "brightness", None) for t in train.transforms)  # no colour jitter
    with pytest.raises(ConfigError, match=r"^data\.crop_pct=1\.5: use a fraction"):
        ImageFolderDataModule(root=str(tmp_path), crop_pct=1.5)
    with pytest.raises(ConfigError, match=r"^data\.interpolation='cubic': use one of"):
        ImageFolderDataModule(root=str(tmp_path), interpolation="cubic")


def test_running_workers_follow_the_size(tmp_path):
    dm = ImageFolderDataModule(
        root=str(image_folder(tmp_path)), image_size=16, batch_size=4, num_workers=2, persistent_workers=True
    )
    loader = dm.train_dataloader()
    assert {tuple(x.shape[-2:]) for x, _ in loader} == {(16, 16)}
    dm.set_train_image_size(24)  # the same loader and workers, as between two epochs
    assert {tuple(x.shape[-2:]) for x, _ in loader} == {(24, 24)}
    assert next(iter(dm.eval_dataloader("val")))[0].shape[-2:] == (16, 16)  # evaluation keeps image_size
    dm.set_train_image_size(None)
    assert next(iter(loader))[0].shape[-2:] == (16, 16)


class RecordSizes(L.Callback):
    def __init__(self):
        self.sizes: dict[int, set[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.sizes.setdefault(trainer.current_epoch, set()).add(batch[0].shape[-1])


def fit(cfg, max_epochs, callbacks, ckpt_path=None):
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        callbacks=callbacks,
        default_root_dir=cfg.paths.output_dir,
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


def test_training_follows_the_schedule_and_resumes_on_it(tmp_path, make_cfg):
    root = image_folder(tmp_path / "images")
    cfg = make_cfg(
        "data=image_folder",
        f"data.root={root}",
        "data.batch_size=4",
        "data.num_workers=2",
        "data.persistent_workers=true",
        "trainer.limit_train_batches=null",
    )
    schedule = dict(start_size=16, end_size=32, start_epoch=1, end_epoch=3, multiple=8)
    record = RecordSizes()
    trainer = fit(cfg, 4, [ProgressiveResizing(**schedule), record])
    assert record.sizes == {0: {16}, 1: {16}, 2: {24}, 3: {32}}
    assert trainer.callback_metrics["train/image_size"] == 32

    # Stop after epoch 1 (a checkpoint at the end of it), then resume to the end: epoch 2 starts at 24.
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit(cfg, 2, [ProgressiveResizing(**schedule), ckpt])
    assert resizing_state(tmp_path / "ckpt" / "last.ckpt") == {"resume_epoch": 2}
    record = RecordSizes()
    fit(cfg, 4, [ProgressiveResizing(**schedule), record], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert record.sizes == {2: {24}, 3: {32}}


def resizing_state(path: Path) -> dict:
    states = torch.load(path, weights_only=False)["callbacks"]
    return next(state for key, state in states.items() if key.startswith("ProgressiveResizing"))


def test_a_run_stopped_mid_epoch_resumes_that_epoch_at_its_size(tmp_path, make_cfg):
    """The first batches of a resumed epoch are made before it starts, so the size is set as the state loads."""
    root = image_folder(tmp_path / "images")
    cfg = make_cfg("data=image_folder", f"data.root={root}", "data.batch_size=4", "trainer.limit_train_batches=null")
    schedule = dict(start_size=16, end_size=32, start_epoch=1, end_epoch=3, multiple=8)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)
    datamodule = build_datamodule(cfg)
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[ProgressiveResizing(**schedule), ckpt],
    )
    trainer.fit(build_model(cfg, datamodule), datamodule=datamodule)  # 3 steps an epoch: stops in epoch 1
    assert resizing_state(tmp_path / "ckpt" / "last.ckpt") == {"resume_epoch": 1}

    # Lightning's order on resuming: setup, the checkpoint's callback states, then the first loader
    resumed, datamodule = ProgressiveResizing(**schedule), build_datamodule(cfg)
    resumed.setup(SimpleNamespace(datamodule=datamodule), None, "fit")
    assert int(datamodule.train_image_size[0]) == 16
    resumed.load_state_dict({"resume_epoch": 2})
    assert int(datamodule.train_image_size[0]) == 24


def test_a_data_set_that_cannot_resize_is_named(make_cfg):
    cfg = make_cfg()  # digits
    message = r"^callbacks\.progressive_resizing=16->32: the data module DigitsDataModule cannot"
    with pytest.raises(ValueError, match=message) as error:
        fit(cfg, 1, [ProgressiveResizing(16, 32, 0, 2)])
    assert is_config_error(error.value)  # mrl.cli.train prints it as one line
