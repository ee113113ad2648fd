"""Two CPU processes (`trainer=ddp_cpu`, gloo) report the same per-size validation metrics as one process
on the same data with the same weights, and share the training data between them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import lightning as L
import pytest

from mrl.data.image import SyntheticDataModule
from mrl.runs import load_module
from mrl_testing.configs import FAST, ROOT

# Sizes divisible by 2 processes x batch size: DistributedSampler pads nothing, every sample counts once.
DATA = {"image_size": 16, "train_size": 256, "val_size": 128, "batch_size": 32, "seed": 0}


def test_two_processes_match_one_process_on_the_same_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    keep = [a for a in FAST if not a.startswith(("data.", "callbacks=", "trainer.limit_", "trainer.accelerator"))]
    args = [
        sys.executable,
        "-m",
        "mrl.cli.train",
        "data=synthetic",
        *keep,
        *(f"data.{k}={v}" for k, v in DATA.items()),
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "callbacks=default",
        "callbacks.rich_progress_bar=null",
        "callbacks.rich_model_summary=null",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Starting with 2 processes" in output and "distributed_backend=gloo" in output
    saved = json.loads((run_dir / "results.json").read_text())
    # Each process trained on half of the 256 images: 4 steps of 32, not the 8 of one process.
    assert saved["global_step"] == DATA["train_size"] // (2 * DATA["batch_size"])

    # The same checkpoint validated by a single process on the same validation set.
    model = load_module(saved["best_checkpoint"])
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    single = trainer.validate(model, datamodule=SyntheticDataModule(**DATA), verbose=False)[0]
    two = saved["metrics"]
    expected = {"val/loss"} | {f"val/{name}@{m}" for m in saved["sizes"] for name in ("top1", "top5", "loss")}
    assert expected <= set(two) and expected <= set(single)
    for key in sorted(expected):
        if "top" in key:  # counts of correct predictions, summed over processes: exactly equal
            assert two[key] == float(single[key]), key
        else:  # means weighted by batch size, all-reduced (sync_dist): equal up to float rounding
            assert two[key] == pytest.approx(float(single[key]), rel=1e-5, abs=1e-6), (
                f"{key}: 2 processes {two[key]} vs 1 process {float(single[key])}; losses must be logged "
                "with sync_dist=True outside training (mrl/module.py)"
            )
