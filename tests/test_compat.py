"""Official RAIVNLab/MRL ResNet-50 checkpoints load into our model and give the reference's logits."""

from __future__ import annotations

import pytest
import torch
import torchvision

from mrl.interop.reference import load_reference_resnet50
from mrl.runs import load_module
from mrl_testing.reference import NaiveMRLLinear, ShiftedSumBlurConv

NESTING = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]


# The strided convolutions FFCV's rule blurs in a ResNet-50, listed by hand: the first block of
# layers 2-4, its 3x3 convolution and its downsampling shortcut (the stem reads only 3 channels).
BLURRED_RESNET50 = [f"layer{i}.0.{name}" for i in (2, 3, 4) for name in ("conv2", "downsample.0")]


def reference_model(efficient: bool, num_classes: int = 7, blurpool: bool = False) -> torch.nn.Module:
    """A torchvision ResNet-50 with the reference nested head as ``fc``, as the reference trains it."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    model.fc = NaiveMRLLinear(NESTING, num_classes, efficient=efficient)
    if blurpool:
        for name in BLURRED_RESNET50:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, ShiftedSumBlurConv(model.get_submodule(name)))
    # Non-trivial batch-norm statistics, so a wrong key mapping would show in the outputs.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def save_from_ddp(model: torch.nn.Module, path) -> None:
    """Save as the reference does, from DDP: every key starts with ``module.``."""
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)


@pytest.mark.parametrize(("efficient", "blurpool"), [(False, False), (True, False), (False, True), (True, True)])
def test_reference_checkpoint_gives_reference_logits(tmp_path, efficient, blurpool):
    reference = reference_model(efficient, blurpool=blurpool)
    path = tmp_path / "r50_mrl.pt"
    save_from_ddp(reference, path)
    module = load_reference_resnet50(path)
    assert module.hparams.head["kind"] == ("mrl_e" if efficient else "mrl")
    assert module.hparams.backbone["blurpool"] is blurpool
    assert module.sizes == NESTING
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.stack(reference(x))
        got = module(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_blurpool_makes_a_difference(tmp_path):
    """The same weights without the blur give other logits, so the test above does check the blur."""
    reference = reference_model(False, blurpool=True)
    state = reference.state_dict()
    path = tmp_path / "r50_mrl.pt"
    save_from_ddp(reference, path)
    module = load_reference_resnet50(path)
    for name in BLURRED_RESNET50:
        parent, _, child = name.rpartition(".")
        blurred = module.backbone.model.get_submodule(name)
        setattr(module.backbone.model.get_submodule(parent), child, blurred.conv)
    assert "layer2.0.conv2.blur_filter" in state
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (module(x) - torch.stack(reference(x))).abs().max() > 1e-2


def test_older_mrl_e_files_load_with_their_kind(tmp_path):
    """The reference's older MRL-E files keep the shared head as ``fc`` itself (a Linear subclass)."""
    reference = reference_model(True, blurpool=True)
    state = {k.replace("fc.nesting_classifier_0.", "fc."): v for k, v in reference.state_dict().items()}
    path = tmp_path / "r50_mrl_e_old.pt"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    assert load_reference_resnet50(path).hparams.head["kind"] == "standard"  # what the keys alone say
    module = load_reference_resnet50(path, kind="mrl_e")
    assert module.hparams.head["kind"] == "mrl_e"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(module(x), torch.stack(reference(x)), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"^reference='mrl': .* holds a standard head"):
        load_reference_resnet50(path, kind="mrl")


def test_unsupported_layers_are_named(tmp_path):
    state = reference_model(False).state_dict()
    state["layer1.0.se.fc1.weight"] = torch.ones(16, 256, 1, 1)  # a squeeze-excitation block
    path = tmp_path / "se.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"not supported.*layer1\.0\.se\.fc1\.weight \(without BlurPool"):
        load_reference_resnet50(path)


def test_framework_checkpoint_round_trip(tmp_path, make_cfg):
    """A module saved by Lightning comes back through load_module with identical outputs."""
    import lightning as L

    from mrl.training.procedure import build_datamodule, build_model

    cfg = make_cfg()
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule).eval()
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.strategy.connect(model)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_module(path)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        torch.testing.assert_close(loaded.embed(x), model.embed(x))
    assert loaded.predict_step((x, torch.zeros(4, dtype=torch.long)), 0)["embedding"].shape == (4, 512)


