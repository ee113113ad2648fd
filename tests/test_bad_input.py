"""Bad input fails fast and clearly: a one-line error naming the key and its value, raised before any
training (no checkpoint written); a NaN loss stops the run keeping the last good checkpoint; unreadable
images are skipped and counted; checkpoints with pickled objects are refused unless the user opts out.

The error messages of the pieces themselves are tested next to them (test_nesting, test_data,
test_train); here they are driven through the whole run, as `python -m mrl.cli.train` drives them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mrl.runs import load_module
from mrl.training.classifier import MatryoshkaClassifier
from mrl.training.procedure import build_datamodule, build_model, run_training
from mrl_testing.configs import FAST, ROOT

CHECKPOINTS = [
    "callbacks=default",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
    "callbacks.learning_rate_monitor=null",
]


def _png(path: Path, color: tuple[int, int, int], size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), color, dtype=np.uint8)).save(path)


def _image_folder(root: Path, per_class: dict[str, int] | None = None) -> Path:
    colors = {"cat": (255, 0, 0), "dog": (0, 255, 0), "fox": (0, 0, 255)}
    for split, n in (("train", 4), ("val", 2)):
        for name, color in colors.items():
            for i in range((per_class or {}).get(f"{split}/{name}", n)):
                _png(root / split / name / f"{i}.png", color)
            (root / split / name).mkdir(parents=True, exist_ok=True)
    return root


def _fails_before_training(cfg, match: str) -> str:
    run_dir = Path(cfg.paths.output_dir)
    with pytest.raises(Exception, match=match) as info:
        run_training(cfg, run_dir)
    message = str(info.value)
    assert "\n" not in message, message
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "results.json").exists()
    return message


@pytest.mark.parametrize(
    ("nesting", "match"),
    [
        ("[16,8,16]", r"model\.nesting=\[16, 8, 16\]: size 16 is given twice; sizes must be distinct"),
        ("[8,8,16]", r"model\.nesting=\[8, 8, 16\]: size 8 is given twice; sizes must be distinct"),
        ("[0,8]", r"model\.nesting=\[0, 8\]"),
        ("[8,abc]", r"model\.nesting=\[8, 'abc'\]: sizes must be integers"),
        ("[]", r"model\.nesting=\[\]: at least one size"),
        ("[8,16,1024]", r"model\.nesting=\[8, 16, 1024\]: largest size 1024 exceeds the embedding width 512"),
    ],
)
def test_bad_nesting_lists_fail_before_training(make_cfg, nesting, match):
    _fails_before_training(make_cfg(f"model.nesting={nesting}", *CHECKPOINTS), match)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["head=ff", "model.head.dim=1024"], r"head\.dim=1024: must be an integer in 1\.\.512"),
        (["model.backbone.name=resnet19"], r"model\.backbone\.name='resnet19': not a timm model; did you mean"),
        (["model.num_classes=7"], r"model\.num_classes=7: does not match the data .* 10 classes"),
    ],
)
def test_bad_model_settings_fail_before_training(make_cfg, overrides, match):
    _fails_before_training(make_cfg(*overrides, *CHECKPOINTS), match)


def test_bad_data_roots_fail_before_training(make_cfg, tmp_path):
    data = ["data=image_folder", "data.num_workers=0", "data.persistent_workers=false", "data.pin_memory=false"]
    missing = tmp_path / "nowhere"
    _fails_before_training(
        make_cfg(*data, f"data.root={missing}", *CHECKPOINTS), rf"data\.root={missing} does not exist"
    )
    bare = tmp_path / "bare"
    (bare / "train").mkdir(parents=True)
    (bare / "val").mkdir()
    _fails_before_training(
        make_cfg(*data, f"data.root={bare}", *CHECKPOINTS), rf"data\.root={bare}: train/ has no class folders"
    )
    empty_class = _image_folder(tmp_path / "empty_class", {"train/fox": 0})
    _fails_before_training(
        make_cfg(*data, f"data.root={empty_class}", *CHECKPOINTS), r"class folder .*train/fox has no images"
    )
    # The class count of the head must match the folder's three classes.
    ok = _image_folder(tmp_path / "ok")
    _fails_before_training(
        make_cfg(*data, f"data.root={ok}", "model.num_classes=10", *CHECKPOINTS),
        r"model\.num_classes=10: does not match the data \(ImageFolderDataModule has 3",
    )


@pytest.mark.slow  # 16-18 s of whole processes; CI runs it with the slow tests (make test-slow)
def test_command_line_shows_the_error_last_and_exits_nonzero(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "mrl.cli.train",
        *FAST,
        "data=image_folder",
        f"data.root={tmp_path / 'nowhere'}",
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(
        args, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    assert lines[-1] == (
        f"FileNotFoundError: data.root={tmp_path / 'nowhere'} does not exist or is not a folder; "
        "point it at a folder holding train/ and val/ class folders (ImageNet layout)"
    )
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.slow  # 16-18 s of whole processes; CI runs it with the slow tests (make test-slow)
def test_eval_command_line_gives_one_line_for_a_wrong_run(tmp_path):
    missing = tmp_path / "no_such_run"
    result = subprocess.run(
        [sys.executable, "-m", "mrl.cli.evaluate", f"run={missing}", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"FileNotFoundError: run={str(missing)!r}: neither a run directory nor a checkpoint file"
    )


class NaNAfterSteps(MatryoshkaClassifier):
    """A module whose logits turn NaN from training step ``NAN_AT`` on (a diverging run, on cue)."""

    NAN_AT = 5

    def forward(self, x):
        logits = super().forward(x)
        if self.training and self.global_step >= self.NAN_AT:
            return logits * float("nan")
        return logits


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg(
        f"model._target_={__name__}.NaNAfterSteps",
        "trainer.max_epochs=3",
        *CHECKPOINTS,
        "callbacks.periodic_checkpoint.every_n_train_steps=2",
    )
    with pytest.raises(FloatingPointError, match=r"train/loss is nan at step 5 .*last good checkpoint is kept"):
        run_training(cfg, cfg.paths.output_dir)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 4  # the last step before the NaN (saved every 2 steps)
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "results.json").exists()
    load_module(last)  # and it loads back


def test_truncated_image_is_skipped_and_counted_in_a_training_run(make_cfg, tmp_path):
    root = _image_folder(tmp_path / "images")
    good = (root / "train" / "dog" / "0.png").read_bytes()
    (root / "train" / "dog" / "9.png").write_bytes(good[: len(good) // 2])
    cfg = make_cfg(
        "data=image_folder",
        f"data.root={root}",
        "data.batch_size=5",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.pin_memory=false",
        "trainer.max_epochs=1",
    )
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\) under data\.root=.*9\.png"):
        results = run_training(cfg, cfg.paths.output_dir)
    # 13 files, 12 readable: the bad one is replaced by the next readable image, 13 samples in 3 batches.
    assert results["global_step"] == 3
    assert results["num_classes"] == 3 and np.isfinite(results["metrics"]["val/loss"])


class Payload:
    """Any custom class: unpickling it could run arbitrary code."""

    def __reduce__(self):
        return (print, ("unpickled",))


def test_checkpoint_with_pickled_object_is_refused_unless_opted_out(make_cfg, tmp_path, capsys):
    cfg = make_cfg()
    model = build_model(cfg, build_datamodule(cfg))
    path = tmp_path / "untrusted.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "extra": Payload()}, path)
    with pytest.raises(
        ValueError,
        match=r"untrusted.ckpt'?: not a readable checkpoint \(it holds a pickled object, "
        r"print, .* pass weights_only=false\)",
    ):
        load_module(path)
    assert "unpickled" not in capsys.readouterr().out
    loaded = load_module(path, weights_only=False)  # the user's explicit opt-out for a trusted file
    assert "unpickled" in capsys.readouterr().out
    assert loaded.sizes == model.sizes
