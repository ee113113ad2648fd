"""`make report DIR=...`: gather many runs (MRL, MRL-E, FF, standard) into one table and one chart.

Each training run's ``results.json`` gives its validation accuracy per size; each ``eval/results.json``
beside it gives 1-NN accuracy per size. Runs with the same head are averaged (seeds), and the
fixed-feature runs, one per size, join into a single FF curve.
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from mrl.eval.plots import plot_curves
from mrl.io import atomic_write_text, read_json, write_json

log = logging.getLogger(__name__)
LABELS = {"mrl": "MRL", "mrl_e": "MRL-E", "ff": "FF", "standard": "standard"}


def find_runs(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"DIR={str(root)!r}: no such directory")
    return sorted(p.parent for p in root.rglob("results.json") if p.parent.name != "eval")


def gather_curves(run_dirs: list[Path], metric: str = "val/top1", source: str = "train") -> dict:
    """{label: {size: mean value}} over runs; ``source="eval"`` reads ``eval/results.json``."""
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run_dir in run_dirs:
        path = run_dir / ("eval/results.json" if source == "eval" else "results.json")
        if not path.is_file():
            continue
        results = read_json(path)
        train = read_json(run_dir / "results.json")
        label = LABELS.get(train.get("head"), str(train.get("head")))
        for key, value in results.get("metrics", {}).items():
            name, _, size = key.rpartition("@")
            if name == metric and size.isdigit():
                values[label][int(size)].append(float(value))
    return {label: {m: float(np.mean(v)) for m, v in sorted(sizes.items())} for label, sizes in values.items()}


def curves_table(curves: dict[str, dict[int, float]]) -> tuple[list[str], list[list]]:
    sizes = sorted({m for points in curves.values() for m in points})
    labels = list(curves)
    rows = [[m] + [curves[label].get(m) for label in labels] for m in sizes]
    return ["size", *labels], rows


def write_report(root: str | Path, out: str | Path | None = None, use_wandb: bool = False) -> dict:
    root = Path(root)
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"DIR={str(root)!r}: no results.json below it; train (and evaluate) runs first")
    sections = {
        "val_top1": ("val top-1 (trained heads)", gather_curves(runs, "val/top1")),
        "knn_top1": ("1-NN top-1 (eval, cosine)", gather_curves(runs, "eval/knn_top1", source="eval")),
        "map10": ("mAP@10 (eval, cosine)", gather_curves(runs, "eval/map@10", source="eval")),
    }
    lines = [f"# Report: {root}", "", f"{len(runs)} runs. Values in %; runs with the same head are averaged.", ""]
    report = {"root": str(root), "runs": [str(r) for r in runs], "curves": {}}
    for key, (title, curves) in sections.items():
        if not curves:
            continue
        report["curves"][key] = curves
        header, rows = curves_table(curves)
        with open(out / f"report_{key}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(r[0]) if i == 0 else ("" if v is None else f"{100 * v:.2f}")
                                    for i, v in enumerate(r)) + " |" for r in rows]
        lines += ["", f"![{title}](report_{key}.png)", ""]
        plot_curves(curves, out / f"report_{key}.png", title)
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    write_json(out / "report.json", report)
    if use_wandb:
        log_to_wandb(report, out)
    return report


def log_to_wandb(report: dict, out: Path) -> None:
    import wandb

    from mrl.wandb_setup import ensure_wandb_mode

    ensure_wandb_mode(out)
    run = wandb.init(project="mrl", job_type="report", dir=str(out), config={"root": report["root"]})
    for key, curves in report["curves"].items():
        header, rows = curves_table(curves)
        run.log({f"report/{key}": wandb.Table(columns=header, data=rows),
                 f"report/{key}_chart": wandb.Image(str(out / f"report_{key}.png"))})
    run.finish()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="a run or sweep directory (searched recursively for results.json)")
    parser.add_argument("--out", default=None, help="where to write the report (default: DIR)")
    parser.add_argument("--wandb", action="store_true", help="also log the tables and charts to W&B")
    args = parser.parse_args(argv)
    report = write_report(args.dir, args.out, args.wandb)
    print(f"Report on {len(report['runs'])} runs written to {Path(args.out or args.dir) / 'report.md'}")


if __name__ == "__main__":
    main()
