"""Matplotlib charts of the trade-offs: accuracy against embedding size, cascades, funnels and storage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _save(fig, ax, path: str | Path, title: str, xlabel: str, ylabel: str, legend: bool = False) -> Path:
    """Labels, grid (and legend), then the figure written to ``path`` and closed."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_curves(
    curves: Mapping[str, Mapping[int, float]], path: str | Path, title: str, ylabel: str = "accuracy (%)"
) -> Path:
    """One line per named curve of {size: value in [0, 1]}; sizes on a log2 axis."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, points in curves.items():
        if not points:
            continue
        sizes = sorted(points)
        ax.plot(sizes, [100 * points[m] for m in sizes], marker="o", label=name)
    ax.set_xscale("log", base=2)
    return _save(fig, ax, path, title, "embedding size (dimensions)", ylabel, legend=True)


def plot_xy(
    rows: Sequence[Mapping],
    x: str,
    y: str,
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    label: str | None = None,
    logx: bool = False,
) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot([r[x] for r in rows], [100 * r[y] for r in rows], marker="o", label=label)
    for r in rows:
        if "label" in r:
            ax.annotate(str(r["label"]), (r[x], 100 * r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if logx:
        ax.set_xscale("log")
    return _save(fig, ax, path, title, xlabel, ylabel)


def plot_groups(
    rows: Sequence[Mapping],
    x: str,
    y: str,
    group: str,
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    point_label: str | None = None,
) -> Path:
    """One line per value of ``rows[i][group]`` (x on a log2 axis, y in [0, 1] shown in %), each point
    annotated with ``rows[i][point_label]``."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in dict.fromkeys(r[group] for r in rows):
        points = sorted((r for r in rows if r[group] == name), key=lambda r: r[x])
        ax.plot([r[x] for r in points], [100 * r[y] for r in points], marker="o", label=str(name))
        for r in points if point_label else []:
            ax.annotate(str(r[point_label]), (r[x], 100 * r[y]), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xscale("log", base=2)
    return _save(fig, ax, path, title, xlabel, ylabel, legend=True)
