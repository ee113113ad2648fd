"""W&B set-up: offline fallback without an API key or without a reachable server (W&B never blocks training),
a run id that survives a resume, and the one place that opens a run for uploads after training (evaluation,
reports) in the project the training run logged to."""

from __future__ import annotations

import logging
import math
import netrc
import os
import secrets
import socket
import threading
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

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


DEFAULT_INIT_TIMEOUT = 5.0  # seconds; ``logger.wandb.init_timeout`` in conf/logger/wandb.yaml
DEFAULT_BASE_URL = "https://api.wandb.ai"
NOT_ONLINE = ("offline", "dryrun", "disabled")  # the other WANDB_MODE values ("online", "run", "shared") sync
T = TypeVar("T")


def check_init_timeout(value: Any, key: str = "logger.wandb.init_timeout") -> float:
    """``value`` as seconds; a one-line ValueError naming ``key`` unless it is a positive, finite number."""
    number = None
    if not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            pass
    if number is None or not math.isfinite(number) or number <= 0:
        raise ValueError(f"{key}={value}: must be a positive number of seconds (how long W&B may take to start)")
    return number


def server_url() -> str:
    """The W&B server ``wandb.init`` talks to: ``WANDB_BASE_URL``, else the host saved by ``wandb login --host``,
    else W&B's cloud."""
    url = os.environ.get("WANDB_BASE_URL")
    if url:
        return url
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url or DEFAULT_BASE_URL)
    except Exception:  # a settings file wandb cannot read: wandb.init will say so itself
        return DEFAULT_BASE_URL


def unreachable(url: str, timeout: float) -> str | None:
    """Why ``url``'s host (or the proxy in front of it) takes no TCP connection within ``timeout`` seconds;
    None when it does. The name look-up has no timeout of its own, so the probe runs in a daemon thread."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    what = ""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port, what = proxy_parts.hostname or "", proxy_parts.port or 80, "the proxy "
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(f"cannot reach {what}{host}:{port} ({type(error).__name__}: {error})")

    thread = threading.Thread(target=probe, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no connection to {what}{host}:{port} within {timeout:g} s"


def _go_offline(save_dir: str | os.PathLike, reason: str) -> None:
    """Log offline from here on (this process and those it starts), with the one line that says why and how
    to sync. A W&B session already set up in this process is closed so the next run starts afresh offline
    (a failed ``wandb.init`` keeps its run id registered in W&B's service: "run ID ... is in use")."""
    import wandb

    os.environ["WANDB_MODE"] = "offline"
    if wandb.run is None:
        wandb.teardown()
    reason = " ".join(reason.split())
    log.warning(
        "W&B: %s; logging offline instead; sync later with `wandb sync %s/wandb/offline-run-*`",
        reason if len(reason) <= 300 else reason[:297] + "...",
        save_dir,
    )


def start_wandb(create: Callable[..., T], save_dir: str | os.PathLike, init_timeout: float = DEFAULT_INIT_TIMEOUT) -> T:
    """``create(settings=..., [mode="offline"])``, which must start a W&B run (call ``wandb.init`` with them), with
    the decision between online and offline that every W&B run of the framework goes through, so that W&B never
    blocks: offline without an API key (:func:`ensure_wandb_mode`); offline, with one line that says so and
    how to sync, when the server takes no connection within ``init_timeout`` seconds or when ``wandb.init``
    does not finish within them (a server that accepts connections but does not answer, a refused key)."""
    import wandb

    timeout = check_init_timeout(init_timeout)
    settings = wandb.Settings(init_timeout=timeout)
    if ensure_wandb_mode(save_dir) in NOT_ONLINE:  # WANDB_MODE set, or no key
        return create(settings=settings)
    url = server_url()
    reason = unreachable(url, timeout)
    if reason is None:
        try:
            return create(settings=settings)
        except Exception as error:  # KeyboardInterrupt still stops the run
            reason = f"{url} did not start the run within {timeout:g} s ({type(error).__name__}: {error})"
    _go_offline(save_dir, reason)
    return create(settings=settings, mode="offline")


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
    Online or offline as :func:`start_wandb` decides: offline without an API key or a reachable server.
    """
    import wandb

    target = next(filter(None, map(logger_target, config_from)), {"project": DEFAULT_PROJECT, "entity": None})
    if resume:
        init = {"id": stable_run_id(save_dir), "resume": "allow", **init}
    return start_wandb(lambda **chosen: wandb.init(dir=str(save_dir), **target, **init, **chosen), save_dir)
