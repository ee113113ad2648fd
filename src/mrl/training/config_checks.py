"""The composed config checked right after composition, before anything is built: a wrong type, a value out of
range, a string where a group's settings belong, an unknown key under a ``_target_`` or more devices than the
machine has is a :class:`~mrl.common.errors.ConfigError` reading ``key=value: expected ...``.

The rules cover the keys users override most (the trainer's loop and devices, the data's batch, the optimizer, the
flags of ``train.yaml`` and ``eval.yaml``); a key a config does not have is not checked. Finer checks that need the
data or the model (nesting lists against the width, class counts, timm names) stay where those are built.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mrl.backbones.hf_text import POOLING
from mrl.common.errors import ConfigError
from mrl.core.heads import HEAD_KINDS
from mrl.training.classifier import CrossEntropyConfig, HeadConfig, MatryoshkaClassifier
from mrl.training.contrastive import MatryoshkaContrastiveModule
from mrl.training.contrastive_configs import LAYER_WEIGHTINGS, ContrastiveLossConfig, DistillConfig, LayerLossConfig
from mrl.training.optim import OPTIMIZERS, SCHEDULES, OptimizerConfig, SchedulerConfig

__all__ = ["check_devices", "check_eval_config", "check_group_choices", "check_train_config"]


@dataclass(frozen=True)
class Rule:
    """A value is valid when ``accepts(value)``; ``expected`` says what is (``expected an integer >= 1``)."""

    accepts: Callable[[Any], bool]
    expected: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def integer(low: int, nullable: bool = False) -> Rule:
    return Rule(
        lambda v: (nullable and v is None) or (_is_int(v) and v >= low),
        f"expected an integer >= {low}" + (" or null" if nullable else ""),
    )


def number(low: float, high: float | None = None, above: bool = False, nullable: bool = False) -> Rule:
    def accepts(v: Any) -> bool:
        if nullable and v is None:
            return True
        return _is_number(v) and (v > low if above else v >= low) and (high is None or v <= high)

    bound = f"> {low}" if above else f">= {low}"
    upper = f" and <= {high}" if high is not None else ""
    return Rule(accepts, f"expected a number {bound}{upper}" + (" or null" if nullable else ""))


def choice(*options: Any) -> Rule:
    return Rule(lambda v: v in options, f"expected one of {', '.join(dict.fromkeys(map(str, options)))}")


BOOLEAN = Rule(lambda v: isinstance(v, bool), "expected true or false")
BOOLEAN_OR_NULL = Rule(lambda v: v is None or isinstance(v, bool), "expected true, false or null")
LIMIT = Rule(
    lambda v: v is None or (_is_int(v) and v >= 0) or (isinstance(v, float) and 0.0 <= v <= 1.0),
    "expected a batch count (an integer >= 0), a fraction in 0.0..1.0, or null",
)
PRECISIONS = ("32-true", "32", 32, "16-mixed", "16", 16, "bf16-mixed", "bf16", "16-true", "bf16-true", "64-true", 64)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")

TRAIN_RULES: dict[str, Rule] = {
    "seed": integer(0),
    "train": BOOLEAN,
    "test": BOOLEAN,
    "print_config": BOOLEAN,
    "trainer.max_epochs": integer(-1, nullable=True),
    "trainer.min_epochs": integer(0, nullable=True),
    "trainer.max_steps": integer(-1),
    "trainer.num_nodes": integer(1),
    "trainer.accelerator": choice(*ACCELERATORS),
    "trainer.precision": choice(*PRECISIONS),
    "trainer.accumulate_grad_batches": integer(1),
    "trainer.log_every_n_steps": integer(1),
    "trainer.check_val_every_n_epoch": integer(1, nullable=True),
    "trainer.num_sanity_val_steps": integer(-1),
    "trainer.limit_train_batches": LIMIT,
    "trainer.limit_val_batches": LIMIT,
    "trainer.limit_test_batches": LIMIT,
    "trainer.gradient_clip_val": number(0, nullable=True),
    "trainer.enable_progress_bar": BOOLEAN,
    "trainer.enable_model_summary": BOOLEAN,
    "data.batch_size": integer(1),
    "data.num_workers": integer(0, nullable=True),
    "data.image_size": integer(1, nullable=True),
    "data.val_fraction": number(0, 1),
    "data.max_pairs": integer(1, nullable=True),
    "data.pin_memory": BOOLEAN_OR_NULL,
    "data.persistent_workers": BOOLEAN_OR_NULL,
    "model.num_classes": integer(1, nullable=True),
    "model.channels_last": BOOLEAN,
    "model.compile": BOOLEAN,
    "model.optimizer.lr": number(0, above=True),
    "model.optimizer.weight_decay": number(0),
    "model.optimizer.lr_batch": integer(1, nullable=True),
    "model.scheduler.warmup_epochs": number(0),
    "model.scheduler.min_lr_ratio": number(0, 1),
    "model.loss.label_smoothing": number(0, 1),
    "model.loss.scale": number(0, above=True),
    "model.backbone.pretrained": BOOLEAN,
    "model.backbone.freeze": BOOLEAN,
    "model.backbone.embed_dim": integer(1, nullable=True),
    "model.backbone.max_length": integer(1),
}

# Groups whose value is a mapping of settings (or, for the optional ones, null): a plain string there is the
# mistake of naming a file of another group (model.backbone=resnet18 for model.backbone.name=resnet18).
MAPPINGS = ("model", "data", "trainer", "paths", "model.backbone", "model.optimizer", "model.scheduler", "model.loss")
OPTIONAL_MAPPINGS = ("model.head", "callbacks", "logger")

EVAL_RULES: dict[str, Rule] = {
    "seed": integer(0),
    "reference": BOOLEAN,
    "weights_only": BOOLEAN,
    "skip_evaluated": BOOLEAN,
    "tta": BOOLEAN,
    "wandb": BOOLEAN,
    "only_present_classes": BOOLEAN,
    "precision": choice("fp32", "bf16", "fp16"),
    "embeddings_dtype": choice("fp32", "fp16"),
    "knn.map_k": integer(1),
    "funnel.shortlist": integer(1),
    "funnel.binary": BOOLEAN,
    "funnel_tuning.k": integer(1),
    "adaptive.holdout_fraction": number(0, 1, above=True),
    "baselines.enabled": BOOLEAN,
    "baselines.max_train": integer(1),
}


def _value(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """(present, value as plain Python) of a dotted key; an interpolation that cannot resolve counts as absent."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False, None
        try:
            node = node[part]
        except Exception:  # an interpolation that needs the run (${hydra:...}) or another group
            return False, None
    if isinstance(node, DictConfig | ListConfig):
        return True, OmegaConf.to_container(node, resolve=False)
    return True, node


