"""Real training on the offline digits: every head type learns, results and checkpoints land in the run dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mrl.training.procedure import build_datamodule, build_model, run_training


@pytest.mark.parametrize("head", ["mrl", "mrl_e", "ff", "standard"])
def test_a_few_steps_lower_the_loss_at_every_size(make_cfg, head):
    cfg = make_cfg(f"head={head}", "model.head.dim=16" if head == "ff" else "seed=0")
    torch.manual_seed(0)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    with torch.no_grad():
        before = model.criterion.per_size(model(x), y)
    for _ in range(20):
        optimizer.zero_grad()
        loss = model.criterion(model(x), y)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = model.criterion.per_size(model(x), y)
    assert before.shape == after.shape == (len(model.sizes),)
    assert torch.all(after < 0.9 * before), (before, after)


def test_run_writes_results_checkpoint_and_per_size_metrics(make_cfg, tmp_path):
    cfg = make_cfg(
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=1.0",
        "trainer.limit_val_batches=1.0",
        "callbacks=default",
        "callbacks.rich_progress_bar=null",
        "callbacks.rich_model_summary=null",
        "logger=csv",
        "test=true",
    )
    results = run_training(cfg, cfg.paths.output_dir)
    run_dir = tmp_path / "run"
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["sizes"] == [8, 16, 32, 64, 128, 256, 512] == results["sizes"]
    for m in saved["sizes"]:
        for split in ("val", "test"):
            for name in ("top1", "top5", "loss"):
                assert f"{split}/{name}@{m}" in saved["metrics"]
    assert "val/loss" in saved["metrics"]
    # Trained for real: well above the 10% of chance on ten classes at the full size.
    assert saved["metrics"]["val/top1@512"] > 0.5
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert saved["best_checkpoint"].endswith(".ckpt")
    assert (run_dir / "config.yaml").is_file()
    metrics_csv = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss@8" in metrics_csv and "val/top1@512" in metrics_csv


def test_results_record_the_wall_time_of_fit_only(make_cfg, monkeypatch):
    """``train_seconds`` is ``trainer.fit``'s wall time, under the post-hoc runs' key: it matches the time ``fit``
    took (timed here around the real call) and leaves out a pause added to the validation of the best checkpoint
    that follows it."""
    import time

    import lightning as L

    pause, fit_seconds = 0.5, []
    fit, validate = L.Trainer.fit, L.Trainer.validate

    def timed_fit(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fit(self, *args, **kwargs)
        finally:
            fit_seconds.append(time.perf_counter() - start)

    def slow_validate(self, *args, **kwargs):
        time.sleep(pause)
        return validate(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "fit", timed_fit)
    monkeypatch.setattr(L.Trainer, "validate", slow_validate)
    cfg = make_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")
    start = time.perf_counter()
    results = run_training(cfg, cfg.paths.output_dir)
    wall = time.perf_counter() - start
    saved = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert results["global_step"] == 2 and len(fit_seconds) == 1
    assert saved["train_seconds"] == pytest.approx(results["train_seconds"])
    assert 0 < fit_seconds[0] <= saved["train_seconds"] < fit_seconds[0] + pause, (saved, fit_seconds)
    assert saved["train_seconds"] <= wall - pause, (saved["train_seconds"], wall)


def test_evaluate_only_records_no_training_time(make_cfg, tmp_path):
    trained = make_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1")
    checkpoint = run_training(trained, trained.paths.output_dir)["best_checkpoint"]
    cfg = make_cfg("train=false", f"ckpt_path='{checkpoint}'", "trainer.limit_val_batches=1")
    results = run_training(cfg, tmp_path / "evaluated")
    assert results["train_seconds"] is None and "val/loss" in results["metrics"]


def test_rerunning_a_run_directory_resumes_from_last_checkpoint(make_cfg, caplog):
    common = ["callbacks=default", "callbacks.rich_progress_bar=null", "callbacks.rich_model_summary=null"]
    first = run_training(make_cfg("trainer.max_epochs=1", *common), make_cfg().paths.output_dir)
    cfg = make_cfg("trainer.max_epochs=2", *common)
    with caplog.at_level("INFO"):
        second = run_training(cfg, cfg.paths.output_dir)
    assert any("Resuming from" in r.message for r in caplog.records)
    # Twice the steps of one epoch, not three epochs' worth: training continued, it did not restart.
    assert second["global_step"] == 2 * first["global_step"]


def test_class_count_mismatch_fails_before_training(make_cfg):
    cfg = make_cfg("model.num_classes=100")
    datamodule = build_datamodule(cfg)
    with pytest.raises(ValueError, match=r"model.num_classes=100.*10 classes"):
        build_model(cfg, datamodule)


def test_unknown_backbone_fails_with_suggestion(make_cfg):
    cfg = make_cfg("model.backbone.name=resnet19")
    with pytest.raises(ValueError, match=r"model.backbone.name='resnet19'.*did you mean"):
        build_model(cfg, build_datamodule(cfg))


def test_nesting_wider_than_embedding_fails(make_cfg):
    cfg = make_cfg("model.nesting=[8,16,1024]")
    with pytest.raises(ValueError, match="model.nesting"):
        build_model(cfg, build_datamodule(cfg))


@pytest.mark.parametrize("option", ["model.channels_last=true", "trainer.precision=bf16-mixed"])
def test_speed_options_train(make_cfg, option):
    """channels-last and mixed precision are real code paths: a short run trains and logs every size (one small
    batch each way: bf16 on a CPU without bf16 arithmetic is emulated, and slow)."""
    cfg = make_cfg(
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "data.batch_size=32",
        option,
    )
    results = run_training(cfg, cfg.paths.output_dir)
    assert all(f"val/top1@{m}" in results["metrics"] for m in results["sizes"])


@pytest.mark.slow
def test_torch_compile_option_trains(make_cfg):
    cfg = make_cfg("trainer.max_epochs=1", "model.compile=true")
    results = run_training(cfg, cfg.paths.output_dir)
    assert results["metrics"]["val/loss"] > 0


@pytest.mark.parametrize(("accumulate", "expected"), [(1, 0.1 * 64 / 256), (2, 0.1 * 128 / 256)])
def test_lr_batch_scales_the_rate_with_the_global_batch(make_cfg, accumulate, expected):
    import lightning as L

    cfg = make_cfg("data.batch_size=64", "model.optimizer.lr=0.1", "model.optimizer.lr_batch=256")
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    trainer = L.Trainer(
        max_steps=1,
        accumulate_grad_batches=accumulate,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=datamodule)
    assert model.global_batch() == 64 * accumulate
    assert trainer.lr_scheduler_configs[0].scheduler.base_lrs == pytest.approx([expected, expected])
    cfg.model.optimizer.lr_batch = 0
    with pytest.raises(ValueError, match=r"^model\.optimizer\.lr_batch=0: use a positive global batch size"):
        L.Trainer(
            max_steps=1,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).fit(build_model(cfg, datamodule), datamodule)
