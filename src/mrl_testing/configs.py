"""Configs composed the way the entry points compose them, the fast training overrides the tests use, and
``make`` run as a user types it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mrl.common.configs import register_resolvers

register_resolvers()  # the configs' own resolvers, for tests that compose without importing an entry point
ROOT = Path(__file__).resolve().parents[2]  # the checkout: src/mrl_testing/ -> the repository root
CONF_DIR = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))

# A small, fast configuration for training tests: a tiny timm ResNet on the real digits.
FAST = [
    "model.backbone.name=resnet10t",
    "data.image_size=16",
    "data.batch_size=128",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "trainer.num_sanity_val_steps=0",
    "callbacks=none",
    "logger=none",
    "print_config=false",
    "test=false",
]


def compose_train(overrides: list[str], output_dir: Path):
    """Compose conf/train.yaml with overrides; the run directory is ``output_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.root_dir = str(ROOT)
    return cfg


def eval_cfg(run_dir, **overrides):
    """conf/eval.yaml for ``run_dir`` as `python -m mrl.cli.evaluate` sees it, with a small funnel shortlist."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "eval.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    cfg.run = str(run_dir) if run_dir else None
    cfg.funnel.shortlist = 50
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


_OUTER_MAKE_VARIABLES = {
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "MAKEOVERRIDES",
    "EXP",
    "SWEEP",
    "RUN",
    "DIR",
    "INPUT",
    "DB",
    "QUERIES",
    "ARGS",
    "OUTPUTS",
}


def run_make(*args: str, timeout: int = 1800, check: bool = True) -> subprocess.CompletedProcess:
    """``make *args`` in the repository, as a user would type it; with ``check``, asserts it succeeds.

    Under ``make test ARGS=... EXP=...`` this process inherits those variables (in the environment
    and in MAKEFLAGS), and the inner make would take them as its own; they are dropped.
    """
    env = {k: v for k, v in os.environ.items() if k not in _OUTER_MAKE_VARIABLES}
    env["WANDB_MODE"] = "offline"
    result = subprocess.run(["make", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result