def _apply(cfg: DictConfig, rules: Mapping[str, Rule]) -> None:
    for key, rule in rules.items():
        present, value = _value(cfg, key)
        if present and not rule.accepts(value):
            raise ConfigError(key, value, rule.expected)


def _check_mappings(cfg: DictConfig) -> None:
    for key in (*MAPPINGS, *OPTIONAL_MAPPINGS):
        present, value = _value(cfg, key)
        if not present or isinstance(value, dict) or (value is None and key in OPTIONAL_MAPPINGS):
            continue
        if "." in key:  # a section of a group (model.backbone): its settings are set one by one
            example = {"model.backbone": f"{key}.name={value}"}.get(key, f"{key}.<setting>=...")
            expected = f"expected the {key.split('.')[-1]} settings (a mapping); set one of them: {example}"
        else:  # a group: a file of conf/<group>/ is picked with group=<file>
            expected = f"expected the {key} settings (a mapping); pick a file of conf/{key}/ with {key}=<file>"
        raise ConfigError(key, value, expected)


def _check_unknown_keys(cfg: DictConfig, key: str) -> None:
    """Keys of the mapping at ``key`` that its ``_target_`` does not take (a target with ``**kwargs`` takes any)."""
    present, value = _value(cfg, key)
    if not present or not isinstance(value, dict) or not isinstance(value.get("_target_"), str):
        return
    from hydra.utils import get_class

    try:
        target = get_class(value["_target_"])
        parameters = inspect.signature(target).parameters.values()
    except Exception:  # an unknown target is reported where it is built, with its own message
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    names = [p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for name, setting in value.items():
        if name.startswith("_") or name in names:
            continue
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {key}.{close[0]}? " if close else ""
        raise ConfigError(f"{key}.{name}", setting, f"unknown key; {hint}valid keys: {', '.join(sorted(names))}")


def _accepts(annotation: Any, value: Any) -> bool | None:
    """Whether ``value`` fits a simple annotation (int, float, bool, str, a sequence, a mapping, their unions with
    None); None when the annotation is not one of those (then nothing is said)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_accepts(arg, value) for arg in typing.get_args(annotation)]
        if any(v is True for v in verdicts):
            return True
        return None if any(v is None for v in verdicts) else False
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return _is_int(value)
    if annotation is float:
        return _is_number(value)
    if annotation is str:
        return isinstance(value, str)
    if origin in (tuple, list, Sequence) or annotation in (tuple, list):
        return isinstance(value, list | tuple)
    if origin in (dict, Mapping) or annotation is dict:
        return isinstance(value, dict)
    return None


def _describe(annotation: Any) -> str:
    """``int | None`` as ``an integer or null``, for a message."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    parts = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    shown = []
    for part in parts:
        origin = typing.get_origin(part)
        shown.append(
            names.get(part)
            or (
                "a list"
                if origin in (tuple, list) or "Sequence" in str(part)
                else "a mapping"
                if origin is dict or "Mapping" in str(part)
                else str(part)
            )
        )
    return " or ".join(dict.fromkeys(shown))


def _check_against(key: str, values: Mapping[str, Any], valid: Mapping[str, Any]) -> None:
    """Every key of ``values`` (the mapping at ``key``) is one of ``valid`` (name: annotation), with a value of its
    annotation's type; an unknown key is named with the closest valid one."""
    for name, setting in values.items():
        if name.startswith("_"):
            continue
        if name not in valid:
            close = difflib.get_close_matches(name, list(valid), n=1)
            hint = f"did you mean {key}.{close[0]}? " if close else ""
            raise ConfigError(f"{key}.{name}", setting, f"unknown key; {hint}valid keys: {', '.join(sorted(valid))}")
        if _accepts(valid[name], setting) is False:
            raise ConfigError(f"{key}.{name}", setting, f"expected {_describe(valid[name])}")


def _dataclass_fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in fields(cls)}


