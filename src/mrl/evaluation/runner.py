"""`make eval`: evaluate one trained model, or every run of a sweep, and write the results next to the checkpoint.

This module resolves what to evaluate (``run=`` or ``ckpt=``), loads the module and its data, has it measured
(a classifier by :mod:`mrl.evaluation.suite`, a text model by :mod:`mrl.evaluation.text`) into an
:class:`EvaluationResult`, and has that rendered (:mod:`mrl.evaluation.render`: results.json, results.csv,
summary.md, charts; with ``wandb=true`` also W&B).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from mrl.common.errors import ConfigError, InputError, instantiate_clearly
from mrl.evaluation.device import resolve_device
from mrl.evaluation.embeddings import embed_split, load_embeddings
from mrl.evaluation.layer_grid import layer_counts
from mrl.evaluation.render import write_outputs
from mrl.evaluation.render.wandb_log import log_evaluation
from mrl.evaluation.result import EvaluationResult
from mrl.evaluation.settings import EvalConfig, eval_config
from mrl.evaluation.suite import evaluate_classifier
from mrl.evaluation.text import evaluate_text
from mrl.interop.reference import load_reference_resnet50
from mrl.runs import find_checkpoint, find_run_dirs, is_run_collection, load_module, run_dir_of

__all__ = ["embed_split", "evaluate", "evaluate_run", "evaluate_runs", "knn_device", "load_embeddings"]

log = logging.getLogger(__name__)


def knn_device(name: str | None, model_device: torch.device) -> torch.device | None:
    """Where kNN metrics search: ``auto`` = the model's device when it is a GPU, else FAISS on the CPU (None);
    ``cpu`` = FAISS; a GPU name = there."""
    if name in (None, "auto"):
        return model_device if model_device.type == "cuda" else None
    if str(name) == "cpu":
        return None
    try:
        return resolve_device(name)
    except ValueError as error:
        raise ValueError(f"knn.{error}") from None


def check_checkpoint_file(ckpt: str | Path) -> None:
    """``ckpt=`` names one checkpoint file; a folder or a missing path is named as ``ckpt=``, with what to give."""
    path = Path(ckpt)
    if path.is_dir():
        expected = "a directory, not a checkpoint file; give ckpt=<file.ckpt>, or run=<this directory> if it is a run"
        raise InputError("ckpt", path, expected)
    if not path.exists():
        raise InputError("ckpt", path, "no such file; give ckpt=<file.ckpt> or run=<run directory>")


def resolve_paths(settings: EvalConfig) -> tuple[Path, Path, Path]:
    """(checkpoint, run directory, output directory) from ``run=`` or ``ckpt=``."""
    target = settings.run or settings.ckpt
    if not target:
        raise ConfigError("run", None, "give run=<run directory> or ckpt=<checkpoint file> (both are null)")
    if not settings.run:
        check_checkpoint_file(settings.ckpt)
    ckpt = find_checkpoint(target)
    run_dir = run_dir_of(settings.run if settings.run else ckpt)
    out = Path(settings.output_dir) if settings.output_dir else run_dir / "eval"
    return ckpt, run_dir, out


def load_eval_module(settings: EvalConfig, ckpt: Path):
    """The trained module, or with ``reference=`` an official RAIVNLab/MRL ResNet-50 file."""
    if settings.reference:
        return load_reference_resnet50(ckpt, kind=None if settings.reference is True else settings.reference)
    return load_module(ckpt, weights_only=settings.weights_only)


def build_eval_data(cfg: DictConfig, run_dir: Path, module):
    """The data module of ``data=``, else of the run's own ``config.yaml``."""
    if cfg.get("data") is None:
        train_cfg = run_dir / "config.yaml"
        if not train_cfg.is_file():
            raise FileNotFoundError(f"run={str(run_dir)!r}: no config.yaml; pass data=... to say what to evaluate on")
        data_cfg = OmegaConf.load(train_cfg).data
    else:
        # data=<name>: a text set's ${model.backbone.*} (its tokenizer) resolves to the checkpoint's own backbone
        context = cfg.copy()
        with open_dict(context):
            context.model = {"backbone": dict(getattr(module, "hparams", {}).get("backbone") or {})}
        data_cfg = context.data
    datamodule = instantiate_clearly(data_cfg)
    if hasattr(datamodule, "set_data_config") and hasattr(module.backbone, "data_config"):
        datamodule.set_data_config(module.backbone.data_config)
    return datamodule


