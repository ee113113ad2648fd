"""The GPU check's driver (``scripts/gpu_check.sh``): every part runs as a user would run it, in its own process,
and one JSON summary says pass or fail per part, with the figures measured.

Parts: ``images`` (ImageNet-like JPEGs built from photographs that installed packages ship), ``prepare``
(``mrl-prepare`` and ``--verify``), ``train`` and ``train_compile`` (the ``imagenet_mrl`` recipe on
``data=imagenet_shards``: ResNet-50, bf16-mixed, channels-last, ``torch.compile`` off and on; images/s and the
share of each step spent waiting for data, from :class:`Throughput`), ``train_device_decode`` (the same with
``data.decode=device``: the training JPEGs decoded by nvjpeg on the GPU), ``eval`` (``make eval``, kNN on the GPU),
``embed`` (``make embed --device cuda``), ``ddp`` (``trainer=ddp`` on one GPU), and ``text``, ``text_cached``
and ``text_ddp`` (``text_pairs_mrl``, bf16-mixed: plain, the cached step, DDP with gathered negatives; pairs/s).
``--dry-run`` runs the same sequence on the CPU with tiny sizes (resnet10t, a few steps), so the script cannot rot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[2]


class Throughput(L.Callback):
    """Images/s, and the share of each training step spent waiting for its batch, after ``warmup`` steps;
    written to ``path`` as JSON.

    The wait is the time the training loop spends inside the loader's ``next()`` (the loader's class is wrapped
    when the data module hands it over); a step is the time from one batch's start to the next one's (so it
    holds the wait, the host-to-device copy, forward, backward, the optimizer and the callbacks). The GPU is
    synchronised at each step's end, so the step times are the GPU's too.
    """

    def __init__(self, path: str, warmup: int = 10) -> None:
        self.path, self.warmup = path, int(warmup)
        self.waits: list[float] = []
        self.steps: list[float] = []
        self.images = 0  # training rows: images, or text pairs
        self.text = False
        self._fetch = 0.0
        self._start: float | None = None

    def setup(self, trainer, pl_module, stage):
        datamodule = trainer.datamodule
        if datamodule is None or stage != "fit":
            return
        build, callback = datamodule.train_dataloader, self

        def timed_loader():
            loader = build()
            base = type(loader)

            def __iter__(this):
                iterator = base.__iter__(this)
                while True:
                    start = time.perf_counter()
                    try:
                        batch = next(iterator)
                    except StopIteration:
                        return
                    callback._fetch += time.perf_counter() - start
                    yield batch

            loader.__class__ = type(f"Timed{base.__name__}", (base,), {"__iter__": __iter__})
            return loader

        datamodule.train_dataloader = timed_loader

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        if self._start is not None and trainer.global_step > self.warmup:
            self.steps.append(now - self._start)
            self.waits.append(self._fetch)
            first = batch[0]  # images, or the anchors' token dict of text pairs
            self.text = isinstance(first, Mapping)
            self.images += int((first["input_ids"] if self.text else first).shape[0]) * trainer.world_size
        self._start, self._fetch = now, 0.0

    def on_train_end(self, trainer, pl_module):
        if trainer.global_rank != 0:
            return
        total = sum(self.steps)
        figures = {
            "measured_steps": len(self.steps),
            ("pairs_per_s" if self.text else "images_per_s"): self.images / total if total else None,
            "data_wait_share": sum(self.waits) / total if total else None,
            "median_step_ms": sorted(self.steps)[len(self.steps) // 2] * 1e3 if self.steps else None,
        }
        Path(self.path).write_text(json.dumps(figures, indent=2))


def run_logged(cmd: list[str], log: Path, env: dict[str, str] | None = None, timeout: int = 1800) -> None:
    """Run ``cmd`` from the repository root, its output in ``log``; a failure raises with the log's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(
            cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, timeout=timeout
        )
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(f"exit {proc.returncode}: " + " | ".join(tail))


@dataclass(frozen=True)
class CheckPlan:
    """What one check runs with: ``dry`` (the CPU, tiny sizes) or the GPU, the working folder, the training steps
    per run, the training images to build and the Python that runs each part."""

    dry: bool
    out: Path
    steps: int
    n_images: int
    python: str

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    @property
    def images(self) -> Path:
        return self.out / "images"

    @property
    def shards(self) -> Path:
        return self.out / "shards"

    @property
    def runs(self) -> Path:
        return self.out / "runs"