def _section_schemas(model_target: Any) -> dict[str, type]:
    """The dataclass each ``model.*`` section is read into by the model class ``model._target_`` names (the
    classifier's head and cross-entropy, the contrastive loss and its distill/layers sections, every model's
    optimizer and scheduler); an unknown or foreign target gets only the optimizer and scheduler."""
    schemas: dict[str, type] = {"model.optimizer": OptimizerConfig, "model.scheduler": SchedulerConfig}
    try:
        from hydra.utils import get_class

        target = get_class(model_target) if isinstance(model_target, str) else None
    except Exception:
        return schemas

    if isinstance(target, type) and issubclass(target, MatryoshkaClassifier):
        schemas |= {"model.head": HeadConfig, "model.loss": CrossEntropyConfig}
    elif isinstance(target, type) and issubclass(target, MatryoshkaContrastiveModule):
        schemas |= {
            "model.loss": ContrastiveLossConfig,
            "model.loss.distill": DistillConfig,
            "model.loss.layers": LayerLossConfig,
        }
    return schemas


def _section_choices() -> dict[str, Rule]:
    return {
        "model.head.kind": choice(*HEAD_KINDS),
        "model.head.dim": integer(1, nullable=True),
        "model.optimizer.name": Rule(
            lambda v: str(v).lower() in OPTIMIZERS, f"expected one of {', '.join(OPTIMIZERS)}"
        ),
        "model.optimizer.momentum": number(0),
        "model.optimizer.eps": number(0, above=True),
        "model.scheduler.name": Rule(
            lambda v: v is None or str(v).lower() in (*SCHEDULES, "none"),
            f"expected one of {', '.join(SCHEDULES)} or none",
        ),
        "model.scheduler.warmup_start_factor": number(0, 1),
        "model.scheduler.gamma": number(0, above=True),
        "model.loss.distill.mode": choice("similarity", "mse"),
        "model.loss.distill.pooling": choice(*POOLING),
        "model.loss.distill.weight": number(0),
        "model.loss.layers.weighting": choice(*LAYER_WEIGHTINGS),
        "model.loss.layers.n_layers_per_step": Rule(
            lambda v: _is_int(v) and (v >= 1 or v == -1), "expected -1 (all) or an integer >= 1"
        ),
    }


def _check_model_sections(cfg: DictConfig) -> None:
    """``model.head``, ``model.loss`` (with distill and layers), ``model.optimizer``, ``model.scheduler``: keys
    and value types against the dataclass the model reads each into, then the choices and ranges."""
    for key, schema in _section_schemas(_value(cfg, "model._target_")[1]).items():
        present, value = _value(cfg, key)
        if not present or value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(key, value, f"expected the {key.split('.')[-1]} settings (a mapping) or null")
        _check_against(key, value, _dataclass_fields(schema))
    _apply(cfg, _section_choices())


def _target_parameters(target: str) -> tuple[dict[str, Any], bool] | None:
    """(name: annotation of each keyword ``target`` takes, whether it also takes ``**kwargs``); None when the
    target cannot be imported or inspected (reported where it is built)."""
    from hydra.utils import get_class

    try:
        cls = get_class(target)
        parameters = inspect.signature(cls).parameters.values()
    except Exception:
        return None
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve here: names are still checked
        hints = {}
    names = {
        p.name: hints.get(p.name, inspect.Parameter.empty)
        for p in parameters
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _check_instantiated_group(cfg: DictConfig, group: str) -> None:
    """Each entry of ``callbacks`` / ``logger`` is null or a mapping with a ``_target_`` whose keys its class takes,
    with values of the types it annotates. A class that takes ``**kwargs`` (WandbLogger hands them to
    ``wandb.init``) has only its annotated keys' types checked: its extra keys are the library's to judge."""
    present, entries = _value(cfg, group)
    if not present or not isinstance(entries, dict):
        return
    for name, entry in entries.items():
        key = f"{group}.{name}"
        if entry is None:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("_target_"), str):
            raise ConfigError(key, entry, "expected a mapping with a _target_ (a class to build), or null to drop it")
        found = _target_parameters(entry["_target_"])
        if found is None:
            continue
        parameters, open_ended = found
        if open_ended:
            known = {k: v for k, v in entry.items() if k in parameters}
            _check_against(key, known, parameters)
        else:
            _check_against(key, entry, parameters)


