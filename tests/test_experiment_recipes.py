"""One experiment file per recipe (``experiment=digits head=ff``), and the old names (``experiment=digits_ff``) still
compose to the config they composed to before the recipes existed: same settings, same name, same run and sweep
directories.

``data/experiments_before_recipes.json`` is that config, recorded from the one-file-per-head configs. After a
deliberate change to an experiment's settings, record it again from the new configs:
``python tests/test_experiment_recipes.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mrl_testing.configs import CONF_DIR, ROOT

RECORDED = Path(__file__).parent / "data" / "experiments_before_recipes.json"
RECIPES = {"digits": ("mrl", "mrl_e", "ff", "standard"), "imagenet": ("mrl", "mrl_e", "ff", "standard")}
OLD_NAMES = sorted(json.loads(RECORDED.read_text())) if RECORDED.is_file() else []
# Environment variables the configs read (oc.env): unset, as when the record was made.
CONFIG_ENV = (
    "PROJECT_ROOT",
    "MRL_DATA_DIR",
    "MRL_MINILM_PATH",
    "IMAGENET_ROOT",
    "IMAGENETV2_ROOT",
    "IMAGENET_A_ROOT",
    "IMAGENET_R_ROOT",
    "IMAGENET_SKETCH_ROOT",
    "IMAGENET_SHARDS",
    "SLURM_PARTITION",
    "SLURM_ACCOUNT",
    "SLURM_NNODES",
)


def resolved(overrides: list[str], conf_dir: Path = CONF_DIR) -> dict:
    """conf/train.yaml composed as ``mrl-train`` composes it (the Hydra config set, so ``${hydra:...}`` resolves),
    resolved, with the run's directories: ``{..., "_dirs": {"run": [task, name], "sweep": ["multirun", name]}}``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = "<ROOT>"
        cfg.paths.output_dir = "<RUN>"
        dirs = {"run": str(cfg.hydra.run.dir).split("/")[-3:-1], "sweep": str(cfg.hydra.sweep.dir).split("/")[-3:-1]}
        del cfg["hydra"]
    return {**OmegaConf.to_container(cfg, resolve=True), "_dirs": dirs}


def record(conf_dir: Path, names: list[str]) -> dict:
    return {
        name: {"config": resolved([f"experiment={name}"], conf_dir), "sweep_heads": sweep_identity(name, conf_dir)}
        for name in names
    }


def sweep_identity(name: str, conf_dir: Path = CONF_DIR) -> dict:
    """What a ``sweep=heads`` of the experiment is filed under: its name and its directories."""
    cfg = resolved([f"experiment={name}", "sweep=heads"], conf_dir)
    return {"experiment_name": cfg["experiment_name"], "dirs": cfg["_dirs"]}


@pytest.fixture
def clean_env(monkeypatch):
    for name in CONFIG_ENV:
        monkeypatch.delenv(name, raising=False)


def test_the_old_names_are_all_recorded():
    assert {f"{recipe}_{head}" for recipe, heads in RECIPES.items() for head in heads} <= set(OLD_NAMES)


@pytest.mark.parametrize("name", OLD_NAMES)
def test_an_old_experiment_name_composes_the_config_it_composed_before(name, clean_env):
    before = json.loads(RECORDED.read_text())[name]
    assert resolved([f"experiment={name}"]) == before["config"]
    assert sweep_identity(name) == before["sweep_heads"]


@pytest.mark.parametrize("recipe,head", [(r, h) for r, heads in RECIPES.items() for h in heads])
def test_a_recipe_with_a_head_is_the_experiment_of_that_name(recipe, head, clean_env):
    cfg = resolved([f"experiment={recipe}", f"head={head}"])
    old = resolved([f"experiment={recipe}_{head}"])
    assert cfg["experiment_name"] == f"{recipe}_{head}" and cfg["model"]["head"]["kind"] == head
    assert cfg["_dirs"] == {"run": ["train", f"{recipe}_{head}"], "sweep": ["multirun", f"{recipe}_{head}"]}
    if (recipe, head) == ("imagenet", "ff"):  # imagenet_ff trains the ff head on all 2048 features
        assert (cfg["model"]["head"]["dim"], old["model"]["head"]["dim"]) == (8, 2048)
        old["model"]["head"]["dim"] = 8
    assert cfg == old


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_recipe_names_its_runs_after_the_head(recipe, clean_env):
    assert resolved([f"experiment={recipe}"])["experiment_name"] == f"{recipe}_mrl"  # the recipe's own head
    cfg = resolved([f"experiment={recipe}", "head=standard"])
    assert cfg["experiment_name"] == f"{recipe}_standard" and cfg["tags"][-1] == "standard"
    assert cfg["logger"]["wandb"]["group"] is None  # null: the W&B group is the experiment's name


@pytest.mark.parametrize("sweep", ["heads", "heads_seeds"])
def test_a_sweep_over_heads_keeps_one_name_and_one_directory(sweep, clean_env):
    """Each job of a sweep over heads trains another head; all are filed under the experiment's file name."""
    for experiment in ("digits", "digits_mrl_e"):
        for head in ("mrl", "standard"):  # as each job composes it: the sweep's choice of head on top
            cfg = resolved([f"experiment={experiment}", f"sweep={sweep}", f"head={head}"])
            assert cfg["experiment_name"] == experiment and cfg["model"]["head"]["kind"] == head
            assert cfg["_dirs"]["sweep"] == ["multirun", experiment]


if __name__ == "__main__":  # record the configs of conf/ (or of the conf folder given) as they compose now
    conf = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else CONF_DIR
    names = sorted(p.stem for p in (conf / "experiment").glob("*.yaml") if p.stem not in RECIPES)
    RECORDED.parent.mkdir(exist_ok=True)
    RECORDED.write_text(json.dumps(record(conf, names), indent=1, sort_keys=True).replace(str(ROOT), "<ROOT>") + "\n")
    print(f"recorded {len(names)} experiments into {RECORDED}")
