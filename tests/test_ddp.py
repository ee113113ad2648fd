"""Two CPU processes (`trainer=ddp_cpu`, gloo) report the same per-size validation metrics as one process
on the same data with the same weights, and share the training data between them; on prepared shards
(`data=image_shards`) the processes, on one machine or on two simulated nodes, read disjoint parts of each
epoch that together cover it, and a run stopped mid-epoch resumes the rest of its epoch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import lightning as L
import pytest

from mrl.data.image import SyntheticDataModule
from mrl.data.image.shard_writer import prepare
from mrl.runs import load_module
from mrl.training.procedure import build_datamodule, build_model
from mrl_testing.configs import FAST, ROOT, compose_train
from mrl_testing.images import image_folder
from mrl_testing.items import epoch_items, fingerprint, read_items

# Sizes divisible by 2 processes x batch size: DistributedSampler pads nothing, every sample counts once.
DATA = {"image_size": 16, "train_size": 256, "val_size": 128, "batch_size": 32, "seed": 0}


@pytest.mark.slow  # 25 s: two processes started twice (test-slow, CI)
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


# ------------------------------------------------------------------------------------------ prepared shards
# 24 training images, batches of 3: 4 steps an epoch for each of 2 processes, nothing dropped
SHARD_IMAGES, SHARD_BATCH = 24, 3


@pytest.fixture(scope="module")
def train_shards(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp_shards")
    src = image_folder(tmp / "src", train=SHARD_IMAGES // 3, val=2)
    prepare(src, tmp / "out", max_side=64, raw_fraction=0.5, workers=2, progress=False)
    return tmp / "out"


def _shard_data(root: Path) -> list[str]:
    """data=image_shards with deterministic crops (the whole image, center-cropped square): a training image's
    pixels name its shard item. Workers and pinned memory are left to their defaults."""
    return [
        "data=image_shards",
        f"data.root={root}",
        "data.image_size=16",
        f"data.batch_size={SHARD_BATCH}",
        "data.scale=[1.0,1.0]",
        "data.ratio=[1.0,1.0]",
        "data.persistent_workers=false",
    ]


def _epoch(root: Path, tmp_path: Path) -> Counter:
    """The fingerprints of every training item, decoded as the training processes decode them."""
    from litdata import StreamingDataset

    cfg = compose_train([*FAST, *_shard_data(root)], tmp_path / "expected")
    datamodule = build_datamodule(cfg)
    build_model(cfg, datamodule)  # hands the backbone's data config to the data module
    decode, dataset = datamodule.train_decode(), StreamingDataset(str(root / "train"))
    return Counter(fingerprint(decode(dataset[i])[0]) for i in range(len(dataset)))


def _train_command(root: Path, run_dir: Path, *overrides: str) -> list[str]:
    keep = [a for a in FAST if not a.startswith(("data.", "callbacks=", "trainer.limit_", "trainer.accelerator"))]
    return [
        sys.executable,
        "-m",
        "mrl.cli.train",
        *keep,
        *_shard_data(root),
        "trainer.limit_train_batches=null",
        "trainer.limit_val_batches=1",
        "+callbacks.items._target_=mrl_testing.items.RecordItems",
        f"+callbacks.items.dir={run_dir / 'items'}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]


def _run(args: list[str], env: dict[str, str] | None = None) -> str:
    env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def _assert_ranks_share_the_epoch(seen: dict[int, list[str]], expected: Counter) -> None:
    """Each of 2 processes trained on half the epoch, the halves disjoint, together every item once."""
    assert sorted(seen) == [0, 1]
    assert [len(seen[0]), len(seen[1])] == [sum(expected.values()) // 2] * 2
    assert not set(seen[0]) & set(seen[1])
    assert Counter(seen[0] + seen[1]) == expected


@pytest.mark.slow
def test_two_processes_share_each_epoch_of_the_shards_and_resume_mid_epoch(train_shards, tmp_path):
    """trainer=ddp_cpu on data=image_shards, stopped 2 steps into epoch 1 (a checkpoint after every step) and
    rerun in the same run directory: each epoch, the two processes trained on disjoint halves that cover it,
    the resumed run on the rest of epoch 1 only (litdata's state from rank 0's checkpoint, on both ranks)."""
    expected = _epoch(train_shards, tmp_path)
    assert len(expected) == SHARD_IMAGES  # every image its own fingerprint
    run_dir = tmp_path / "run"
    command = _train_command(
        train_shards,
        run_dir,
        "trainer=ddp_cpu",
        "trainer.max_epochs=2",
        "callbacks=default",
        "callbacks.rich_progress_bar=null",
        "callbacks.rich_model_summary=null",
        "callbacks.periodic_checkpoint.every_n_train_steps=1",
    )
    output = _run([*command, "trainer.max_steps=6"])
    assert "distributed_backend=gloo" in output and "MEMBER: 2/2" in output
    first = read_items(run_dir / "items")
    assert {r["world_size"] for records in first.values() for r in records} == {2}
    _assert_ranks_share_the_epoch({rank: epoch_items(records, 0) for rank, records in first.items()}, expected)
    assert [len(epoch_items(records, 1)) for records in first.values()] == [2 * SHARD_BATCH] * 2

    output = _run(command)  # the same command: resumes from checkpoints/last.ckpt
    assert "Resuming from" in output
    both = read_items(run_dir / "items")
    resumed = {rank: records[len(first[rank]) :] for rank, records in both.items()}
    assert all([r["epoch"] for r in records] == [1, 1] for records in resumed.values())
    assert all(records[0]["step"] == 6 for records in resumed.values())
    _assert_ranks_share_the_epoch({rank: epoch_items(records, 1) for rank, records in both.items()}, expected)
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_share_each_epoch_of_the_shards(train_shards, tmp_path):
    """Two "nodes" on this machine, started as a cluster starts them: the same command twice with
    ``trainer.num_nodes=2 trainer.devices=1`` and Lightning's environment for a cluster it does not manage
    (MASTER_ADDR, MASTER_PORT, NODE_RANK, WORLD_SIZE), one shared run directory. Node 1 is global rank 1; the
    two trained on disjoint halves of the epoch that cover it."""
    expected = _epoch(train_shards, tmp_path)
    run_dir = tmp_path / "run"
    command = _train_command(
        train_shards,
        run_dir,
        "trainer=ddp_cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "trainer.max_epochs=1",
        "callbacks=none",
    )
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE")}
    base.update(WANDB_MODE="disabled", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    nodes = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env={**base, "NODE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=300)[0])
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for rank, (node, output) in enumerate(zip(nodes, outputs)):
        assert node.returncode == 0, output[-3000:]
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in output, output[-3000:]
    seen = read_items(run_dir / "items")
    assert {r["world_size"] for records in seen.values() for r in records} == {2}
    _assert_ranks_share_the_epoch({rank: epoch_items(records, 0) for rank, records in seen.items()}, expected)
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == SHARD_IMAGES // (2 * SHARD_BATCH)
