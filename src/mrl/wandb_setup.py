"""W&B set-up: offline fallback without an API key, and a run id that survives a resume."""

from __future__ import annotations

import logging
import netrc
import os
import secrets
from pathlib import Path

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
