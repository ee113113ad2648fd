"""`make eval` on a real (briefly) trained run: every output exists and agrees with other computations."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mrl.cli.evaluate import show
from mrl.common.errors import is_config_error
from mrl.evaluation.comparison import write_report
from mrl.evaluation.knn_metrics import knn_metrics
from mrl.evaluation.runner import evaluate, evaluate_run, evaluate_runs, load_embeddings
from mrl.evaluation.settings import EvalConfig, eval_config
from mrl.training.procedure import run_training
from mrl_testing.configs import FAST, ROOT, compose_train, eval_cfg

SIZES = [8, 16, 32, 64, 128, 256, 512]


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """An MRL run and a standard run, a few hundred steps each at most, with their evaluation results."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for head in ("mrl", "standard"):
        run_dir = root / head
        cfg = compose_train(
            [
                *FAST,
                f"head={head}",
                "trainer.max_epochs=3",
                "trainer.limit_train_batches=1.0",
                "trainer.limit_val_batches=1.0",
                "trainer.limit_test_batches=1.0",
                "test=true",
                "callbacks=default",
                "callbacks.rich_progress_bar=null",
                "callbacks.rich_model_summary=null",
            ],
            run_dir,
        )
        train_results = run_training(cfg, run_dir)
        runs[head] = (run_dir, train_results, evaluate_run(eval_cfg(run_dir)))
    return root, runs


def test_eval_writes_every_output(trained_runs):
    _, runs = trained_runs
    run_dir, _, result = runs["mrl"]
    out = run_dir / "eval"
    for name in (
        "results.json",
        "results.csv",
        "summary.md",
        "truncation_curve.png",
        "adaptive_classification.png",
        "funnel_retrieval.png",
        "storage_retrieval.png",
        "embeddings_train.npz",
        "embeddings_test.npz",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(result.to_dict())) and saved["output_dir"] == str(out)
    for m in SIZES:
        for key in ("top1", "top5", "knn_top1", "map@10", "precision@10", "recall@100", "l2_knn_top1"):
            assert f"eval/{key}@{m}" in saved["metrics"], key
    assert saved["adaptive_classification"] and saved["funnel_retrieval"] and saved["storage"]
    assert "| size |" in (out / "summary.md").read_text()
    # retrieval from the compressed prefixes, next to their bytes in the storage table
    for codec in ("fp16", "int8", "binary"):
        for m in SIZES:
            assert f"eval/{codec}_knn_top1@{m}" in saved["metrics"] and f"eval/{codec}_map@10@{m}" in saved["metrics"]
    rows = {(r["dtype"], r["size"]): r for r in saved["storage"]}
    assert len(rows) == 4 * len(SIZES)
    assert rows[("fp32", 64)]["knn_top1"] == saved["metrics"]["eval/knn_top1@64"]
    assert rows[("binary", 512)]["bytes_per_vector"] == 64 and rows[("int8", 512)]["bytes_per_vector"] == 512
    assert rows[("binary", 512)]["map@10"] == saved["metrics"]["eval/binary_map@10@512"]
    assert "| 8 | binary | 1 |" in (out / "summary.md").read_text()


def test_eval_prints_the_per_size_table(trained_runs, capsys):
    _, runs = trained_runs
    run_dir, _, result = runs["mrl"]
    show(result)
    printed = capsys.readouterr().out
    knn_at_8 = f"{100 * result.metrics['eval/knn_top1@8']:.2f}"
    assert "knn_top1" in printed and knn_at_8 in printed
    assert "Adaptive classification" not in printed  # those tables stay in summary.md
    assert str(run_dir / "eval") in printed
    # the standard model's table is the widest (probes); in a log every row keeps one line
    run_dir, _, result = runs["standard"]
    show(result)
    printed = capsys.readouterr().out
    header = (run_dir / "eval" / "summary.md").read_text().split("\n| size |", 1)[1].split("\n", 1)[0]
    columns = ["size", *(c.strip() for c in header.strip(" |").split("|"))]
    assert len(columns) >= 10 and any(all(c in line for c in columns) for line in printed.splitlines())


