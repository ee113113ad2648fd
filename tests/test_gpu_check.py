"""scripts/gpu_check.sh --dry-run: the GPU check's whole sequence on the CPU with tiny sizes, so it cannot rot."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mrl_testing import gpu_check
from mrl_testing.configs import compose_train

ROOT = Path(__file__).resolve().parents[1]
PARTS = [
    "cuda_tests",
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


# ----------------------------------------------------------------------------------- the steps, without running
def test_the_plan_and_the_order_of_the_parts(tmp_path):
    dry = gpu_check.parse_args(["--dry-run", "--out", str(tmp_path)])
    assert (dry.dry, dry.device, dry.steps, dry.n_images, dry.out) == (True, "cpu", 3, 24, tmp_path.resolve())
    gpu = gpu_check.parse_args(["--out", str(tmp_path), "--steps", "50"])
    assert (gpu.dry, gpu.device, gpu.steps, gpu.n_images) == (False, "cuda", 50, 4000)
    assert [name for name, _ in gpu_check.check_parts(dry)] == PARTS


@pytest.mark.parametrize("dry", [True, False])
def test_the_training_overrides_compose(tmp_path, dry):
    plan = gpu_check.parse_args([*(["--dry-run"] if dry else []), "--out", str(tmp_path)])
    single = gpu_check.single_device(plan)
    images = compose_train([*gpu_check.image_overrides(plan), *single, "data.decode=device"], tmp_path / "run")
    assert images.data.root == str(plan.shards) and images.data.decode == "device"
    assert images.trainer.max_steps == plan.steps and images.trainer.devices == 1
    assert images.model.backbone.name == ("resnet10t" if dry else "resnet50")
    assert str(images.trainer.precision) == ("32" if dry else "bf16-mixed")
    text = compose_train([*gpu_check.text_overrides(plan), *gpu_check.ddp_one_device(plan)], tmp_path / "text")
    assert text.model._target_ == "mrl.training.contrastive.MatryoshkaContrastiveModule"
    assert text.data.batch_size == (8 if dry else 128) and text.trainer.devices == 1


def test_every_part_reports_and_a_failure_fails_the_check(tmp_path, monkeypatch, capsys):
    def broken():
        raise RuntimeError("exit 1: out of memory")

    parts = [("first", lambda: {"images_per_s": 12.5}), ("second", broken), ("third", lambda: None)]
    monkeypatch.setattr(gpu_check, "check_parts", lambda plan: parts)
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["parts"]) == ["first", "second", "third"] and summary["pass"] is False
    assert summary["parts"]["first"]["images_per_s"] == 12.5 and summary["parts"]["third"]["pass"]
    assert summary["parts"]["second"] == {"pass": False, "seconds": 0.0, "error": "exit 1: out of memory"}
    assert "gpu_check: second: FAIL" in capsys.readouterr().out
    monkeypatch.setattr(gpu_check, "check_parts", lambda plan: parts[:1])
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