@pytest.mark.parametrize("tta", [False, True])
def test_an_official_checkpoint_evaluates_like_the_reference_model(tmp_path, tta):
    """``python -m mrl.cli.evaluate ckpt=... reference=true data=...`` on a BlurPool file: the reference's per-size
    top-1 on the same images (with ``tta``, of the summed logits of each image and its mirror image)."""
    from omegaconf import OmegaConf

    from mrl.evaluation.runner import embed_split, evaluate
    from mrl_testing.configs import ROOT, eval_cfg

    reference = reference_model(False, num_classes=10, blurpool=True)
    path = tmp_path / "r50_mrl1.pt"
    save_from_ddp(reference, path)
    cfg = eval_cfg(
        None,
        ckpt=str(path),
        reference=True,
        output_dir=str(tmp_path / "eval"),
        tta=tta,
        **{"knn.metrics": ["cosine"], "baselines.enabled": False},
    )
    cfg.data = OmegaConf.load(ROOT / "conf" / "data" / "synthetic.yaml")
    cfg.data.train_size, cfg.data.val_size = 128, 96
    results = evaluate(cfg)
    assert results["head_sizes"] == NESTING

    from mrl.data.image import SyntheticDataModule

    data = SyntheticDataModule(num_classes=10, image_size=32, train_size=128, val_size=96, seed=0)
    images, labels = map(torch.cat, zip(*data.eval_dataloader("val")))
    with torch.no_grad():
        logits = torch.stack(reference(images))
        if tta:
            logits += torch.stack(reference(torch.flip(images, dims=[3])))
    assert results["tta"] is tta
    exported = embed_split(load_reference_resnet50(path), data.eval_dataloader("val"), flip=tta)["logits"]
    torch.testing.assert_close(torch.from_numpy(exported), logits / (2 if tta else 1), rtol=1e-4, atol=1e-4)
    for m, size_logits in zip(NESTING, logits):
        expected = (size_logits.argmax(-1) == labels).float().mean().item()
        assert results["metrics"][f"eval/top1@{m}"] == pytest.approx(expected, abs=1e-6)


def test_an_unknown_reference_kind_is_a_one_line_error(tmp_path):
    from mrl.evaluation.runner import evaluate
    from mrl_testing.configs import eval_cfg

    path = tmp_path / "r50.pt"
    save_from_ddp(reference_model(True), path)
    with pytest.raises(ValueError, match=r"^reference='mrle': expected false, true .* mrl, mrl_e, ff, standard"):
        evaluate(eval_cfg(None, ckpt=str(path), reference="mrle"))


def test_an_evaluation_only_set_of_some_classes(tmp_path):
    """ImageNet-A/-R style: class folders at the root, a subset of the model's classes, no train split;
    ``database_split=null only_present_classes=true`` gives the reference's top-1 among those classes."""
    import numpy as np
    from omegaconf import OmegaConf
    from PIL import Image

    from mrl.data.image import ImageFolderDataModule
    from mrl.evaluation.runner import evaluate
    from mrl_testing.configs import eval_cfg

    reference = reference_model(False, num_classes=12, blurpool=True)
    path = tmp_path / "r50_mrl1.pt"
    save_from_ddp(reference, path)
    rng = np.random.default_rng(0)
    present = [3, 7, 11]
    for label in present:
        (tmp_path / "set" / str(label)).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / "set" / str(label) / f"{i}.png"
            )
    data = {
        "_target_": "mrl.data.image.ImageFolderDataModule",
        "root": str(tmp_path / "set"),
        "train_dir": None,
        "val_dir": ".",
        "classes": "index",
        "image_size": 32,
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "batch_size": 8,
    }
    cfg = eval_cfg(
        None,
        ckpt=str(path),
        reference=True,
        output_dir=str(tmp_path / "eval"),
        database_split=None,
        only_present_classes=True,
    )
    cfg.data = OmegaConf.create(data)
    results = evaluate(cfg)
    assert results["database"] is None and results["funnel_retrieval"] == [] and results["storage"] == []
    assert not any("knn" in key or "map@" in key for key in results["metrics"])
    assert "database none (head accuracy only)" in (tmp_path / "eval" / "summary.md").read_text()

    dm = ImageFolderDataModule(**{k: v for k, v in data.items() if k != "_target_"})
    dm.set_data_config(load_reference_resnet50(path).backbone.data_config)
    images, labels = map(torch.cat, zip(*dm.eval_dataloader("val")))
    assert sorted(set(labels.tolist())) == present
    with torch.no_grad():
        logits = torch.stack(reference(images))[:, :, present]  # the reference's logits[:, :, indices]
    for m, size_logits in zip(NESTING, logits):
        expected = (torch.tensor(present)[size_logits.argmax(-1)] == labels).float().mean().item()
        assert results["metrics"][f"eval/top1@{m}"] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match=r"^data\.train_dir=null: .* database_split=null"):
        evaluate(eval_cfg(None, ckpt=str(path), reference=True, output_dir=str(tmp_path / "eval2"), data=data))
