"""A training process killed mid-run (SIGKILL, as a pre-emption would) resumes when the same command is
rerun in the same run directory: from the last checkpoint, in the same W&B run, to the same step count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import FAST, ROOT
from wandb_records import read_run

EPOCHS, BATCHES, EVERY = 3, 3, 2  # 9 optimizer steps; last.ckpt every 2 steps (mid-epoch)


def _command(run_dir) -> list[str]:
    args = [a for a in FAST if a not in ("callbacks=none", "logger=none")]
    return [
        sys.executable, "-m", "mrl.train", "experiment=digits_mrl", *args,
        f"trainer.max_epochs={EPOCHS}", f"trainer.limit_train_batches={BATCHES}",
        "logger=wandb", "callbacks=default", "callbacks.rich_progress_bar=null",
        "callbacks.rich_model_summary=null", "callbacks.learning_rate_monitor=null",
        f"callbacks.periodic_checkpoint.every_n_train_steps={EVERY}",
        f"hydra.run.dir={run_dir}",
    ]


def test_killed_run_resumes_from_last_checkpoint_in_the_same_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    last = run_dir / "checkpoints" / "last.ckpt"

    first = subprocess.Popen(_command(run_dir), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not last.is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert last.is_file(), "no checkpoint was written before the first run ended"
        os.killpg(first.pid, signal.SIGKILL)  # the run's own process group: the trainer and W&B's service
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    assert not (run_dir / "results.json").exists(), "the first run finished before it could be killed"

    import torch

    saved_step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < saved_step < EPOCHS * BATCHES

    second = subprocess.run(_command(run_dir), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    assert f"Resuming from {last}" in output
    results = json.loads((run_dir / "results.json").read_text())
    # Exactly the steps of an uninterrupted run: training went on from the checkpoint, it did not restart.
    assert results["global_step"] == EPOCHS * BATCHES
    assert not list(run_dir.rglob("*.tmp")), "a checkpoint write left its temporary file behind"

    # One W&B run across both processes. The killed one had its records still buffered in W&B's service
    # (killed with it), so its file may hold only a header: its id is in its name, as `wandb sync` sees it.
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda f: f.parent.name)
    assert len(files) == 2, files
    assert {f.name for f in files} == {f"run-{run_id}.wandb"}
    assert read_run(files[-1])["run_id"] == run_id
