"""The training procedure behind ``mrl.cli.train``: build data, model, callbacks, loggers and trainer from a
composed config, fit (resuming when the run directory holds a checkpoint), test, and write results.

``results.json`` records ``train_seconds``, the wall time of ``trainer.fit`` (the key the post-hoc runs of
:mod:`mrl.posthoc.procedure` use, so training costs compare across both kinds of run; see :func:`run_training`)."""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.syntax import Syntax
from rich.tree import Tree

from mrl.common.errors import InputError, instantiate_clearly
from mrl.common.io import atomic_write_text, console, write_json
from mrl.common.wandb_curves import log_size_curves
from mrl.common.wandb_runs import DEFAULT_INIT_TIMEOUT, check_init_timeout, stable_run_id, start_wandb
from mrl.runs import latest_resume_checkpoint, verify_checkpoint
from mrl.training.callbacks import curve_table, print_curve
from mrl.training.wandb_identity import CONFIG_KEY, backbone_name, head_kind, identity_tags, run_identity, wandb_group

log = logging.getLogger(__name__)


def print_config_tree(cfg: DictConfig) -> None:
    tree = Tree("config", guide_style="dim")
    for key in cfg:
        branch = tree.add(str(key))
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        branch.add(Syntax(text, "yaml"))
    console().print(tree)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    if cfg.get("data") is None or "_target_" not in cfg.data:
        raise ValueError("data: no data module configured; choose one, e.g. data=digits")
    return instantiate_clearly(cfg.data)


def build_model(cfg: DictConfig, datamodule: L.LightningDataModule) -> L.LightningModule:
    """Fill in what the data decides (class count, input channels) and check what the user set."""
    model_cfg = cfg.model.copy()
    expected = model_cfg.get("num_classes")
    if expected is not None and int(expected) != int(datamodule.num_classes):
        raise ValueError(
            f"model.num_classes={expected}: does not match the data ({type(datamodule).__name__} has "
            f"{datamodule.num_classes} classes); set it to {datamodule.num_classes} or null"
        )
    with open_dict(model_cfg):
        if "num_classes" in model_cfg:  # a classifier; a contrastive model has no classes
            model_cfg.num_classes = int(datamodule.num_classes)
        if "backbone" in model_cfg and model_cfg.backbone.get("in_chans", 1) is None:
            model_cfg.backbone.in_chans = int(getattr(datamodule, "in_chans", 3))
    model = instantiate_clearly(model_cfg, _recursive_=False)
    backbone = getattr(model, "backbone", None)
    if hasattr(datamodule, "set_data_config") and hasattr(backbone, "data_config"):
        datamodule.set_data_config(backbone.data_config)
    return model


def build_callbacks(cfg: DictConfig, with_loggers: bool = True) -> list[L.Callback]:
    """Callbacks from config; the learning-rate monitor is dropped when there is no logger to feed."""
    callbacks = []
    for callback_cfg in (cfg.get("callbacks") or {}).values():
        if not callback_cfg or "_target_" not in callback_cfg:
            continue
        if not with_loggers and callback_cfg._target_.endswith("LearningRateMonitor"):
            continue
        callbacks.append(instantiate(callback_cfg))
    return callbacks


def build_loggers(cfg: DictConfig, run_dir: Path, identity: dict[str, Any] | None = None) -> list:
    """Loggers from config. The W&B run is started here, before training, by :func:`start_wandb`: online, or
    offline (one line says why and how to sync) when there is no key or the server does not answer within
    ``logger.wandb.init_timeout`` seconds. Only rank 0 starts one, as Lightning's WandbLogger does. Its group
    defaults to :func:`wandb_group` (one per sweep); ``identity`` (:func:`run_identity`) adds its tags."""
    from lightning.pytorch.utilities import rank_zero_only

    def started(make_logger, **chosen):
        logger = make_logger(**chosen)
        logger.experiment  # noqa: B018 (wandb.init now, rather than at the first log inside training)
        return logger

    loggers = []
    for key, logger_cfg in (cfg.get("logger") or {}).items():
        if not logger_cfg or "_target_" not in logger_cfg:
            continue
        if "WandbLogger" not in logger_cfg._target_:
            loggers.append(instantiate(logger_cfg))
            continue
        with open_dict(logger_cfg):
            logger_cfg.id = logger_cfg.get("id") or stable_run_id(run_dir)
            logger_cfg.name = logger_cfg.get("name") or run_dir.name
            logger_cfg.group = logger_cfg.get("group") or wandb_group(cfg, run_dir)
            if identity is not None:
                logger_cfg.tags = list(dict.fromkeys([*(logger_cfg.get("tags") or []), *identity_tags(identity)]))
            logger_cfg.resume = "allow"
        init_cfg = logger_cfg.copy()
        with open_dict(init_cfg):  # ours, not a wandb.init argument
            timeout = check_init_timeout(
                init_cfg.pop("init_timeout", DEFAULT_INIT_TIMEOUT), f"logger.{key}.init_timeout"
            )
        if rank_zero_only.rank != 0 or init_cfg.get("offline"):  # other ranks: no W&B run (a dummy experiment)
            loggers.append(instantiate(init_cfg))
            continue
        start = partial(started, instantiate(init_cfg, _partial_=True))
        loggers.append(start_wandb(start, init_cfg.get("save_dir") or run_dir, timeout))
    return loggers


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """An explicit ``ckpt_path`` (once it verifies), else the newest whole checkpoint of the run directory."""
    if cfg.ckpt_path:
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint file")
        reason = verify_checkpoint(path)
        if reason is not None:
            raise InputError("ckpt_path", cfg.ckpt_path, f"damaged, not resumed from ({reason})")
        log.info("Resuming from ckpt_path=%s", path)
        return str(path)
    latest = latest_resume_checkpoint(run_dir)
    if latest is not None:
        log.info("Resuming from %s (this run directory already holds a checkpoint)", latest)
        return str(latest)
    return None


