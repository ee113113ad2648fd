"""Run directories and their checkpoints: find a run's best checkpoint, the checkpoint a rerun resumes from,
the run a checkpoint belongs to, and load a trained module back safely (``weights_only``).

A run directory holds ``config.yaml``, ``checkpoints/*.ckpt`` (``last.ckpt`` among them), ``results.json`` and
what evaluation, embedding and export write beside them."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import torch

from mrl.common.io import read_json

HPC_PATTERN = "hpc_ckpt_*.ckpt"


def run_dir_of(run_or_ckpt: str | Path) -> Path:
    """The run directory of a run directory (itself) or of a checkpoint (the folder above ``checkpoints/``,
    else the checkpoint's own folder)."""
    path = Path(run_or_ckpt)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def find_checkpoint(run_or_ckpt: str | Path) -> Path:
    """The best checkpoint of a run directory (from results.json, else the newest), or the file itself."""
    path = Path(run_or_ckpt)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"run={str(path)!r}: neither a run directory nor a checkpoint file")
    results = path / "results.json"
    if results.is_file():
        best = read_json(results).get("best_checkpoint")
        if best and Path(best).is_file():
            return Path(best)
    candidates = sorted((path / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    best = [p for p in candidates if p.name != "last.ckpt"] or candidates
    if not best:
        raise FileNotFoundError(f"run={str(path)!r}: no checkpoints/*.ckpt in this run directory")
    return best[-1]


def is_run_collection(path: str | Path) -> bool:
    """A directory that is not itself a run (no ``checkpoints/``, no ``results.json``): a sweep, say."""
    path = Path(path)
    return path.is_dir() and not (path / "checkpoints").is_dir() and not (path / "results.json").is_file()


def find_run_dirs(root: str | Path) -> list[Path]:
    """The training runs below ``root``: directories whose ``checkpoints/`` holds a ``.ckpt``."""
    return sorted(p.parent for p in Path(root).rglob("checkpoints") if p.is_dir() and any(p.glob("*.ckpt")))


def _load_failure(error: Exception) -> str:
    """The useful part of torch.load's error (its weights_only message buries the cause)."""
    text = str(error).strip()
    if "WeightsUnpickler error:" in text:
        cause = next(
            (line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines() if line.strip()), ""
        )
        if cause.startswith("Unsupported global"):
            name = cause.split(" was not", 1)[0].removeprefix("Unsupported global: GLOBAL ")
            return (
                f"it holds a pickled object, {name}, which weights_only loading refuses; "
                "if you trust the file, pass weights_only=false"
            )
        return f"corrupt, or not a PyTorch checkpoint: {cause}"
    return text.splitlines()[0] if text else type(error).__name__


def load_module(path: str | Path, weights_only: bool = True) -> L.LightningModule:
    """Rebuild the module from the checkpoint's hyper-parameters and load its weights.

    Backbones are rebuilt without pretrained weights (the checkpoint holds the trained ones), so
    nothing is downloaded. ``weights_only=False`` is for trusted files that hold pickled objects.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f"ckpt={str(path)!r}: not a readable checkpoint ({_load_failure(error)})") from error
    if "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(
            f"ckpt={str(path)!r}: not a Lightning checkpoint of this framework "
            "(for official RAIVNLab/MRL files use mrl.interop.reference.load_reference_resnet50)"
        )
    hparams = dict(checkpoint["hyper_parameters"])
    backbone = dict(hparams.get("backbone") or {})
    if "pretrained" in backbone:
        backbone["pretrained"] = False
    if "weights_path" in backbone:
        backbone["weights_path"] = None
    hparams["backbone"] = backbone
    if "head" in hparams:
        from mrl.training.classifier import MatryoshkaClassifier as cls
    else:
        from mrl.training.contrastive import MatryoshkaContrastiveModule as cls

        hparams.pop("num_classes", None)  # saved (unused) by the contrastive model of earlier releases
    module = cls(**hparams)
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def latest_resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint a rerun of ``run_dir`` should resume from, or None.

    Candidates: ``checkpoints/last.ckpt`` (saved at every validation and every N training steps) and
    the ``hpc_ckpt_N.ckpt`` files Lightning's SLURM auto-requeue writes into the run directory when
    SIGUSR1 arrives, which are newer than ``last.ckpt`` when the job was requeued mid-interval.
    """
    run_dir = Path(run_dir)
    candidates = [p for p in (run_dir / "checkpoints" / "last.ckpt", *run_dir.glob(HPC_PATTERN)) if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name != "last.ckpt"))
