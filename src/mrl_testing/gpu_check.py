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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

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
        import torch

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


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None, timeout: int = 1800) -> None:
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the same sequence on the CPU, tiny sizes")
    p.add_argument("--out", default=None, help="working folder (default: outputs/gpu_check)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default 300; dry: 3)")
    p.add_argument("--images", type=int, default=None, help="training images to build (default 4000; dry: 24)")
    p.add_argument("--python", default=sys.executable)
    args = p.parse_args(argv)
    dry = args.dry_run
    out = Path(args.out or ROOT / "outputs" / "gpu_check").resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or (3 if dry else 300)
    n_images = args.images or (24 if dry else 4000)
    py = args.python
    device = "cpu" if dry else "cuda"
    src, shards, runs = out / "images", out / "shards", out / "runs"
    sizes = (
        [
            "model.backbone.name=resnet10t",
            "model.nesting=null",
            "data.image_size=32",
            "data.batch_size=4",
            "data.num_workers=0",
        ]
        + ["data.persistent_workers=false", "data.pin_memory=false", "trainer.precision=32"]
        if dry
        else ["trainer.precision=bf16-mixed", "data.batch_size=256"]
    )
    # one process: the recipe's trainer.devices=4 would otherwise make the dry run four CPU processes
    single = ["trainer=cpu", "trainer.devices=1"] if dry else ["trainer=gpu", "trainer.devices=1"]
    common = [
        "experiment=imagenet_mrl",
        "data=imagenet_shards",
        f"data.root={shards}",
        "model.channels_last=true",
        f"trainer.max_steps={steps}",
        "trainer.limit_val_batches=2",
        "trainer.num_sanity_val_steps=0",
        "logger=none",
        "test=false",
        "print_config=false",
        *sizes,
    ]
    summary: dict[str, Any] = {"dry_run": dry, "device": device, "steps": steps, "parts": {}}

    def part(name: str, fn) -> None:
        start = time.perf_counter()
        try:
            figures = fn() or {}
            summary["parts"][name] = {"pass": True, "seconds": round(time.perf_counter() - start, 1), **figures}
        except Exception as err:  # noqa: BLE001 - every part reports, whatever failed
            summary["parts"][name] = {
                "pass": False,
                "seconds": round(time.perf_counter() - start, 1),
                "error": str(err),
            }
        status = "pass" if summary["parts"][name]["pass"] else "FAIL"
        print(f"gpu_check: {name}: {status} {json.dumps(summary['parts'][name])}", flush=True)

    def images():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from data import build_folder  # benchmarks/data.py

        for split, n, seed in (("train", n_images, 0), ("val", max(n_images // 8, 10), 1)):
            if not (src / split).is_dir():
                tmp = out / f"build-{split}"
                build_folder(tmp, n, classes=10, seed=seed)
                (src).mkdir(parents=True, exist_ok=True)
                os.replace(tmp / "train", src / split)
        return {"train_images": n_images}

    def prepare():
        _run(
            [py, "-m", "mrl.cli.prepare", str(src), str(shards), "--raw-fraction", "0.5", "--quiet"],
            out / "prepare.log",
        )
        _run([py, "-m", "mrl.cli.prepare", "--verify", str(shards), "--quiet"], out / "verify.log")

    text_common = [
        "experiment=text_pairs_mrl",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=-1",
        "trainer.limit_val_batches=2",
        "trainer.num_sanity_val_steps=0",
        "logger=none",
        "test=false",
        "print_config=false",
        *(
            ["data.batch_size=8", "trainer.precision=32"]
            if dry
            else ["data.batch_size=128", "trainer.precision=bf16-mixed"]
        ),
    ]

    def train(name: str, extra: list[str], env: dict[str, str] | None = None, base: list[str] = common):
        def go():
            figures = out / f"{name}.json"
            cmd = [py, "-m", "mrl.cli.train", *base, *extra, f"hydra.run.dir={runs / name}"]
            cmd += [
                "+callbacks.throughput._target_=mrl_testing.gpu_check.Throughput",
                f"+callbacks.throughput.path={figures}",
                f"+callbacks.throughput.warmup={1 if dry else 20}",
            ]
            _run(cmd, out / f"{name}.log", env)
            return json.loads(figures.read_text()) if figures.exists() else {}

        return go

    def make_eval():
        _run(
            ["make", "eval", f"RUN={runs / 'train'}", f"PY={py}", f"ARGS=device={device} knn.device={device}"],
            out / "eval.log",
        )
        return {"results": str(next((runs / "train").rglob("results*.json"), ""))}

    def make_embed():
        _run(
            ["make", "embed", f"RUN={runs / 'train'}", f"INPUT={src / 'val'}", f"PY={py}", f"ARGS=--device {device}"],
            out / "embed.log",
        )

    part("images", images)
    part("prepare", prepare)
    part("train", train("train", [*single, "model.compile=false"]))
    # on the CPU, torch.compile is switched off by TORCHDYNAMO_DISABLE (its configuration path still runs)
    part(
        "train_compile",
        train("train_compile", [*single, "model.compile=true"], {"TORCHDYNAMO_DISABLE": "1"} if dry else None),
    )
    part("train_device_decode", train("train_device_decode", [*single, "model.compile=false", "data.decode=device"]))
    part("eval", make_eval)
    part("embed", make_embed)
    ddp = ["trainer=ddp_cpu", "trainer.devices=1"] if dry else ["trainer=ddp", "trainer.devices=1"]
    part("ddp", train("ddp", ddp))
    # text pairs (all-MiniLM-L6-v2, bf16-mixed on the GPU): plain, the cached step, DDP with gathered negatives
    part("text", train("text", single, base=text_common))
    cached = f"model.loss.mini_batch_size={4 if dry else 32}"
    part("text_cached", train("text_cached", [*single, cached], base=text_common))
    part("text_ddp", train("text_ddp", [*ddp, "model.loss.gather=true"], base=text_common))
    summary["pass"] = all(p["pass"] for p in summary["parts"].values())
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"gpu_check: {'pass' if summary['pass'] else 'FAIL'}; summary in {out / 'summary.json'}")
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