def _device_count(devices: Any) -> int | None:
    """How many devices ``trainer.devices`` asks for; None for ``auto`` / -1 (as many as there are)."""
    if devices in ("auto", -1, "-1"):
        return None
    if isinstance(devices, list):
        return len(devices) if devices and all(_is_int(d) and d >= 0 for d in devices) else 0
    if isinstance(devices, str):
        parts = [p.strip() for p in devices.split(",") if p.strip()]
        if not parts or not all(p.isdigit() for p in parts):
            return 0
        return int(parts[0]) if len(parts) == 1 and not devices.strip().endswith(",") else len(parts)
    return devices if _is_int(devices) and devices >= 1 else 0


def check_devices(accelerator: Any, devices: Any, gpus: int | None = None) -> None:
    """``trainer.devices`` fits this machine: no more GPUs than it has, and several CPU processes only when the
    config says ``trainer.accelerator=cpu`` (with ``accelerator=auto`` on a machine without a GPU, Lightning would
    quietly start that many DDP processes on the CPU). An explicit ``trainer.accelerator=cpu`` may ask for more
    processes than cores: the DDP tests run two gloo processes wherever they run."""
    count = _device_count(devices)
    if count == 0:
        raise ConfigError("trainer.devices", devices, "expected a positive integer, a list of GPU indices, or auto")
    if count is None:
        return
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    accelerator = str(accelerator).lower()
    if accelerator in ("gpu", "cuda") and count > gpus:
        if not gpus:
            raise ConfigError(
                "trainer.accelerator", accelerator, "this machine has no GPU; expected cpu or auto (trainer=cpu)"
            )
        raise ConfigError("trainer.devices", devices, f"this machine has {gpus} GPU(s); expected at most {gpus}")
    if accelerator == "auto" and count > max(gpus, 1):
        where = f"{gpus} GPU(s)" if gpus else "no GPU"
        raise ConfigError(
            "trainer.devices",
            devices,
            f"this machine has {where}; expected at most {max(gpus, 1)}, or trainer.accelerator=cpu "
            f"trainer.strategy=ddp to run {count} CPU processes on purpose (trainer=ddp_cpu)",
        )


def check_train_config(cfg: DictConfig) -> None:
    """A ``train.yaml`` composition fit to build: group types, value types and ranges, unknown keys, devices."""
    _check_mappings(cfg)
    _apply(cfg, TRAIN_RULES)
    for key in ("model", "data", "trainer"):
        _check_unknown_keys(cfg, key)
    _check_model_sections(cfg)
    for group in ("callbacks", "logger"):
        _check_instantiated_group(cfg, group)
    has_devices, devices = _value(cfg, "trainer.devices")
    if has_devices:
        check_devices(_value(cfg, "trainer.accelerator")[1] or "auto", devices)


def check_eval_config(cfg: DictConfig) -> None:
    """An ``eval.yaml`` composition fit to run: value types and ranges of its settings."""
    _apply(cfg, EVAL_RULES)


def check_group_choices(overrides: list[str], conf: Path) -> None:
    """Each ``group=option`` on the command line names a file of ``conf/<group>/`` (``model=resnet999``,
    ``head=xyz``): one line naming the key and the valid options, where Hydra would print several. Sweeps
    (``head=mrl,ff``) have each option checked; ``null``, deletions and Hydra's sweep functions are left to it."""
    for override in overrides:
        key, sep, value = override.lstrip("+").partition("=")
        group = conf / key
        if not sep or not key or key.startswith(("~", "hydra")) or "(" in value or not group.is_dir():
            continue
        options = sorted(str(p.relative_to(group).with_suffix("")) for p in group.rglob("*.yaml"))
        for option in value.split(","):
            option = option.strip()
            if option in ("null", "") or option in options:
                continue
            close = difflib.get_close_matches(option, options, n=1)
            hint = f"did you mean {key}={close[0]}? " if close else ""
            raise ConfigError(key, option, f"no conf/{key}/{option}.yaml; {hint}expected one of {', '.join(options)}")
