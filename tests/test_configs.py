"""Every experiment composes, and its model and data build without training."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from mrl.training.callbacks import ProgressiveResizing
from mrl.training.procedure import build_callbacks, build_datamodule, build_model
from mrl_testing.configs import EXPERIMENTS, compose_train

EXPECTED = {
    "digits_mrl",
    "digits_mrl_e",
    "digits_ff",
    "digits_standard",
    "imagenet_mrl",
    "imagenet_mrl_e",
    "imagenet_ff",
    "imagenet_standard",
    "cifar100_mrl",
}
RECIPES = {"digits", "imagenet"}  # one file per recipe; head= picks the head (the names above pick one each)


def tiny_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class=2) -> Path:
    for split in ("train", "val"):
        for i, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for j in range(per_class):
                Image.new("RGB", (20, 20), color=(40 * i, 10 * j, 200)).save(folder / f"{j}.png")
    return root


def test_all_required_experiments_exist():
    assert EXPECTED | RECIPES <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_builds(experiment, tmp_path):
    overrides = [f"experiment={experiment}", "logger=none"]
    if experiment.startswith("imagenet"):
        overrides.append(f"data.root={tiny_image_folder(tmp_path / 'imagenet')}")
    cfg = compose_train(overrides, tmp_path / "run")
    # a recipe (experiment/digits.yaml) names its runs after the head it trains: digits_mrl by default
    assert cfg.experiment_name == (f"{experiment}_{cfg.model.head.kind}" if experiment in RECIPES else experiment)
    if experiment == "nli_mrl":
        # AllNLI and mpnet-base come from the hub: offline, the build fails early and says why.
        with pytest.raises(Exception, match="pip install datasets|name_or_path"):
            build_model(cfg, build_datamodule(cfg))
        return
    if experiment.startswith("cifar"):
        # No CIFAR on this machine: the data config must fail fast and say how to fix it.
        with pytest.raises(Exception, match="data.root"):
            build_datamodule(cfg)
        return
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    if "head" not in cfg.model:  # a contrastive model: no classes, no head
        assert "num_classes" not in model.hparams and "head" not in model.hparams
        return
    assert model.hparams.num_classes == datamodule.num_classes
    kind = cfg.model.head.kind
    if kind in ("mrl", "mrl_e"):
        assert model.sizes[-1] == model.embed_dim
        assert model.sizes == sorted(model.sizes)
    if experiment.startswith("imagenet"):
        assert cfg.trainer.max_epochs == 40
        assert cfg.model.loss.label_smoothing == 0.1
        assert cfg.model.optimizer.name == "sgd"
        # the reference's learning rate per 256 images: 0.425 for its global batch of 2 GPUs x 512
        assert cfg.model.optimizer.lr * 256 / cfg.model.optimizer.lr_batch == pytest.approx(0.425 * 256 / 1024)
        assert cfg.data.batch_size * cfg.trainer.devices == cfg.model.optimizer.lr_batch  # as configured: x 1
        assert model.embed_dim == 2048
        assert model.backbone.blurred  # the reference recipe's BlurPool
        resizing = [c for c in build_callbacks(cfg, with_loggers=False) if isinstance(c, ProgressiveResizing)]
        assert [resizing[0].size_at(epoch) for epoch in (0, 29, 31, 32, 34, 39)] == [160, 160, 160, 192, 192, 192]
        if kind in ("mrl", "mrl_e"):
            assert model.sizes == [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
        else:  # FF and standard: one classifier, over the first dim (FF) or all 2048 features
            assert model.sizes == [cfg.model.head.dim if kind == "ff" else 2048]


def test_default_config_is_digits_mrl(tmp_path):
    cfg = compose_train(["experiment=digits_mrl"], tmp_path)
    assert cfg.model.head.kind == "mrl"
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert "wandb" in cfg.logger


def test_command_line_head_overrides_the_experiment(tmp_path):
    cfg = compose_train(["experiment=digits_mrl", "head=mrl_e"], tmp_path)
    assert cfg.model.head.kind == "mrl_e"


@pytest.mark.parametrize(
    ("name", "folders", "labels"),
    [
        ("imagenet_v2", ["0", "5", "999"], [0, 5, 999]),
        ("imagenet_a", ["n01440764", "n15075141"], [0, 999]),
        ("imagenet_r", ["n01443537"], [1]),
        ("imagenet_sketch", ["n01440764", "n01443537"], [0, 1]),
    ],
)
def test_robustness_sets_compose_for_evaluation(name, folders, labels, tmp_path):
    """make eval ARGS="ckpt=... data=<name> database_split=null": labels are the ImageNet-1k ones."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from mrl_testing.configs import CONF_DIR

    for folder in folders:
        (tmp_path / folder).mkdir()
        Image.new("RGB", (40, 30), color=(10, 200, 30)).save(tmp_path / folder / "0.png")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"data={name}", f"data.root={tmp_path}", "database_split=null"])
    datamodule = instantiate(cfg.data)
    assert datamodule.num_classes == 1000
    datamodule.setup("validate")
    assert sorted(label for _, label in datamodule._dataset("val", train=False).samples) == labels


def _slurm_launcher_params(tmp_path, *overrides: str) -> dict:
    """The sweep launcher's parameters (``hydra/launcher=slurm``) as ``mrl-train -m`` resolves them: Hydra's
    config and our resolver only, no submitit executor (which looks for ``srun``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from mrl_testing.configs import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            return_hydra_config=True,
            overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}", *overrides],
        )
    return dict(instantiate(cfg.hydra.launcher).params)


@pytest.mark.parametrize(("gpus", "tasks"), [(0, 1), (None, 1), (1, 1), (4, 4)])
def test_slurm_sweep_jobs_get_one_task_per_gpu_or_one_for_a_cpu_job(tmp_path, gpus, tasks):
    gpus_arg = "null" if gpus is None else gpus
    params = _slurm_launcher_params(tmp_path, f"hydra.launcher.gpus_per_node={gpus_arg}")
    assert params["tasks_per_node"] == tasks
    assert params["gpus_per_node"] == gpus


@pytest.mark.slurm
@pytest.mark.parametrize(("gpus", "tasks"), [(0, 1), (4, 4)])
def test_slurm_sbatch_header_asks_for_the_resolved_tasks(tmp_path, gpus, tasks):
    """The header submitit writes from those parameters (its SLURM executor needs ``srun`` on the PATH, so
    this runs in ``make test-slurm``)."""
    import shutil

    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    if shutil.which("srun") is None:
        message = "srun is not on the PATH: apt-get install slurm-client"
        if os.environ.get("MRL_REQUIRE_SLURM") == "1":
            pytest.fail(f"MRL_REQUIRE_SLURM=1 but {message}", pytrace=False)
        pytest.skip(message)
    params = _slurm_launcher_params(tmp_path, f"hydra.launcher.gpus_per_node={gpus}")
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=params.pop("submitit_folder"), slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    header = executor._executor._make_submission_file_text("python -m submitit", "uid")
    assert f"#SBATCH --ntasks-per-node={tasks}\n" in header, header
    if gpus:
        assert f"#SBATCH --gpus-per-node={gpus}\n" in header, header


def test_slurm_launcher_names_a_bad_gpu_count(tmp_path):
    with pytest.raises(Exception, match=r"hydra.launcher.gpus_per_node=-1 is invalid; use 0 \(a CPU job\)"):
        _slurm_launcher_params(tmp_path, "hydra.launcher.gpus_per_node=-1")