def test_head_accuracy_matches_training_metrics(trained_runs):
    """Top-1 and top-5 on the exported logits equal torchmetrics' test figures for the same checkpoint."""
    _, runs = trained_runs
    for head, (_, train_results, result) in runs.items():
        for m in train_results["sizes"]:
            for k in ("top1", "top5"):
                assert result.metrics[f"eval/{k}@{m}"] == pytest.approx(
                    train_results["metrics"][f"test/{k}@{m}"], abs=1e-6
                ), (head, m, k)


def test_exported_embeddings_reproduce_knn_metrics(trained_runs):
    _, runs = trained_runs
    run_dir, _, result = runs["mrl"]
    db, db_labels, meta = load_embeddings(run_dir / "eval" / "embeddings_train.npz")
    queries, q_labels, q_meta = load_embeddings(run_dir / "eval" / "embeddings_test.npz")
    assert meta["split"] == "train" and q_meta["split"] == "test" and meta["sizes"] == SIZES
    assert db.shape == (meta["count"], 512) and db.dtype == np.float32
    again = knn_metrics(db, db_labels, queries, q_labels, [8, 512])
    assert again["knn_top1@8"] == pytest.approx(result.metrics["eval/knn_top1@8"])
    exact = result.funnel_retrieval[0]
    assert exact["funnel"] == "exact" and exact["knn_top1"] == pytest.approx(again["knn_top1@512"])
    # sign-bit shortlists (Hamming) of every smaller size, reranked at 512: their scan costs m/64 per item
    rows = {row["funnel"]: row for row in result.funnel_retrieval}
    for m in SIZES[:-1]:
        bits = rows[f"{m} bits->512"]
        assert bits["mflops_per_query"] == pytest.approx((len(db) * m / 64 + 50 * 512) / 1e6)
        assert bits["knn_top1"] >= exact["knn_top1"] - 0.1


def test_standard_model_gets_the_paper_baselines(trained_runs):
    _, runs = trained_runs
    metrics = runs["standard"][2].metrics
    for m in SIZES:
        for name in ("probe_trunc_top1", "probe_pca_top1", "probe_rp_top1"):
            assert 0.0 <= metrics[f"eval/{name}@{m}"] <= 1.0
    assert not any("probe_" in k for k in runs["mrl"][2].metrics)


def test_report_puts_all_runs_on_one_chart(trained_runs):
    root, runs = trained_runs
    report = write_report(root)
    assert set(report["curves"]["val_top1"]) == {"MRL", "standard"}
    assert set(report["curves"]["knn_top1"]["MRL"]) == set(SIZES)
    assert report["curves"]["knn_top1"]["MRL"][8] == pytest.approx(runs["mrl"][2].metrics["eval/knn_top1@8"])
    for name in (
        "report.md",
        "report_val_top1.png",
        "report_knn_top1.png",
        "report_val_top1.csv",
        "report_binary_knn_top1.png",
    ):
        assert (root / name).is_file()
    binary = report["curves"]["binary_knn_top1"]["standard"][16]
    assert binary == pytest.approx(runs["standard"][2].metrics["eval/binary_knn_top1@16"])


