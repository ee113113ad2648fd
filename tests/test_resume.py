"""A training process killed mid-run (SIGKILL, as a pre-emption would) resumes when the same command is
rerun in the same run directory: from the last checkpoint, in the same W&B run, to the same step count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mrl.runs import latest_resume_checkpoint
from mrl.training.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from mrl_testing.configs import CONF_DIR, FAST, ROOT
from mrl_testing.wandb_records import read_finished_run

EPOCHS, BATCHES, EVERY = 3, 3, 2  # 9 optimizer steps; last.ckpt every 2 steps (mid-epoch)


OVERRIDES = [
    *(a for a in FAST if a not in ("callbacks=none", "logger=none")),
    f"trainer.max_epochs={EPOCHS}",
    f"trainer.limit_train_batches={BATCHES}",
    "logger=wandb",
    "callbacks=default",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
    "callbacks.learning_rate_monitor=null",
    f"callbacks.periodic_checkpoint.every_n_train_steps={EVERY}",
]


def _command(run_dir) -> list[str]:
    return [sys.executable, "-m", "mrl.cli.train", "experiment=digits_mrl", *OVERRIDES, f"hydra.run.dir={run_dir}"]


def _wait_for(path, running, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file() and running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.is_file(), f"{path} was not written"


@pytest.mark.slow  # 17-45 s of whole processes; CI runs it with the slow tests (make test-slow)
def test_killed_run_resumes_from_last_checkpoint_in_the_same_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    last = run_dir / "checkpoints" / "last.ckpt"

    first = subprocess.Popen(
        _command(run_dir),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(last, lambda: first.poll() is None)
        os.killpg(first.pid, signal.SIGKILL)  # the run's own process group: the trainer and W&B's service
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    assert not (run_dir / "results.json").exists(), "the first run finished before it could be killed"

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

    _assert_one_wandb_run(run_dir)


def _assert_one_wandb_run(run_dir) -> None:
    """One W&B run id across both processes. The killed process had its records still buffered in W&B's
    service (killed with it), so its offline file may hold only a header: its id is in its name."""
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda f: f.parent.name)
    assert len(files) == 2, files
    assert {f.name for f in files} == {f"run-{run_id}.wandb"}
    assert read_finished_run(files[-1])["run_id"] == run_id


# ----------------------------------------------------------------------------- atomic checkpoints
class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full")  # a save that dies half-way


def test_atomic_save_keeps_the_old_checkpoint_when_a_save_fails(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
    (path.parent / ".last.ckpt.dead.tmp").write_bytes(b"left by a killed writer")
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000), "x": Unpicklable()}, path)
    assert io.load_checkpoint(path)["global_step"] == 1
    # no temporary files left; the checksum beside the checkpoint is the first save's
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]
    atomic_torch_save({"global_step": 3}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 3}


def test_resume_picks_the_newest_of_last_and_the_slurm_requeue_checkpoint(tmp_path):
    assert latest_resume_checkpoint(tmp_path) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    atomic_torch_save({}, last)
    assert latest_resume_checkpoint(tmp_path) == last
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    atomic_torch_save({}, hpc)
    os.utime(last, ns=(1, 1))
    assert latest_resume_checkpoint(tmp_path) == hpc
    os.utime(hpc, ns=(0, 0))
    assert latest_resume_checkpoint(tmp_path) == last


def test_trainers_write_checkpoints_atomically_and_ddp_follows_slurm(monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name in ("default", "cpu", "ddp_cpu"):
            cfg = compose(config_name="train", overrides=[f"trainer={name}", "logger=none", "callbacks=none"])
            trainer = instantiate(cfg.trainer, default_root_dir=None, enable_progress_bar=False, logger=False)
            assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO), name
        ddp = compose(config_name="train", overrides=["trainer=ddp"])
        assert ddp.trainer.num_nodes == 1
        monkeypatch.setenv("SLURM_NNODES", "4")
        assert ddp.trainer.num_nodes == 4


def test_slurm_launcher_config_asks_for_lightning_requeue(tmp_path, monkeypatch):
    """The sbatch header submitit writes for a sweep job: resources from config, SIGUSR1 and --requeue."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import SlurmExecutor

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            return_hydra_config=True,
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.gpus_per_node=4",
                "hydra.launcher.timeout_min=600",
                "hydra.launcher.mem_gb=128",
                "hydra.job.name=mrl",
                f"hydra.sweep.dir={tmp_path}",
            ],
        )
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    # The executor built as BaseSubmititLauncher.launch builds it, then the script it would submit.
    params = dict(launcher.params)
    # submitit >= 1.5.4 refuses to build a SLURM executor where there is no srun; this machine plays a login node
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=params.pop("submitit_folder"), slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    header = executor._executor._make_submission_file_text("python -m submitit", "uid")
    for flag in (
        "--partition=gpu",
        "--gpus-per-node=4",
        "--ntasks-per-node=4",
        "--time=600",
        "--mem=128GB",
        "--signal=USR1@90",
        "--requeue",
    ):
        assert f"#SBATCH {flag}\n" in header, (flag, header)
    assert "USR2" not in header  # submitit's own requeue signal is replaced: one mechanism only
