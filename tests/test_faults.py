"""Faults a long run meets, each injected for real: a damaged checkpoint, a full disk, SIGKILL in the middle of a
checkpoint write, a data-loader worker killed mid-epoch, images that crash the decoder. Each ends with the run
going on or resumable from what it left, and no result file half-written. (W&B unreachable: tests/test_wandb.py;
a SLURM requeue: tests/test_slurm.py.)"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mrl.common.io import DiskFullError, atomic_write_text, read_checksum, write_json
from mrl.runs import find_checkpoint, latest_resume_checkpoint, load_module, verify_checkpoint
from mrl.training.checkpoint_io import atomic_torch_save
from mrl.training.procedure import run_training
from mrl_testing.configs import FAST, ROOT, compose_train

BATCHES = 4  # optimizer steps per epoch (FAST's limit_train_batches)
CHECKPOINTS = [
    *(a for a in FAST if a != "callbacks=none"),
    "callbacks=default",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
    "callbacks.learning_rate_monitor=null",
    "callbacks.periodic_checkpoint.every_n_train_steps=2",
]


def _train(run_dir: Path, *overrides: str) -> dict:
    return run_training(compose_train([*CHECKPOINTS, *overrides], run_dir), run_dir)


def _command(run_dir: Path, *overrides: str) -> list[str]:
    args = [*CHECKPOINTS, *overrides, f"hydra.run.dir={run_dir}"]
    return [sys.executable, "-m", "mrl.cli.train", "experiment=digits_mrl", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def _no_half_written_files(run_dir: Path) -> None:
    assert not list(run_dir.rglob("*.tmp")), sorted(run_dir.rglob("*.tmp"))
    for path in run_dir.rglob("*.json"):
        json.loads(path.read_text())
    for path in run_dir.rglob("*.ckpt"):
        if "damaged" not in path.parts:
            assert verify_checkpoint(path) is None, path


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # as a failing disk or an interrupted copy leaves it


# ----------------------------------------------------------------------------- damaged checkpoints
def test_a_damaged_last_checkpoint_is_moved_aside_and_the_run_resumes_from_the_newest_that_loads(tmp_path, caplog):
    run_dir = tmp_path / "run"
    _train(run_dir, "trainer.max_epochs=2")
    last = run_dir / "checkpoints" / "last.ckpt"
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    assert verify_checkpoint(last) is None and read_checksum(last) is not None
    _cut(last)
    assert verify_checkpoint(last) is not None

    results = _train(run_dir, "trainer.max_epochs=3")
    # Training went on from the epoch checkpoint to the steps of an uninterrupted run.
    assert results["global_step"] == 3 * BATCHES
    damaged = sorted(p.name for p in (run_dir / "checkpoints" / "damaged").iterdir())
    assert [name.split(".ckpt")[0] for name in damaged] == ["last", "last"]  # the file and its checksum
    assert any(name.endswith(".sha256") for name in damaged)
    warnings = [r.getMessage() for r in caplog.records if " is damaged (" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "last.ckpt" in warnings[0]
    _no_half_written_files(run_dir)


def test_a_flipped_byte_is_caught_by_the_checksum_where_loading_alone_would_not(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.arange(100_000, dtype=torch.float32)}}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the tensor's bytes: the zip directory stays whole
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=True)  # loads without complaint...
    assert "checksum" in verify_checkpoint(path)  # ...but the bytes are not the ones written
    with pytest.raises(ValueError, match=r"^run_dir=.*no checkpoint in it can be read; tried last.ckpt \("):
        latest_resume_checkpoint(tmp_path)


@pytest.mark.slow  # training subprocesses, run by make test-slow
def test_with_no_checkpoint_that_loads_one_line_names_every_file_tried(tmp_path):
    run_dir = tmp_path / "run"
    _train(run_dir, "trainer.max_epochs=1")
    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert len(ckpts) == 2
    for path in ckpts:
        _cut(path)
    result = subprocess.run(
        _command(run_dir, "trainer.max_epochs=2"), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("ValueError: run_dir=") and "Traceback" not in result.stderr
    for path in ckpts:
        assert f"{path.name} (does not load" in error
    assert sorted(p.name.split(".ckpt")[0] for p in (run_dir / "checkpoints" / "damaged").glob("*.ckpt*")) == [
        "epoch_000",
        "epoch_000",
        "last",
        "last",
    ]


def test_evaluation_embedding_and_export_read_the_next_checkpoint_that_loads(tmp_path):
    run_dir = tmp_path / "run"
    _train(run_dir, "trainer.max_epochs=1")
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    _cut(best)
    assert find_checkpoint(run_dir) == run_dir / "checkpoints" / "last.ckpt"
    assert load_module(find_checkpoint(run_dir)).sizes
    assert not best.exists() and list((run_dir / "checkpoints" / "damaged").glob("epoch_*.ckpt.*"))
    _cut(run_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match=r"^ckpt=.*last.ckpt'?: damaged, not read \(does not load"):
        find_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    from mrl.interop.reference import read_reference_state_dict

    with pytest.raises(ValueError, match=r"^ckpt=.*: damaged, not read"):
        read_reference_state_dict(run_dir / "checkpoints" / "last.ckpt")


# ----------------------------------------------------------------------------- a full disk
class _FullDisk:
    def __reduce__(self):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_that_finds_the_disk_full_keeps_the_previous_file_and_says_so_in_one_line(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    atomic_torch_save({"global_step": 1, "w": torch.ones(50_000)}, path)
    with pytest.raises(DiskFullError) as caught:
        atomic_torch_save({"global_step": 2, "w": torch.zeros(50_000), "x": _FullDisk()}, path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: no space left on device")
    assert "needs about 0.2 MiB" in message  # the size of the checkpoint it replaces
    assert torch.load(path, weights_only=True)["global_step"] == 1 and verify_checkpoint(path) is None
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]

    results = tmp_path / "results.json"
    write_json(results, {"ok": 1})

    class Full(str):
        def encode(self, *args):  # pragma: no cover - never reached: text mode writes through the codec
            raise AssertionError

    real = os.fsync

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    os.fsync = fsync
    try:
        with pytest.raises(DiskFullError):
            atomic_write_text(results, json.dumps({"ok": 2}))
    finally:
        os.fsync = real
    assert json.loads(results.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "results.json"]


@pytest.fixture
def small_disk(tmp_path):
    """A 400 MiB tmpfs (root only), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow  # training subprocesses, run by make test-slow
