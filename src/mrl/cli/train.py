"""Hydra entry point for training: ``python -m mrl.cli.train experiment=digits_mrl`` (``make train``)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mrl.common.configs import config_dir
from mrl.common.errors import exit_on_config_error
from mrl.posthoc.procedure import is_posthoc_config, run_posthoc
from mrl.training.config_checks import check_group_choices, check_train_config
from mrl.training.procedure import optimized_metric, run_training
from mrl.training.sweep import record_failure


def main() -> float | None:
    """``mrl-train``: a group option that has no file (``model=resnet999``) is named in one line before Hydra
    composes (Hydra's own message spans several)."""
    exit_on_config_error(lambda: check_group_choices(sys.argv[1:], config_dir()))
    return train_composed()


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def train_composed(cfg: DictConfig) -> float | None:
    run_dir = HydraConfig.get().runtime.output_dir

    def train() -> float | None:
        check_train_config(cfg)  # types, ranges, unknown keys and devices, before anything is built
        if is_posthoc_config(cfg):  # method=csr, adaptor, ...: trained on frozen embeddings (mrl.posthoc)
            return optimized_metric(cfg, run_posthoc(cfg, run_dir))
        return optimized_metric(cfg, run_training(cfg, run_dir))

    if HydraConfig.get().mode.name != "MULTIRUN":
        return exit_on_config_error(train)
    try:
        return train()
    except Exception as error:  # in a sweep, one failing job is recorded and the others go on
        record_failure(run_dir, error)
        return float("nan")


if __name__ == "__main__":
    main()
