"""`make report`: which runs are averaged (seeds), which get curves of their own, and the spread shown."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mrl.cli.report import main
from mrl.common.io import write_json
from mrl.evaluation.comparison import label_runs, write_report
from mrl_testing.configs import compose_train
from mrl_testing.wandb_records import read_finished_run


def fake_run(root, name, overrides, head, sizes, top1, knn=None, test_top1=None):
    """A run directory as training (and ``knn``: evaluation) leaves it, with the values given."""
    run = root / name
    cfg = compose_train(["experiment=digits_mrl", *overrides], run)
    run.mkdir(parents=True)
    OmegaConf.save(cfg, run / "config.yaml", resolve=True)
    metrics = {f"val/top1@{m}": v for m, v in zip(sizes, top1)}
    metrics |= {f"test/top1@{m}": v for m, v in zip(sizes, test_top1 or top1)}
    write_json(run / "results.json", {"head": head, "sizes": sizes, "metrics": metrics})
    if knn:
        write_json(run / "eval" / "results.json", {"metrics": {f"eval/knn_top1@{m}": v for m, v in knn.items()}})
    return run


@pytest.fixture
def sweep(tmp_path):
    fake_run(tmp_path, "mrl_s0", ["seed=0"], "mrl", [8, 512], [0.50, 0.90])
    fake_run(tmp_path, "mrl_s1", ["seed=1", "trainer.devices=2"], "mrl", [8, 512], [0.60, 0.94])
    fake_run(tmp_path, "mrl_sparse", ["model.nesting=[16,512]"], "mrl", [16, 512], [0.70, 0.91])
    # evaluation measures every prefix of an FF model; only its own size belongs on the FF curve
    fake_run(tmp_path, "ff8", ["head=ff", "model.head.dim=8"], "ff", [8], [0.40], knn={8: 0.41, 512: 0.80})
    fake_run(tmp_path, "ff512", ["head=ff", "model.head.dim=512"], "ff", [512], [0.92], knn={8: 0.20, 512: 0.93})
    return tmp_path


def test_seeds_average_and_other_settings_split(sweep):
    labels = {run.name: label for run, label in label_runs(sorted(p for p in sweep.iterdir())).items()}
    assert labels == {
        "mrl_s0": "MRL nesting=null",
        "mrl_s1": "MRL nesting=null",
        "mrl_sparse": "MRL nesting=[16, 512]",
        "ff8": "FF",
        "ff512": "FF",
    }
    report = write_report(sweep)
    curves, spread = report["curves"]["val_top1"], report["spread"]["val_top1"]
    assert curves["MRL nesting=null"] == pytest.approx({8: 0.55, 512: 0.92})
    assert spread["MRL nesting=null"][8] == pytest.approx(0.0707107, rel=1e-5)  # sample std of 0.50, 0.60
    assert curves["MRL nesting=[16, 512]"] == pytest.approx({16: 0.70, 512: 0.91})
    assert curves["FF"] == pytest.approx({8: 0.40, 512: 0.92})
    assert report["curves"]["knn_top1"] == {"FF": pytest.approx({8: 0.41, 512: 0.93})}
    text = (sweep / "report.md").read_text()
    assert "| 8 | 40.00 | 55.00 ± 7.07 |  |" in text
    assert "| MRL nesting=null | 2: mrl_s0, mrl_s1 |" in text
    assert "test_top1" not in report["curves"]  # the digits test on val: no second, identical table
    assert "| 8 | 41.00 |" in text  # 1-NN table: only the FF runs were evaluated


def test_an_evaluation_written_elsewhere_is_not_a_run(sweep):
    """eval output_dir=... (a robustness set, say) may put a results.json anywhere below the runs."""
    write_json(
        sweep / "eval_sets" / "imagenet_a" / "results.json",
        {"checkpoint": "mrl_s0/checkpoints/best.ckpt", "metrics": {"eval/top1@8": 0.1}},
    )
    write_report(sweep)
    text = (sweep / "report.md").read_text()
    assert "5 runs." in text and "imagenet_a" not in text


def test_report_prints_its_tables(sweep, capsys):
    main([str(sweep)])
    printed = capsys.readouterr().out
    assert "55.00 ± 7.07" in printed and "MRL nesting=[16, 512]" in printed
    assert "![" not in printed and ".png" not in printed.split("written to")[0]
    assert str(sweep / "report.md") in printed


def test_a_test_split_of_its_own_gets_its_table(tmp_path):
    fake_run(tmp_path, "a", [], "mrl", [8, 512], [0.5, 0.9], test_top1=[0.4, 0.8])
    assert write_report(tmp_path)["curves"]["test_top1"] == {"MRL": pytest.approx({8: 0.4, 512: 0.8})}


def test_unevaluated_runs_get_a_hint(tmp_path):
    fake_run(tmp_path, "a", [], "mrl", [8], [0.5])
    write_report(tmp_path)
    assert "make eval RUN=" in (tmp_path / "report.md").read_text()


def test_runs_of_different_experiments_are_not_averaged(tmp_path):
    fake_run(tmp_path, "a", [], "mrl", [8], [0.5])
    fake_run(tmp_path, "b", ["experiment_name=other"], "mrl", [8], [0.7])
    assert set(write_report(tmp_path)["curves"]["val_top1"]) == {
        "MRL experiment_name=digits_mrl",
        "MRL experiment_name=other",
    }


def test_report_goes_to_wandb_as_tables_and_line_charts(sweep):
    write_report(sweep, use_wandb=True)
    files = sorted(sweep.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    run = read_finished_run(files[0])
    assert run["summary"]["report/val_top1/_type"] == "table-file"
    assert run["summary"]["report/val_top1/nrows"] == 3  # sizes 8, 16, 512
    assert run["summary"]["report/val_top1_chart/_type"] == "image-file"
    # one line per curve, every point of it: FF (8, 512), MRL dense (8, 512), MRL sparse (16, 512)
    assert run["summary"]["report/val_top1_curves_table/nrows"] == 6
    panel = run["config"]["_wandb/visualize/report/val_top1_curves"]["panel_config"]
    assert panel["panelDefId"] == "wandb/lineseries/v0"
    assert panel["stringSettings"]["xname"] == "embedding size"


def test_report_goes_to_the_wandb_project_of_the_runs(tmp_path):
    from wandb.proto import wandb_internal_pb2 as pb

    from mrl_testing.wandb_records import iter_payloads

    fake_run(tmp_path, "a", ["logger.wandb.project=mrl-sweep", "logger.wandb.entity=my-team"], "mrl", [8], [0.5])
    write_report(tmp_path, use_wandb=True)
    (path,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    read_finished_run(path)
    records = [pb.Record.FromString(payload) for payload in iter_payloads(path)]
    (run,) = [record.run for record in records if record.WhichOneof("record_type") == "run"]
    assert (run.project, run.entity, run.job_type) == ("mrl-sweep", "my-team", "report")


def test_text_runs_report_their_own_metrics(tmp_path):
    for name, seed, mrr, rho in (("pairs_s0", 0, 0.60, 0.70), ("pairs_s1", 1, 0.70, 0.80)):
        run = tmp_path / name
        run.mkdir()
        OmegaConf.save(compose_train(["experiment=text_pairs_mrl", f"seed={seed}"], run), run / "config.yaml")
        write_json(
            run / "results.json",
            {"head": "contrastive", "sizes": [64, 384], "metrics": {"val/mrr@10@64": mrr, "val/mrr@10@384": mrr + 0.1}},
        )
        write_json(run / "eval" / "results.json", {"metrics": {"eval/spearman@64": rho, "eval/spearman@384": rho}})
    report = write_report(tmp_path)
    assert report["curves"]["val_mrr10"] == {"MRL contrastive": pytest.approx({64: 0.65, 384: 0.75})}
    assert report["curves"]["spearman"] == {"MRL contrastive": pytest.approx({64: 0.75, 384: 0.75})}
    assert "val_top1" not in report["curves"] and "knn_top1" not in report["curves"]
    assert "## val MRR@10 (text pairs, in-batch)" in (tmp_path / "report.md").read_text()
