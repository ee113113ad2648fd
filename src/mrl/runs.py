"""Run directories and their checkpoints: find a run's best checkpoint, the checkpoint a rerun resumes from,
the run a checkpoint belongs to, and load a trained module back safely (``weights_only``).

A run directory holds ``config.yaml``, ``checkpoints/*.ckpt`` (``last.ckpt`` among them, each with a
``.sha256`` checksum file), ``results.json`` and what evaluation, embedding and export write beside them.

A checkpoint is read only once it verifies (:func:`verify_checkpoint`). A damaged one (cut short by a failing
disk or an interrupted copy, or whose bytes no longer match its checksum) is reported in one line, moved aside
into ``checkpoints/damaged/`` (never deleted), and the next newest one is used."""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Iterable
from importlib import import_module
from pathlib import Path

import lightning as L
import torch

from mrl.common.io import checksum_path, read_checksum, read_json, sha256_file

log = logging.getLogger(__name__)

HPC_PATTERN = "hpc_ckpt_*.ckpt"


def run_dir_of(run_or_ckpt: str | Path) -> Path:
    """The run directory of a run directory (itself) or of a checkpoint (the folder above ``checkpoints/``,
    else the checkpoint's own folder)."""
    path = Path(run_or_ckpt)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def verify_checkpoint(path: str | Path) -> str | None:
    """None when ``path`` is a whole checkpoint, else why not (a short phrase).

    With a checksum file the bytes must match it. Without one (a file from elsewhere), or with one that does
    not match (it can be stale: a job killed between writing a checkpoint and its checksum), the file must
    open as a PyTorch checkpoint: a file cut short fails there. A file that holds pickled objects which
    ``weights_only`` loading refuses is whole, and is left to the loader to refuse or accept.
    """
    path = Path(path)
    if not path.is_file():
        return "no such file"
    expected = read_checksum(path)
    if expected is not None and sha256_file(path) == expected:
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            return None
        return f"does not load: {_load_failure(error)}"
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        cut = " and its bytes do not match its checksum" if expected is not None else ""
        return f"does not load{cut} ({_load_failure(error)}; {path.stat().st_size} bytes on disk)"
    if expected is not None:
        return "its bytes do not match its checksum file (.sha256)"
    return None


def _may_move() -> bool:
    """Only one process moves damaged files aside: the first rank of the first node (or a plain run)."""
    return all(int(os.environ.get(name, 0) or 0) == 0 for name in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def set_aside(path: Path, reason: str) -> Path | None:
    """Move a damaged checkpoint (and its checksum file) into ``checkpoints/damaged/``; say so in one line."""
    folder = path.parent / "damaged" if path.parent.name == "checkpoints" else path.parent / "checkpoints" / "damaged"
    target = folder / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}"
    if not _may_move():
        log.warning("Checkpoint %s is damaged (%s); skipped", path, reason)
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        if checksum_path(path).is_file():
            os.replace(checksum_path(path), checksum_path(target))
    except FileNotFoundError:  # another process moved it first
        return None
    log.warning("Checkpoint %s is damaged (%s); moved aside to %s, trying the next newest", path, reason, target)
    return target


def first_valid(candidates: Iterable[Path], key: str, where: Path) -> Path | None:
    """The first candidate that verifies, damaged ones moved aside on the way; None without candidates. With
    candidates but none whole, a one-line ValueError names each file tried and why it failed."""
    tried = []
    for path in candidates:
        reason = verify_checkpoint(path)
        if reason is None:
            return path
        tried.append(f"{path.name} ({reason})")
        set_aside(path, reason)
    if tried:
        raise ValueError(f"{key}={str(where)!r}: no checkpoint in it can be read; tried {'; '.join(tried)}")
    return None


def _newest_first(paths: Iterable[Path]) -> list[Path]:
    return sorted((p for p in paths if p.is_file()), key=lambda p: p.stat().st_mtime_ns, reverse=True)


def find_checkpoint(run_or_ckpt: str | Path) -> Path:
    """The best checkpoint of a run directory that verifies (the best one of results.json, else the newest
    ``checkpoints/*.ckpt`` other than ``last.ckpt``, else ``last.ckpt``), or the file itself once it verifies."""
    path = Path(run_or_ckpt)
    if path.is_file():
        reason = verify_checkpoint(path)
        if reason is not None:
            raise ValueError(f"ckpt={str(path)!r}: damaged, not read ({reason})")
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"run={str(path)!r}: neither a run directory nor a checkpoint file")
    candidates = []
    results = path / "results.json"
    if results.is_file():
        best = read_json(results).get("best_checkpoint")
        if best and Path(best).is_file():
            candidates.append(Path(best))
    found = _newest_first((path / "checkpoints").glob("*.ckpt"))
    candidates += [p for p in found if p.name != "last.ckpt" and p not in candidates]
    candidates += [p for p in found if p.name == "last.ckpt" and p not in candidates]
    best = first_valid(candidates, "run", path)
    if best is None:
        raise FileNotFoundError(f"run={str(path)!r}: no checkpoints/*.ckpt in this run directory")
    return best


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
    if not text:
        return type(error).__name__
    first = text.splitlines()[0]
    return first.split(". ", 1)[0] if len(first) > 160 else first  # torch's long messages: their first sentence


