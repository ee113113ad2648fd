"""The installed console scripts exit 0 on success and print nothing extra: the generated ``mrl-*`` script calls
``sys.exit(main())``, so a ``main()`` that returned its result would print it and exit 1 (``mrl-embed ... &&
mrl-search ...`` would never reach the search). Each script runs here as a user runs it, on one small real run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrl_testing.configs import FAST, ROOT

BIN = Path(sys.executable).parent
SCRIPTS = ("train", "eval", "embed", "search", "index", "export", "report", "prepare")


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [str(BIN / f"mrl-{script}"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (
        f"mrl-{script}: exit {result.returncode}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    )
    for stream in (result.stdout, result.stderr):  # a returned dict or path printed by sys.exit would show here
        assert "{'" not in stream and "PosixPath(" not in stream and "array(" not in stream, stream[-2000:]
    return result


@pytest.mark.slow  # eight processes, each importing torch: about two minutes on two cores
def test_every_console_script_exits_0_on_success(tmp_path):
    assert all((BIN / f"mrl-{s}").is_file() for s in SCRIPTS), "reinstall the package: make install"
    run = tmp_path / "run"
    _run("train", *FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=2", f"hydra.run.dir={run}", cwd=ROOT)
    assert (run / "results.json").is_file()
    _run(
        "eval",
        f"run={run}",
        "baselines.enabled=false",
        "funnel_tuning.targets=[]",
        "quantized=[]",
        "knn.ks=[10]",
        f"hydra.run.dir={tmp_path}",
        cwd=ROOT,
    )
    images = tmp_path / "images"
    for i in range(3):
        images.mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 60 * i, dtype=np.uint8)).save(images / f"{i}.png")
    _run("embed", str(run), str(images), "--out", str(tmp_path / "e.npz"), cwd=tmp_path)
    database, queries = run / "eval" / "embeddings_train.npz", run / "eval" / "embeddings_test.npz"
    if not queries.is_file():
        queries = run / "eval" / "embeddings_val.npz"
    _run("search", str(database), str(queries), "--out", str(tmp_path / "r.csv"), "--show", "1", cwd=tmp_path)
    assert (tmp_path / "r.csv").is_file()
    _run("index", str(run), "--uri", str(tmp_path / "index.lancedb"), "--no-progress", cwd=tmp_path)
    _run("export", str(run), "--out", str(tmp_path / "export"), cwd=tmp_path)
    assert (tmp_path / "export" / "embedder.pt2").is_file()
    _run("report", str(run), "--out", str(tmp_path / "report"), cwd=tmp_path)
    src = tmp_path / "src"
    for split in ("train", "val"):
        for name, value in (("cat", 30), ("dog", 200)):
            (src / split / name).mkdir(parents=True)
            Image.fromarray(np.full((20, 20, 3), value, dtype=np.uint8)).save(src / split / name / "0.jpg")
    _run("prepare", str(src), str(tmp_path / "shards"), "--workers", "1", "--quiet", cwd=tmp_path)
    assert (tmp_path / "shards" / "train" / "index.json").is_file()
