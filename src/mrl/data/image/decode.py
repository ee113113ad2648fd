"""Less CPU per image: decode only what the crop needs, hand uint8 to the device, finish there.

The training recipe stays the one of today's image folders (a random-resized crop with timm's scale and
ratio ranges, a horizontal flip with p=0.5; evaluation resize + center crop), split differently between
the CPU and the accelerator:

- CPU (:class:`TrainDecode`, :class:`EvalDecode`): pick the crop box first, then decode the JPEG at 1/2, 1/4
  or 1/8 scale when the crop's output is at most that share of the crop region (libjpeg's DCT scaling: nearly
  free, where a full decode is most of the cost), crop, resize, and return ``uint8[C, H, W]``: no float
  conversion, no normalisation, no flip. The decoder is simplejpeg where it is installed (the ``shards`` extra:
  libjpeg-turbo straight into a numpy array, the same pixels as PIL's decoder, a third less CPU here), else
  PIL's ``draft`` mode.
- device (:func:`uint8_to_input`, called from the LightningModule's ``on_after_batch_transfer``): float,
  ``/255``, normalise, flip half of the training images, channels-last. A quarter of the bytes cross the
  bus, and the per-pixel arithmetic runs where it is cheap.
"""

from __future__ import annotations

import io
import math
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from mrl.common.errors import ConfigError

try:  # the faster JPEG decoder of the shards extra; PIL decodes the same pixels without it
    import simplejpeg
except ImportError:  # pragma: no cover - exercised where simplejpeg is not installed
    simplejpeg = None

PIL_INTERPOLATIONS = {
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "nearest": Image.NEAREST,
    "lanczos": Image.LANCZOS,
    "box": Image.BOX,
    "hamming": Image.HAMMING,
}
DRAFT_FACTORS = (8, 4, 2)
# PIL and np.frombuffer hand out read-only arrays; the decoders only read them (the resize writes a new tensor)
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def open_item(data: bytes, raw: bool, height: int, width: int, mode: str = "RGB") -> Image.Image:
    """A shard item's image: a lazily opened JPEG (``draft`` still possible), or raw HWC pixels."""
    if raw:
        channels = len(data) // (height * width)
        array = np.frombuffer(data, dtype=np.uint8).reshape(height, width, channels)
        return Image.fromarray(array[..., 0] if channels == 1 else array)
    return Image.open(io.BytesIO(data))


def to_uint8_chw(img: Image.Image, mode: str) -> torch.Tensor:
    """PIL image -> ``uint8[C, H, W]`` (a view with channels-last strides; no copy beyond PIL's)."""
    if img.mode != mode:
        img = img.convert(mode)
    array = np.asarray(img)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy() if not array.flags.writeable else array).permute(2, 0, 1)


