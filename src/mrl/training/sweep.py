"""Crash-safe sweeps: a failing job leaves ``failure.json`` in its directory, the sweep goes on, and a
Hydra callback summarises which jobs succeeded and which failed when the sweep ends."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mrl.common.io import read_json, write_json

log = logging.getLogger(__name__)


def record_failure(run_dir: str | Path, error: BaseException) -> Path:
    log.error("Job in %s failed: %s: %s (the sweep goes on)", run_dir, type(error).__name__, error)
    return write_json(
        Path(run_dir) / "failure.json",
        {
            "error": f"{type(error).__name__}: {error}",
            "traceback": "".join(traceback.format_exception(error)),
        },
    )


def summarize_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """Collect each job's outcome from its directory: results.json (done) or failure.json (failed)."""
    jobs = []
    for job_dir in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (job_dir / "failure.json").is_file():
            error = read_json(job_dir / "failure.json")["error"]
            jobs.append({"job": job_dir.name, "status": "failed", "error": error})
        elif (job_dir / "results.json").is_file():
            jobs.append({"job": job_dir.name, "status": "done"})
        else:
            jobs.append({"job": job_dir.name, "status": "incomplete"})
    summary = {
        "sweep_dir": str(sweep_dir),
        "done": sum(j["status"] == "done" for j in jobs),
        "failed": sum(j["status"] == "failed" for j in jobs),
        "incomplete": sum(j["status"] == "incomplete" for j in jobs),
        "jobs": jobs,
    }
    write_json(Path(sweep_dir) / "sweep_summary.json", summary)
    return summary


class SweepSummary(Callback):
    """Hydra callback: prints and writes ``sweep_summary.json`` at the end of a multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        summary = summarize_sweep(sweep_dir)
        log.info(
            "Sweep finished: %d done, %d failed, %d incomplete (%s)",
            summary["done"],
            summary["failed"],
            summary["incomplete"],
            sweep_dir / "sweep_summary.json",
        )
        for job in summary["jobs"]:
            if job["status"] == "failed":
                log.error("  failed: %s: %s", job["job"], job["error"])
