"""BlurPool: which convolutions it wraps, what the wrapped ones compute, and training with it."""

from __future__ import annotations

import pytest
import timm
import torch

from mrl.backbones import TimmBackbone
from mrl.backbones.blurpool import BlurConv2d, apply_blurpool
from mrl_testing.reference import ShiftedSumBlurConv


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Bottleneck blocks stride in their 3x3 conv2, basic blocks in conv1; the stems read 3 channels.
        ("resnet50", [f"layer{i}.0.{c}" for i in (2, 3, 4) for c in ("conv2", "downsample.0")]),
        ("resnet18", [f"layer{i}.0.{c}" for i in (2, 3, 4) for c in ("conv1", "downsample.0")]),
    ],
)
def test_the_strided_convolutions_that_read_16_channels_are_wrapped(name, expected):
    model = timm.create_model(name, num_classes=0)
    assert apply_blurpool(model) == expected
    for path in expected:
        wrapped = model.get_submodule(path)
        assert isinstance(wrapped, BlurConv2d) and isinstance(wrapped.conv, torch.nn.Conv2d)
    assert isinstance(model.conv1, torch.nn.Conv2d)  # stride 2, but 3 input channels


def test_blur_matches_the_shifted_sum():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 8, 3, stride=2, padding=1)
    x = torch.randn(2, 16, 9, 12)
    with torch.no_grad():
        torch.testing.assert_close(BlurConv2d(conv)(x), ShiftedSumBlurConv(conv)(x))
        assert (BlurConv2d(conv)(x) - conv(x)).abs().max() > 1e-2


def test_blurpool_on_a_model_without_strided_convolutions_is_an_error():
    with pytest.raises(ValueError, match=r"^model\.backbone\.blurpool=true: vit_tiny_patch16_224 has no"):
        TimmBackbone("vit_tiny_patch16_224", blurpool=True)


def test_training_with_blurpool_and_loading_back(tmp_path, make_cfg):
    """A few steps on the digits with BlurPool lower the loss; the checkpoint loads back blurred."""
    import lightning as L

    from mrl.runs import load_module
    from mrl.training.procedure import build_datamodule, build_model

    cfg = make_cfg("model.backbone.blurpool=true")
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    assert model.backbone.blurred == ["layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1"]  # resnet10t
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = model.criterion(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = load_module(tmp_path / "model.ckpt").eval()
    assert all(isinstance(loaded.backbone.model.get_submodule(n), BlurConv2d) for n in model.backbone.blurred)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
