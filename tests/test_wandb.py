"""An offline W&B run holds every per-size metric, the truncation table, and one run id across a resume; with an
API key but no reachable W&B server, training and uploads fall back to offline logging instead of waiting."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from mrl.common.wandb_runs import ensure_wandb_mode, logger_target, open_run, stable_run_id
from mrl.training.procedure import build_loggers, run_training
from mrl_testing.configs import FAST, ROOT
from mrl_testing.wandb_records import read_finished_run

WANDB_ARGS = [
    "logger=wandb",
    "callbacks=default",
    "callbacks.rich_progress_bar=null",
    "callbacks.rich_model_summary=null",
]


def run_files(run_dir):
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def test_offline_run_summary_holds_every_size(make_cfg, tmp_path):
    cfg = make_cfg("trainer.max_epochs=1", *WANDB_ARGS)
    results = run_training(cfg, cfg.paths.output_dir)
    files = run_files(tmp_path / "run")
    assert len(files) == 1
    run = read_finished_run(files[0])
    for m in results["sizes"]:
        assert f"val/top1@{m}" in run["summary"]
        assert f"val/top5@{m}" in run["summary"]
        assert any(k.startswith(f"train/loss@{m}") for k in run["history_keys"])
    assert abs(run["summary"]["val/top1@512"] - results["metrics"]["val/top1@512"]) < 1e-6
    assert any(k.startswith("val/truncation_table") for k in run["history_keys"])
    # The head, nesting list and backbone are in the config, so a dashboard can group by them.
    assert run["config"]["model"]["head"]["kind"] == "mrl"
    assert run["config"]["head"]["kind"] == "mrl"
    assert run["config"]["model"]["backbone"]["name"] == "resnet10t"


def test_resumed_run_keeps_its_wandb_id(make_cfg, tmp_path):
    run_training(make_cfg("trainer.max_epochs=1", *WANDB_ARGS), tmp_path / "run")
    run_training(make_cfg("trainer.max_epochs=2", *WANDB_ARGS), tmp_path / "run")
    # the W&B service may still be writing the second file when run_training returns (seen under load)
    ids = {read_finished_run(f)["run_id"] for f in run_files(tmp_path / "run")}
    assert ids == {stable_run_id(tmp_path / "run")}


def test_falls_back_to_offline_without_api_key(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert ensure_wandb_mode(tmp_path) == "offline"
    hints = [r.message for r in caplog.records if "W&B" in r.message]
    assert len(hints) == 1 and "wandb sync" in hints[0]
    import os

    assert os.environ["WANDB_MODE"] == "offline"


def test_api_key_means_online(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert ensure_wandb_mode(tmp_path) == "online"


def test_uploads_go_to_the_project_of_the_runs_logger_config(tmp_path):
    """Evaluation and report uploads read the W&B project (and entity) off the training run's config.yaml."""
    from omegaconf import OmegaConf

    assert logger_target(tmp_path) is None  # no config.yaml
    wandb_logger = {"_target_": "lightning.pytorch.loggers.WandbLogger", "project": "vision", "entity": "lab"}
    for loggers, expected in [
        ({"wandb": wandb_logger}, {"project": "vision", "entity": "lab"}),
        (
            {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger"}, "mine": wandb_logger},
            {"project": "vision", "entity": "lab"},
        ),
        ({"wandb": {**wandb_logger, "project": None, "entity": None}}, {"project": "mrl", "entity": None}),
        ({"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger"}}, None),
        (None, None),
    ]:
        OmegaConf.save({"seed": 0, "logger": loggers}, tmp_path / "config.yaml")
        assert logger_target(tmp_path) == expected, loggers


def test_truncation_curve_of_a_text_pairs_run(tmp_path, monkeypatch, capsys):
    """Text runs log retrieval metrics per size: the W&B table and the end-of-run table show those."""
    from types import SimpleNamespace

    from lightning.pytorch.loggers import WandbLogger

    from mrl.training.callbacks import TruncationCurve, curve_table, print_curve

    sizes = [8, 16, 32]
    metrics = {
        f"val/{name}@{m}": 0.1 * i + m / 100
        for i, name in enumerate(["mrr@10", "ndcg@10", "recall@1", "recall@10"])
        for m in sizes
    }
    metrics["val/loss@8"] = 3.0
    del metrics["val/recall@1@32"]
    names, rows = curve_table(metrics, sizes)
    assert names == ["mrr@10", "ndcg@10", "recall@1", "recall@10"]
    assert rows[0] == [8, 0.08, 0.18, pytest.approx(0.28), pytest.approx(0.38)]
    assert rows[2][0] == 32 and math.isnan(rows[2][3])
    assert curve_table({"val/loss@8": 1.0}, sizes) == ([], [])
    scored = curve_table({"val/spearman@8": 0.81234, "val/spearman@16": 0.8}, sizes)
    print_curve(*scored, "scored pairs")
    printed = capsys.readouterr().out
    assert "Spearman" in printed and "0.8123" in printed

    logger = WandbLogger(project="mrl-test", save_dir=str(tmp_path), offline=True)
    logged = []
    monkeypatch.setattr(logger.experiment, "log", lambda data: logged.append(data))
    trainer = SimpleNamespace(
        sanity_checking=False, is_global_zero=True, loggers=[logger], callback_metrics=metrics, global_step=3
    )
    TruncationCurve().on_validation_epoch_end(trainer, SimpleNamespace(sizes=sizes))
    logger.experiment.finish()
    table = logged[0]["val/truncation_table"]
    assert table.columns == ["size", *names] and [row[0] for row in table.data] == sizes
    assert "val/truncation_curve" in logged[0]


