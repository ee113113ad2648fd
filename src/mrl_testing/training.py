"""A quiet CPU trainer fitted on a composed config: what the resume and data-order tests share."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from mrl.training.procedure import build_datamodule, build_model


def fit_config(cfg: Any, callbacks: list, ckpt_path: str | None = None, seed: int | None = None, **limits) -> L.Trainer:
    """Build the config's data module and model (seeding torch first when ``seed`` is given) and fit them on the
    CPU with ``callbacks``, no logger or progress bar, one validation batch and the trainer ``limits``
    (``max_epochs``, ``max_steps``...); returns the trainer (its ``datamodule`` is the one built)."""
    datamodule = build_datamodule(cfg)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        callbacks=callbacks,
        default_root_dir=cfg.paths.output_dir,
        **limits,
    )
    if seed is not None:
        torch.manual_seed(seed)
    trainer.fit(build_model(cfg, datamodule), datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer
