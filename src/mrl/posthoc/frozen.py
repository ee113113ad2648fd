"""Frozen embeddings for the post-hoc methods: computed once from a source encoder and cached in a file.

``method.source`` says which encoder:

- ``standard`` (images): the experiment's own model trained with the standard head (one classifier over the full
  embedding, no Matryoshka loss), at the same seed: the rigid model the MRL paper compares with. It is trained
  once, into ``<paths.log_dir>/frozen/standard_seed<seed>_<hash>/``, and reused by every post-hoc run
  with the same data, model, trainer and seed.
- ``stock`` (text): the experiment's encoder as it is, untrained (the pretrained all-MiniLM-L6-v2, say).
- a path: any trained run directory (image or text) of this framework; its best checkpoint and its own data.

The embeddings of the train and val splits (for pairs: the anchors and the positives) are written to
``frozen_<hash>.npz`` next to the source run (under ``<paths.log_dir>/frozen/`` for a stock model), keyed by what
produced them (checkpoint file, size and time, or the stock model's config, and the data config).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from mrl.common.errors import ConfigError, InputError, instantiate_clearly
from mrl.common.io import atomic_savez
from mrl.evaluation.embeddings import embed_split
from mrl.evaluation.text import embed_loader
from mrl.runs import find_checkpoint, load_module
from mrl.training.procedure import build_datamodule, build_model, run_training

__all__ = ["FrozenEmbeddings", "frozen_embeddings", "load_frozen"]

log = logging.getLogger(__name__)
SPLITS = ("train", "val")


class FrozenEmbeddings(dict):
    """``{"train_anchor", "train_positive" (pairs), "train_labels" (classes), "val_..."}`` arrays, plus ``path``,
    ``kind`` (``classes`` or ``pairs``) and ``meta`` (what produced them)."""

    path: Path
    kind: str
    meta: dict

    @property
    def dim(self) -> int:
        return int(self["train_anchor"].shape[1])


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _container(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def load_frozen(path: str | Path) -> FrozenEmbeddings:
    path = Path(path)
    if not path.is_file():
        raise InputError("frozen_embeddings", path, "no such file; rerun make train of this post-hoc run")
    with np.load(path) as data:
        out = FrozenEmbeddings({k: data[k] for k in data.files if k != "meta"})
        out.meta = json.loads(str(data["meta"]))
    out.path, out.kind = path, out.meta["kind"]
    return out


def _embed(module, datamodule, kind: str) -> dict[str, np.ndarray]:
    """The train and val splits through the frozen encoder, in loader order."""
    arrays: dict[str, np.ndarray] = {}
    if kind == "classes":
        for split in SPLITS:
            out = embed_split(module, datamodule.eval_dataloader(split), logits=False, name=split)
            arrays[f"{split}_anchor"], arrays[f"{split}_labels"] = out["embeddings"], out["labels"]
        return arrays
    for split in SPLITS:
        parts = embed_loader(module, datamodule.eval_dataloader(split))
        arrays[f"{split}_anchor"], arrays[f"{split}_positive"] = parts[0].numpy(), parts[1].numpy()
    return arrays


def _kind(datamodule) -> str:
    kind = getattr(datamodule, "eval_kind", getattr(datamodule, "kind", "classification"))
    if kind == "pairs":
        return "pairs"
    if int(getattr(datamodule, "num_classes", 0) or 0) > 0:
        return "classes"
    raise ConfigError("data", type(datamodule).__name__, "expected labelled classes or (anchor, positive) pairs")


def _write(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> FrozenEmbeddings:
    atomic_savez(path, **arrays, meta=np.array(json.dumps(meta)))
    log.info("Frozen embeddings written to %s", path)
    return load_frozen(path)


def _from_module(module, datamodule, path: Path, meta: dict) -> FrozenEmbeddings:
    if path.is_file():
        log.info("Frozen embeddings: reusing %s", path)
        return load_frozen(path)
    kind = _kind(datamodule)
    with torch.no_grad():
        arrays = _embed(module.eval(), datamodule, kind)
    return _write(path, arrays, {**meta, "kind": kind, "dim": int(arrays["train_anchor"].shape[1])})


def _from_run(run: Path) -> FrozenEmbeddings:
    ckpt = find_checkpoint(run)
    stat = ckpt.stat()
    data_cfg = OmegaConf.load(run / "config.yaml").data
    key = {"checkpoint": str(ckpt.resolve()), "bytes": stat.st_size, "mtime": stat.st_mtime_ns}
    path = run / f"frozen_{_digest([key, _container(data_cfg)])}.npz"
    if path.is_file():
        log.info("Frozen embeddings: reusing %s", path)
        return load_frozen(path)
    module = load_module(ckpt)
    datamodule = instantiate_clearly(data_cfg)
    if hasattr(datamodule, "set_data_config") and hasattr(module.backbone, "data_config"):
        datamodule.set_data_config(module.backbone.data_config)
    return _from_module(module, datamodule, path, {"source": str(run), **key})


def _standard_run(cfg: DictConfig) -> Path:
    """The experiment's model trained with the standard head at this seed, trained here on first use."""
    source = cfg.copy()
    with open_dict(source):
        source.pop("method", None)
        source.model.head.kind = "standard"
        source.model.head.dim = None
        source.logger = {}
        source.print_config = False
        source.test = False
    trainer = {k: v for k, v in source.trainer.items() if k not in ("default_root_dir", "plugins")}
    key = _digest({**{k: _container(source.get(k)) for k in ("data", "model", "seed")}, "trainer": _container(trainer)})
    root = Path(cfg.paths.log_dir) / "frozen" / f"standard_seed{cfg.seed}_{key}"
    if (root / "results.json").is_file():
        log.info("Frozen source: reusing the standard run %s", root)
        return root
    with open_dict(source):
        source.paths.output_dir = str(root)
    log.info("Frozen source: training the standard model once, into %s", root)
    run_training(source, root)
    return root


def frozen_embeddings(cfg: DictConfig) -> FrozenEmbeddings:
    """The frozen embeddings ``method.source`` names (see the module docstring), computed on first use."""
    source = cfg.method.get("source") or ("standard" if "head" in cfg.model else "stock")
    if source == "standard":
        if "head" not in cfg.model:
            raise ConfigError("method.source", source, "a classifier experiment's option; for text use stock or a run")
        return _from_run(_standard_run(cfg))
    if source == "stock":
        datamodule = build_datamodule(cfg)
        module = build_model(cfg, datamodule)
        key = _digest([_container(cfg.model.backbone), _container(cfg.data)])
        folder = Path(cfg.paths.log_dir) / "frozen"
        folder.mkdir(parents=True, exist_ok=True)
        return _from_module(module, datamodule, folder / f"frozen_{key}.npz", {"source": "stock", "model": key})
    run = Path(str(source))
    if not (run / "config.yaml").is_file():
        raise ConfigError("method.source", source, "expected standard, stock, or a trained run directory")
    return _from_run(run)
