"""Configs: where the Hydra configs are (shipped inside the installed package as ``mrl/conf``, so the console
scripts work after ``pip install``; or the checkout's top-level ``conf/`` in a source tree or an editable
install), config sections read into typed dataclasses, so a wrong key fails with its name and every
default is written once, and the few resolvers the configs use (registered on import: every entry point that
composes a config imports this module)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf

T = TypeVar("T")

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """The directory holding ``train.yaml`` and ``eval.yaml``."""
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"config_dir={str(PACKAGE_DIR / 'conf')!r}: the package has no configs; reinstall it "
        "(pip install mrl) or run from a checkout that has conf/"
    )


def typed(cls: type[T], values: Mapping[str, Any] | None, key: str) -> T:
    """The dataclass ``cls`` built from a config section; an unknown key fails in one line that names it
    (``model.optimizer.nesterv=true: unknown key; valid keys: ...``). Defaults are the dataclass's own."""
    values = dict(values or {})
    names = [f.name for f in fields(cls)]
    unknown = [name for name in values if name not in names]
    if unknown:
        raise ValueError(f"{key}.{unknown[0]}={values[unknown[0]]!r}: unknown key; valid keys: {', '.join(names)}")
    return cls(**values)


def slurm_tasks_per_node(gpus_per_node: Any) -> int:
    """``hydra.launcher.tasks_per_node`` of a sweep job: one process per GPU (Lightning reads each rank from
    SLURM), or one for a CPU job (``gpus_per_node`` 0 or null)."""
    if gpus_per_node is None:
        return 1
    if isinstance(gpus_per_node, bool) or not str(gpus_per_node).isdigit():
        raise ValueError(
            f"hydra.launcher.gpus_per_node={gpus_per_node!r} is invalid; use 0 (a CPU job) or a positive number"
        )
    return max(1, int(gpus_per_node))


def recipe_run_name(recipe: str, _root_: Any) -> str:
    """``experiment_name`` of a recipe (``conf/experiment/digits.yaml``): ``<recipe>_<head>`` (digits_ff), the name
    of its one-head file; in a sweep over heads (``hydra.sweeper.params.head``, as ``sweep=heads`` sets it) the
    recipe's name for every job, so they share one sweep directory and one W&B group."""
    hydra = _root_.get("hydra") if "hydra" in _root_ else None  # the entry point's own config holds it
    if hydra is None:  # a job's config, passed on without it: the global copy
        from hydra.core.hydra_config import HydraConfig  # lazy: hydra, only where a config is composed

        hydra = HydraConfig.get() if HydraConfig.initialized() else None
    swept = OmegaConf.select(hydra, "sweeper.params", default=None) if hydra is not None else None
    if swept and "head" in swept:
        return str(recipe)
    return f"{recipe}_{OmegaConf.select(_root_, 'model.head.kind')}"


def register_resolvers() -> None:
    """``${mrl.tasks_per_node:...}`` (conf/hydra/launcher/slurm.yaml), ``${mrl.recipe_run_name:...}``
    (conf/experiment/); idempotent."""
    OmegaConf.register_new_resolver("mrl.tasks_per_node", slurm_tasks_per_node, replace=True)
    OmegaConf.register_new_resolver("mrl.recipe_run_name", recipe_run_name, replace=True)


register_resolvers()
