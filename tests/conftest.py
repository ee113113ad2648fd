"""Shared fixtures: offline environment and configs composed the way `python -m mrl.cli.train` composes them."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from mrl_testing.configs import FAST, compose_train  # noqa: E402


@pytest.fixture(autouse=True)
def own_wandb_service(monkeypatch):
    """Child processes start their own W&B service. An in-process W&B run leaves WANDB_SERVICE in the
    environment, and a child that inherits it shares this process's service, which then keeps a
    SIGKILLed child's run id registered ("run ID ... is in use" when the same run resumes)."""
    monkeypatch.delenv("WANDB_SERVICE", raising=False)


@pytest.fixture
def make_cfg(tmp_path):
    def _make(*overrides: str, fast: bool = True):
        return compose_train([*FAST, *overrides] if fast else list(overrides), tmp_path / "run")

    return _make


def pytest_collection_modifyitems(config, items):
    """``requires_cuda`` tests run only where torch sees a CUDA device, ``without_cuda`` ones only where it sees none
    (they check the message such a machine gives)."""
    import torch

    has_cuda = torch.cuda.is_available()
    for item in items:
        if "requires_cuda" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "without_cuda" in item.keywords and has_cuda:
            item.add_marker(pytest.mark.skip(reason="checks what a machine without CUDA says"))