# ----------------------------------------------------------------------------- no reachable W&B server
UNREACHABLE = "http://no-such-host.invalid"  # .invalid never resolves (RFC 2606)
KEY = "x" * 40


def _train_with_a_key(run_dir, base_url: str) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m mrl.cli.train` as on a cluster node: an API key set, no WANDB_MODE, the given W&B server."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env.update(WANDB_API_KEY=KEY, WANDB_BASE_URL=base_url, HF_HUB_OFFLINE="1")
    overrides = [a for a in FAST if a != "logger=none"]
    command = [sys.executable, "-m", "mrl.cli.train", "experiment=digits_mrl", *overrides, "trainer.max_epochs=1"]
    command += ["logger=wandb", "logger.wandb.init_timeout=2", f"hydra.run.dir={run_dir}"]
    start = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return done, time.monotonic() - start


def _assert_trained_offline(done: subprocess.CompletedProcess, run_dir) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    hints = [line for line in output.splitlines() if "W&B:" in line and "logging offline instead" in line]
    assert len(hints) == 1, output[-3000:]
    assert f"wandb sync {run_dir}/wandb/offline-run-*" in hints[0]
    assert "Traceback" not in output
    assert json.loads((run_dir / "results.json").read_text())["global_step"] > 0
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    run = read_finished_run(files[0])
    assert run["run_id"] == (run_dir / "wandb_id.txt").read_text().strip()  # `wandb sync` continues this run
    assert "val/top1@8" in run["summary"]


@pytest.mark.slow  # 17-45 s of whole processes; CI runs it with the slow tests (make test-slow)
def test_training_with_a_key_and_no_reachable_server_logs_offline(tmp_path):
    """The server's name does not resolve (a compute node without network): the probe fails at once, the run
    logs offline and trains, where it used to wait 2.5 minutes for W&B and then die."""
    done, seconds = _train_with_a_key(tmp_path / "run", UNREACHABLE)
    print(f"unreachable W&B server: the whole training run took {seconds:.1f} s")
    _assert_trained_offline(done, tmp_path / "run")
    assert "cannot reach no-such-host.invalid" in done.stdout + done.stderr
    assert seconds < 150, f"{seconds:.0f} s"  # loose: the bug took 150 s for W&B alone, then failed


@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a hung server or proxy)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:  # closed
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in accepted:
        connection.close()


@pytest.mark.slow  # W&B's own waits: about a minute
def test_training_falls_back_when_the_server_accepts_but_never_answers(tmp_path, silent_server):
    """The probe connects, so wandb.init is tried: it gives up after init_timeout, the run logs offline."""
    done, seconds = _train_with_a_key(tmp_path / "run", silent_server)
    print(f"silent W&B server: the whole training run took {seconds:.1f} s")
    _assert_trained_offline(done, tmp_path / "run")
    assert f"{silent_server} did not start the run within 2 s" in done.stdout + done.stderr
    assert seconds < 150, f"{seconds:.0f} s"


def test_upload_falls_back_to_offline_when_the_server_is_unreachable(monkeypatch, tmp_path, caplog):
    """Evaluation and report uploads (open_run) take the same decision: an offline run of the same id."""
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", UNREACHABLE)
    try:
        with caplog.at_level(logging.WARNING):
            run = open_run(tmp_path, resume=True, job_type="eval")
        assert run.offline and run.id == stable_run_id(tmp_path)
        run.log({"eval/top1@8": 0.5})
        run.finish()
    finally:
        wandb.teardown()  # the next test's W&B session reads its own environment
    hints = [r.getMessage() for r in caplog.records if r.getMessage().startswith("W&B:")]
    assert len(hints) == 1 and f"wandb sync {tmp_path}/wandb/offline-run-*" in hints[0], hints
    assert os.environ["WANDB_MODE"] == "offline"
    files = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    assert read_finished_run(files[0])["summary"]["eval/top1@8"] == 0.5


@pytest.mark.parametrize("value", ["0", "-1", "abc", "null", "inf"])
def test_init_timeout_must_be_a_positive_number(make_cfg, tmp_path, value):
    cfg = make_cfg("logger=wandb", f"logger.wandb.init_timeout={value}")
    with pytest.raises(ValueError, match=r"^logger\.wandb\.init_timeout=\S+: must be a positive number") as error:
        build_loggers(cfg, tmp_path / "run")
    assert "\n" not in str(error.value)