MODULE_CLASS_KEY = "mrl_module_class"
"""The checkpoint key under which a module records its class path (``module.qualname``); ``load_module`` rebuilds
that class. Checkpoints written before the key existed fall back to :func:`module_class_path_of_hparams`."""

CLASSIFIER_PATH = "mrl.training.classifier.MatryoshkaClassifier"
CONTRASTIVE_PATH = "mrl.training.contrastive.MatryoshkaContrastiveModule"


def class_path(cls: type) -> str:
    """``module.qualname`` of a class: what :data:`MODULE_CLASS_KEY` holds."""
    return f"{cls.__module__}.{cls.__qualname__}"


def module_class_path_of_hparams(hparams: dict) -> str:
    """The class of a checkpoint written without :data:`MODULE_CLASS_KEY`: a classifier saved its ``head``, the
    contrastive model has none."""
    return CLASSIFIER_PATH if "head" in hparams else CONTRASTIVE_PATH


def is_package_class(path: str) -> bool:
    """Whether a class path names a class of this package (``mrl.…``)."""
    module_name = str(path).rpartition(".")[0]
    return module_name == "mrl" or module_name.startswith("mrl.")


def import_module_class(path: str, ckpt: str | Path) -> type[L.LightningModule]:
    """The LightningModule class at ``module.qualname``, imported by its path (``runs`` sits below ``training``
    and does not import it); a one-line ValueError naming the checkpoint when it is not one."""
    module_name, _, name = str(path).rpartition(".")
    try:
        cls = getattr(import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"ckpt={str(ckpt)!r}: its {MODULE_CLASS_KEY}={path!r} cannot be imported ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
        raise ValueError(f"ckpt={str(ckpt)!r}: its {MODULE_CLASS_KEY}={path!r} is not a LightningModule class")
    return cls


def checkpoint_class_path(checkpoint: dict, hparams: dict, ckpt: str | Path, trusted: bool) -> str:
    """The class path to rebuild: the saved one, else (an older checkpoint) the one its hyper-parameters imply.

    A file read with ``weights_only`` is not trusted to name code to import: a saved class outside this package
    (a subclass in a user's script or a test) is rebuilt as the framework class its hyper-parameters imply, as
    checkpoints were before the class was saved, and the log says so."""
    saved = checkpoint.get(MODULE_CLASS_KEY)
    if saved is None:
        return module_class_path_of_hparams(hparams)
    if trusted or is_package_class(saved):
        return str(saved)
    fallback = module_class_path_of_hparams(hparams)
    log.warning(
        "ckpt=%r: saved by %s, outside the mrl package; rebuilt as %s (pass weights_only=false to import %s)",
        str(ckpt),
        saved,
        fallback,
        saved,
    )
    return fallback


def load_module(path: str | Path, weights_only: bool = True) -> L.LightningModule:
    """Rebuild the module from the checkpoint's hyper-parameters and load its weights.

    The class is the one the checkpoint saved (:data:`MODULE_CLASS_KEY`), else the classifier for hyper-parameters
    with a ``head`` and the contrastive model without. Backbones are rebuilt without pretrained weights (the
    checkpoint holds the trained ones), so nothing is downloaded. ``weights_only=False`` is for trusted files that
    hold pickled objects.
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
    chosen = checkpoint_class_path(checkpoint, hparams, path, trusted=not weights_only)
    if chosen == CONTRASTIVE_PATH:
        hparams.pop("num_classes", None)  # saved (unused) by the contrastive model of earlier releases
    module = import_module_class(chosen, path)(**hparams)
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def remove_stale_temporaries(run_dir: Path) -> None:
    """Remove the temporary files of checkpoint writes that were killed (``.<name>.ckpt.<random>.tmp``). Called
    when a run starts in ``run_dir``, when no other process writes there."""
    if not _may_move():
        return
    stale = [*run_dir.glob(".*.ckpt.*.tmp"), *(run_dir / "checkpoints").glob(".*.ckpt.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.warning(
            "Removed %d temporary file(s) of checkpoint writes that were interrupted, e.g. %s",
            len(stale),
            stale[0].name,
        )


def latest_resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest whole checkpoint a rerun of ``run_dir`` resumes from, or None when it holds none.

    Candidates, newest first: ``checkpoints/last.ckpt`` (saved at every validation and every N training steps),
    the ``hpc_ckpt_N.ckpt`` files Lightning's SLURM auto-requeue writes into the run directory when SIGUSR1
    arrives (newer than ``last.ckpt`` when the job was requeued mid-interval), and the other
    ``checkpoints/*.ckpt`` (the best epochs). A damaged one is moved aside and the next is tried; when none
    is whole, a one-line ValueError names every file tried.
    """
    run_dir = Path(run_dir)
    remove_stale_temporaries(run_dir)
    found = [
        run_dir / "checkpoints" / "last.ckpt",
        *run_dir.glob(HPC_PATTERN),
        *(run_dir / "checkpoints").glob("*.ckpt"),
    ]
    unique = list(dict.fromkeys(p for p in found if p.is_file()))
    # Newest first; at equal times a requeue checkpoint, then last.ckpt, then an epoch's best.
    rank = {"last.ckpt": 1}
    ordered = sorted(
        unique,
        key=lambda p: (p.stat().st_mtime_ns, 2 if p.name.startswith("hpc_") else rank.get(p.name, 0)),
        reverse=True,
    )
    return first_valid(ordered, "run_dir", run_dir)
