"""Official RAIVNLab/MRL ResNet-50 checkpoints load into our model and give the reference's logits."""

from __future__ import annotations

import pytest
import torch
import torchvision

from mrl.checkpoints import load_module
from mrl.compat import load_reference_resnet50

from reference_mrl import NaiveMRLLinear

NESTING = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]


def reference_model(efficient: bool, num_classes: int = 7) -> torch.nn.Module:
    """A torchvision ResNet-50 with the reference nested head as ``fc``, as the reference trains it."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    model.fc = NaiveMRLLinear(NESTING, num_classes, efficient=efficient)
    # Non-trivial batch-norm statistics, so a wrong key mapping would show in the outputs.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("efficient", [False, True])
def test_reference_checkpoint_gives_reference_logits(tmp_path, efficient):
    reference = reference_model(efficient)
    # Saved from DDP as the reference does: every key starts with ``module.``.
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    path = tmp_path / "r50_mrl.pt"
    torch.save(state, path)
    module = load_reference_resnet50(path)
    assert module.hparams.head["kind"] == ("mrl_e" if efficient else "mrl")
    assert module.sizes == NESTING
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.stack(reference(x))
        got = module(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_unsupported_layers_are_named(tmp_path):
    state = reference_model(False).state_dict()
    state["conv1.conv.weight"] = state.pop("conv1.weight")  # a BlurPool-wrapped convolution
    state["layer2.0.conv2.blur_filter"] = torch.ones(128, 1, 3, 3)
    path = tmp_path / "blurpool.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"not supported.*conv1\.conv\.weight"):
        load_reference_resnet50(path)


def test_framework_checkpoint_round_trip(tmp_path, make_cfg):
    """A module saved by Lightning comes back through load_module with identical outputs."""
    import lightning as L

    from mrl.experiment import build_datamodule, build_model

    cfg = make_cfg()
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule).eval()
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_module(path)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        torch.testing.assert_close(loaded.embed(x), model.embed(x))
    assert loaded.predict_step((x, torch.zeros(4, dtype=torch.long)), 0)["embedding"].shape == (4, 512)
