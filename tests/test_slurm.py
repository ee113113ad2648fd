"""SLURM for real: a one-node cluster started on this machine (Debian's slurmctld, slurmd and munge, as root).

A job of scripts/slurm/train.sbatch is requeued on SIGUSR1 and resumes the same run, in the same W&B run; a
Hydra sweep goes through the submitit launcher (``hydra/launcher=slurm``) as sbatch jobs. ``make test``
leaves these out (marker ``slurm``); ``make test-slurm`` runs them with ``MRL_REQUIRE_SLURM=1``, which turns
"no SLURM here" from a skip into a failure, so CI cannot pass without running them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mrl_testing.configs import FAST, ROOT
from mrl_testing.wandb_records import read_finished_run

pytestmark = pytest.mark.slurm

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
PARTITION = "debug"
DEBIAN_PACKAGES = "slurmctld slurmd slurm-client munge"


# ----------------------------------------------------------------------------- the local cluster
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _daemon(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name,) if p.exists()), None)


def _unavailable(reason: str) -> None:
    """Skip, or fail under MRL_REQUIRE_SLURM=1 (make test-slurm, CI): there a missing cluster is an error."""
    if os.environ.get("MRL_REQUIRE_SLURM") == "1":
        pytest.fail(f"MRL_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else f"({path} missing)"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node SLURM cluster on this machine (Debian's slurmctld, slurmd, munge), root only. Yields the
    environment that reaches it (SLURM_CONF)."""
    tools = {name: _daemon(name) for name in ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo")}
    missing = sorted(name for name, path in tools.items() if path is None)
    if missing:
        _unavailable(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install {DEBIAN_PACKAGES}")
    if os.geteuid() != 0:
        _unavailable(f"the local SLURM cluster is started as root, and this runs as uid {os.geteuid()}")
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
                f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES",
                "",
            ]
        )
    )
    # A child that inherits WANDB_SERVICE would share this process's W&B service (see conftest.py).
    env = {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, "SLURM_CONF": str(conf)}
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
            log.flush()
            _unavailable(
                f"the local SLURM did not come up (node state {state!r}); see {base}\n"
                f"{_tail(base / 'daemons.log')}\n{_tail(base / 'slurmctld.log')}\n{_tail(base / 'slurmd.log')}"
            )
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


def _wait_for(path: Path, running, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file() and running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.is_file(), f"{path} was not written"


def _wandb_run_ids(run_dir: Path) -> list[str]:
    """The W&B run id of each offline segment logged in ``run_dir``, oldest first."""
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda f: f.parent.name)
    return [f.stem.removeprefix("run-") for f in files]


# ----------------------------------------------------------------------------- the tests
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
            f"--partition={PARTITION}",
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
    # One W&B run across both segments. The first one's records may still be buffered in W&B's service
    # when the job is requeued, so its offline file may hold only a header: its id is in its name.
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    segments = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda f: f.parent.name)
    assert _wandb_run_ids(run_dir) == [run_id, run_id], segments
    assert read_finished_run(segments[-1])["run_id"] == run_id


def test_sweep_through_the_submitit_launcher_runs_each_job_on_slurm(slurm, tmp_path):
    """``--multirun ... hydra/launcher=slurm``: submitit submits one sbatch job per sweep point (an array),
    from the project's Python (sys.executable), with its files under the sweep directory; each job trains
    in its own sub-directory, with its own W&B run (offline), and the sweep summary counts both."""
    sweep_dir = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "mrl.cli.train",
        "--multirun",
        "experiment=digits_mrl",
        "head=mrl,mrl_e",
        *(a for a in FAST if a != "logger=none"),
        "trainer=cpu",
        "trainer.max_epochs=1",
        "logger=wandb",
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={PARTITION}",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {**slurm, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    submitit_dir = sweep_dir / ".submitit"
    try:
        result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired as error:
        logs = "\n".join(f"{p}:\n{_tail(p)}" for p in sorted(submitit_dir.rglob("*.err")))
        raise AssertionError(f"the sweep did not finish: {error}\n{logs}") from None
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]

    # submitit's folder (scripts, pickles, job logs) is under the sweep directory: one job per sweep point.
    scripts = sorted(submitit_dir.rglob("*_submission.sh"))
    assert scripts, output[-3000:]
    header = scripts[0].read_text()
    assert f"#SBATCH --partition={PARTITION}\n" in header and "#SBATCH --array=0-1" in header, header
    assert "#SBATCH --ntasks-per-node=1\n" in header, header  # a CPU job: one task, not gpus_per_node=0
    assert f"{sys.executable} -u -m submitit.core._submit" in header, header
    job_logs = sorted(submitit_dir.rglob("*_log.out"))
    assert len(job_logs) == 2, job_logs

    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0_mrl", "1_mrl_e"], jobs
    heads = {json.loads((job / "results.json").read_text())["head"] for job in jobs}
    assert heads == {"mrl", "mrl_e"}
    run_ids = [_wandb_run_ids(job) for job in jobs]
    assert all(len(ids) == 1 for ids in run_ids) and run_ids[0] != run_ids[1], run_ids
    assert [(job / "wandb_id.txt").read_text().strip() for job in jobs] == [ids[0] for ids in run_ids]

    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["done"] == 2 and summary["failed"] == 0 and summary["incomplete"] == 0, summary
    assert "Sweep finished: 2 done, 0 failed" in output