def parse_args(argv: list[str] | None = None) -> CheckPlan:
    """The command line as a :class:`CheckPlan` (defaults: 300 steps and 4000 images; dry: 3 and 24)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the same sequence on the CPU, tiny sizes")
    p.add_argument("--out", default=None, help="working folder (default: outputs/gpu_check)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default 300; dry: 3)")
    p.add_argument("--images", type=int, default=None, help="training images to build (default 4000; dry: 24)")
    p.add_argument("--python", default=sys.executable)
    args = p.parse_args(argv)
    dry = args.dry_run
    return CheckPlan(
        dry=dry,
        out=Path(args.out or ROOT / "outputs" / "gpu_check").resolve(),
        steps=args.steps or (3 if dry else 300),
        n_images=args.images or (24 if dry else 4000),
        python=args.python,
    )


# ----------------------------------------------------------------------------------------- the overrides
def single_device(plan: CheckPlan) -> list[str]:
    """One process: the recipe's trainer.devices=4 would otherwise make the dry run four CPU processes."""
    return ["trainer=cpu", "trainer.devices=1"] if plan.dry else ["trainer=gpu", "trainer.devices=1"]


def ddp_one_device(plan: CheckPlan) -> list[str]:
    return ["trainer=ddp_cpu", "trainer.devices=1"] if plan.dry else ["trainer=ddp", "trainer.devices=1"]


def image_overrides(plan: CheckPlan) -> list[str]:
    """The ``imagenet_mrl`` recipe on the prepared shards: ResNet-50 in bf16-mixed on the GPU, resnet10t at 32 px
    in fp32 on the CPU."""
    if plan.dry:
        sizes = [
            "model.backbone.name=resnet10t",
            "model.nesting=null",
            "data.image_size=32",
            "data.batch_size=4",
            "data.num_workers=0",
            "data.persistent_workers=false",
            "data.pin_memory=false",
            "trainer.precision=32",
        ]
    else:
        sizes = ["trainer.precision=bf16-mixed", "data.batch_size=256"]
    return [
        "experiment=imagenet_mrl",
        "data=imagenet_shards",
        f"data.root={plan.shards}",
        "model.channels_last=true",
        f"trainer.max_steps={plan.steps}",
        "trainer.limit_val_batches=2",
        "trainer.num_sanity_val_steps=0",
        "logger=none",
        "test=false",
        "print_config=false",
        *sizes,
    ]


def text_overrides(plan: CheckPlan) -> list[str]:
    """The ``text_pairs_mrl`` recipe (all-MiniLM-L6-v2): batches of 128 in bf16-mixed on the GPU, 8 in fp32 on
    the CPU."""
    sizes = (
        ["data.batch_size=8", "trainer.precision=32"]
        if plan.dry
        else ["data.batch_size=128", "trainer.precision=bf16-mixed"]
    )
    return [
        "experiment=text_pairs_mrl",
        f"trainer.max_steps={plan.steps}",
        "trainer.max_epochs=-1",
        "trainer.limit_val_batches=2",
        "trainer.num_sanity_val_steps=0",
        "logger=none",
        "test=false",
        "print_config=false",
        *sizes,
    ]


# -------------------------------------------------------------------------------------------- the parts
Part = Callable[[], dict[str, Any] | None]


def build_images(plan: CheckPlan) -> dict[str, Any]:
    """ImageNet-like JPEG folders (train, val) from photographs that installed packages ship."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from data import build_folder  # benchmarks/data.py: importable only once benchmarks/ is on the path

    for split, n, seed in (("train", plan.n_images, 0), ("val", max(plan.n_images // 8, 10), 1)):
        if not (plan.images / split).is_dir():
            tmp = plan.out / f"build-{split}"
            build_folder(tmp, n, classes=10, seed=seed)
            plan.images.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / "train", plan.images / split)
    return {"train_images": plan.n_images}


def prepare_shards(plan: CheckPlan) -> None:
    """``mrl-prepare`` into litdata shards (half the images kept raw), then ``mrl-prepare --verify``."""
    py = plan.python
    run_logged(
        [py, "-m", "mrl.cli.prepare", str(plan.images), str(plan.shards), "--raw-fraction", "0.5", "--quiet"],
        plan.out / "prepare.log",
    )
    run_logged([py, "-m", "mrl.cli.prepare", "--verify", str(plan.shards), "--quiet"], plan.out / "verify.log")


def train_part(
    plan: CheckPlan, name: str, base: list[str], extra: list[str], env: dict[str, str] | None = None
) -> Part:
    """A training run in its own process, its :class:`Throughput` figures as the part's result."""

    def go() -> dict[str, Any]:
        figures = plan.out / f"{name}.json"
        cmd = [plan.python, "-m", "mrl.cli.train", *base, *extra, f"hydra.run.dir={plan.runs / name}"]
        cmd += [
            "+callbacks.throughput._target_=mrl_testing.gpu_check.Throughput",
            f"+callbacks.throughput.path={figures}",
            f"+callbacks.throughput.warmup={1 if plan.dry else 20}",
        ]
        run_logged(cmd, plan.out / f"{name}.log", env)
        return json.loads(figures.read_text()) if figures.exists() else {}

    return go


