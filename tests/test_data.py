"""Fast tests of the image data modules (offline: digits, synthetic, tiny files written here)."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mrl.common.errors import ConfigError
from mrl.data.image import (
    TORCHVISION_SETS,
    DigitsDataModule,
    ImageFolderDataModule,
    SyntheticDataModule,
    TorchvisionDataModule,
)

# The resolved timm data config of a typical backbone, small input for speed.
DATA_CFG = {
    "input_size": (3, 16, 16),
    "interpolation": "bilinear",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.875,
    "crop_mode": "center",
}


def _all(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


# ----------------------------------------------------------------------------- digits
def test_digits_shapes_normalisation_and_split():
    dm = DigitsDataModule(image_size=16, in_chans=3, batch_size=128, seed=0)
    assert (dm.num_classes, dm.in_chans, dm.name) == (10, 3, "digits")
    dm.setup("fit")
    assert dm.class_names == [str(i) for i in range(10)]
    x_tr, y_tr = _all(dm.eval_dataloader("train"))
    x_va, y_va = _all(dm.val_dataloader())
    assert x_tr.shape[1:] == (3, 16, 16) and x_tr.dtype == torch.float32 and y_tr.dtype == torch.long
    assert len(y_tr) + len(y_va) == 1797 and len(y_va) == round(0.2 * 1797)
    assert torch.equal(x_tr[:, 0], x_tr[:, 2])  # channels repeated
    assert abs(x_tr.mean().item()) < 1e-3 and abs(x_tr.std().item() - 1.0) < 1e-2
    # stratified: every class in both splits, in (nearly) the overall proportion
    for y in (y_tr, y_va):
        counts = torch.bincount(y, minlength=10).float() / len(y)
        assert counts.min() > 0.08 and counts.max() < 0.12
    # test falls back to val
    x_te, y_te = _all(dm.test_dataloader())
    assert torch.equal(x_te, x_va) and torch.equal(y_te, y_va)


def test_digits_deterministic_and_seeded():
    a, b, c = DigitsDataModule(seed=3), DigitsDataModule(seed=3), DigitsDataModule(seed=4)
    for dm in (a, b, c):
        dm.setup()
    ya, yb, yc = (_all(dm.eval_dataloader("val"))[1] for dm in (a, b, c))
    assert torch.equal(ya, yb) and not torch.equal(ya, yc)
    assert torch.equal(_all(a.train_dataloader())[1], _all(b.train_dataloader())[1])


def test_digits_augment_and_grayscale():
    dm = DigitsDataModule(image_size=24, in_chans=1, augment=True, batch_size=32)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 24, 24) and y.shape == (32,)


def test_digits_bad_val_fraction():
    with pytest.raises(ValueError, match=r"data\.val_fraction=1\.5"):
        DigitsDataModule(val_fraction=1.5)


def test_eval_dataloader_not_shuffled_and_split_checked():
    dm = DigitsDataModule(batch_size=100)
    dm.setup()
    first = _all(dm.eval_dataloader("train"))[1]
    second = _all(dm.eval_dataloader("train"))[1]
    assert torch.equal(first, second)
    train_order = _all(dm.train_dataloader())[1]
    assert not torch.equal(train_order, first) and Counter(train_order.tolist()) == Counter(first.tolist())
    with pytest.raises(ValueError, match="train, val, test"):
        dm.eval_dataloader("database")


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_deterministic_and_learnable():
    kw = {"num_classes": 5, "image_size": 8, "in_chans": 3, "train_size": 200, "val_size": 100, "noise": 3.0}
    a, b = SyntheticDataModule(**kw, seed=1), SyntheticDataModule(**kw, seed=1)
    a.setup(), b.setup()
    x_tr, y_tr = _all(a.eval_dataloader("train"))
    x_va, y_va = _all(a.val_dataloader())
    assert torch.equal(x_tr, _all(b.eval_dataloader("train"))[0])
    assert x_tr.shape == (200, 3, 8, 8) and y_va.dtype == torch.long
    assert torch.bincount(y_tr).tolist() == [40] * 5
    # nearest-class-mean on raw pixels: far above chance (0.2)
    means = torch.stack([x_tr[y_tr == c].mean(0).flatten() for c in range(5)])
    pred = torch.cdist(x_va.flatten(1), means).argmin(1)
    assert (pred == y_va).float().mean().item() > 0.6
    assert len(a.class_names) == 5


# ----------------------------------------------------------------------------- image folders
def _png(path: Path, color: tuple[int, int, int], size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), color, dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    colors = {"cat": (255, 0, 0), "dog": (0, 255, 0), "fox": (0, 0, 255)}
    for split, n in (("train", 4), ("val", 2)):
        for name, color in colors.items():
            for i in range(n):
                _png(tmp_path / split / name / f"{i}.png", color)
    return tmp_path


def test_image_folder_loads_with_data_config(folder: Path):
    dm = ImageFolderDataModule(root=str(folder), batch_size=5)
    assert (dm.num_classes, dm.in_chans) == (3, 3)
    dm.set_data_config(DATA_CFG)
    dm.setup("fit")
    assert dm.class_names == ["cat", "dog", "fox"]
    x, y = _all(dm.train_dataloader())
    assert x.shape == (12, 3, 16, 16) and y.dtype == torch.long
    x, y = _all(dm.eval_dataloader("val"))
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 1, 1, 2, 2]
    assert _all(dm.test_dataloader())[1].tolist() == y.tolist()  # no test/: test is val
    dm2 = ImageFolderDataModule(root=str(folder), image_size=20)
    dm2.set_data_config(DATA_CFG)
    assert next(iter(dm2.eval_dataloader("val")))[0].shape[-2:] == (20, 20)


def test_image_folder_skips_truncated(folder: Path):
    good = (folder / "train" / "dog" / "0.png").read_bytes()
    (folder / "train" / "dog" / "9.png").write_bytes(good[: len(good) // 2])
    dm = ImageFolderDataModule(root=str(folder), batch_size=4)
    dm.set_data_config(DATA_CFG)
    _, y = _all(dm.eval_dataloader("train"))
    assert len(y) == 13 and dm.num_bad_images == 1
    assert dm.bad_image_paths()[0].endswith("9.png")
    _all(dm.eval_dataloader("train"))
    assert dm.num_bad_images == 1  # counted once per file
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        dm.teardown("fit")

    strict = ImageFolderDataModule(root=str(folder), skip_bad_images=False)
    strict.set_data_config(DATA_CFG)
    with pytest.raises(RuntimeError, match="9.png"):
        _all(strict.eval_dataloader("train"))


def test_image_folder_empty_class(folder: Path):
    (folder / "val" / "owl").mkdir()
    (folder / "train" / "owl").mkdir()
    _png(folder / "train" / "owl" / "0.png", (9, 9, 9))
    with pytest.raises(FileNotFoundError, match=r"val/owl has no images"):
        ImageFolderDataModule(root=str(folder))


def test_image_folder_errors(folder: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"data\.root=.*nowhere does not exist"):
        ImageFolderDataModule(root=str(tmp_path / "nowhere"))
    for p in sorted((folder / "val").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (folder / "val").rmdir()
    with pytest.raises(FileNotFoundError, match=r"data\.val_dir=val not found"):
        ImageFolderDataModule(root=str(folder))
    (folder / "val" / "cat").mkdir(parents=True)
    _png(folder / "val" / "cat" / "0.png", (1, 2, 3))
    with pytest.raises(ValueError, match=r"different classes.*missing \['dog', 'fox'\]"):
        ImageFolderDataModule(root=str(folder))


# ----------------------------------------------------------------------------- torchvision sets
def _idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, n_train: int = 40, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def test_torchvision_num_classes_table_and_missing_root(tmp_path: Path):
    assert TorchvisionDataModule(name="cifar100", root=str(tmp_path)).num_classes == 100
    assert TORCHVISION_SETS["svhn"].num_classes == 10
    with pytest.raises(FileNotFoundError, match=r"data\.root=.*missing does not hold cifar10.*data\.download=true"):
        TorchvisionDataModule(name="cifar10", root=str(tmp_path / "missing"))
    dm = TorchvisionDataModule(name="cifar10", root=str(tmp_path))  # exists but empty
    with pytest.raises(FileNotFoundError, match=r"does not hold cifar10"):
        dm.setup()
    with pytest.raises(ValueError, match=r"data\.name='imagenet42'"):
        TorchvisionDataModule(name="imagenet42", root=str(tmp_path))


def test_torchvision_mnist_from_local_copy(tmp_path: Path):
    _fake_mnist(tmp_path)
    dm = TorchvisionDataModule(name="mnist", root=str(tmp_path), in_chans=3, batch_size=8)
    assert (dm.num_classes, dm.in_chans, dm.name) == (10, 3, "mnist")
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 28, 28) and y.dtype == torch.long
    assert torch.equal(x[:, 0], x[:, 1])
    assert len(dm.class_names) == 10
    assert len(_all(dm.val_dataloader())[1]) == 20  # val is the official test split

    held = TorchvisionDataModule(name="mnist", root=str(tmp_path), val_split=0.25, image_size=16)
    held.set_data_config(DATA_CFG)
    x_tr, _ = _all(held.eval_dataloader("train"))
    x_va, _ = _all(held.eval_dataloader("val"))
    assert (len(x_tr), len(x_va), len(_all(held.test_dataloader())[1])) == (30, 10, 20)
    assert x_tr.shape[1:] == (3, 16, 16)


def test_data_config_after_setup_rebuilds():
    dm = DigitsDataModule(image_size=None, batch_size=4)
    dm.setup()
    assert next(iter(dm.val_dataloader()))[0].shape[-1] == 32
    dm.set_data_config({"input_size": (3, 40, 40)})
    assert next(iter(dm.val_dataloader()))[0].shape[-1] == 40


# ----------------------------------------------------------------------------- fixed class lists
def _flat_folder(root: Path, names, per_class: int = 2) -> Path:
    for name in names:
        for i in range(per_class):
            _png(root / name / f"{i}.png", (10 * i, 100, 200))
    return root


def test_image_folder_with_imagenet_class_order_holds_a_subset(tmp_path: Path):
    from timm.data import ImageNetInfo

    wnids = ImageNetInfo().label_names()
    picked = [wnids[999], wnids[1], wnids[500]]
    root = _flat_folder(tmp_path / "imagenet-a", picked)
    dm = ImageFolderDataModule(root=str(root), train_dir=None, val_dir=".", classes="imagenet1k", batch_size=4)
    dm.set_data_config(DATA_CFG)
    assert dm.num_classes == 1000 and dm.class_names == wnids
    _, y = _all(dm.eval_dataloader("val"))
    assert sorted(set(y.tolist())) == [1, 500, 999]  # their ImageNet-1k labels, not 0, 1, 2
    with pytest.raises(ValueError, match=r"^data\.train_dir=null: .* has no train split .* database_split=null"):
        dm.train_dataloader()
    _png(root / "n00000000" / "0.png", (0, 0, 0))
    with pytest.raises(ValueError, match=r"^data\.classes=imagenet1k: .* not classes of it: \['n00000000'\]"):
        ImageFolderDataModule(root=str(root), train_dir=None, val_dir=".", classes="imagenet1k")


def test_image_folder_with_numbered_class_folders(tmp_path: Path):
    root = _flat_folder(tmp_path / "v2", ["0", "2", "10"])  # sorted as text: 0, 10, 2
    dm = ImageFolderDataModule(root=str(root), train_dir=None, val_dir=".", classes="index", batch_size=8)
    dm.set_data_config(DATA_CFG)
    assert dm.num_classes == 11
    dm.setup("validate")
    dataset = dm._dataset("val", train=False)
    assert all(label == int(Path(path).parent.name) for path, label in dataset.samples)
    _png(root / "cat" / "0.png", (0, 0, 0))
    with pytest.raises(ValueError, match=r"^data\.classes=index: folder names must be label numbers, found \['cat'\]"):
        ImageFolderDataModule(root=str(root), train_dir=None, val_dir=".", classes="index")


def test_image_folder_with_a_class_list_file(folder: Path, tmp_path: Path):
    names = tmp_path / "classes.txt"
    names.write_text("fox\ncat\nowl\ndog\n")
    dm = ImageFolderDataModule(root=str(folder), classes=str(names), batch_size=6)
    dm.set_data_config(DATA_CFG)
    assert dm.class_names == ["fox", "cat", "owl", "dog"] and dm.num_classes == 4
    _, y = _all(dm.eval_dataloader("val"))
    assert y.tolist() == [1, 1, 3, 3, 0, 0]  # cat, dog, fox in folder order, labelled by the file
    with pytest.raises(ValueError, match=r"^data\.classes='nowhere\.txt': expected null, imagenet1k, index"):
        ImageFolderDataModule(root=str(folder), classes="nowhere.txt")


# ------------------------------------------------------------------------------------------ loader options
def test_every_data_module_takes_the_loader_keys_with_its_own_defaults():
    """The loader keys are declared once (LoaderOptions) and still show in each module's signature, where config
    checks and help() look for a module's keys."""
    import inspect

    from mrl.data.image import ImageShardsDataModule
    from mrl.data.loader_options import LoaderOptions
    from mrl.data.text import TextClassificationDataModule, TextPairsDataModule

    defaults = {
        DigitsDataModule: (64, 0, False, False, 0),
        SyntheticDataModule: (64, 0, False, False, 0),
        ImageFolderDataModule: (64, 0, False, False, 0),
        TorchvisionDataModule: (64, 0, False, False, 0),
        ImageShardsDataModule: (256, None, None, True, 0),
        TextClassificationDataModule: (32, 0, False, False, 0),
        TextPairsDataModule: (32, 0, False, False, 0),
    }
    for module, expected in defaults.items():
        parameters = inspect.signature(module).parameters
        assert tuple(parameters)[-5:] == LoaderOptions.keys(), module
        assert tuple(parameters[k].default for k in LoaderOptions.keys()) == expected, module


