"""`make dashboard DIR=<sweep directory>`: a W&B workspace view and a report comparing the truncation curves of a
sweep's runs, built from what the runs logged (their W&B run files in the sweep directory).

Online it saves both and prints their URLs (run again, it updates the same two: their ids are kept in
``DIR/dashboard_saved.json``); ``--dry-run`` writes the specs it would save as JSON, with no server.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mrl.common.errors import exit_on_config_error
from mrl.common.io import atomic_write_text
from mrl.common.wandb_records import read_runs
from mrl.evaluation.render.dashboard import (
    SAVED_FILE,
    build_report,
    build_workspace,
    report_spec,
    reuse_saved,
    saved_ids,
    sweep_config_text,
    sweep_log,
    workspace_spec,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mrl-dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="a sweep (or run) directory: its runs' W&B files name the keys to plot")
    parser.add_argument("--group", default=None, help="the W&B group to show (default: the one the runs share)")
    parser.add_argument("--project", default=None, help="W&B project (default: the runs' own)")
    parser.add_argument("--entity", default=None, help="W&B entity (default: the runs' own, else your default)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="sizes of the bar panels (default: ends)")
    parser.add_argument("--name", default=None, help="the workspace view's name")
    parser.add_argument("--dry-run", action="store_true", help="write the specs as JSON instead of saving them")
    parser.add_argument("--out", default=None, help="where --dry-run writes (default: DIR/dashboard.json)")
    return parser.parse_args(argv)


def run(argv: list[str]) -> dict:
    args = parse_args(argv)
    runs = read_runs(args.dir)
    if not runs:
        raise FileNotFoundError(
            f"dir={args.dir!r}: no W&B run files (wandb/*run-*/run-*.wandb) below it; train with logger=wandb first"
        )
    log = sweep_log(runs, args.group, args.project, args.entity, args.sizes)
    if not log.curves:
        raise ValueError(
            f"dir={args.dir!r}: its runs logged no curve/<split>/<metric> against curve/size; train (or make eval) "
            "with this version first"
        )
    config = sweep_config_text(args.dir, log)
    saved_file = Path(args.dir) / SAVED_FILE
    saved = json.loads(saved_file.read_text()) if saved_file.is_file() else {}
    if args.dry_run:
        # a saved report links its run set to the project by the project's internal id, which only the server
        # knows: left out here
        workspace, report = build_workspace(log, args.name), build_report(log, config, link_runsets=False)
        updates = reuse_saved(workspace, report, saved)
        spec = {
            "workspace": workspace_spec(workspace),
            "report": report_spec(report),
            "updates_saved": updates,
            "runs": [run.run_id for run in log.runs],
            "curves": log.curves,
        }
        out = Path(args.out or Path(args.dir) / "dashboard.json")
        atomic_write_text(out, json.dumps(spec, indent=2) + "\n")
        print(
            f"Dashboard spec of {len(log.runs)} run(s), {len(log.curves)} curve panel(s) written to {out} (not saved)"
        )
        return spec
    if not log.entity:
        import wandb

        log.entity = wandb.Api().default_entity
    workspace, report = build_workspace(log, args.name), build_report(log, config)
    reuse_saved(workspace, report, saved)
    workspace.save()
    report.save()
    ids = saved_ids(workspace, report)
    atomic_write_text(saved_file, json.dumps(ids, indent=2) + "\n")
    print(f"Workspace: {ids['workspace']['url']}")
    print(f"Report: {ids['report']['url']}")
    return ids


def main(argv: list[str] | None = None) -> None:
    exit_on_config_error(lambda: run(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