def test_a_run_that_fills_the_disk_stops_in_one_line_and_resumes_once_there_is_space(small_disk):
    run_dir = small_disk / "run"
    command = _command(run_dir, "trainer.max_epochs=20")
    first = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while first.poll() is None and time.monotonic() < deadline and read_checksum(last) is None:
        time.sleep(0.05)
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as handle:  # fill the disk (the run writes meanwhile), then give back 256 KiB
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                handle.write(chunk)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
        handle.truncate(max(0, handle.tell() - (256 << 10)))  # less than any checkpoint, enough for log lines
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 1, stderr[-3000:]
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("DiskFullError: ") and "no space left on device" in error and "MiB" in error
    assert "Traceback" not in stderr
    assert verify_checkpoint(last) is None  # the checkpoint from before the disk filled is whole
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / "results.json").exists()

    filler.unlink()
    second = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stdout + second.stderr
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == 20 * BATCHES
    _no_half_written_files(run_dir)


# ----------------------------------------------------------------------------- killed processes
@pytest.mark.slow  # training subprocesses, run by make test-slow
def test_sigkill_in_the_middle_of_a_checkpoint_write_leaves_a_run_that_resumes(tmp_path):
    run_dir = tmp_path / "run"
    overrides = (*CHECKPOINTS, "trainer.max_epochs=3", f"hydra.run.dir={run_dir}")
    # The third save writes half its bytes, flushes them to disk and SIGKILLs its own process.
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mrl_testing.faults",
            "kill-during-save",
            "3",
            "--",
            "experiment=digits_mrl",
            *overrides,
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    partial = list(run_dir.rglob(".*.ckpt.*.tmp"))
    assert partial and all(p.stat().st_size > 0 for p in partial)  # the half-written file is there...
    assert verify_checkpoint(run_dir / "checkpoints" / "last.ckpt") is None  # ...and the last save is whole

    rerun = subprocess.run(_command(run_dir, "trainer.max_epochs=3"), cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == 3 * BATCHES
    _no_half_written_files(run_dir)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow  # training subprocesses, run by make test-slow
def test_a_data_loader_worker_killed_mid_epoch_leaves_the_run_going_on_or_resumable(tmp_path):
    run_dir = tmp_path / "run"
    command = _command(run_dir, "trainer.max_epochs=12", "data.num_workers=1")
    first = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    last, killed = run_dir / "checkpoints" / "last.ckpt", []
    deadline = time.monotonic() + 240
    while first.poll() is None and time.monotonic() < deadline and not killed:
        if read_checksum(last) is not None:
            for child in _children(first.pid):  # the loader's worker processes
                os.kill(child, signal.SIGKILL)
                killed.append(child)
        time.sleep(0.02)
    assert killed, "no worker process was seen"
    _, stderr = first.communicate(timeout=300)
    if first.returncode != 0:  # the loader reports its dead worker: the run stops, and resumes when rerun
        assert "worker" in stderr.lower(), stderr[-2000:]
        rerun = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "Resuming from" in rerun.stdout + rerun.stderr
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == 12 * BATCHES
    _no_half_written_files(run_dir)


# ----------------------------------------------------------------------------- images that crash the decoder
def test_images_that_crash_the_decoder_are_left_out_and_named_while_training_goes_on(tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    rng = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(6):
                pixels = torch.randint(0, 255, (24, 24, 3), generator=rng, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    good = (root / "train" / "a" / "0.jpg").read_bytes()
    (root / "train" / "a" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "train" / "b" / "not_an_image.jpg").write_bytes(b"this is text, not a JPEG")
    Image.new("1", (15000, 15000)).save(root / "train" / "b" / "bomb.png")  # 225 Mpx: PIL refuses to decode it
    run_dir = tmp_path / "run"
    results = run_training(
        compose_train(
            [
                *FAST,
                "data=image_folder",
                f"data.root={root}",
                "data.batch_size=8",
                "data.num_workers=0",
                "data.pin_memory=false",
                "data.persistent_workers=false",
                "trainer.max_epochs=1",
            ],
            run_dir,
        ),
        run_dir,
    )
    assert results["global_step"] > 0
    skipped = json.loads((run_dir / "results.json").read_text())["skipped_images"]
    assert sorted(Path(p).name for p in skipped) == ["bomb.png", "not_an_image.jpg", "truncated.jpg"]
    _no_half_written_files(run_dir)
