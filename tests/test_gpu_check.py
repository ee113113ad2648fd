"""scripts/gpu_check.sh --dry-run: the GPU check's whole sequence on the CPU with tiny sizes, so it cannot rot."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = [
    "images",
    "prepare",
    "train",
    "train_compile",
    "train_device_decode",
    "eval",
    "embed",
    "ddp",
    "text",
    "text_cached",
    "text_ddp",
]


# Eight processes (a few minutes on two cores): run by `make test-slow`, which CI runs after `make test`.
@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_part_and_writes_the_summary(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    summary = json.loads((out / "summary.json").read_text())
    failed = {name: part.get("error") for name, part in summary["parts"].items() if not part["pass"]}
    assert proc.returncode == 0 and not failed, (failed, proc.stdout[-2000:], proc.stderr[-2000:])
    assert list(summary["parts"]) == PARTS and summary["dry_run"] and summary["device"] == "cpu"
    for name in ("train", "train_compile", "train_device_decode", "ddp"):  # the figures the GPU run reports
        figures = summary["parts"][name]
        assert figures["images_per_s"] > 0 and 0 <= figures["data_wait_share"] <= 1
    for name in ("text", "text_cached", "text_ddp"):
        figures = summary["parts"][name]
        assert figures["pairs_per_s"] > 0 and 0 <= figures["data_wait_share"] <= 1
    assert "gpu_check: pass" in proc.stdout
