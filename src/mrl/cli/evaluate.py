"""Hydra entry point for evaluation: ``python -m mrl.cli.evaluate run=<run or sweep directory>`` (``make eval``)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig
from rich.markdown import Markdown

from mrl.common.configs import config_dir
from mrl.common.errors import exit_on_config_error
from mrl.common.io import console
from mrl.evaluation.result import EvaluationResult
from mrl.evaluation.runner import evaluate_runs
from mrl.posthoc.evaluate import evaluate_any_run
from mrl.training.config_checks import check_eval_config, check_group_choices


def show(result: EvaluationResult) -> None:
    """Print the per-size table of the run's ``summary.md`` (and a text run's layers x sizes grid); the cascade and
    funnel tables stay in the file."""
    out = Path(result.output_dir)
    first, *sections = (out / "summary.md").read_text().split("\n## ")
    grid = [f"## {section}" for section in sections if section.startswith("Layers x sizes")]
    console().print(Markdown("\n".join([first, *grid])))
    print(f"Evaluation written to {out} (summary.md also has the adaptive-classification and funnel tables)")


def main() -> None:
    """``mrl-eval``: a group option that has no file is named in one line before Hydra composes."""
    exit_on_config_error(lambda: check_group_choices(sys.argv[1:], config_dir()))
    evaluate_composed()


@hydra.main(config_path=str(config_dir()), config_name="eval", version_base="1.3")
def evaluate_composed(cfg: DictConfig) -> None:
    def evaluate() -> list[EvaluationResult]:
        check_eval_config(cfg)  # types and ranges of the settings, before a checkpoint is read
        return evaluate_runs(cfg, evaluate_any_run)

    for result in exit_on_config_error(evaluate):
        show(result)


if __name__ == "__main__":
    main()