def test_eval_of_a_sweep_directory_evaluates_every_run(trained_runs, tmp_path):
    root, runs = trained_runs
    sweep = tmp_path / "sweep"
    for head in ("mrl", "standard"):
        shutil.copytree(runs[head][0], sweep / f"0_{head}", ignore=shutil.ignore_patterns("eval"))
    broken = sweep / "1_broken" / "checkpoints"
    broken.mkdir(parents=True)
    (broken / "epoch_000.ckpt").write_bytes(b"not a checkpoint")
    failed = r"1 of 3 runs failed to evaluate; .*1_broken.*no checkpoint in it can be read; tried epoch_000.ckpt"
    with pytest.raises(RuntimeError, match=failed):
        evaluate_runs(eval_cfg(sweep))
    for head in ("mrl", "standard"):  # the broken run did not stop the others
        again = json.loads((sweep / f"0_{head}" / "eval" / "results.json").read_text())["metrics"]
        assert again["eval/knn_top1@8"] == pytest.approx(runs[head][2].metrics["eval/knn_top1@8"])
    shutil.rmtree(sweep / "1_broken")
    assert evaluate_runs(eval_cfg(sweep, skip_evaluated=True)) == []
    with pytest.raises(ValueError, match="holds 2 runs"):
        evaluate_runs(eval_cfg(sweep, output_dir=str(tmp_path / "out")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no run"):
        evaluate_runs(eval_cfg(tmp_path / "empty"))


def test_a_checkpoint_evaluates_on_a_data_set_named_on_the_command_line(trained_runs, tmp_path):
    _, runs = trained_runs
    run_dir, _, own = runs["mrl"]
    out = tmp_path / "out"
    # the run was trained on conf/data/digits.yaml, so naming that set again must give the same figures
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mrl.cli.evaluate",
            f"ckpt={own.checkpoint}",
            "data=digits",
            f"output_dir={out}",
            "funnel.shortlist=50",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "disabled"},
        check=True,
        capture_output=True,
        timeout=300,
    )
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    for key in ("eval/top1@8", "eval/knn_top1@8", "eval/map@10@512"):
        assert metrics[key] == pytest.approx(own.metrics[key])


def test_sparse_nesting_is_also_measured_between_its_sizes(tmp_path):
    run_dir = tmp_path / "sparse"
    cfg = compose_train([*FAST, "model.nesting=[8,64,512]", "trainer.max_epochs=1"], run_dir)
    run_training(cfg, run_dir)
    results = evaluate(eval_cfg(run_dir, **{"knn.metrics": ["cosine"], "baselines.enabled": False}))
    assert results["head_sizes"] == [8, 64, 512]
    assert results["sizes"] == SIZES  # retrieval at every halving size, trained or not
    assert {f"eval/top1@{m}" for m in (8, 64, 512)} <= set(results["metrics"])
    assert "eval/top1@16" not in results["metrics"]  # no head was trained at 16
    assert 0.0 <= results["metrics"]["eval/knn_top1@16"] <= 1.0


def test_ff_model_is_evaluated_at_its_own_size(tmp_path):
    run_dir = tmp_path / "ff16"
    run_training(compose_train([*FAST, "head=ff", "model.head.dim=16", "trainer.max_epochs=1"], run_dir), run_dir)
    results = evaluate(eval_cfg(run_dir, **{"knn.metrics": ["cosine"]}))
    assert results["head_sizes"] == results["sizes"] == [16]
    assert {"eval/top1@16", "eval/knn_top1@16", "eval/map@10@16"} <= set(results["metrics"])
    assert not [k for k in results["metrics"] if k.endswith("@8") or k.endswith("@512")]


def test_eval_needs_a_run_or_checkpoint():
    with pytest.raises(ValueError, match=r"^run=None: give run=<run directory> or ckpt=<checkpoint file>"):
        evaluate(eval_cfg(None))


def test_mrl_short_prefix_beats_truncated_standard(trained_runs):
    """The paper's claim on a short run; the full-length check is tests/test_end_to_end.py (slow)."""
    _, runs = trained_runs
    mrl, std = runs["mrl"][2].metrics, runs["standard"][2].metrics
    assert mrl["eval/knn_top1@8"] > std["eval/knn_top1@8"] + 0.03


