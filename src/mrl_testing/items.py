"""Which training images each process trained on, recorded from runs started as a user starts them
(``python -m mrl.cli.train ... +callbacks.items._target_=mrl_testing.items.RecordItems +callbacks.items.dir=D``)
and read back by the tests of distributed and resumed training."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch


def fingerprint(image: torch.Tensor) -> str:
    """A name for one ``uint8[C, H, W]`` image: with deterministic crops (``data.scale=[1,1]
    data.ratio=[1,1]``), its pixels name the shard item it came from."""
    return hashlib.sha1(image.detach().cpu().numpy().tobytes()).hexdigest()[:16]


class RecordItems(L.Callback):
    """Appends one JSON line per training batch to ``<dir>/items-rank<global rank>.jsonl``: the epoch, the
    global step, the world size and the fingerprints of the uint8 images the loader handed over (taken in the
    model's ``on_after_batch_transfer``, before the device flips them). Appending keeps what a run that is
    stopped and resumed in the same directory trained on, in both of its parts."""

    def __init__(self, dir: str) -> None:
        self.dir = Path(dir)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"items-rank{trainer.global_rank}.jsonl"
        convert = pl_module.on_after_batch_transfer

        def record(batch: Any, dataloader_idx: int) -> Any:
            if trainer.training and isinstance(batch, (tuple, list)) and batch[0].dtype == torch.uint8:
                line = {
                    "epoch": trainer.current_epoch,
                    "step": trainer.global_step,
                    "world_size": trainer.world_size,
                    "items": [fingerprint(image) for image in batch[0]],
                }
                with open(path, "a") as fh:
                    fh.write(json.dumps(line) + "\n")
            return convert(batch, dataloader_idx)

        pl_module.on_after_batch_transfer = record


def read_items(dir: str | Path) -> dict[int, list[dict[str, Any]]]:
    """``{global rank: [one record per training batch, in order]}`` from :class:`RecordItems`' files."""
    found = {}
    for path in sorted(Path(dir).glob("items-rank*.jsonl")):
        rank = int(path.stem.removeprefix("items-rank"))
        found[rank] = [json.loads(line) for line in path.read_text().splitlines() if line]
    return found


def epoch_items(records: Iterable[dict[str, Any]], epoch: int) -> list[str]:
    """The fingerprints one process trained on in ``epoch``, in order."""
    return [item for record in records if record["epoch"] == epoch for item in record["items"]]