def _numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if not k.endswith("_step")}


def run_training(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train, evaluate the best checkpoint, write ``results.json``; always closes the loggers.

    ``train_seconds`` in ``results.json`` is the wall time of ``trainer.fit`` alone: the epochs with their
    validation passes, checkpoint saving and callbacks inside ``fit``, and the data module's setup that ``fit``
    runs. It excludes start-up and imports, building the data module, model, loggers and trainer, the final
    validation and test of the best checkpoint, and writing results. A resumed run counts only this call's
    ``fit``, not the earlier attempts; ``train=false`` (evaluate only) records ``null``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.print_config:
        print_config_tree(cfg)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    identity = run_identity(cfg, model, datamodule)
    loggers = build_loggers(cfg, run_dir, identity)
    callbacks = build_callbacks(cfg, with_loggers=bool(loggers))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        for logger in loggers:
            logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), CONFIG_KEY: identity})
        train_seconds = None
        if cfg.train:
            ckpt_path = resume_checkpoint(cfg, run_dir)
            start = time.perf_counter()
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
            train_seconds = time.perf_counter() - start
        results = collect_results(cfg, trainer, model, datamodule, run_dir, train_seconds)
    finally:
        for logger in loggers:
            if hasattr(logger, "finalize"):
                logger.finalize("success")
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            wandb.finish()
    return results


def collect_results(
    cfg, trainer, model, datamodule, run_dir: Path, train_seconds: float | None = None
) -> dict[str, Any]:
    """Validate (and test) the best checkpoint and write the final per-size metrics, with ``train_seconds`` (the
    wall time of ``trainer.fit``, ``None`` when nothing was trained), to results.json."""
    fast = bool(cfg.trainer.get("fast_dev_run"))
    best = None if fast else (getattr(trainer.checkpoint_callback, "best_model_path", "") or None)
    if best is None and not cfg.train and cfg.ckpt_path:
        best = str(cfg.ckpt_path)  # evaluate-only: the given checkpoint, not fresh weights
    metrics: dict[str, float] = {}
    if cfg.train or cfg.ckpt_path:
        metrics.update(_numbers(trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)[0]))
        if cfg.test:
            metrics.update(_numbers(trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)[0]))
    results = {
        "experiment": cfg.experiment_name,
        "head": head_kind(model),
        "backbone": backbone_name(model),
        "embed_dim": model.embed_dim,
        "sizes": model.sizes,
        "nesting": model.nesting,
        "num_classes": model.hparams.get("num_classes"),
        "seed": cfg.seed,
        "run_dir": str(run_dir),
        "best_checkpoint": best,
        "global_step": trainer.global_step,
        "train_seconds": train_seconds,
        "metrics": metrics,
    }
    if hasattr(datamodule, "bad_image_paths"):  # unreadable images, left out of training and named here
        results["skipped_images"] = datamodule.bad_image_paths()
    if trainer.is_global_zero:
        write_json(run_dir / "results.json", results)
        log_final_curves(trainer.loggers, metrics, model.sizes)
        names, rows = curve_table(metrics, model.sizes, "val")
        if rows:
            what = {"top1": "accuracy", "spearman": "Spearman"}.get(names[0], "retrieval")
            print_curve(names, rows, f"{results['experiment']} ({results['head']}): val {what} by embedding size")
    return results


def log_final_curves(loggers: list, metrics: dict[str, float], sizes: list[int]) -> None:
    """The final per-size metrics as W&B curves against ``curve/size`` (:func:`log_size_curves`) on each W&B
    logger; a W&B failure is one warning, never the end of the run."""
    for logger in loggers:
        if type(logger).__name__ != "WandbLogger":
            continue
        try:
            log_size_curves(logger.experiment, metrics, sizes)
        except Exception as error:
            log.warning("W&B: the per-size curves were not logged (%s: %s)", type(error).__name__, error)


def optimized_metric(cfg: DictConfig, results: dict[str, Any]) -> float | None:
    name = cfg.optimized_metric
    if not name:
        return None
    value = results.get("metrics", {}).get(name)
    if value is None:
        raise KeyError(
            f"optimized_metric={name!r}: not among the run's metrics "
            f"({', '.join(sorted(results.get('metrics', {}))[:8])}, ...)"
        )
    return float(value)