def make_eval(plan: CheckPlan) -> dict[str, Any]:
    """``make eval`` of the first training run, kNN on the check's device."""
    device, run = plan.device, plan.runs / "train"
    run_logged(
        ["make", "eval", f"RUN={run}", f"PY={plan.python}", f"ARGS=device={device} knn.device={device}"],
        plan.out / "eval.log",
    )
    return {"results": str(next(run.rglob("results*.json"), ""))}


def make_embed(plan: CheckPlan) -> None:
    """``make embed`` of the validation images with the first training run, on the check's device."""
    run, images = plan.runs / "train", plan.images / "val"
    run_logged(
        ["make", "embed", f"RUN={run}", f"INPUT={images}", f"PY={plan.python}", f"ARGS=--device {plan.device}"],
        plan.out / "embed.log",
    )


def cuda_tests(plan: CheckPlan) -> dict[str, Any]:
    """The test suite's ``requires_cuda`` tests (search and embeddings on the GPU against the CPU's); on the CPU
    they would all skip, so the dry run leaves them out."""
    if plan.dry:
        return {"skipped": "no CUDA device in a dry run"}
    run_logged(
        [plan.python, "-m", "pytest", "-m", "requires_cuda", "-q", "-p", "no:cacheprovider", "tests"],
        plan.out / "cuda_tests.log",
    )
    return {}


def check_parts(plan: CheckPlan) -> list[tuple[str, Part]]:
    """Every part of the check, in the order they run (later parts use what earlier ones made)."""
    images, text, single, ddp = image_overrides(plan), text_overrides(plan), single_device(plan), ddp_one_device(plan)
    # on the CPU, torch.compile is switched off by TORCHDYNAMO_DISABLE (its configuration path still runs)
    no_dynamo = {"TORCHDYNAMO_DISABLE": "1"} if plan.dry else None
    cached = f"model.loss.mini_batch_size={4 if plan.dry else 32}"
    return [
        ("cuda_tests", lambda: cuda_tests(plan)),
        ("images", lambda: build_images(plan)),
        ("prepare", lambda: prepare_shards(plan)),
        ("train", train_part(plan, "train", images, [*single, "model.compile=false"])),
        ("train_compile", train_part(plan, "train_compile", images, [*single, "model.compile=true"], no_dynamo)),
        (
            "train_device_decode",
            train_part(plan, "train_device_decode", images, [*single, "model.compile=false", "data.decode=device"]),
        ),
        ("eval", lambda: make_eval(plan)),
        ("embed", lambda: make_embed(plan)),
        ("ddp", train_part(plan, "ddp", images, ddp)),
        # text pairs (all-MiniLM-L6-v2, bf16-mixed on the GPU): plain, the cached step, DDP with gathered negatives
        ("text", train_part(plan, "text", text, single)),
        ("text_cached", train_part(plan, "text_cached", text, [*single, cached])),
        ("text_ddp", train_part(plan, "text_ddp", text, [*ddp, "model.loss.gather=true"])),
    ]


# ------------------------------------------------------------------------------------------------ the run
def run_part(name: str, part: Part) -> dict[str, Any]:
    """Run one part; its record (pass, seconds, its figures or the error), printed on one line. A failing part
    does not stop the check: every part reports."""
    start = time.perf_counter()
    try:
        record = {"pass": True, "seconds": 0.0, **(part() or {})}
    except Exception as err:  # noqa: BLE001 - every part reports, whatever failed
        record = {"pass": False, "seconds": 0.0, "error": str(err)}
    record["seconds"] = round(time.perf_counter() - start, 1)
    print(f"gpu_check: {name}: {'pass' if record['pass'] else 'FAIL'} {json.dumps(record)}", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    plan.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"dry_run": plan.dry, "device": plan.device, "steps": plan.steps, "parts": {}}
    for name, part in check_parts(plan):
        summary["parts"][name] = run_part(name, part)
    summary["pass"] = all(p["pass"] for p in summary["parts"].values())
    (plan.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"gpu_check: {'pass' if summary['pass'] else 'FAIL'}; summary in {plan.out / 'summary.json'}")
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
