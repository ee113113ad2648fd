"""What a training run is, in the terms a W&B workspace groups and colours by: its head, data set, backbone and
nesting (config keys under ``group_by`` and tags such as ``head:mrl``), and its W&B group, shared by the runs of
one sweep."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

CONFIG_KEY = "group_by"  # the W&B config section: group_by.head, group_by.data, group_by.backbone, ...


def head_kind(model) -> str:
    """The nested head's kind (mrl, mrl_e, ff, standard); a contrastive model has no head: "contrastive"."""
    return (model.hparams.get("head") or {}).get("kind", "contrastive")


def backbone_name(model) -> str:
    return getattr(model.backbone, "name", type(model.backbone).__name__)


def _hydra_choice(group: str) -> str | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def _is_sweep_job() -> bool:
    from hydra.core.hydra_config import HydraConfig

    # a config composed by compose() (tests, notebooks) has no mode
    return HydraConfig.initialized() and getattr(HydraConfig.get().mode, "name", None) == "MULTIRUN"


def data_name(datamodule) -> str:
    """The data config's name (``data=digits`` -> digits), else the data module's class (DigitsDataModule ->
    digits)."""
    choice = _hydra_choice("data")
    if choice:
        return str(choice)
    name = re.sub(r"DataModule$", "", type(datamodule).__name__)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() or "data"


def run_identity(cfg: DictConfig, model, datamodule) -> dict[str, Any]:
    return {
        "head": head_kind(model),
        "data": data_name(datamodule),
        "backbone": backbone_name(model),
        "nesting": [int(m) for m in model.sizes],
        "seed": cfg.seed,
        "experiment": cfg.experiment_name,
    }


def identity_tags(identity: dict[str, Any]) -> list[str]:
    """``head:mrl``, ``data:digits``, ``backbone:resnet18``, ``nesting:8-16-...-512`` (W&B tags: 64 characters
    at most)."""
    nesting = "-".join(str(m) for m in identity["nesting"])
    tags = [f"head:{identity['head']}", f"data:{identity['data']}", f"backbone:{identity['backbone']}"]
    return [tag[:64] for tag in [*tags, f"nesting:{nesting}"]]


def wandb_group(cfg: DictConfig, run_dir: str | Path) -> str:
    """The experiment's name; a sweep job's is ``<experiment>/<sweep directory>``, so the runs of one sweep (and
    only those) share a group."""
    if _is_sweep_job():
        return f"{cfg.experiment_name}/{Path(run_dir).resolve().parent.name}"
    return str(cfg.experiment_name)