def evaluate_runs(
    cfg: DictConfig, evaluate_one: Callable[[DictConfig], EvaluationResult] | None = None
) -> list[EvaluationResult]:
    """Evaluate ``run=``; a directory holding several runs (a sweep) has each of them evaluated.

    ``evaluate_one`` evaluates one run (default :func:`evaluate_run`); the command line passes one that also knows
    the post-hoc methods' runs (:mod:`mrl.posthoc` sits above evaluation, so evaluation cannot import it).

    Every run writes ``<run>/eval/`` as on its own. With ``skip_evaluated`` a run that already has
    ``eval/results.json`` is left alone (to finish an interrupted pass). A run that fails is logged and
    the others go on; the failures are raised together at the end.
    """
    evaluate_one = evaluate_one or evaluate_run
    settings = eval_config(cfg)
    target = settings.run
    if not (target and is_run_collection(target)):
        return [evaluate_one(cfg)]
    runs = find_run_dirs(target)
    if not runs:
        raise FileNotFoundError(f"run={str(target)!r}: no run (a directory with checkpoints/*.ckpt) at or below it")
    if settings.output_dir:
        raise ValueError(
            f"output_dir={settings.output_dir!r}: run={str(target)!r} holds {len(runs)} runs and each "
            "writes its own <run>/eval; leave output_dir=null"
        )
    results, failed = [], []
    for i, run in enumerate(runs, 1):
        if settings.skip_evaluated and (run / "eval" / "results.json").is_file():
            log.info("[%d/%d] %s: already evaluated, skipped", i, len(runs), run)
            continue
        log.info("[%d/%d] %s", i, len(runs), run)
        run_cfg = cfg.copy()
        run_cfg.run = str(run)
        try:
            results.append(evaluate_one(run_cfg))
        except Exception as error:  # one broken run must not cost the others their evaluation
            log.error("%s: evaluation failed: %s", run, error)
            failed.append(f"{run}: {type(error).__name__}: {error}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(runs)} runs failed to evaluate; " + " | ".join(failed))
    return results


def evaluate_run(cfg: DictConfig) -> EvaluationResult:
    """Evaluate one run (``run=<run directory>``) or one checkpoint (``ckpt=<file>``) and write its outputs."""
    settings = eval_config(cfg)
    device = resolve_device(settings.device)
    search_device = knn_device(settings.knn.device, device)
    ckpt, run_dir, out = resolve_paths(settings)
    out.mkdir(parents=True, exist_ok=True)
    module = load_eval_module(settings, ckpt)
    if hasattr(module, "head"):
        layer_counts(settings.layers, module, None)  # layers= for a classifier fails now, before its data loads
    module.to(device)
    datamodule = build_eval_data(cfg, run_dir, module)
    log.info("Evaluating %s on %s (%s, %s)", ckpt, type(datamodule).__name__, device, settings.precision)
    if hasattr(module, "head"):
        result = evaluate_classifier(settings, module, datamodule, str(ckpt), out, search_device)
    else:
        result = evaluate_text(settings, module, datamodule, str(ckpt))
    write_outputs(out, result)
    if settings.wandb:
        log_evaluation(result, out, run_dir)
    return result


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """:func:`evaluate_run`, as the dict ``results.json`` holds."""
    return evaluate_run(cfg).to_dict()
