"""The W&B dashboard of a sweep, built with ``wandb-workspaces`` from what its runs logged (read from their
offline files, :mod:`mrl.common.wandb_records`): a saved workspace view and a report, each with a
truncation-curve line panel per logged ``curve/<split>/<metric>`` (x ``curve/size``, runs grouped and coloured by
head, seeds drawn as their mean and min-max band), bar panels of accuracy at a size and the tables ``make eval``
logged. Nothing here talks to a server except a report's run set linked to its project (``link_runsets``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mrl.common.wandb_curves import CURVE_PREFIX, CURVE_STEP
from mrl.common.wandb_records import OfflineRun

GROUP_BY = "group_by.head"  # the config key training writes (mrl.training.wandb_identity), one colour per head
# The metric of a split shown in the bar panels: the first of these that was logged.
BAR_METRICS = ("top1", "knn_top1", "mrr@10", "ndcg@10", "map@10", "recall@10", "spearman", "top5")
TABLE_PREFIX = "eval/"  # the tables of `make eval` (per-size, storage and retrieval: funnels, cascades)


@dataclass
class SweepLog:
    """What the runs of a sweep (or a project) logged, as far as the dashboard needs it."""

    project: str
    entity: str
    group: str | None
    runs: list[OfflineRun]
    curves: list[str] = field(default_factory=list)  # curve/<split>/<metric> keys defined against curve/size
    sizes: list[int] = field(default_factory=list)
    bars: list[str] = field(default_factory=list)  # per-size summary keys, e.g. val/top1@8
    tables: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)


def _one(values: Sequence[str], what: str) -> str:
    found = sorted({v for v in values if v})
    if len(found) > 1:
        raise ValueError(f"{what}={found[0]!r}: the runs log to several ({', '.join(found)}); choose one with --{what}")
    return found[0] if found else ""


def sweep_log(
    runs: Sequence[OfflineRun],
    group: str | None = None,
    project: str | None = None,
    entity: str | None = None,
    bar_sizes: Sequence[int] | None = None,
) -> SweepLog:
    """The runs of ``group`` (default: the one group the runs share, else all), the curves they logged (defined with
    step metric ``curve/size`` and present in their history), the sizes, the bar keys (each split's first of
    :data:`BAR_METRICS`, at ``bar_sizes``, default the smallest and the widest size, where in the summaries) and
    the evaluation tables."""
    if group is None:
        groups = {run.group for run in runs}
        group = groups.pop() if len(groups) == 1 else None
    chosen = [run for run in runs if group is None or run.group == group]
    if not chosen:
        raise ValueError(f"group={group!r}: no run of this W&B group here (groups: {sorted({r.group for r in runs})})")
    log = SweepLog(
        project=project or _one([r.project for r in chosen], "project") or "mrl",
        entity=entity or _one([r.entity for r in chosen], "entity"),
        group=group,
        runs=chosen,
    )
    log.curves = sorted(
        {
            name
            for run in chosen
            for name, step in run.step_metrics.items()
            if step == CURVE_STEP and name.startswith(CURVE_PREFIX) and name in run.history_keys
        }
    )
    log.sizes = sorted({int(row[CURVE_STEP]) for run in chosen for row in run.rows if CURVE_STEP in row})
    wanted = list(bar_sizes) if bar_sizes else sorted({log.sizes[0], log.sizes[-1]}) if log.sizes else []
    for split in dict.fromkeys(name[len(CURVE_PREFIX) :].split("/")[0] for name in log.curves):
        metric = next((m for m in BAR_METRICS if f"{CURVE_PREFIX}{split}/{m}" in log.curves), None)
        if metric is None:
            continue
        keys = [f"{split}/{metric}@{m}" for m in wanted]
        log.bars += [key for key in keys if any(key in run.summary for run in chosen)]
    log.tables = sorted({t for run in chosen for t in run.tables if t.startswith(TABLE_PREFIX)})
    log.heads = sorted({str((run.config.get("group_by") or {}).get("head", "")) for run in chosen} - {""})
    return log


def _title(curve: str) -> str:
    split, _, metric = curve[len(CURVE_PREFIX) :].partition("/")
    return f"{split} {metric} by embedding size"


def curve_panels(log: SweepLog) -> list:
    """One line plot per logged curve: x = ``curve/size`` (log scale), one line per head, seeds as mean and band."""
    import wandb_workspaces.reports.v2 as wr

    return [
        wr.LinePlot(
            title=_title(curve),
            x=CURVE_STEP,
            y=[curve],
            log_x=True,
            title_x="embedding size",
            title_y=curve[len(CURVE_PREFIX) :],
            groupby_aggfunc="mean",
            groupby_rangefunc="minmax",
        )
        for curve in log.curves
    ]


def bar_panels(log: SweepLog) -> list:
    import wandb_workspaces.reports.v2 as wr

    return [
        wr.BarPlot(
            title=f"{key.rsplit('@', 1)[0]} at {key.rsplit('@', 1)[1]} dims",
            metrics=[wr.SummaryMetric(key)],
            groupby_aggfunc="mean",
            groupby_rangefunc="stddev",
        )
        for key in log.bars
    ]


def table_panels(log: SweepLog) -> list:
    import wandb_workspaces.reports.v2 as wr

    return [wr.WeavePanelSummaryTable(table_name=table) for table in log.tables]


def build_workspace(log: SweepLog, name: str | None = None):
    """The saved workspace view: sections of truncation curves, bars at a size, evaluation tables; runs filtered
    to the sweep's group and grouped by head."""
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    sections = [
        ws.Section(
            name="Truncation curves",
            panels=curve_panels(log),
            is_open=True,
            panel_settings=ws.SectionPanelSettings(x_axis=CURVE_STEP),
        ),
        ws.Section(name="Accuracy at a size", panels=bar_panels(log), is_open=True),
        ws.Section(name="Evaluation tables (make eval)", panels=table_panels(log), is_open=bool(log.tables)),
    ]
    return ws.Workspace(
        entity=log.entity,
        project=log.project,
        name=name or f"MRL truncation curves: {log.group or log.project}",
        sections=[section for section in sections if section.panels],
        runset_settings=ws.RunsetSettings(
            filters=[expr.Metric("Group") == log.group] if log.group else "",
            groupby=[expr.Config(GROUP_BY)],
        ),
    )


