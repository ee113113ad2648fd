"""``make train EXP=<experiment> method=<csr|adaptor|adaptor_supervised|truncate|pca>``: a post-hoc method trained on
the frozen embeddings of the experiment's encoder (:mod:`mrl.posthoc.frozen`), into an ordinary run directory
(``config.yaml``, ``checkpoints/``, ``results.json``) that ``make eval`` and ``make report`` read like any other.

``results.json`` names the method as the run's ``head`` (so ``make report`` gives it a curve of its own), the
frozen embeddings file, the training wall time (``train_seconds``; the frozen source's own training is not in it)
and the final validation loss.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from mrl.common.errors import ConfigError
from mrl.common.io import atomic_write_text, write_json
from mrl.core.nesting import default_nesting
from mrl.evaluation.baselines import fit_pca
from mrl.posthoc.frozen import FrozenEmbeddings, frozen_embeddings
from mrl.posthoc.module import METHODS, TRAINED_METHODS, PairedEmbeddings, PostHocModule

__all__ = ["is_posthoc_config", "method_sizes", "run_posthoc"]

log = logging.getLogger(__name__)
MODULE_KEYS = (
    "train_sizes", "hidden_dim", "k_aux", "dead_threshold", "beta", "gamma", "scale", "top_k", "pairwise_weight",
    "reconstruction_weight", "unsupervised_weight", "normalize_input", "lr", "weight_decay",
)  # fmt: skip


def is_posthoc_config(cfg: DictConfig) -> bool:
    """True when the composed training config asks for a post-hoc method (``method=csr`` and the like)."""
    method = cfg.get("method")
    return isinstance(method, DictConfig) and method.get("name") in METHODS


def method_sizes(method: DictConfig, dim: int) -> list[int]:
    """``method.sizes``, else halving sizes of the width; for CSR those whose k-sparse code (uint16 index + fp32
    value, 6 bytes a unit) costs no more than the full dense vector in fp32 and whose 4k fits the code width."""
    if method.get("sizes"):
        return sorted(int(m) for m in method.sizes)
    if method.name == "csr":
        hidden = int(method.get("hidden_dim") or 4 * dim)
        return [m for m in default_nesting(dim) if 4 * m <= hidden and 6 * m <= 4 * dim]
    return default_nesting(dim)


def _loaders(frozen: FrozenEmbeddings, batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
    def dataset(split: str) -> PairedEmbeddings:
        return PairedEmbeddings(
            frozen[f"{split}_anchor"], frozen.get(f"{split}_positive"), frozen.get(f"{split}_labels")
        )

    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(dataset("train"), batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)
    return train, DataLoader(dataset("val"), batch_size=batch_size)


def _train(cfg: DictConfig, frozen: FrozenEmbeddings, sizes: list[int], run_dir: Path) -> dict[str, Any]:
    method = cfg.method
    # plain lists and numbers: the checkpoint's hyper-parameters load with weights_only
    options = {key: OmegaConf.to_container(method[key]) if OmegaConf.is_config(method[key]) else method[key]
               for key in MODULE_KEYS if key in method}  # fmt: skip
    module = PostHocModule(method.name, frozen.dim, sizes, frozen_embeddings=str(frozen.path.resolve()), **options)
    train, val = _loaders(frozen, int(method.batch_size), int(cfg.seed))
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="epoch_{epoch:03d}", monitor="val/loss", mode="min",
        save_last=True, auto_insert_metric_name=False, enable_version_counter=False,
    )  # fmt: skip
    trainer = L.Trainer(
        max_epochs=int(method.max_epochs),
        accelerator=cfg.trainer.get("accelerator", "auto"),
        devices=1,
        logger=L.pytorch.loggers.CSVLogger(run_dir, name="csv", version=""),
        callbacks=[checkpoint],
        default_root_dir=run_dir,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=5,
        limit_train_batches=cfg.trainer.get("limit_train_batches"),
        max_steps=cfg.trainer.get("max_steps", -1) or -1,
    )
    start = time.perf_counter()
    trainer.fit(module, train, val)
    seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {"best_checkpoint": checkpoint.best_model_path or None, "train_seconds": seconds, "metrics": metrics,
            "global_step": trainer.global_step}  # fmt: skip


def _fit_free(cfg: DictConfig, frozen: FrozenEmbeddings, sizes: list[int], run_dir: Path) -> dict[str, Any]:
    """Truncation and PCA: nothing to train; PCA's directions (fitted on the train split) are the checkpoint."""
    start = time.perf_counter()
    state: dict[str, Any] = {"hyper_parameters": {"name": cfg.method.name, "input_dim": frozen.dim, "sizes": sizes,
                                                  "frozen_embeddings": str(frozen.path.resolve())}}  # fmt: skip
    if cfg.method.name == "pca":
        train = np.asarray(frozen["train_anchor"], dtype=np.float32)
        train = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)
        projection = fit_pca(train, max(sizes))
        state["state_dict"] = {"matrix": torch.from_numpy(projection.matrix),
                               "mean": torch.from_numpy(projection.mean)}  # fmt: skip
    else:
        state["state_dict"] = {}
    path = run_dir / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return {"best_checkpoint": str(path), "train_seconds": time.perf_counter() - start, "metrics": {"val/loss": 0.0},
            "global_step": 0}  # fmt: skip


def run_posthoc(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Frozen embeddings (computed once), the method trained on them, ``results.json`` written."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    method = cfg.method
    if method.name not in METHODS:
        raise ConfigError("method.name", method.name, f"expected one of {', '.join(METHODS)}")
    L.seed_everything(cfg.seed, workers=True)
    frozen = frozen_embeddings(cfg)
    sizes = method_sizes(method, frozen.dim)
    L.seed_everything(cfg.seed, workers=True)
    trained = (_train if method.name in TRAINED_METHODS else _fit_free)(cfg, frozen, sizes, run_dir)
    results = {
        "experiment": cfg.experiment_name,
        "head": method.name,
        "method": OmegaConf.to_container(method, resolve=True),
        "embed_dim": frozen.dim,
        "sizes": sizes,
        "nesting": sizes,
        "seed": cfg.seed,
        "run_dir": str(run_dir),
        "frozen_embeddings": str(frozen.path.resolve()),
        "frozen_source": frozen.meta.get("source"),
        **trained,
    }
    write_json(run_dir / "results.json", results)
    log.info("%s on frozen %s embeddings: trained in %.1f s", method.name, frozen.kind, trained["train_seconds"])
    return results
