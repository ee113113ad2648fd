"""A real Hydra multirun: one directory per job, a failing job recorded while the others complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mrl_testing.configs import FAST, ROOT


@pytest.mark.slow  # 17-45 s of whole processes; CI runs it with the slow tests (make test-slow)
def test_multirun_over_heads_one_directory_per_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "mrl.cli.train",
        "--multirun",
        "experiment=digits_mrl",
        "head=mrl,standard,ff",
        "model.head.dim=16",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep_dir}",
        *FAST,
    ]
    args = [a if a != "logger=none" else "logger=csv" for a in args]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 3
    heads = {json.loads((job / "results.json").read_text())["head"] for job in jobs}
    assert heads == {"mrl", "standard", "ff"}
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["done"] == 3 and summary["failed"] == 0


@pytest.mark.slow  # 17-45 s of whole processes; CI runs it with the slow tests (make test-slow)
def test_failing_job_is_recorded_and_others_go_on(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "mrl.cli.train",
        "--multirun",
        "experiment=digits_mrl",
        "model.nesting=[8,16,32],[8,8]",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep_dir}",
        *FAST,
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["done"] == 1 and summary["failed"] == 1, summary
    failed = [job for job in summary["jobs"] if job["status"] == "failed"]
    assert "model.nesting" in failed[0]["error"]
    assert "Sweep finished: 1 done, 1 failed" in result.stdout + result.stderr


@pytest.mark.slow  # 17-45 s of whole processes; CI runs it with the slow tests (make test-slow)
def test_optuna_sweep_runs_trials_and_reports_the_best(tmp_path):
    sweep_dir = tmp_path / "optuna"
    args = [
        sys.executable,
        "-m",
        "mrl.cli.train",
        "--multirun",
        "experiment=digits_mrl",
        "sweep=optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep_dir}",
        *FAST,
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    best = (sweep_dir / "optimization_results.yaml").read_text()
    assert "best_params" in best and "model.optimizer.lr" in best
    assert json.loads((sweep_dir / "sweep_summary.json").read_text())["done"] == 2


def test_a_sweep_over_the_heads_of_a_recipe_keeps_its_jobs_together(tmp_path):
    """experiment=digits names each run after its head (digits_mrl, ...); a sweep=heads of it files every job
    under the recipe's name instead: one sweep directory, one summary, one name (so one W&B group)."""
    args = [
        sys.executable,
        "-m",
        "mrl.cli.train",
        "--multirun",
        "experiment=digits",
        "sweep=heads",
        "trainer.max_epochs=1",
        f"paths.log_dir={tmp_path}",
        *FAST,
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "multirun" / "digits").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [job.name for job in jobs] == ["0_mrl", "1_mrl_e", "2_standard"]
    results = [json.loads((job / "results.json").read_text()) for job in jobs]
    assert [(r["experiment"], r["head"]) for r in results] == [("digits", h) for h in ("mrl", "mrl_e", "standard")]
    assert json.loads((sweep_dir / "sweep_summary.json").read_text())["done"] == 3
