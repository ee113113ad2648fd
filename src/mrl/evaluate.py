"""Hydra entry point for evaluation: ``python -m mrl.evaluate run=<run or sweep directory>`` (``make eval``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from mrl.errors import exit_on_config_error
from mrl.eval.runner import evaluate_runs
from mrl.io import console


def show(results: dict[str, Any]) -> None:
    """Print the per-size table of the run's ``summary.md``; the cascade and funnel tables stay in the file."""
    from rich.markdown import Markdown

    out = Path(results["output_dir"])
    summary = (out / "summary.md").read_text()
    console().print(Markdown(summary.split("\n## ", 1)[0]))
    print(f"Evaluation written to {out} (summary.md also has the adaptive-classification and funnel tables)")


@hydra.main(config_path="../../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    for results in exit_on_config_error(lambda: evaluate_runs(cfg)):
        show(results)


if __name__ == "__main__":
    main()
