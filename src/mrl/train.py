"""Hydra entry point for training: ``python -m mrl.train experiment=digits_mrl`` (``make train``)."""

from __future__ import annotations

import re
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mrl.experiment import optimized_metric, run_training
from mrl.sweep import record_failure

CONFIG_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError)  # NestingError is a ValueError


def is_config_error(error: BaseException) -> bool:
    """The framework's own config errors: one line that starts with the offending ``key=value``."""
    return isinstance(error, CONFIG_ERRORS) and re.match(r"^[\w.\[\]]+=", str(error)) is not None


@hydra.main(config_path="../../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        return optimized_metric(cfg, run_training(cfg, run_dir))
    except Exception as error:
        # In a sweep, one failing job is recorded and the others go on; a single run fails loudly.
        if HydraConfig.get().mode.name == "MULTIRUN":
            record_failure(run_dir, error)
            return float("nan")
        if is_config_error(error):
            # A config mistake: the one-line message is the whole story, no traceback.
            print(f"{type(error).__name__}: {error}", file=sys.stderr)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
