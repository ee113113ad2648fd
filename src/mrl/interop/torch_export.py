"""Export a trained image model for serving without this framework: a ``torch.export`` program and its recipe.

``make export RUN=<image run>`` writes ``<run>/export/``:

    embedder.pt2       images [B, C, H, W] (prepared as below) -> embeddings [B, D]; any batch size.
                       ``torch.export.load(path).module()(images)``: only PyTorch is needed.
    mrl_export.json    sizes, width, input shape, and ``preprocess``: the steps that turn an image file into
                       the program's input, as plain data (PIL convert, resize, center crop, to tensor,
                       normalise, ...), the same as ``make embed`` applies.

The first m coordinates of an embedding are its m-dimensional representation; compare prefixes by cosine
(re-normalise them after truncating).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from mrl.common.io import write_json
from mrl.data.image.base import ConvertThen
from mrl.data.image.digits import DigitsImageTransform

__all__ = ["describe_preprocessing", "export_image_model"]


class _Embedder(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module.embed(images)


def _size(value) -> int | list[int]:
    return int(value) if isinstance(value, int) else [int(v) for v in value]


def describe_preprocessing(transform: Callable) -> list[dict[str, Any]]:
    """The steps of a file transform (:meth:`mrl.data.image.base.ImageDataModule.file_transform`) as plain data.

    Step kinds: ``convert`` (PIL mode), ``grayscale`` (channels), ``resize`` (``size``: one int resizes the
    shorter side, two are height and width; ``interpolation``; ``on``: ``pil`` or ``tensor``), ``center_crop``
    ([height, width]), ``to_tensor`` (HWC 0-255 -> CHW float in [0, 1]), ``clamp`` (min, max), ``normalize``
    (per-channel mean and std), ``repeat_channels`` (count). Raises on a step it cannot describe.
    """
    from torchvision import transforms as T

    if isinstance(transform, ConvertThen):
        return [{"convert": transform.mode}, *describe_preprocessing(transform.transform)]
    if isinstance(transform, DigitsImageTransform):
        return [
            {"convert": "L"},
            {"resize": [8, 8], "interpolation": "box", "on": "pil"},
            {"to_tensor": True},
            {"resize": list(transform.size), "interpolation": "bilinear", "on": "tensor"},
            {"clamp": [0.0, 1.0]},
            {"normalize": {"mean": [transform.mean], "std": [transform.std]}},
            {"repeat_channels": transform.in_chans},
        ]
    if isinstance(transform, T.Compose):
        return [step for part in transform.transforms for step in describe_preprocessing(part)]
    if isinstance(transform, T.Grayscale):
        return [{"grayscale": int(transform.num_output_channels)}]
    if isinstance(transform, T.Resize):
        return [{"resize": _size(transform.size), "interpolation": transform.interpolation.value, "on": "pil"}]
    if isinstance(transform, T.CenterCrop):
        return [{"center_crop": _size(transform.size)}]
    if isinstance(transform, T.Normalize):
        mean, std = (torch.as_tensor(v, dtype=torch.float64).tolist() for v in (transform.mean, transform.std))
        return [{"normalize": {"mean": mean, "std": std}}]
    if isinstance(transform, T.ToTensor) or type(transform).__name__ == "MaybeToTensor":
        return [{"to_tensor": True}]
    raise ValueError(
        f"preprocessing step {transform!r}: no plain description for it; the export supports image "
        "folders, torchvision sets and the digits"
    )


def export_image_model(
    module: nn.Module, transform: Callable, out_dir: str | Path, checkpoint: str | None = None
) -> Path:
    """Write ``embedder.pt2`` and ``mrl_export.json`` for ``module`` (an image model) into ``out_dir``."""
    module = module.cpu().eval()
    steps = describe_preprocessing(transform)
    example = transform(Image.new("RGB", (64, 64))).unsqueeze(0).repeat(2, 1, 1, 1)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with torch.no_grad():
        program = torch.export.export(_Embedder(module), (example,), dynamic_shapes={"images": {0: batch}})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out / "embedder.pt2")
    sizes = [int(m) for m in module.sizes]
    write_json(
        out / "mrl_export.json",
        {
            "format": "torch.export",
            "program": "embedder.pt2",
            "checkpoint": checkpoint,
            "head": (module.hparams.get("head") or {}).get("kind"),
            "sizes": sizes,
            "nesting": list(module.nesting or []),
            "embedding_width": int(module.embed_dim),
            "input_shape": list(example.shape[1:]),
            "preprocess": steps,
            "usage": "torch.export.load('embedder.pt2').module()(images) -> [B, width]; keep the first m "
            "coordinates for size m and compare them by cosine",
        },
    )
    return out
