"""`make train` end to end, as a newcomer runs it (the virtual environment already exists here)."""

from __future__ import annotations

import json

from conftest import run_make


def test_make_train_runs_the_default_experiment(tmp_path):
    run_dir = tmp_path / "run"
    args = f"hydra.run.dir={run_dir} trainer.max_epochs=1 print_config=false callbacks.rich_progress_bar=null"
    run_make("train", f"ARGS={args}", timeout=900)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["experiment"] == "digits_mrl" and results["head"] == "mrl"
    assert results["sizes"] == [8, 16, 32, 64, 128, 256, 512]
    assert all(f"val/top1@{m}" in results["metrics"] for m in results["sizes"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(run_dir.glob("wandb/offline-run-*"))
