"""A training process killed mid-run (SIGKILL, as a pre-emption would) resumes when the same command is
rerun in the same run directory: from the last checkpoint, in the same W&B run, to the same step count."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary files left
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


# ----------------------------------------------------------------------------- a real SLURM
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _daemon(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name,) if p.exists()), None)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM cluster on this machine (Debian's slurmctld, slurmd, munge), root only."""
    tools = {name: _daemon(name) for name in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo")}
    if None in tools.values() or os.geteuid() != 0:
        pytest.skip("needs root and SLURM (apt-get install slurmctld slurmd slurm-client munge)")
    base = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (base / sub).mkdir()
    key = base / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock, host = base / "munge.sock", socket.gethostname().split(".")[0]
    conf = base / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=mrltest",
                f"SlurmctldHost={host}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={sock},cred_expire=5",
                "MpiDefault=none",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "SchedulerType=sched/builtin",
                f"StateSaveLocation={base}/state",
                f"SlurmdSpoolDir={base}/spool",
                f"SlurmctldPidFile={base}/slurmctld.pid",
                f"SlurmdPidFile={base}/slurmd.pid",
                f"SlurmctldLogFile={base}/slurmctld.log",
                f"SlurmdLogFile={base}/slurmd.log",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "ReturnToService=2",
                "KillWait=5",
                "MinJobAge=600",
                "JobRequeue=1",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/none",
                "JobAcctGatherType=jobacct_gather/none",
                f"NodeName={host} CPUs={os.cpu_count()} RealMemory=2000 State=UNKNOWN",
                f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES",
                "",
            ]
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    log = open(base / "daemons.log", "w")  # noqa: SIM115 - closed at teardown
    daemons = [
        subprocess.Popen(
            [
                tools["munged"],
                "-F",
                "--force",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--pid-file={base}/munged.pid",
                f"--log-file={base}/munged.log",
                f"--seed-file={base}/munged.seed",
            ],
            stdout=log,
            stderr=log,
        )
    ]
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        daemons.append(subprocess.Popen([tools["slurmctld"], "-D", "-f", str(conf)], env=env, stdout=log, stderr=log))
        daemons.append(
            subprocess.Popen([tools["slurmd"], "-D", "-f", str(conf), "-N", host], env=env, stdout=log, stderr=log)
        )
        deadline, state = time.monotonic() + 60, ""
        while time.monotonic() < deadline and state != "idle":
            time.sleep(0.5)
            probe = subprocess.run([tools["sinfo"], "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            state = probe.stdout.strip()
        if state != "idle":
            pytest.skip(f"the local SLURM did not come up (node state {state!r}); see {base}")
        yield env
    finally:
        subprocess.run(["scancel", "--user=root"], env=env, capture_output=True)
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
        log.close()


def _job(env, job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


@pytest.mark.slow
def test_slurm_job_requeued_on_sigusr1_resumes_the_same_run(slurm, tmp_path):
    """scripts/slurm/train.sbatch on a real (local) SLURM: the time-limit warning (SIGUSR1, sent here at
    once with scancel instead of 90 s before the limit) makes Lightning save hpc_ckpt_1.ckpt and requeue
    the job; the same script then resumes in the same run directory and W&B run, to the same step count."""
    run_dir = tmp_path / "run"
    env = {
        **slurm,
        "RUN_DIR": str(run_dir),
        "EXPERIMENT": "digits_mrl",
        "TRAINER": "cpu",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    out = tmp_path / "job.out"
    submit = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--partition=debug",
            "--gpus-per-node=0",
            "--ntasks-per-node=1",
            "--cpus-per-task=1",
            "--mem=1G",
            "--time=10",
            f"--output={out}",
            "scripts/slurm/train.sbatch",
            *OVERRIDES,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = submit.stdout.strip().split(";")[0]
    _wait_for(
        run_dir / "checkpoints" / "last.ckpt",
        lambda: _job(env, job_id).get("JobState") in ("PENDING", "CONFIGURING", "RUNNING"),
    )
    subprocess.run(["scancel", "--signal=USR1", job_id], env=env, check=True)
    deadline, job = time.monotonic() + 300, {}
    while time.monotonic() < deadline:
        job = _job(env, job_id)
        if job.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") and job.get("Restarts") != "0":
            break
        time.sleep(1)
    log = out.read_text()
    assert job.get("JobState") == "COMPLETED" and job.get("Restarts") == "1", (job, log[-3000:])
    assert "Handling auto-requeue signal" in log and f"Requeued SLURM job: {job_id}" in log
    # The requeued job resumes from the checkpoint saved when the signal came, newer than last.ckpt.
    assert f"job {job_id} (restart 1)" in log and f"Resuming from {run_dir / 'hpc_ckpt_1.ckpt'}" in log
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == EPOCHS * BATCHES
    _assert_one_wandb_run(run_dir)