def run_record(path, wait: float = 30.0):
    """The ``run`` record of an offline W&B run file: its project, entity and id. W&B's service writes the file
    from its own process, so on a loaded machine the record can land a moment after ``finish()`` returns."""
    import time

    from wandb.proto import wandb_internal_pb2 as pb

    from mrl_testing.wandb_records import iter_payloads

    deadline = time.monotonic() + wait
    while True:
        for payload in iter_payloads(path):
            record = pb.Record()
            record.ParseFromString(payload)
            if record.WhichOneof("record_type") == "run":
                return record.run
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no run record")
        time.sleep(0.5)


def test_eval_goes_to_the_training_runs_wandb_run(trained_runs, monkeypatch):
    from mrl.common.wandb_runs import stable_run_id
    from mrl_testing.wandb_records import read_finished_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = trained_runs[1]["mrl"][0]
    evaluate(eval_cfg(run_dir, wandb=True))
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert files
    run = read_finished_run(files[-1])
    assert run["run_id"] == stable_run_id(run_dir)
    assert "eval/knn_top1@8" in run["summary"]
    assert any(k.startswith("eval/funnel_retrieval") for k in run["history_keys"])
    assert run_record(files[-1]).project == "mrl"  # the run was trained without a W&B logger: the default


def test_eval_goes_to_the_wandb_project_of_the_runs_config(trained_runs, tmp_path, monkeypatch):
    from mrl.common.wandb_runs import stable_run_id

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    shutil.copytree(trained_runs[1]["mrl"][0], run_dir, ignore=shutil.ignore_patterns("eval", "wandb*"))
    config = OmegaConf.load(run_dir / "config.yaml")
    config.logger = {
        "wandb": {"_target_": "lightning.pytorch.loggers.WandbLogger", "project": "mrl-elsewhere", "entity": "my-team"}
    }
    OmegaConf.save(config, run_dir / "config.yaml")
    evaluate_run(eval_cfg(run_dir, wandb=True, quantized=[], **{"knn.metrics": ["cosine"], "baselines.enabled": False}))
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    record = run_record(files[0])
    assert (record.project, record.entity, record.run_id) == ("mrl-elsewhere", "my-team", stable_run_id(run_dir))


def test_eval_yaml_documents_the_typed_defaults():
    """conf/eval.yaml, composed as the command line composes it, gives exactly the dataclass defaults."""
    import typing
    from dataclasses import is_dataclass

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from mrl.evaluation.settings import GROUPS
    from mrl_testing.configs import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="eval")
    assert eval_config(cfg) == EvalConfig()

    def keys(section) -> set[str]:  # every setting of a dataclass, nested ones dotted
        hints = typing.get_type_hints(section)
        return set().union(*({f"{k}.{sub}" for sub in keys(h)} if is_dataclass(h) else {k} for k, h in hints.items()))

    flat = set()
    for key, value in OmegaConf.to_container(cfg).items():
        if key not in GROUPS:
            flat |= {f"{key}.{sub}" for sub in value} if isinstance(value, dict) else {key}
    assert flat == keys(EvalConfig)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"knn.foo": 1}, r"^knn\.foo=1: unknown key; valid keys: metrics, ks, map_k, device$"),
        ({"sized": [8]}, r"^sized=\[8\]: unknown key; valid keys: run, skip_evaluated, ckpt, "),
        ({"knn.map_k": "ten"}, r"^knn\.map_k='ten': expected int$"),
        ({"sizes": [8, "x"]}, r"^sizes=\[8, 'x'\]: expected a list of int or null$"),
        ({"funnel": 5}, r"^funnel=5: expected a section with keys shortlist, binary$"),
        ({"embeddings_dtype": "bf16"}, r"^embeddings_dtype='bf16': expected one of fp32, fp16$"),
        ({"quantized": ["int4"]}, r"^quantized=\['int4'\]: unknown 'int4'"),
    ],
)
def test_a_wrong_eval_setting_is_a_one_line_error_naming_it(override, message):
    with pytest.raises(ValueError, match=message) as error:
        eval_config(eval_cfg(None, **override))
    assert is_config_error(error.value)


