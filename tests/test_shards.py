"""Prepared shards (mrl-prepare, data=image_shards) and the uint8 path: the same recipe as the image folders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from mrl.cli.prepare import run as prepare_cli
from mrl.common.errors import ConfigError, InputError
from mrl.data.image.decode import (
    TrainDecode,
    crop_params,
    draft_factor,
    jpeg_region,
    resize_region,
    resized_crop,
    uint8_to_input,
)
from mrl.data.image.shard_writer import prepare, verify
from mrl.data.image.shards import ImageShardsDataModule
from mrl.training.procedure import build_datamodule, build_model
from mrl_testing.images import image_folder, photo
from mrl_testing.training import fit_config

LOADER = ["data.num_workers=0", "data.persistent_workers=false", "data.pin_memory=false"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, Path]:
    """An image folder with one unreadable file, and its shards (half the images stored raw)."""
    tmp = tmp_path_factory.mktemp("shards")
    src = image_folder(tmp / "src")
    (src / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp / "out"
    prepare(src, out, max_side=64, raw_fraction=0.5, workers=2, progress=False)
    return src, out


def test_prepare_writes_labels_in_folder_order_skips_bad_files_and_verifies(shards, capsys):
    src, out = shards
    assert (out / "classes.txt").read_text().split() == ["cat", "dog", "fox"]  # sorted, as ImageFolder labels
    skipped = (out / "train" / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(str(src / "train" / "cat" / "broken.jpg"))
    report = verify(out)
    assert report == {
        "train": {"images": 18, "skipped": 1, "bad": 0},
        "val": {"images": 9, "skipped": 0, "bad": 0},
    }
    from litdata import StreamingDataset

    items = [StreamingDataset(str(out / "train"))[i] for i in range(18)]
    assert 0 < sum(item["raw"] for item in items) < 18  # some raw, some JPEG
    assert sorted(item["label"] for item in items) == sorted([0] * 6 + [1] * 6 + [2] * 6)
    assert max(max(item["h"], item["w"]) for item in items) <= 64
    # a rerun skips the finished splits
    assert prepare_cli([str(src), str(out), "--max-side", "64", "--raw-fraction", "0.5", "--quiet"])["train"] == {
        "images": 18,
        "skipped": 1,
    }
    assert "already prepared" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "start"),
    [
        ({"max_side": 8}, "max_side=8"),
        ({"quality": 0}, "quality=0"),
        ({"raw_fraction": 1.5}, "raw_fraction=1.5"),
        ({"workers": 0}, "workers=0"),
    ],
)
def test_prepare_options_fail_fast(tmp_path, kwargs, start):
    with pytest.raises(ValueError, match=f"^{start}"):
        prepare(tmp_path, tmp_path / "out", **kwargs)


def test_data_module_options_fail_fast(shards, tmp_path):
    _, out = shards
    with pytest.raises(InputError, match="^data.root=.*holds no prepared shards"):
        ImageShardsDataModule(str(tmp_path))
    with pytest.raises(ConfigError, match=r"^data.scale=\[0.5, 0.1\]: use \[low, high\]"):
        ImageShardsDataModule(str(out), scale=[0.5, 0.1])
    with pytest.raises(ConfigError, match="^data.interpolation='random': use one of"):
        ImageShardsDataModule(str(out), interpolation="random")
    with pytest.raises(InputError, match="^data.test_dir='test': .* is not a prepared split"):
        ImageShardsDataModule(str(out), test_dir="test")


def test_eval_batches_equal_the_image_folders_eval_batches(tmp_path):
    """On raw-stored images (no JPEG re-encoding), uint8 + the device's normalisation == today's floats."""
    from mrl.data.image.folder import ImageFolderDataModule

    src = image_folder(tmp_path / "src", train=2, val=3)
    out = tmp_path / "out"
    prepare(src, out, max_side=512, raw_fraction=1.0, workers=1, progress=False)
    config = {"input_size": (3, 32, 32), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "crop_pct": 0.875}
    new = ImageShardsDataModule(str(out), image_size=32, interpolation="bilinear", num_workers=0, batch_size=64)
    old = ImageFolderDataModule(str(src), image_size=32, interpolation="bilinear", batch_size=64)
    for dm in (new, old):
        dm.set_data_config(config)
        dm.setup("validate")
    x8, y8 = next(iter(new.val_dataloader()))  # what Lightning's validation loop gets
    assert x8.dtype == torch.uint8
    mean, std = new.normalization
    ref = {}
    for x, y in old.eval_dataloader("val"):
        for xi, yi in zip(x, y):
            ref.setdefault(int(yi), []).append(xi)
    floats = next(iter(new.eval_dataloader("val")))  # what make eval and embedding exports get
    assert floats[0].dtype == torch.float32
    for x_new, y_new in ((uint8_to_input(x8, mean, std), y8), floats):
        got = {}
        for xi, yi in zip(x_new, y_new):
            got.setdefault(int(yi), []).append(xi)
        assert sorted(got) == sorted(ref)
        for label in ref:  # the same images per class (their order within a class may differ)
            a = torch.stack(sorted(ref[label], key=lambda t: float(t.sum())))
            b = torch.stack(sorted(got[label], key=lambda t: float(t.sum())))
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_crop_distribution_is_the_recipes():
    """Crop area shares and aspect ratios: a two-sample KS test against timm's RandomResizedCrop."""
    from scipy.stats import ks_2samp
    from timm.data.transforms import RandomResizedCropAndInterpolation

    torch.manual_seed(0)
    import random

    random.seed(0)
    W, H = 500, 375
    timm_crop = RandomResizedCropAndInterpolation(176, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    img = Image.new("RGB", (W, H))
    ref = [timm_crop.get_params(img, timm_crop.scale, timm_crop.ratio) for _ in range(4000)]
    new = [crop_params(W, H, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(4000)]

    def stats(params):
        area = np.array([h * w / (W * H) for _, _, h, w in params])
        aspect = np.log([w / h for _, _, h, w in params])
        centre_x = np.array([(j + w / 2) / W for _, j, _, w in params])
        return area, aspect, centre_x

    for a, b in zip(stats(ref), stats(new)):
        assert ks_2samp(a, b).pvalue > 0.001
    assert draft_factor(400, 400, 176, 176) == 2 and draft_factor(100, 300, 16, 16) == 4
    assert draft_factor(1500, 1500, 176, 176) == 8 and draft_factor(300, 300, 176, 176) == 1


def test_training_batches_have_the_recipes_statistics(tmp_path):
    """Many random crops of the same JPEGs through timm's train transform (full decode, float, flip on the CPU)
    and through the new path (draft decoding, uint8, normalisation and flip on the device): the per-crop
    channel means and the flip rate are compared with two-sample tests; the same crop boxes through both
    decoders give nearly the same pixels (draft decoding changes little)."""
    from scipy.stats import ks_2samp
    from timm.data import create_transform
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    rng = np.random.default_rng(1)
    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(photo(rng, 375, 500)).save(path, quality=90)
        paths.append(path)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    old = create_transform(32, is_training=True, color_jitter=0.0, interpolation="bilinear", mean=mean, std=std)
    new = TrainDecode(32)
    torch.manual_seed(0)
    old_x = torch.stack([old(Image.open(p).convert("RGB")) for p in paths for _ in range(300)])
    new_x = uint8_to_input(torch.stack([new.image(Image.open(p)) for p in paths for _ in range(300)]), mean, std, True)
    for c in range(3):
        assert ks_2samp(old_x[:, c].mean(dim=(1, 2)), new_x[:, c].mean(dim=(1, 2))).pvalue > 0.001
        assert ks_2samp(old_x[:, c].std(dim=(1, 2)), new_x[:, c].std(dim=(1, 2))).pvalue > 0.001

    def rising(x):  # channel 0 of these images rises left to right; a flipped crop falls
        return (x[:, 0, :, -8:].mean(dim=(1, 2)) > x[:, 0, :, :8].mean(dim=(1, 2))).float().mean().item()

    assert abs(rising(old_x) - rising(new_x)) < 0.08

    # the same boxes: draft decoding at 1/2..1/8 scale against the full decode
    diffs = []
    for p in paths:
        for _ in range(50):
            box = crop_params(500, 375, (0.08, 1.0), (3 / 4, 4 / 3))
            full = F.pil_to_tensor(
                F.resized_crop(Image.open(p).convert("RGB"), *box, [32, 32], InterpolationMode.BILINEAR)
            )
            fast = resized_crop(Image.open(p), box, (32, 32), "bilinear")
            diffs.append((fast.float() - full.float()).abs().mean().item() / 255)
    assert np.mean(diffs) < 0.02 and np.max(diffs) < 0.06


@pytest.mark.parametrize(("height", "width"), [(375, 500), (512, 341), (333, 333)])
def test_simplejpeg_decodes_the_pixels_pil_decodes_at_the_same_draft_scale(height, width):
    """The training decoder (simplejpeg) against PIL's draft path on the same boxes: equal bytes, at every draft
    factor, odd sides too (PIL's draft takes min(W // w, H // h) as its scale, so it is asked for floor sizes)."""
    import io

    pytest.importorskip("simplejpeg")
    buffer = io.BytesIO()
    Image.fromarray(photo(np.random.default_rng(height), height, width)).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    factors = set()
    for i in range(60):
        side = (16, 32, 64, 176)[i % 4]
        box = crop_params(width, height, (0.08, 1.0), (3 / 4, 4 / 3))
        factors.add(draft_factor(box[2], box[3], side, side))
        pil = Image.open(io.BytesIO(data))
        expected = resized_crop(pil, box, (side, side), "bilinear")
        assert pil.size == tuple(-(-n // draft_factor(box[2], box[3], side, side)) for n in (width, height))
        region = jpeg_region(data, height, width, box, (side, side))
        assert torch.equal(resize_region(region, (side, side), "bilinear"), expected)
        assert torch.equal(
            resize_region(region, (side, side), "lanczos"),
            resized_crop(Image.open(io.BytesIO(data)), box, (side, side), "lanczos"),
        )
    assert factors >= {1, 2, 4}


def test_uint8_batches_become_model_input_on_the_device_and_floats_pass(make_cfg, shards):
    _, out = shards
    cfg = make_cfg("data=image_shards", f"data.root={out}", "data.batch_size=4", *LOADER)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    floats = (torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
    assert model.on_after_batch_transfer(floats, 0) is floats
    u8 = (torch.full((2, 3, 8, 8), 255, dtype=torch.uint8), torch.tensor([0, 1]))
    x, y = model.on_after_batch_transfer(u8, 0)
    assert x.dtype == torch.float32 and torch.equal(y, u8[1])
    expected = (1 - torch.tensor(model.backbone.data_config["mean"])) / torch.tensor(model.backbone.data_config["std"])
    torch.testing.assert_close(x[0, :, 0, 0], expected)


def test_the_imagenet_recipe_trains_channels_last_on_shards(shards, tmp_path):
    """experiment=imagenet_mrl on data=imagenet_shards (the recipe's ResNet-50 with BlurPool, small crops): the
    convolution weights are channels-last, and so is every batch reaching a convolution, in training and in
    validation (uint8 batches made channels-last on the device) and through ``embed`` on the float batches
    make eval uses."""
    from torch import nn

    from mrl_testing.configs import compose_train

    _, out = shards
    cfg = compose_train(
        [
            "experiment=imagenet_mrl",
            "data=imagenet_shards",
            f"data.root={out}",
            "data.image_size=64",
            "data.batch_size=3",
            *LOADER,
            "trainer=cpu",
            "trainer.devices=1",
            "trainer.precision=32",
            "callbacks=none",
            "logger=none",
        ],
        tmp_path / "run",
    )
    assert cfg.model.channels_last is True
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    blurs = [m for m in model.backbone.modules() if type(m).__name__ == "BlurConv2d"]
    assert blurs and len(convs) > 50  # the recipe's ResNet-50 with BlurPool

    def layout(x: torch.Tensor) -> str:  # at 64 px, ResNet-50's last maps are 2 x 2: no layout is ambiguous
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            return "channels_last"
        return "contiguous" if x.is_contiguous() else "strided"

    seen: list[tuple[bool, str, str]] = []  # (training, dtype, layout) of every convolution's input
    for conv in convs:
        conv.register_forward_pre_hook(lambda m, args: seen.append((m.training, str(args[0].dtype), layout(args[0]))))
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 2
    assert {training for training, _, _ in seen} == {True, False}  # training steps and a validation batch
    assert set(seen) <= {(True, "torch.float32", "channels_last"), (False, "torch.float32", "channels_last")}
    kernels = [p for p in model.backbone.parameters() if p.ndim == 4 and p.shape[-1] > 1]  # 1 x 1: either layout
    assert len(kernels) > 10 and {layout(p) for p in kernels} == {"channels_last"}  # still, after the steps
    seen.clear()
    x, _ = next(iter(datamodule.eval_dataloader("val")))  # float NCHW, as make eval and make embed feed it
    assert layout(x) == "contiguous"
    with torch.no_grad():
        model.eval().embed(x)
    assert seen and {s[2] for s in seen} == {"channels_last"}


class RecordSamples(L.Callback):
    def __init__(self) -> None:
        self.seen: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # the labels and the uint8 images before the flip: hash the images the loader handed over
        prints = [hashlib.sha1(image.numpy().tobytes()).hexdigest()[:12] for image in trainer._last_u8]
        self.seen.setdefault(trainer.current_epoch, []).extend(prints)


class KeepUint8(L.Callback):
    """Records the uint8 batch before the model turns it into floats."""

    def on_train_start(self, trainer, pl_module):
        hook = pl_module.on_after_batch_transfer

        def keep(batch, dataloader_idx):
            trainer._last_u8 = batch[0].clone()
            return hook(batch, dataloader_idx)

        pl_module.on_after_batch_transfer = keep


@pytest.mark.parametrize("workers", [2])  # litdata splits the chunks among the workers; its state covers them
def test_a_run_stopped_mid_epoch_continues_its_epoch(tmp_path, make_cfg, shards, workers):
    """The StreamingDataLoader's state travels in the checkpoint: the resumed run trains on the rest of the
    epoch, in the order the run that never stopped used (18 images, batches of 3: 6 an epoch)."""
    _, out = shards
    cfg = make_cfg(
        "data=image_shards",
        f"data.root={out}",
        "data.batch_size=3",
        "data.draft=false",
        "data.scale=[1.0,1.0]",  # deterministic crops (the whole image, center-cropped square), so an image's
        "data.ratio=[1.0,1.0]",  # pixels name it
        "trainer.limit_train_batches=null",
        *LOADER,
        f"data.num_workers={workers}",
    )
    whole = RecordSamples()
    fit_config(cfg, [KeepUint8(), whole], seed=0, max_epochs=2)
    assert len(whole.seen[0]) == len(whole.seen[1]) == 18
    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1, save_top_k=-1
    )
    first, second = RecordSamples(), RecordSamples()
    fit_config(cfg, [KeepUint8(), first, ckpt], seed=0, max_steps=8)  # 2 of epoch 1's 6 batches
    fit_config(cfg, [KeepUint8(), second], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), seed=0, max_epochs=2)
    assert len(first.seen[1]) == 6 and 0 not in second.seen
    assert first.seen[1] + second.seen[1] == whole.seen[1]  # the same epoch as without the stop
    assert sorted(whole.seen[0]) == sorted(whole.seen[1]) and whole.seen[0] != whole.seen[1]


@pytest.mark.slow  # 17-45 s of whole processes; CI runs it with the slow tests (make test-slow)
def test_an_interrupted_prepare_resumes_where_it_stopped(tmp_path):
    """Killed after a few chunks, a rerun resumes from litdata's checkpoints: every image once, none twice."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = image_folder(tmp_path / "src", train=60, val=2)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mrl.cli.prepare", str(src), str(out), "--workers", "1", "--chunk-bytes", "20KB"]
    proc = subprocess.Popen(
        [*cmd, "--quiet"], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "train").glob("chunk-*.bin"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    interrupted = proc.poll() is None
    if interrupted:
        os.killpg(proc.pid, signal.SIGKILL)  # the prepare and its litdata workers
    proc.wait()
    assert (
        prepare_cli([str(src), str(out), "--workers", "1", "--chunk-bytes", "20KB", "--quiet"])["train"]["images"]
        == 180
    )
    assert verify(out)["train"] == {"images": 180, "skipped": 0, "bad": 0}
    from litdata import StreamingDataset

    dataset = StreamingDataset(str(out / "train"))
    digests = {hashlib.sha1(dataset[i]["data"]).hexdigest() for i in range(len(dataset))}
    assert len(digests) == 180  # no image written twice


def test_workers_default_to_the_available_cores_shared_among_the_machines_processes(monkeypatch):
    from mrl.data import loader_options as module

    monkeypatch.setattr(module.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(module.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert module.loader_workers(1) == 15 and module.loader_workers(4) == 3  # one core left for the trainer
    monkeypatch.setattr(module.os, "sched_getaffinity", lambda pid: set(range(4)))  # pinned (SLURM): its own
    assert module.loader_workers(4) == 3


def test_loaders_default_to_pinned_memory_on_a_gpu_and_workers_from_the_cores(shards, make_cfg, monkeypatch):
    """data=image_shards leaves num_workers and pin_memory to null: each loader takes the cores this process may
    use (shared among the machine's training processes) and pins memory only when its batches go to a GPU."""
    from types import SimpleNamespace

    from mrl.data import loader_options as module

    _, out = shards
    cfg = make_cfg("data=image_shards", f"data.root={out}", "data.batch_size=3")
    assert cfg.data.num_workers is None and cfg.data.pin_memory is None
    datamodule = build_datamodule(cfg)
    build_model(cfg, datamodule)
    monkeypatch.setattr(module.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(module.os, "sched_getaffinity", lambda pid: set(range(16)))
    datamodule.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        assert (loader.num_workers, loader.pin_memory) == (15, False)
    # four GPUs on this machine (a trainer as Lightning's would look to the data module): pinned, 3 workers each
    gpu = SimpleNamespace(num_devices=4, strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    datamodule.trainer = gpu
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        assert (loader.num_workers, loader.pin_memory) == (3, True)
    pinned_off = make_cfg("data=image_shards", f"data.root={out}", "data.pin_memory=false", "data.num_workers=2")
    explicit = build_datamodule(pinned_off)
    build_model(pinned_off, explicit)
    explicit.trainer = gpu
    loader = explicit.train_dataloader()
    assert (loader.num_workers, loader.pin_memory) == (2, False)  # what the user sets is kept


def test_data_benchmark_runs_end_to_end_and_ends_with_its_ratio_line(capsys):
    import importlib.util
    import re

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "data.py"
    spec = importlib.util.spec_from_file_location("bench_data", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--n", "12", "--batch", "4", "--rounds", "1", "--size", "32"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"data: \d+ img/s per core \(new\) vs \d+ img/s per core \(ImageFolder\): [\d.]+x", last)
