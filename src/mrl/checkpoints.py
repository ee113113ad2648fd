"""Load a trained module back from a run directory or a checkpoint file, safely (``weights_only``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import torch

from mrl.io import read_json


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
        cause = next((line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines()
                      if line.strip()), "")
        if cause.startswith("Unsupported global"):
            name = cause.split(" was not", 1)[0].removeprefix("Unsupported global: GLOBAL ")
            return (f"it holds a pickled object, {name}, which weights_only loading refuses; "
                    "if you trust the file, pass weights_only=false")
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
        raise ValueError(f"ckpt={str(path)!r}: not a Lightning checkpoint of this framework "
                         "(for official RAIVNLab/MRL files use mrl.compat.load_reference_resnet50)")
    hparams = dict(checkpoint["hyper_parameters"])
    backbone = dict(hparams.get("backbone") or {})
    if "pretrained" in backbone:
        backbone["pretrained"] = False
    if "weights_path" in backbone:
        backbone["weights_path"] = None
    hparams["backbone"] = backbone
    if "head" in hparams:
        from mrl.module import MatryoshkaModule as cls
    else:
        from mrl.text_module import MatryoshkaContrastiveModule as cls
    module = cls(**hparams)
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()
