"""Truncation curves W&B overlays natively, and the dashboard built from what a real offline sweep logged: the run
files carry the ``curve/size`` definitions and one row per size (training and ``make eval``), and the workspace
and report specs (``mrl-dashboard --dry-run``, no server) plot only keys those runs logged, one curve panel per
logged per-size metric, grouped by head."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from mrl.cli.dashboard import main as dashboard
from mrl.common.wandb_curves import curve_rows, size_curves
from mrl.common.wandb_records import iter_records, read_runs, run_files
from mrl.evaluation.runner import evaluate_run
from mrl_testing.configs import FAST, ROOT, eval_cfg

HEADS = ("mrl", "standard")
SMALL_EVAL = {"quantized": [], "knn.metrics": ["cosine"], "baselines.enabled": False}


def test_size_curves_take_every_per_size_metric_and_nothing_else():
    metrics = {"val/top1@8": 0.5, "val/top1@16": 0.6, "val/map@10@8": 0.3, "val/loss": 1.0, "val/top1@12": 0.9}
    metrics.update({"eval/zero_prefix_db@8": 2, "lr-AdamW": 0.1, "val/note@8": "text"})
    curves = size_curves(metrics, [8, 16])
    assert curves == {
        "curve/eval/zero_prefix_db": {8: 2.0},
        "curve/val/map@10": {8: 0.3},
        "curve/val/top1": {8: 0.5, 16: 0.6},
    }
    assert curve_rows(curves) == [
        {"curve/size": 8, "curve/eval/zero_prefix_db": 2.0, "curve/val/map@10": 0.3, "curve/val/top1": 0.5},
        {"curve/size": 16, "curve/val/top1": 0.6},
    ]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real Hydra sweep over two heads, one short epoch each, W&B offline; the first job also evaluated with
    ``wandb=true`` (as ``make eval`` does), which resumes its W&B run."""
    sweep_dir = tmp_path_factory.mktemp("dashboard") / "sweep"
    overrides = [a if a != "logger=none" else "logger=wandb" for a in FAST]
    command = [sys.executable, "-m", "mrl.cli.train", "--multirun", "experiment=digits_mrl", f"head={','.join(HEADS)}"]
    command += ["trainer.max_epochs=1", f"hydra.sweep.dir={sweep_dir}", *overrides]
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / "results.json").is_file())
    assert [job.name for job in jobs] == [f"{i}_{head}" for i, head in enumerate(HEADS)]
    evaluated = evaluate_run(eval_cfg(jobs[0], wandb=True, **SMALL_EVAL))
    return sweep_dir, jobs, evaluated


def logged_metrics(job) -> tuple[dict, list, set]:
    """The job's W&B metric definitions ({name: step metric}), history rows and summary keys, decoded straight
    from the protobuf records of its run files."""
    defined, rows, summary = {}, [], set()
    for path in run_files(job):
        names = []
        for record in iter_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "metric":
                metric = record.metric
                step = metric.step_metric or (names[metric.step_metric_index - 1] if metric.step_metric_index else "")
                names.append(metric.name or metric.glob_name)
                defined[metric.name or metric.glob_name] = step
            elif kind == "history":
                items = record.history.item
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
            elif kind == "summary":  # a table is a nested value: its key is the first part
                summary |= {item.key or item.nested_key[0] for item in record.summary.update}
    return defined, rows, summary


def test_runs_log_each_per_size_metric_as_a_curve_against_size(sweep):
    sweep_dir, jobs, evaluated = sweep
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        defined, rows, _ = logged_metrics(job)
        assert "curve/size" in defined
        expected = size_curves(results["metrics"], results["sizes"])  # from results.json, not from W&B
        if job == jobs[0]:
            expected.update(size_curves(evaluated.metrics, evaluated.sizes))
        assert {"curve/val/top1", "curve/val/top5", "curve/val/loss"} <= set(expected)
        for name, points in expected.items():
            assert defined.get(name) == "curve/size", name
            logged = {row["curve/size"]: row[name] for row in rows if name in row}
            assert logged.keys() == points.keys(), name
            for m, value in points.items():
                assert logged[m] == pytest.approx(value, nan_ok=True), (name, m)
        assert "curve/eval/knn_top1" in defined if job == jobs[0] else "curve/eval/knn_top1" not in defined
        (run,) = read_runs(job)
        for key, value in results["metrics"].items():
            if "@" in key and math.isfinite(value):
                assert run.summary[key] == pytest.approx(value), key  # the final value per size
        head = results["head"]
        assert run.group == f"digits_mrl/{sweep_dir.name}"  # one group per sweep
        assert run.config["group_by"] == {
            "head": head,
            "data": "digits",
            "backbone": "resnet10t",
            "nesting": results["sizes"],
            "seed": 0,
            "experiment": "digits_mrl",
        }
        nesting = "-".join(map(str, results["sizes"]))
        assert {f"head:{head}", "data:digits", "backbone:resnet10t", f"nesting:{nesting}"} <= set(run.tags)


def referenced_keys(spec) -> set[str]:
    """Every W&B key a panel of a saved workspace or report spec reads: line plots' x-axis and metrics, bar
    charts' summary metrics, summary-table panels' table names."""
    keys = set()

    def walk(node):
        if isinstance(node, dict):
            config = node.get("config") if node.get("viewType") in ("Run History Line Plot", "Bar Chart") else None
            if config:
                keys.update(m.removeprefix("summary_metrics.") for m in config.get("metrics", []))
                if node["viewType"] == "Run History Line Plot":
                    keys.add(config["xAxis"])
            if node.get("viewType") == "Weave":
                keys.update(tables_in(node))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return keys


