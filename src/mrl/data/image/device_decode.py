"""Training crops decoded on the accelerator (``data.decode=device``): the CPU only draws each crop box.

A loader worker reads a shard item, draws its random-resized crop box from the stored height and width (no
decoding) and hands the JPEG bytes on as they are (:class:`EncodedCrop`, batched by :func:`collate_encoded`).
Before the batch moves to the device, :func:`decode_batch` decodes all its JPEGs in one call of
``torchvision.io.decode_jpeg`` on the trainer's device (nvjpeg on a GPU, libjpeg on the CPU: one code path, so the
tests run it on the CPU), then crops each box and resizes it there (antialiased, as the CPU path). Items stored as
raw pixels have nothing to decode: their crops are made on the CPU as before and join the batch on the device.
What leaves is the same ``uint8[B, C, S, S]`` batch as the CPU path's, for the model's ``on_after_batch_transfer``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mrl.common.errors import ConfigError
from mrl.data.image.decode import TrainDecode, crop_params

DECODE_PLACES = ("cpu", "device")
DEVICE_INTERPOLATIONS = ("bilinear", "bicubic")


class EncodedCrop:
    """Shard item -> a dict: a JPEG's bytes (``uint8[N]``) and its crop box ``(top, left, h, w)``, or a raw
    item's finished crop (``uint8[C, S, S]``, made by ``cpu``); with the label and the side S to resize to."""

    def __init__(self, cpu: TrainDecode) -> None:
        if cpu.interpolation not in DEVICE_INTERPOLATIONS:
            raise ConfigError(
                "data.interpolation",
                cpu.interpolation,
                f"with data.decode=device use one of {', '.join(DEVICE_INTERPOLATIONS)}",
            )
        self.cpu = cpu

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        if item["raw"]:
            image, label = self.cpu(item)
            return {"image": image, "label": label, "side": int(image.shape[-1])}
        box = crop_params(int(item["w"]), int(item["h"]), self.cpu.scale, self.cpu.ratio)
        data = torch.frombuffer(bytearray(item["data"]), dtype=torch.uint8)
        return {"jpeg": data, "box": box, "label": int(item["label"]), "side": self.cpu.side()}


def collate_encoded(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A batch of :class:`EncodedCrop` items, their order kept through ``jpeg_at`` and ``image_at``."""
    jpegs = [i for i, item in enumerate(items) if "jpeg" in item]
    images = [i for i, item in enumerate(items) if "jpeg" not in item]
    return {
        "jpeg": [items[i]["jpeg"] for i in jpegs],
        "box": torch.tensor([items[i]["box"] for i in jpegs], dtype=torch.int64).view(-1, 4),
        "jpeg_at": torch.tensor(jpegs, dtype=torch.int64),
        "image": [items[i]["image"] for i in images],
        "image_at": torch.tensor(images, dtype=torch.int64),
        "label": torch.tensor([item["label"] for item in items], dtype=torch.int64),
        "side": int(items[0]["side"]),
    }


def is_encoded(batch: Any) -> bool:
    return isinstance(batch, dict) and "jpeg" in batch and "jpeg_at" in batch


def _resize(image: torch.Tensor, side: int, interpolation: str) -> torch.Tensor:
    """``uint8[C, h, w]`` -> ``uint8[C, side, side]``, antialiased, on the image's device."""
    out = torch.nn.functional.interpolate(
        image.unsqueeze(0).float(), size=(side, side), mode=interpolation, antialias=True, align_corners=False
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)[0]


def decode_batch(
    batch: Mapping[str, Any], device: torch.device | str, interpolation: str = "bilinear"
) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoded batch -> ``(uint8[B, C, S, S] on device, labels)``: every JPEG decoded in one call on
    ``device``, cropped and resized there."""
    from torchvision.io import ImageReadMode, decode_jpeg

    side, labels = int(batch["side"]), batch["label"]
    out = torch.empty((labels.shape[0], 3, side, side), dtype=torch.uint8, device=device)
    if batch["jpeg"]:
        decoded = decode_jpeg(batch["jpeg"], mode=ImageReadMode.RGB, device=device)
        for image, (top, left, h, w), at in zip(decoded, batch["box"].tolist(), batch["jpeg_at"].tolist()):
            out[at] = _resize(image[:, top : top + h, left : left + w], side, interpolation)
    for image, at in zip(batch["image"], batch["image_at"].tolist()):
        image = image.to(device, non_blocking=True)
        out[at] = image if image.shape[-1] == side else _resize(image, side, interpolation)
    return out, labels