def test_eval_settings_are_typed():
    settings = eval_config(eval_cfg("runs/a", sizes=[8, 16], reference="mrl_e", **{"adaptive.holdout_fraction": 1}))
    assert settings.run == "runs/a" and settings.sizes == (8, 16) and settings.reference == "mrl_e"
    assert settings.adaptive.holdout_fraction == 1.0 and isinstance(settings.adaptive.holdout_fraction, float)
    assert settings.funnel.shortlist == 50 and settings.knn == EvalConfig().knn


@pytest.mark.slow  # 16-18 s of whole processes; CI runs it with the slow tests (make test-slow)
def test_eval_command_line_names_an_unknown_setting(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mrl.cli.evaluate", f"run={tmp_path}", "+knn.foo=1", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "ValueError: knn.foo=1: unknown key; valid keys: metrics, ks, map_k, device"


def test_embed_split_fills_whole_arrays_and_skips_logits_when_asked(make_cfg, caplog):
    from mrl.evaluation.runner import embed_split
    from mrl.training.procedure import build_datamodule, build_model

    cfg = make_cfg("data.batch_size=50")  # 50 does not divide the split: the last batch is short
    datamodule = build_datamodule(cfg)
    module = build_model(cfg, datamodule).eval()
    loader = datamodule.eval_dataloader("val")
    images, labels = map(torch.cat, zip(*loader))
    with torch.no_grad():
        embeddings = module.embed(images)
        logits = module.head(embeddings)
    with caplog.at_level("INFO", logger="mrl.evaluation.embeddings"):
        got = embed_split(module, loader, name="val")
    assert len(labels) % 50 and got["embeddings"].shape == (len(labels), module.embed_dim)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("val: ")]
    assert 5 <= len(progress) <= 11 and progress[-1].startswith(f"val: {len(labels)}/{len(labels)} embedded")
    np.testing.assert_array_equal(got["labels"], labels.numpy())
    np.testing.assert_allclose(got["embeddings"], embeddings.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["logits"], logits.numpy(), rtol=1e-5, atol=1e-5)
    assert set(embed_split(module, loader, logits=False)) == {"embeddings", "labels"}