def build_report(log: SweepLog, sweep_config: str, link_runsets: bool = True):
    """A report with the sweep's curves, bars and tables over one run set (the group's runs, grouped by head) and
    the sweep's config. ``link_runsets=False`` leaves the run set's project out: linking it looks the project's
    internal id up on the server."""
    import wandb_workspaces.reports.v2 as wr

    runset = wr.Runset(
        entity=log.entity if link_runsets else "",
        project=log.project if link_runsets else "",
        name=log.group or log.project,
        filters=f"Metric('Group') = '{log.group}'" if log.group else "",
        groupby=[f"config.{GROUP_BY}"],
    )
    heads = ", ".join(log.heads) or "one head"
    blocks: list[Any] = [
        wr.P(f"{len(log.runs)} run(s) of {log.group or log.project}, by head ({heads}); sizes {log.sizes}."),
        wr.H2("Truncation curves"),
        wr.PanelGrid(runsets=[runset], panels=curve_panels(log)),
    ]
    if log.bars:
        blocks += [wr.H2("Accuracy at a size"), wr.PanelGrid(runsets=[runset], panels=bar_panels(log))]
    if log.tables:
        blocks += [wr.H2("Evaluation tables (make eval)"), wr.PanelGrid(runsets=[runset], panels=table_panels(log))]
    blocks += [wr.H2("Sweep config"), wr.CodeBlock(code=sweep_config, language="yaml")]
    return wr.Report(
        project=log.project,
        entity=log.entity,
        title=f"MRL sweep {log.group or log.project}"[:128],
        description="Truncation curves of a sweep, built by mrl-dashboard",
        blocks=blocks,
    )


def workspace_spec(workspace) -> dict[str, Any]:
    """What ``Workspace.save()`` sends: the view's names and its spec, serialised by the library's own models."""
    view = workspace._to_model()  # the library's conversion to its saved form (no server)
    return {
        "entity": view.entity,
        "project": view.project,
        "name": view.name,  # empty: a new view; else the saved view it updates
        "id": view.id,
        "display_name": view.display_name,
        "spec": json.loads(view.spec.model_dump_json(by_alias=True, exclude_none=True)),
    }


def report_spec(report) -> dict[str, Any]:
    """What ``Report.save()`` sends as the report's spec, serialised by the library's own models."""
    model = report._to_model()
    return {
        "entity": model.project.entity_name,
        "project": model.project.name,
        "id": model.id,  # empty: a new report; else the saved report it updates
        "display_name": model.display_name,
        "description": model.description,
        "spec": json.loads(model.spec.model_dump_json(by_alias=True, exclude_none=True)),
    }


def sweep_config_text(sweep_dir, log: SweepLog) -> str:
    """The sweep's config for the report, as YAML: what Hydra swept (``multirun.yaml``: the sweeper's parameters
    and the command line's overrides) and each run's head, data, backbone, nesting and seed."""

    config: dict[str, Any] = {"sweep_dir": str(sweep_dir), "wandb_group": log.group}
    path = Path(sweep_dir) / "multirun.yaml"
    if path.is_file():
        multirun = OmegaConf.load(path)
        config["swept"] = OmegaConf.select(multirun, "hydra.sweeper.params", default=None)
        config["overrides"] = OmegaConf.select(multirun, "hydra.overrides.task", default=None)
    config = {key: value for key, value in config.items() if value}
    config["runs"] = {
        run.config.get("paths", {}).get("output_dir", run.run_id).rsplit("/", 1)[-1]: run.config.get("group_by", {})
        for run in log.runs
    }
    return OmegaConf.to_yaml(OmegaConf.create(config))


SAVED_FILE = "dashboard_saved.json"  # in the sweep directory: what the last save created, so the next one updates it


def reuse_saved(workspace, report, saved: dict[str, Any]) -> bool:
    """Point ``workspace`` and ``report`` at the view and report saved before for the same project (their names
    and ids, as :func:`saved_ids` wrote them), so that saving updates them instead of adding new ones. True when
    either was found."""
    found = False
    view = saved.get("workspace") or {}
    if view.get("name") and (view.get("entity"), view.get("project")) == (workspace.entity, workspace.project):
        object.__setattr__(workspace, "_internal_name", view["name"])
        object.__setattr__(workspace, "_internal_id", view.get("id", ""))
        found = True
    page = saved.get("report") or {}
    if page.get("id") and (page.get("entity"), page.get("project")) == (report.entity, report.project):
        report.id = page["id"]
        found = True
    return found


def saved_ids(workspace, report) -> dict[str, Any]:
    """What :func:`reuse_saved` needs next time, and the URLs, once both are saved."""
    return {
        "workspace": {
            "entity": workspace.entity,
            "project": workspace.project,
            "name": workspace._internal_name,
            "id": workspace._internal_id,
            "url": workspace.url,
        },
        "report": {"entity": report.entity, "project": report.project, "id": report.id, "url": report.url},
    }
