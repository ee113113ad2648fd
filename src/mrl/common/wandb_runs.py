"""W&B set-up: offline fallback without an API key, a run id that survives a resume, and the one place that
opens a run for uploads after training (evaluation, reports) in the project the training run logged to."""

from __future__ import annotations

import logging
import netrc
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def ensure_wandb_mode(save_dir: str | os.PathLike) -> str:
    """Return the W&B mode to use; switch to offline (with a one-line hint) when no key is set."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    if has_wandb_credentials():
        return "online"
    os.environ["WANDB_MODE"] = "offline"
    log.warning(
        "W&B: no API key found, logging offline; sync later with `wandb sync %s/wandb/offline-run-*` "
        "(or `wandb login` first, then rerun).",
        save_dir,
    )
    return "offline"


def stable_run_id(run_dir: str | os.PathLike) -> str:
    """A W&B run id kept in the run directory, so rerunning the same directory continues one run."""
    path = Path(run_dir) / "wandb_id.txt"
    if path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


DEFAULT_PROJECT = "mrl"


def logger_target(run_dir: str | os.PathLike) -> dict[str, str | None] | None:
    """``{"project", "entity"}`` of the W&B logger in a training run's ``config.yaml``; None without one."""
    from omegaconf import DictConfig, OmegaConf

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    loggers = OmegaConf.load(path).get("logger")
    for logger in loggers.values() if isinstance(loggers, DictConfig) else ():
        if isinstance(logger, DictConfig) and str(logger.get("_target_", "")).endswith("WandbLogger"):
            return {"project": logger.get("project") or DEFAULT_PROJECT, "entity": logger.get("entity")}
    return None


def open_run(
    save_dir: str | os.PathLike, config_from: Sequence[str | os.PathLike] = (), resume: bool = False, **init: Any
):
    """A W&B run for an upload after training (an evaluation, a report), written below ``save_dir``.

    The project and entity are those of the first run in ``config_from`` whose config names a W&B logger
    (else project "mrl"). ``resume`` continues the training run of ``save_dir`` (its :func:`stable_run_id`).
    The mode is :func:`ensure_wandb_mode`'s: offline without an API key.
    """
    import wandb

    ensure_wandb_mode(save_dir)
    target = next(filter(None, map(logger_target, config_from)), {"project": DEFAULT_PROJECT, "entity": None})
    if resume:
        init = {"id": stable_run_id(save_dir), "resume": "allow", **init}
    return wandb.init(dir=str(save_dir), **target, **init)
