"""Small generated photographs and ImageNet-layout folders of them, for the tests of prepared shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth image with some texture (JPEG behaves on it as on a photograph, unlike pure noise)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + c) + np.cos(5 * yy * (c + 1)) for c in range(3)], axis=-1)
    noise = rng.normal(0, 0.15, (h, w, 3))
    return ((base + noise + 2) / 4 * 255).clip(0, 255).astype(np.uint8)


def image_folder(root: Path, classes=("fox", "cat", "dog"), train=6, val=3, seed=0) -> Path:
    """``root/{train,val}/<class>/<i>.jpg``: ``train`` and ``val`` JPEGs per class, 40-70 x 50-90 pixels."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = int(rng.integers(40, 70)), int(rng.integers(50, 90))
                Image.fromarray(photo(rng, h, w)).save(root / split / c / f"{i}.jpg", quality=90)
    return root
