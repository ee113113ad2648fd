"""Nesting lists: defaults from the width, and a one-line NestingError naming the key for bad lists."""

import pytest
from omegaconf import OmegaConf

from mrl.core.nesting import NestingError, default_nesting, resolve_nesting, sort_with_weights, validate_nesting


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        (2048, [8, 16, 32, 64, 128, 256, 512, 1024, 2048]),
        (768, [12, 24, 48, 96, 192, 384, 768]),
        (512, [8, 16, 32, 64, 128, 256, 512]),
        (8, [8]),
        (4, [4]),
    ],
)
def test_default_nesting(width, expected):
    assert default_nesting(width) == expected


def test_default_nesting_min_size():
    assert default_nesting(2048, min_size=256) == [256, 512, 1024, 2048]


@pytest.mark.parametrize("width", [0, -8, 2.5, True, "512"])
def test_default_nesting_rejects_bad_width(width):
    with pytest.raises(NestingError):
        default_nesting(width)


@pytest.mark.parametrize(
    ("nesting", "hint"),
    [
        ([], "at least one size"),
        ([8, 8, 16], "size 8 is given twice; sizes must be distinct positive integers"),
        ([32, 16, 32], "size 32 is given twice"),
        ([0, 8, 16], "sizes must be positive integers"),
        ([-8, 8, 16], "sizes must be positive integers"),
        ([8.0, 16], "integers"),
        ([8, 16.5], "integers"),
        ([True, 8], "integers"),
        (["8", 16], "integers"),
        ([8, 16, 1024], "exceeds the embedding width 512"),
        ([1024, 16, 8], "largest size 1024 exceeds the embedding width 512"),
        ("8,16", "expected a list"),
        (8, "expected a list"),
        ({8, 16}, "expected a list"),
    ],
)
def test_bad_nesting_raises_one_line_error_naming_the_key(nesting, hint):
    with pytest.raises(NestingError) as info:
        validate_nesting(nesting, width=512, key="model.nesting")
    message = str(info.value)
    assert message.startswith("model.nesting=")
    assert hint in message
    assert "\n" not in message
    assert "e.g. [8, 16, 32, ..., 512]" in message


def test_nesting_error_is_a_value_error():
    assert issubclass(NestingError, ValueError)


def test_custom_key_in_message():
    with pytest.raises(NestingError, match=r"^loss\.dims=\[8, 8\]"):
        validate_nesting([8, 8], key="loss.dims")


def test_valid_nesting_accepts_sequences_and_listconfig():
    assert validate_nesting((8, 16, 32), width=32) == [8, 16, 32]
    cfg = OmegaConf.create({"nesting": [8, 16, 64]})
    result = validate_nesting(cfg.nesting, width=64)
    assert result == [8, 16, 64] and type(result) is list
    assert validate_nesting([3, 5, 700]) == [3, 5, 700]  # no width: no upper bound


def test_sizes_in_any_order_are_sorted():
    """sentence-transformers users list sizes large to small (``matryoshka_dims=[768, 512, 256, 128, 64]``)."""
    assert validate_nesting([768, 512, 256, 128, 64], width=768) == [64, 128, 256, 512, 768]
    assert validate_nesting((16, 8, 32)) == [8, 16, 32]
    assert resolve_nesting(OmegaConf.create([64, 16, 32]), 64) == [16, 32, 64]


def test_weights_move_with_their_sizes():
    assert sort_with_weights([768, 64, 256], [1, 4, 2], width=768) == ([64, 256, 768], [4.0, 2.0, 1.0])
    assert sort_with_weights([8, 16]) == ([8, 16], None)
    with pytest.raises(NestingError, match=r"^model\.loss\.weights=\[1\.0, 2\.0, 3\.0\]: 3 weights for the 2 sizes"):
        sort_with_weights([16, 8], [1, 2, 3])
    with pytest.raises(NestingError, match=r"^loss\.weights='heavy': expected a list of numbers"):
        sort_with_weights([16, 8], "heavy", weights_key="loss.weights")
    with pytest.raises(NestingError, match=r"^model\.nesting=\[16, 16\]: size 16 is given twice"):
        sort_with_weights([16, 16], [1, 2])


def test_resolve_nesting():
    assert resolve_nesting(None, 768) == default_nesting(768)
    assert resolve_nesting([16, 32], 64) == [16, 32]
    with pytest.raises(NestingError, match="head.nesting"):
        resolve_nesting([16, 128], 64, key="head.nesting")
