"""Nesting lists: the embedding prefix sizes a Matryoshka model is trained at.

A nesting list is a list of distinct positive ints, e.g. ``[8, 16, ..., 2048]``, given in any order
(sentence-transformers users write ``[768, 512, 256, 128, 64]``) and kept ascending; the largest size may
not exceed the embedding width. Per-size weights given with a list stay with their sizes when it is sorted
(:func:`sort_with_weights`).
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Mapping
from collections.abc import Set as AbstractSet

__all__ = ["NestingError", "default_nesting", "resolve_nesting", "sort_with_weights", "validate_nesting"]


class NestingError(ValueError):
    """A nesting list (or embedding width) is invalid; the message is one line naming the config key."""


def default_nesting(width: int, min_size: int = 8) -> list[int]:
    """Halve ``width`` while the result stays >= ``min_size``; return the sizes ascending.

    ``default_nesting(2048) == [8, 16, ..., 2048]``; ``default_nesting(768) == [12, 24, ..., 768]``.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
        raise NestingError(f"width={width!r}: the embedding width must be a positive integer, e.g. 2048")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size <= 0:
        raise NestingError(f"min_size={min_size!r}: must be a positive integer, e.g. 8")
    sizes = [width]
    while sizes[-1] // 2 >= min_size:
        sizes.append(sizes[-1] // 2)
    return sizes[::-1]


def _example(width: int | None) -> str:
    """A valid nesting list to quote in error messages."""
    valid_width = isinstance(width, int) and not isinstance(width, bool) and width > 0
    sizes = default_nesting(width if valid_width else 512)
    if len(sizes) <= 4:
        return str(sizes)
    return f"[{sizes[0]}, {sizes[1]}, {sizes[2]}, ..., {sizes[-1]}]"


def validate_nesting(nesting, width: int | None = None, key: str = "model.nesting") -> list[int]:
    """Return ``nesting`` as a plain ascending ``list[int]`` or raise :class:`NestingError`.

    Accepts any sequence (list, tuple, OmegaConf ``ListConfig``) in any order. Rejects empty lists, non-ints
    (bools, floats, strings), non-positive or repeated sizes, and sizes above ``width``.
    """
    if nesting is None or isinstance(nesting, (str, bytes, Mapping, AbstractSet)):
        sizes = None
    else:
        try:
            sizes = list(nesting)
        except TypeError:
            sizes = None
    if sizes is None:
        raise NestingError(f"{key}={nesting!r}: expected a list of distinct positive integers, e.g. {_example(width)}")
    shown = repr(sizes)
    if not sizes:
        raise NestingError(f"{key}=[]: at least one size is needed, e.g. {_example(width)}")
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in sizes):
        raise NestingError(
            f"{key}={shown}: sizes must be integers (no floats, bools or strings), e.g. {_example(width)}"
        )
    if any(s <= 0 for s in sizes):
        raise NestingError(f"{key}={shown}: sizes must be positive integers, e.g. {_example(width)}")
    ordered = sorted(int(s) for s in sizes)
    repeated = [b for a, b in itertools.pairwise(ordered) if a == b]
    if repeated:
        raise NestingError(
            f"{key}={shown}: size {repeated[0]} is given twice; sizes must be distinct positive integers "
            f"(in any order), e.g. {_example(width)}"
        )
    if width is not None and ordered[-1] > width:
        raise NestingError(
            f"{key}={shown}: largest size {ordered[-1]} exceeds the embedding width {width}; "
            f"use sizes <= {width}, e.g. {_example(width)}"
        )
    return ordered


def sort_with_weights(
    nesting, weights=None, width: int | None = None, key: str = "model.nesting", weights_key: str = "model.loss.weights"
) -> tuple[list[int], list[float] | None]:
    """``nesting`` validated and sorted ascending, with ``weights`` (one per size, in the order given) moved along
    with their sizes: ``([64, 768], [4.0, 1.0])`` from ``nesting=[768, 64], weights=[1, 4]``."""
    sizes = validate_nesting(nesting, width=width, key=key)
    if weights is None:
        return sizes, None
    if isinstance(weights, (str, bytes, Mapping, AbstractSet)):
        raise NestingError(f"{weights_key}={weights!r}: expected a list of numbers, one per size of {key}")
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise NestingError(f"{weights_key}={weights!r}: expected a list of numbers, one per size of {key}") from None
    if len(values) != len(sizes):
        raise NestingError(
            f"{weights_key}={values!r}: {len(values)} weights for the {len(sizes)} sizes of {key}; give one "
            "weight per size, in the order of the sizes"
        )
    given = [int(s) for s in nesting]
    by_size = dict(zip(given, values))
    return sizes, [by_size[m] for m in sizes]


def resolve_nesting(nesting, width: int, key: str = "model.nesting") -> list[int]:
    """``None`` -> :func:`default_nesting` of ``width``; otherwise :func:`validate_nesting`."""
    if nesting is None:
        return default_nesting(width)
    return validate_nesting(nesting, width=width, key=key)
