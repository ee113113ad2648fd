"""Hydra entry point for evaluation: ``python -m mrl.evaluate run=<run or sweep directory>`` (``make eval``)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mrl.eval.runner import evaluate_runs


@hydra.main(config_path="../../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    for results in evaluate_runs(cfg):
        print(f"Evaluation written to {results.get('output_dir', '')}")


if __name__ == "__main__":
    main()