def tables_in(weave_panel) -> set[str]:
    """The summary keys a Weave summary-table panel picks (the table it shows)."""
    picks = _find(weave_panel, lambda n: n.get("name") == "pick" and "key" in n.get("inputs", {}))
    return {pick["inputs"]["key"]["val"] for pick in picks}


def _find(node, match):
    if isinstance(node, dict):
        if match(node):
            yield node
        for value in node.values():
            yield from _find(value, match)
    elif isinstance(node, list):
        for value in node:
            yield from _find(value, match)


def line_panels(spec) -> list[dict]:
    return list(_find(spec, lambda n: n.get("viewType") == "Run History Line Plot"))


def test_dashboard_spec_plots_only_what_the_sweep_logged(sweep, tmp_path, capsys):
    sweep_dir, jobs, evaluated = sweep
    out = tmp_path / "dashboard.json"
    assert dashboard([str(sweep_dir), "--dry-run", "--out", str(out)]) is None
    assert f"written to {out}" in capsys.readouterr().out
    spec = json.loads(out.read_text())

    logged: set[str] = set()
    curves: set[str] = set()
    for job in jobs:
        defined, rows, summary = logged_metrics(job)
        logged |= {key for row in rows for key in row} | summary
        curves |= {name for name, step in defined.items() if step == "curve/size"}
    per_size_metrics = set()
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        per_size_metrics |= set(size_curves(results["metrics"], results["sizes"]))
    per_size_metrics |= set(size_curves(evaluated.metrics, evaluated.sizes))
    assert curves == per_size_metrics

    for part in ("workspace", "report"):
        panels = line_panels(spec[part]["spec"])
        plotted = [panel["config"]["metrics"] for panel in panels]
        assert sorted(plotted) == [[name] for name in sorted(curves)], part  # one panel per logged curve
        assert {panel["config"]["xAxis"] for panel in panels} == {"curve/size"}
        assert {(panel["config"]["groupAgg"], panel["config"]["groupArea"]) for panel in panels} == {("mean", "minmax")}
        keys = referenced_keys(spec[part]["spec"])
        assert keys - logged - {"curve/size"} == set(), part  # nothing the runs did not log
        assert {"eval/per_size", "eval/storage", "eval/tuned_funnels", "val/top1@8", "val/top1@512"} <= keys, part
        text = json.dumps(spec[part]["spec"])
        assert '"grouping": [{"section": "config", "name": "group_by.value.head"}]' in text, part  # lines by head
        group = f"digits_mrl/{sweep_dir.name}"
        assert f'"key": {{"section": "run", "name": "group"}}, "op": "=", "value": "{group}"' in text, part
    assert "head: mrl" in json.dumps(spec["report"]) and "standard" in json.dumps(spec["report"])
    assert sorted(spec["runs"]) == sorted(run.run_id for run in read_runs(sweep_dir))


def test_a_second_save_updates_the_saved_view_and_report(sweep, tmp_path):
    """The ids a save left in the sweep directory make the next spec an update of the same view and report."""
    sweep_dir, _, _ = sweep
    first = tmp_path / "first.json"
    dashboard([str(sweep_dir), "--dry-run", "--out", str(first)])
    spec = json.loads(first.read_text())
    assert (spec["updates_saved"], spec["workspace"]["name"], spec["report"]["id"]) == (False, "", "")
    saved = {
        "workspace": {"entity": "", "project": "mrl", "name": "nw-abc-v", "id": "VmlldzoxMjM="},
        "report": {"entity": "", "project": "mrl", "id": "Vmlldzo0NTY="},
    }
    (sweep_dir / "dashboard_saved.json").write_text(json.dumps(saved))
    try:
        again = tmp_path / "again.json"
        dashboard([str(sweep_dir), "--dry-run", "--out", str(again)])
        spec = json.loads(again.read_text())
        assert spec["updates_saved"] is True
        assert (spec["workspace"]["name"], spec["workspace"]["id"]) == ("nw-abc-v", "VmlldzoxMjM=")
        assert spec["report"]["id"] == "Vmlldzo0NTY="
        dashboard([str(sweep_dir), "--dry-run", "--project", "other", "--out", str(again)])
        assert json.loads(again.read_text())["updates_saved"] is False  # another project's view is not reused
    finally:
        (sweep_dir / "dashboard_saved.json").unlink()


def test_dashboard_of_a_folder_without_runs_says_so_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        dashboard([str(tmp_path), "--dry-run"])
    assert stop.value.code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("FileNotFoundError: dir=") and "logger=wandb" in error and "\n" not in error


def test_a_wandb_failure_while_logging_curves_is_one_warning(tmp_path, monkeypatch, caplog):
    """The curves are logged after training: a W&B error there is one warning, and the run's results stand."""
    import logging

    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from mrl.training.procedure import log_final_curves

    logger = WandbLogger(project="mrl-test", save_dir=str(tmp_path), offline=True)

    def broken(*args, **kwargs):
        raise ConnectionError("W&B went away")

    monkeypatch.setattr(logger.experiment, "define_metric", broken)
    try:
        with caplog.at_level(logging.WARNING):
            log_final_curves([CSVLogger(str(tmp_path)), logger], {"val/top1@8": 0.5}, [8])
    finally:
        logger.experiment.finish()
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("W&B:")]
    assert warnings == ["W&B: the per-size curves were not logged (ConnectionError: W&B went away)"]
