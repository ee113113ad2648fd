"""Hydra entry point for training: ``python -m mrl.cli.train experiment=digits_mrl`` (``make train``)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mrl.common.configs import config_dir
from mrl.common.errors import exit_on_config_error
from mrl.posthoc.procedure import is_posthoc_config, run_posthoc
from mrl.training.config_checks import check_train_config
from mrl.training.procedure import optimized_metric, run_training
from mrl.training.sweep import record_failure


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
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