def test_loader_options_reach_the_loaders_and_the_saved_hyperparameters():
    dm = DigitsDataModule(image_size=8, batch_size=7, seed=3)
    assert dict(dm.hparams) == {
        "image_size": 8,
        "in_chans": 3,
        "val_fraction": 0.2,
        "augment": False,
        "max_shift": None,
        "batch_size": 7,
        "num_workers": 0,
        "pin_memory": False,
        "persistent_workers": False,
        "seed": 3,
    }
    loader = dm.train_dataloader()
    assert (loader.batch_size, loader.num_workers, loader.sampler.seed) == (7, 0, 3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
        DigitsDataModule(batchsize=7)
    with pytest.raises(ConfigError, match=r"^data\.batch_size=0: use a positive integer"):
        DigitsDataModule(batch_size=0)


def test_null_workers_and_pinning_are_decided_for_the_trainer(monkeypatch):
    """``data.num_workers=null``: the cores this process may use, less one for the trainer; ``pin_memory=null``:
    pinned only for a GPU trainer."""
    from types import SimpleNamespace

    from mrl.data import loader_options

    monkeypatch.setattr(loader_options.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(loader_options.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    dm = DigitsDataModule(image_size=8, num_workers=None, pin_memory=None)
    dm.trainer = SimpleNamespace(num_devices=2, strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    assert (dm.num_workers, dm.pin_memory) == (3, True)  # 8 cores shared by 2 processes, one left for each trainer
    dm.trainer = SimpleNamespace(num_devices=1, strategy=SimpleNamespace(root_device=torch.device("cpu")))
    assert (dm.num_workers, dm.pin_memory) == (7, False)
