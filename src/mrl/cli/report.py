"""`make report DIR=...`: gather many runs (MRL, MRL-E, FF, standard) into one table and one chart.

The comparison itself (which runs are repeats, the curves, the files written) is
:mod:`mrl.evaluation.comparison`; this prints its tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markdown import Markdown

from mrl.common.errors import exit_on_config_error
from mrl.common.io import console
from mrl.evaluation.comparison import write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="a run or sweep directory (searched recursively for results.json)")
    parser.add_argument("--out", default=None, help="where to write the report (default: DIR)")
    parser.add_argument("--wandb", action="store_true", help="also log the tables and charts to W&B")
    args = parser.parse_args(argv)
    report = exit_on_config_error(lambda: write_report(args.dir, args.out, args.wandb))
    path = Path(args.out or args.dir) / "report.md"
    print_report(path.read_text())
    print(f"Report on {len(report['runs'])} run(s) written to {path} (with a chart per table)")


def print_report(markdown: str) -> None:
    """The report's tables on the console; the figure links are left out (a terminal cannot show them)."""
    tables = "\n".join(line for line in markdown.splitlines() if not line.startswith("!["))
    console().print(Markdown(tables))


if __name__ == "__main__":
    main()
