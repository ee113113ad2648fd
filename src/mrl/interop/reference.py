"""Import of the official RAIVNLab/MRL ResNet-50 checkpoints into this framework's model.

The reference checkpoints are torchvision ResNet-50 state dicts (saved from DDP, so keys may start with
``module.``) whose ``fc`` is the nested head: ``fc.nesting_classifier_{i}.weight/bias`` (MRL: one per
size; MRL-E: only ``nesting_classifier_0``, sliced), or a fixed-feature ``fc.classifier.weight``.
timm's ResNet-50 uses torchvision's key names, so the trunk loads key for key. The released
checkpoints were trained with BlurPool (a ``.conv`` level and a ``blur_filter`` buffer in each strided
convolution); such a checkpoint gets a backbone with ``blurpool=True``, which has the same layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from mrl.runs import find_checkpoint
from mrl.training.classifier import MatryoshkaClassifier

_HEAD_KEY = re.compile(r"^fc\.nesting_classifier_(\d+)\.(weight|bias)$")
REFERENCE_KINDS = ("mrl", "mrl_e", "ff", "standard")


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], prefixes=("module.", "model.")) -> dict:
    out = {}
    for key, value in state_dict.items():
        for prefix in prefixes:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def read_reference_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a reference checkpoint file (a plain state dict, or one under ``state_dict``/``model``) once it
    verifies: a damaged file is a one-line error, not a traceback."""
    obj = torch.load(find_checkpoint(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"ckpt={str(path)!r}: not a state dict (found {type(obj).__name__})")
    return strip_prefixes(obj)


def infer_reference_head(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Head kind, class count and sizes of a reference checkpoint, read off its ``fc`` tensors."""
    nesting = {}
    for key, value in state_dict.items():
        match = _HEAD_KEY.match(key)
        if match and match.group(2) == "weight":
            nesting[int(match.group(1))] = value
    if nesting:
        weights = [nesting[i] for i in sorted(nesting)]
        num_classes = int(weights[0].shape[0])
        if len(weights) == 1:
            # MRL-E keeps one shared weight; its sizes are not stored, the paper's are powers of two.
            width = int(weights[0].shape[1])
            sizes = [2**i for i in range(3, 12) if 2**i <= width]
            return {"kind": "mrl_e", "num_classes": num_classes, "nesting": sizes}
        return {"kind": "mrl", "num_classes": num_classes, "nesting": [int(w.shape[1]) for w in weights]}
    if "fc.classifier.weight" in state_dict:
        weight = state_dict["fc.classifier.weight"]
        return {"kind": "ff", "num_classes": int(weight.shape[0]), "dim": int(weight.shape[1])}
    if "fc.weight" in state_dict:
        return {"kind": "standard", "num_classes": int(state_dict["fc.weight"].shape[0])}
    raise ValueError(
        "reference checkpoint: no classifier found (expected fc.nesting_classifier_*, fc.classifier.* or fc.weight)"
    )


def load_reference_resnet50(
    path: str | Path, nesting: list[int] | None = None, kind: str | None = None
) -> MatryoshkaClassifier:
    """Build a MatryoshkaClassifier (timm ResNet-50 + the matching head) holding a reference checkpoint.

    The head kind is read off the ``fc`` keys; ``kind`` checks it. ``kind="mrl_e"`` also reads the
    reference's older MRL-E files, whose shared head was ``fc`` itself (``fc.weight``/``fc.bias``, the
    layout of a standard model, which is what they are taken for without it).
    """
    if kind is not None and kind not in REFERENCE_KINDS:
        raise ValueError(
            f"reference={kind!r}: expected false, true (the head kind read off the file) or one of "
            f"{', '.join(REFERENCE_KINDS)}"
        )
    state_dict = read_reference_state_dict(path)
    if kind == "mrl_e" and "fc.weight" in state_dict:
        state_dict = {
            (f"fc.nesting_classifier_0.{k[3:]}" if k in ("fc.weight", "fc.bias") else k): v
            for k, v in state_dict.items()
        }
    info = infer_reference_head(state_dict)
    if kind is not None and kind != info["kind"]:
        raise ValueError(
            f"reference={kind!r}: ckpt={str(path)!r} holds a {info['kind']} head (its fc keys: "
            f"{sorted(k for k in state_dict if k.startswith('fc.'))}); use reference=true to take it as it is"
        )
    kind = info["kind"]
    head = {"kind": kind, "bias": any(k.endswith(".bias") and k.startswith("fc.") for k in state_dict)}
    if kind == "ff":
        head["dim"] = info["dim"]
    blurpool = any(key.endswith(".blur_filter") for key in state_dict)
    module = MatryoshkaClassifier(
        backbone={
            "_target_": "mrl.backbones.TimmBackbone",
            "name": "resnet50",
            "pretrained": False,
            "blurpool": blurpool,
        },
        num_classes=info["num_classes"],
        head=head,
        nesting=nesting or info.get("nesting"),
    )
    trunk = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    ignored = [k for k in trunk if k.endswith("num_batches_tracked")]
    expected = module.backbone.model.state_dict()
    unsupported = sorted(k for k in trunk if k not in expected and k not in ignored)
    if unsupported:
        raise ValueError(
            f"ckpt={str(path)!r}: layers not supported by a timm ResNet-50: {', '.join(unsupported[:6])}"
            + (f" (+{len(unsupported) - 6} more)" if len(unsupported) > 6 else "")
            + f" ({'with' if blurpool else 'without'} BlurPool, read off the blur_filter buffers)"
        )
    missing = sorted(k for k in expected if k not in trunk and not k.endswith("num_batches_tracked"))
    if missing:
        raise ValueError(f"ckpt={str(path)!r}: missing backbone weights: {', '.join(missing[:6])}")
    module.backbone.model.load_state_dict({k: v for k, v in trunk.items() if k in expected}, strict=False)
    head_sd = {k: v for k, v in state_dict.items() if k.startswith("fc.")}
    if kind in ("mrl", "mrl_e"):
        module.head.load_official_state_dict(head_sd)
    else:
        prefix = "fc.classifier." if kind == "ff" else "fc."
        own = {k[len(prefix) :]: v for k, v in head_sd.items() if k.startswith(prefix)}
        module.head.linear.load_state_dict(own)
    return module.eval()
