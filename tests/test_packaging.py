"""The wheel, installed (not editable) where no checkout is in sight: its console scripts find the configs shipped
inside the package and train the default experiment from an empty directory, writing the run under that
directory's outputs/."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mrl_testing.configs import ROOT


@pytest.mark.slow  # builds the wheel and trains in a subprocess
def test_wheel_ships_configs_and_its_console_script_trains_from_any_directory(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    wheel = next((tmp_path / "dist").glob("mrl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "mrl/conf/train.yaml" in names and "mrl/conf/experiment/digits_mrl.yaml" in names
    assert not any(name.startswith("mrl_testing/") for name in names)  # test helpers stay in the checkout
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    # The installed copy comes first on the path, so neither src/ nor conf/ of this checkout is used.
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline", "PROJECT_ROOT": "."}
    where = subprocess.run(
        [sys.executable, "-c", "import mrl.common.configs as c; print(c.config_dir())"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(where) == site / "mrl" / "conf"
    result = subprocess.run(
        [
            str(site / "bin" / "mrl-train"),
            "experiment=digits_mrl",
            "trainer.max_epochs=1",
            "logger=csv",
            "print_config=false",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    runs = list((workdir / "outputs" / "train" / "digits_mrl").glob("*/results.json"))
    assert len(runs) == 1, sorted(str(p) for p in workdir.rglob("*"))[:20]
    assert (runs[0].parent / "checkpoints" / "last.ckpt").is_file()
