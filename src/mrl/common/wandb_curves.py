"""Per-size metrics as curves W&B overlays natively: each ``{split}/{name}@{m}`` becomes the series
``curve/{split}/{name}``, logged one row per size against the step metric ``curve/size``, so a W&B line plot
with x-axis ``curve/size`` shows one truncation curve per run (any runs, no custom chart). The final value per
size goes into the run's summary under its usual key."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

CURVE_STEP = "curve/size"
CURVE_PREFIX = "curve/"


def size_curves(metrics: Mapping[str, Any], sizes: Iterable[int]) -> dict[str, dict[int, float]]:
    """``{"curve/val/top1": {8: 0.61, 16: 0.70, ...}, ...}``: every numeric ``{split}/{name}@{m}`` in ``metrics``
    whose ``m`` is one of ``sizes``, keyed by its curve name, sizes in order."""
    wanted = {int(m) for m in sizes}
    curves: dict[str, dict[int, float]] = {}
    for key, value in metrics.items():
        stem, _, size = str(key).rpartition("@")
        if "/" not in stem or not size.isdigit() or int(size) not in wanted:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        curves.setdefault(CURVE_PREFIX + stem, {})[int(size)] = number
    return {name: dict(sorted(points.items())) for name, points in sorted(curves.items())}


def curve_rows(curves: Mapping[str, Mapping[int, float]]) -> list[dict[str, float]]:
    """One ``run.log`` row per size: ``{"curve/size": m, "curve/val/top1": ..., ...}`` (a curve without that size
    is left out of the row)."""
    sizes = sorted({m for points in curves.values() for m in points})
    return [{CURVE_STEP: m, **{name: points[m] for name, points in curves.items() if m in points}} for m in sizes]


def log_size_curves(run, metrics: Mapping[str, Any], sizes: Iterable[int]) -> list[str]:
    """Define ``curve/size`` and each curve against it on the W&B ``run``, log one row per size and put the final
    per-size values in the summary. Returns the curve names (none logged: empty)."""
    curves = size_curves(metrics, sizes)
    if not curves:
        return []
    run.define_metric(CURVE_STEP)
    for name in curves:
        # summary "none": a curve's last row (the widest size) is no summary of it; the per-size keys are
        run.define_metric(name, step_metric=CURVE_STEP, summary="none")
    for row in curve_rows(curves):
        run.log(row)
    run.summary.update(
        {
            f"{name[len(CURVE_PREFIX) :]}@{m}": value
            for name, points in curves.items()
            for m, value in points.items()
            if math.isfinite(value)
        }
    )
    return list(curves)
