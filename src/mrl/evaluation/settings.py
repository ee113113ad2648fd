"""The evaluation settings of conf/eval.yaml as typed, frozen dataclasses, checked once when they are read.

The defaults below equal conf/eval.yaml (a test holds them together); the YAML stays the documented list of
settings. :func:`eval_config` reads a composed config and fails fast, with a one-line ``key=value: ...``
error, on a key it does not know or a value of the wrong type. The ``data`` and ``paths`` groups are not
settings: the runner instantiates the data config as it stands.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mrl.evaluation.device import check_precision
from mrl.evaluation.layer_grid import check_layers
from mrl.evaluation.quantized import check_codecs

GROUPS = ("data", "paths")  # composed config groups, read by the runner as they are
EMBEDDING_DTYPES = ("fp32", "fp16")


@dataclass(frozen=True)
class KnnConfig:
    metrics: tuple[str, ...] = ("cosine", "l2")
    ks: tuple[int, ...] = (10, 25, 50, 100)
    map_k: int = 10
    device: str = "auto"


@dataclass(frozen=True)
class BaselinesConfig:
    enabled: bool = True
    all_heads: bool = False
    max_train: int | None = 20000


@dataclass(frozen=True)
class AdaptiveConfig:
    holdout_fraction: float = 0.5


@dataclass(frozen=True)
class FunnelConfig:
    shortlist: int = 200
    binary: bool = True


@dataclass(frozen=True)
class FunnelTuningConfig:
    targets: tuple[float, ...] = (0.95, 0.99)
    k: int = 10


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation's settings; what each means is documented in conf/eval.yaml."""

    run: str | None = None
    skip_evaluated: bool = False
    ckpt: str | None = None
    reference: bool | str = False
    output_dir: str | None = None
    weights_only: bool = True
    device: str = "auto"
    precision: str = "fp32"
    tta: bool = False
    seed: int = 0
    sizes: tuple[int, ...] | None = None
    database_split: str | None = "train"
    query_split: str = "test"
    only_present_classes: bool = False
    embeddings_dtype: str = "fp32"
    wandb: bool = False
    quantized: tuple[str, ...] = ("fp16", "int8", "binary")
    layers: str | tuple[int, ...] | None = None
    knn: KnnConfig = KnnConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    adaptive: AdaptiveConfig = AdaptiveConfig()
    funnel: FunnelConfig = FunnelConfig()
    funnel_tuning: FunnelTuningConfig = FunnelTuningConfig()


def eval_config(cfg: DictConfig | Mapping[str, Any]) -> EvalConfig:
    """The typed settings of a composed conf/eval.yaml (the ``data`` and ``paths`` groups left out)."""
    plain = {
        key: OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
        for key, value in cfg.items()
        if key not in GROUPS
    }
    check_layers(plain.get("layers"))  # before the type check, for a message that says what is valid
    settings = _build(EvalConfig, plain, "")
    check_precision(settings.precision)
    check_codecs(settings.quantized)
    tuning = settings.funnel_tuning
    if any(not 0 < t <= 1 for t in tuning.targets):
        raise ValueError(
            f"funnel_tuning.targets={list(tuning.targets)}: recalls in (0, 1], e.g. [0.95, 0.99]; [] for none"
        )
    if tuning.k < 1:
        raise ValueError(f"funnel_tuning.k={tuning.k}: neighbours per query, a positive integer")
    if settings.embeddings_dtype not in EMBEDDING_DTYPES:
        raise ValueError(
            f"embeddings_dtype={settings.embeddings_dtype!r}: expected one of {', '.join(EMBEDDING_DTYPES)}"
        )
    return settings


def _show(key: str, value: Any) -> str:
    return f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    """``cls(**values)``, each value checked against its field's type; nested sections built the same way."""
    hints = typing.get_type_hints(cls)
    names = [field.name for field in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in hints:
            raise ValueError(f"{_show(path, value)}: unknown key; valid keys: {', '.join(names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ValueError(
                    f"{_show(path, value)}: expected a section with keys "
                    f"{', '.join(f.name for f in dataclasses.fields(hint))}"
                )
            kwargs[key] = _build(hint, value, f"{path}.")
        else:
            kwargs[key] = _checked(path, value, hint)
    return cls(**kwargs)


def _checked(path: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type wants it (lists become tuples); a ValueError naming ``path`` otherwise."""
    value = os.fspath(value) if isinstance(value, os.PathLike) else value
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if typing.get_origin(option) is tuple and isinstance(value, (list, tuple)):
            item = typing.get_args(option)[0]
            if all(_is(v, item) for v in value):
                return tuple(value)
        elif isinstance(option, type) and _is(value, option):
            return float(value) if option is float else value
    raise ValueError(f"{_show(path, value)}: expected {' or '.join(_name(option) for option in options)}")


def _name(option: Any) -> str:
    if option is type(None):
        return "null"
    if typing.get_origin(option) is tuple:
        return f"a list of {typing.get_args(option)[0].__name__}"
    return option.__name__


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
