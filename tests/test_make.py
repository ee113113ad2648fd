"""`make train` end to end, as a newcomer runs it (the virtual environment already exists here)."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import ROOT


def test_make_train_runs_the_default_experiment(tmp_path):
    run_dir = tmp_path / "run"
    args = f"hydra.run.dir={run_dir} trainer.max_epochs=1 print_config=false callbacks.rich_progress_bar=null"
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(["make", "train", f"ARGS={args}"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["experiment"] == "digits_mrl" and results["head"] == "mrl"
    assert results["sizes"] == [8, 16, 32, 64, 128, 256, 512]
    assert all(f"val/top1@{m}" in results["metrics"] for m in results["sizes"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(run_dir.glob("wandb/offline-run-*"))
