"""Per-size training logging: Lightning's ``self.log`` on the written steps only (``mrl.training.step_logging``)
against every value through ``self.log`` every step (``mrl_testing.every_step_logging``), on real training steps.

Run: ``python benchmarks/step_logging.py [--experiment text_mrl --steps 40 --rounds 2 --threads 1 --tiny]``.
Each round trains the experiment's model once each way, one after the other (the same data, seed and
``trainer.log_every_n_steps``). Per training-loop iteration (one batch start to the next: step, logging, logger
writes), the table gives the median wall time, the ``self.log`` calls and the time spent in them; the ratio is
every-step logging's time per step over ours, per round. ``--tiny`` swaps the encoder for a 2-layer, 32-wide random
BERT (projected to 384, so the sizes stay): a short step, as on a GPU, where the logging weighs most.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from mrl.training.procedure import build_datamodule, build_model
from mrl_testing.configs import compose_train

REFERENCE = {
    "text_mrl": "mrl_testing.every_step_logging.ClassifierLoggingEveryStep",
    "text_pairs_mrl": "mrl_testing.every_step_logging.ContrastiveLoggingEveryStep",
}


class _Clock(L.Callback):
    """Wall time, ``self.log`` calls and their time of each training-loop iteration."""

    def __init__(self, calls: dict) -> None:
        self.calls, self.rows, self.mark = calls, [], None

    def on_train_batch_start(self, *args) -> None:
        now = (time.perf_counter(), self.calls["n"], self.calls["s"])
        if self.mark is not None:
            self.rows.append(tuple(b - a for a, b in zip(self.mark, now)))
        self.mark = now


def tiny_bert(directory: Path) -> str:
    """A 2-layer, 32-wide BERT with random weights and the bundled MiniLM tokenizer, saved in ``directory``."""
    from transformers import BertConfig, BertModel

    from mrl.backbones.hf_text import load_tokenizer

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(directory)
    load_tokenizer(None).save_pretrained(directory)
    return str(directory)


def train(experiment: str, reference: bool, steps: int, log_every: int, extra: list[str], out: Path) -> dict:
    """``steps`` training steps of ``experiment``; per-iteration medians, skipping the first three (warm-up)."""
    overrides = [f"experiment={experiment}", "trainer.accelerator=cpu", *extra]
    if reference:
        overrides.append(f"model._target_={REFERENCE[experiment]}")
    cfg = compose_train(overrides, out)
    L.seed_everything(0, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    calls = {"n": 0, "s": 0.0}
    log = L.LightningModule.log

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return log(self, *args, **kwargs)
        finally:
            calls["n"] += 1
            calls["s"] += time.perf_counter() - start

    clock = _Clock(calls)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps + 1,
        log_every_n_steps=log_every,
        logger=CSVLogger(str(out)),
        callbacks=[clock],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    L.LightningModule.log = timed
    try:
        trainer.fit(model, datamodule)
    finally:
        L.LightningModule.log = log
    rows = clock.rows[3:]
    return {
        "step_ms": 1000 * statistics.median(r[0] for r in rows),
        "calls": statistics.mean(r[1] for r in rows),
        "log_ms": 1000 * statistics.mean(r[2] for r in rows),
    }


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="text_mrl", choices=sorted(REFERENCE))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--log-every", type=int, default=10, help="trainer.log_every_n_steps (the default config's)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="a tiny random encoder: a short step, as on a GPU")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict[str, dict] = {"every step": {"rounds": []}, "written steps": {"rounds": []}}
    with tempfile.TemporaryDirectory() as tmp:
        extra = []
        if args.tiny:
            extra = [f"model.backbone.name_or_path={tiny_bert(Path(tmp) / 'tiny')}", "model.backbone.embed_dim=384"]
        for i in range(args.rounds):
            for name, reference in (("every step", True), ("written steps", False)):
                out = Path(tmp) / f"{i}_{reference}"
                results[name]["rounds"].append(
                    train(args.experiment, reference, args.steps, args.log_every, extra, out)
                )
    print(f"{args.experiment}{' (tiny encoder)' if args.tiny else ''}: {args.steps} steps a run, "
          f"log_every_n_steps={args.log_every}, {args.threads} thread(s), {args.rounds} rounds")  # fmt: skip
    print(f"{'logging':>14} | {'ms/step':>8} | {'self.log calls/step':>19} | {'self.log ms/step':>16} | share")
    for name, result in results.items():
        rounds = result["rounds"]
        result.update({key: statistics.median(r[key] for r in rounds) for key in ("step_ms", "calls", "log_ms")})
        print(
            f"{name:>14} | {result['step_ms']:8.1f} | {result['calls']:19.1f} | {result['log_ms']:16.2f} | "
            f"{100 * result['log_ms'] / result['step_ms']:.1f}%"
        )
    ratios = [
        a["step_ms"] / b["step_ms"] for a, b in zip(results["every step"]["rounds"], results["written steps"]["rounds"])
    ]
    results["ratio"] = {"step": statistics.median(ratios), "rounds": ratios}
    print(f"time per step, every step / written steps: {statistics.median(ratios):.2f}x (rounds: "
          f"{', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