def crop_params(
    width: int, height: int, scale: Sequence[float], ratio: Sequence[float], rng: random.Random | None = None
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random-resized crop, without the image: the algorithm of timm's
    ``RandomResizedCropAndInterpolation.get_params`` (and torchvision's ``RandomResizedCrop``), drawn with
    Python's ``random`` as timm draws it (DataLoader workers seed it per worker)."""
    rng = rng or random
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = float(width) / float(height)  # fallback: the whole image, clamped to the ratio range
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draft_factor(crop_h: int, crop_w: int, out_h: int, out_w: int) -> int:
    """The largest JPEG scale-down (8, 4, 2, else 1) that keeps the crop region at least the output size."""
    shrink = min(crop_h / out_h, crop_w / out_w)
    return next((f for f in DRAFT_FACTORS if shrink >= f), 1)


def resized_crop(
    img: Image.Image | np.ndarray,
    box: tuple[int, int, int, int],
    size: tuple[int, int],
    interpolation: str = "bilinear",
    draft: bool = True,
) -> torch.Tensor:
    """Crop ``box`` = (top, left, h, w) of the full-size image (a PIL image, or raw ``uint8[H, W, C]`` pixels)
    and resize it to ``size`` = (H, W): ``uint8[C, H, W]``. A JPEG is decoded at the smallest DCT scale that
    still leaves the region at least ``size``; only the region is converted to a tensor, and the antialiased
    bilinear / bicubic resize is torch's uint8 channels-last kernel (what PIL computes, several times faster)."""
    top, left, h, w = box
    if isinstance(img, np.ndarray):
        region = img[top : top + h, left : left + w]
    else:
        full_w, full_h = img.size
        if draft and getattr(img, "format", None) == "JPEG":
            factor = draft_factor(h, w, size[0], size[1])
            if factor > 1:  # PIL takes min(W // w, H // h) as the scale: floor sizes ask for exactly 1 / factor
                img.draft("RGB", (full_w // factor, full_h // factor))
        t, lft, rows, cols = _scaled_box(box, full_h / img.size[1], full_w / img.size[0])
        cropped = img.crop((lft, t, lft + cols, t + rows))
        region = np.asarray(cropped if cropped.mode == "RGB" else cropped.convert("RGB"))
    return resize_region(region, size, interpolation)


def _scaled_box(box: tuple[int, int, int, int], sy: float, sx: float) -> tuple[int, int, int, int]:
    """A full-size crop box in an image decoded ``sy`` x ``sx`` times smaller: (top, left, rows, columns)."""
    top, left, h, w = box
    return round(top / sy), round(left / sx), max(1, round(h / sy)), max(1, round(w / sx))


def jpeg_region(
    data: bytes, height: int, width: int, box: tuple[int, int, int, int], size: tuple[int, int], draft: bool = True
) -> np.ndarray:
    """``uint8[h, w, 3]``: the crop ``box`` of a JPEG of ``height`` x ``width`` decoded by simplejpeg at the scale
    :func:`resized_crop` gives PIL's draft (libjpeg picks the smallest scale that keeps the asked size, and
    ``ceil(side / factor)`` is exactly what 1 / factor gives), so both paths crop the same pixels."""
    factor = draft_factor(box[2], box[3], size[0], size[1]) if draft else 1
    decoded = simplejpeg.decode_jpeg(
        data, colorspace="RGB", min_height=-(-height // factor), min_width=-(-width // factor)
    )
    t, left, rows, cols = _scaled_box(box, height / decoded.shape[0], width / decoded.shape[1])
    return decoded[t : t + rows, left : left + cols]


def resize_region(region: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """``uint8[h, w, C]`` pixels -> ``uint8[C, H, W]`` at ``size``; bilinear / bicubic antialiased by torch's uint8
    channels-last kernel, the other filters by PIL."""
    if interpolation not in _TORCH_MODES:  # nearest, lanczos, box, hamming: PIL's resize
        out = Image.fromarray(np.ascontiguousarray(region)).resize(
            (size[1], size[0]), PIL_INTERPOLATIONS[interpolation]
        )
        return to_uint8_chw(out, "RGB")
    x = torch.from_numpy(region).permute(2, 0, 1).unsqueeze(0).contiguous(memory_format=torch.channels_last)
    return torch.nn.functional.interpolate(x, size=size, mode=interpolation, antialias=True)[0]


_TORCH_MODES = ("bilinear", "bicubic")


class TrainDecode:
    """Shard item -> ``(uint8[C, S, S], label)``: a random-resized crop (scale, ratio) decoded at the
    smallest JPEG scale it needs. The side S is read at every image from a shared-memory tensor (0: the
    default), so progressive resizing reaches running workers. The flip is left to the device."""

    def __init__(
        self,
        size: int,
        live_size: torch.Tensor | None = None,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
        mode: str = "RGB",
        draft: bool = True,
    ) -> None:
        self.size, self.live_size = int(size), live_size
        self.scale, self.ratio = tuple(float(s) for s in scale), tuple(float(r) for r in ratio)
        if interpolation not in PIL_INTERPOLATIONS:
            raise ConfigError("data.interpolation", interpolation, f"use one of {', '.join(PIL_INTERPOLATIONS)}")
        self.interpolation, self.mode, self.draft = interpolation, mode, draft

    def side(self) -> int:
        live = 0 if self.live_size is None else int(self.live_size[0])
        return live or self.size

    def image(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        """A PIL image (lazily opened: the draft applies) or raw ``uint8[H, W, C]`` -> ``uint8[C, S, S]``."""
        side = self.side()
        height, width = img.shape[:2] if isinstance(img, np.ndarray) else img.size[::-1]
        box = crop_params(width, height, self.scale, self.ratio)
        return resized_crop(img, box, (side, side), self.interpolation, self.draft)

    def __call__(self, item: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        h, w = int(item["h"]), int(item["w"])
        if item["raw"]:
            img = np.frombuffer(item["data"], dtype=np.uint8).reshape(h, w, -1)
        elif simplejpeg is not None and self.mode == "RGB":
            side = self.side()
            box = crop_params(w, h, self.scale, self.ratio)
            region = jpeg_region(item["data"], h, w, box, (side, side), self.draft)
            return resize_region(region, (side, side), self.interpolation), int(item["label"])
        else:
            img = Image.open(io.BytesIO(item["data"]))
        return self.image(img), int(item["label"])


class EvalDecode:
    """Shard item -> ``(uint8[C, H, W], label)``: timm's evaluation transform up to its ToTensor/Normalize
    (resize + center crop), so that the device's ``/255`` and normalisation give today's float batches."""

    def __init__(self, pil_transform: Callable, mode: str = "RGB") -> None:
        self.pil_transform, self.mode = pil_transform, mode

    def __call__(self, item: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        img = open_item(item["data"], bool(item["raw"]), int(item["h"]), int(item["w"])).convert(self.mode)
        return to_uint8_chw(self.pil_transform(img), self.mode), int(item["label"])


def pil_part(transform: Any) -> Callable:
    """A timm/torchvision ``Compose`` without its ToTensor / MaybeToTensor / Normalize steps."""
    from torchvision import transforms as T

    steps = [
        t
        for t in getattr(transform, "transforms", [transform])
        if type(t).__name__ not in ("ToTensor", "MaybeToTensor", "Normalize", "PILToTensor")
    ]
    return T.Compose(steps)


def uint8_to_input(
    x: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    flip: bool = False,
    channels_last: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``uint8[B, C, H, W]`` -> the model's float input: ``(x / 255 - mean) / std`` (what ToTensor and
    Normalize compute), each image flipped left-right with p=0.5 when ``flip``; on x's device."""
    out = x.float().div_(255)
    m = torch.tensor(mean, dtype=out.dtype, device=out.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=out.dtype, device=out.device).view(1, -1, 1, 1)
    out = out.sub_(m).div_(s)
    if flip:
        mask = torch.rand(out.shape[0], device="cpu", generator=generator) < 0.5
        mask = mask.to(out.device).view(-1, 1, 1, 1)
        out = torch.where(mask, out.flip(-1), out)
    if channels_last:
        out = out.contiguous(memory_format=torch.channels_last)
    return out