@pytest.mark.without_cuda
def test_a_cuda_device_without_cuda_is_one_line():
    from mrl.evaluation.device import resolve_device

    with pytest.raises(ValueError, match=r"^device='cuda:1': this machine has no CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.requires_cuda
def test_evaluation_embeds_the_same_on_the_gpu(make_cfg):
    """A GPU's embeddings of the digits equal the CPU's (fp32, TF32 off)."""
    from mrl.evaluation.device import resolve_device
    from mrl.evaluation.runner import embed_split
    from mrl.training.procedure import build_datamodule, build_model

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    cfg = make_cfg()
    datamodule = build_datamodule(cfg)
    module = build_model(cfg, datamodule).eval()
    on_cpu = embed_split(module, datamodule.eval_dataloader("val"), logits=False)
    module.to(resolve_device("cuda:0"))
    on_gpu = embed_split(module, datamodule.eval_dataloader("val"), logits=False)
    np.testing.assert_array_equal(on_gpu["labels"], on_cpu["labels"])
    np.testing.assert_allclose(on_gpu["embeddings"], on_cpu["embeddings"], rtol=1e-3, atol=1e-4)


def test_evaluation_device_and_precision(make_cfg):
    from mrl.evaluation.device import resolve_device
    from mrl.evaluation.runner import embed_split
    from mrl.training.procedure import build_datamodule, build_model

    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^device='gpu0': expected auto, cpu, cuda or cuda:<index>"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match=r"^precision='fp64': expected one of fp32, bf16, fp16"):
        evaluate(eval_cfg(None, ckpt="unused.ckpt", precision="fp64"))

    cfg = make_cfg()
    datamodule = build_datamodule(cfg)
    module = build_model(cfg, datamodule).eval()
    loader = datamodule.eval_dataloader("val")
    full, half = embed_split(module, loader), embed_split(module, loader, precision="bf16")
    assert not np.array_equal(full["embeddings"], half["embeddings"])  # bf16 did run
    cosine = (full["embeddings"] * half["embeddings"]).sum(1) / (
        np.linalg.norm(full["embeddings"], axis=1) * np.linalg.norm(half["embeddings"], axis=1)
    )
    assert cosine.min() > 0.99 and half["embeddings"].dtype == half["logits"].dtype == np.float32


def test_summary_and_charts_show_tuned_funnels_and_all_zero_prefixes(tmp_path):
    """`make eval`'s tuned-funnel rows (on synthetic data where 8-d prefixes of one class are all zeros), the
    summary.md sections, the recall-against-cost chart and results.json, without training a model."""
    from mrl.core.retrieval_metrics import zero_prefix_counts
    from mrl.evaluation.render import write_outputs
    from mrl.evaluation.result import EvaluationResult, SplitCount
    from mrl.evaluation.suite import tuned_funnel_rows
    from mrl_testing.synthetic import make_mrl_split

    db, db_y, q, q_y = make_mrl_split(1200, 60, 64, n_classes=10, seed=1)
    db, q = np.abs(db), np.abs(q)
    db[db_y == 0, :8] = 0
    q[q_y == 0, :8] = 0
    rows, table = tuned_funnel_rows(db, q, db_y, q_y, [0.9, 0.99], k=10)
    assert [r["target"] for r in rows] == [0.9, 0.99] and all(r["recall"] >= r["target"] for r in rows)
    chosen = [(t["format"], ",".join(f"{m}:{c}" for m, c in t["stages"])) for t in table if t["chosen"]]
    assert sorted(chosen) == sorted({(r["format"], r["spec"]) for r in rows}) and len(table) > 10
    assert all(0 <= r["knn_top1"] <= 1 for r in rows)  # 1-NN accuracy of each tuned funnel's first neighbour
    metrics = {f"eval/{k}": v for k, v in zero_prefix_counts(db, q, [8, 64]).items()}
    metrics |= {"eval/knn_top1@8": 0.5, "eval/knn_top1@64": 0.9}
    assert metrics["eval/zero_prefix_db@8"] == (db_y == 0).sum() and metrics["eval/zero_prefix_queries@64"] == 0
    result = EvaluationResult(
        checkpoint="x.ckpt", sizes=[8, 64], metrics=metrics, head="mrl", embed_dim=64, head_sizes=[8, 64],
        database=SplitCount("train", len(db)), queries=SplitCount("test", len(q)), tuned_funnels=rows,
        funnel_tuning=table,
    )  # fmt: skip
    write_outputs(tmp_path, result)
    summary = (tmp_path / "summary.md").read_text()
    assert "## Tuned funnels (the fastest reaching recall@10 against exact search" in summary
    assert f"| 8 | 50.00 | {(db_y == 0).sum()} | {(q_y == 0).sum()} |" in summary  # counts, not percentages
    assert "zero_prefix_db / zero_prefix_queries" in summary
    assert (tmp_path / "funnel_tuning.png").is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["tuned_funnels"][1]["target"] == 0.99 and len(saved["funnel_tuning"]) == len(table)


def test_funnel_tuning_settings_are_checked():
    settings = eval_config(eval_cfg(None, **{"funnel_tuning.targets": [0.9], "funnel_tuning.k": 5}))
    assert settings.funnel_tuning.targets == (0.9,) and settings.funnel_tuning.k == 5
    for override, message in (
        ({"funnel_tuning.targets": [1.5]}, r"^funnel_tuning.targets=\[1.5\]: recalls in \(0, 1\]"),
        ({"funnel_tuning.k": 0}, r"^funnel_tuning.k=0: neighbours per query, a positive integer"),
    ):
        with pytest.raises(ValueError, match=message) as error:
            eval_config(eval_cfg(None, **override))
        assert is_config_error(error.value)
