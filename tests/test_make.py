"""`make train` end to end as a newcomer runs it (the virtual environment exists here); what eval and report pick."""

from __future__ import annotations

import json

from mrl_testing.configs import run_make


def test_make_train_runs_the_default_experiment(tmp_path):
    run_dir = tmp_path / "run"
    args = f"hydra.run.dir={run_dir} trainer.max_epochs=1 print_config=false callbacks.rich_progress_bar=null"
    run_make("train", f"ARGS={args}", timeout=900)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["experiment"] == "digits_mrl" and results["head"] == "mrl"
    assert results["sizes"] == [8, 16, 32, 64, 128, 256, 512]
    assert all(f"val/top1@{m}" in results["metrics"] for m in results["sizes"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(run_dir.glob("wandb/offline-run-*"))


def dry_run(target: str, *make_args: str) -> list[str]:
    """The words of the python command that ``make -n <target> ...`` would run."""
    lines = run_make("-n", target, *make_args).stdout.splitlines()
    return next(line for line in lines if "python -m mrl." in line).split()


def test_make_eval_defaults_to_the_newest_run_or_sweep(tmp_path):
    for name in (
        "train/exp_b/2026-01-01_10-00-00",
        "train/exp_a/2026-01-02_00-00-00",
        "multirun/exp_b/2025-12-31_23-59-59",
    ):
        (tmp_path / name).mkdir(parents=True)
    assert f"run={tmp_path}/train/exp_a/2026-01-02_00-00-00/" in dry_run("eval", f"OUTPUTS={tmp_path}")
    (tmp_path / "multirun/exp_a/2026-01-03_08-00-00").mkdir(parents=True)  # a sweep after that
    assert f"run={tmp_path}/multirun/exp_a/2026-01-03_08-00-00/" in dry_run("eval", f"OUTPUTS={tmp_path}")
    assert "run=elsewhere" in dry_run("eval", f"OUTPUTS={tmp_path}", "RUN=elsewhere")
    # a checkpoint file is evaluated as given, with or without runs around
    for outputs in (tmp_path, tmp_path / "none"):
        words = dry_run("eval", f"OUTPUTS={outputs}", "ARGS=ckpt=x.ckpt data=digits")
        assert words[-2:] == ["ckpt=x.ckpt", "data=digits"] and not any(w.startswith("run=") for w in words)


def test_make_eval_without_a_run_says_what_to_do(tmp_path):
    result = run_make("eval", f"OUTPUTS={tmp_path}", check=False)
    assert result.returncode != 0
    assert f"make eval: no run under {tmp_path}/train or {tmp_path}/multirun yet; run make train first" in result.stderr


def test_make_report_defaults_to_the_newest_sweep(tmp_path):
    assert dry_run("report", f"OUTPUTS={tmp_path}")[3] == str(tmp_path)  # no sweep yet: every run
    for name in ("multirun/a/2026-01-01_00-00-00", "multirun/b/2026-02-01_00-00-00", "train/a/2026-03-01_00-00-00"):
        (tmp_path / name).mkdir(parents=True)
    assert dry_run("report", f"OUTPUTS={tmp_path}")[3] == f"{tmp_path}/multirun/b/2026-02-01_00-00-00/"
    assert dry_run("report", f"OUTPUTS={tmp_path}", "DIR=mine")[3] == "mine"


def test_make_bench_sends_options_to_one_benchmark_only():
    result = run_make("bench", "ARGS=--threads 1", check=False)
    assert result.returncode == 2
    assert "make bench: the benchmarks take different options; give ARGS to make bench-heads" in result.stderr
    assert "benchmarks/heads.py --threads 1" in run_make("-n", "bench-heads", "ARGS=--threads 1").stdout


def test_make_embed_takes_the_newest_training_run_and_needs_an_input(tmp_path):
    for name in ("train/a/2026-01-01_00-00-00", "train/b/2026-01-02_00-00-00", "multirun/c/2026-01-03_00-00-00"):
        (tmp_path / name).mkdir(parents=True)
    words = dry_run("embed", f"OUTPUTS={tmp_path}", "INPUT=photos", "ARGS=--dim 64")
    assert words[-4:] == [f"{tmp_path}/train/b/2026-01-02_00-00-00/", "photos", "--dim", "64"]  # a sweep is no run
    assert dry_run("embed", f"OUTPUTS={tmp_path}", "INPUT=photos", "RUN=mine")[-2:] == ["mine", "photos"]
    result = run_make("embed", f"OUTPUTS={tmp_path}", check=False)
    assert result.returncode == 2 and "make embed: give INPUT=<image folder" in result.stderr
    result = run_make("embed", f"OUTPUTS={tmp_path / 'none'}", "INPUT=photos", check=False)
    assert result.returncode == 2 and f"make embed: no run under {tmp_path}/none/train yet" in result.stderr


def test_make_search_needs_both_files():
    result = run_make("search", "DB=items.npz", check=False)
    assert result.returncode == 2 and "make search: give DB=<embeddings .npz of the items> QUERIES=" in result.stderr
    assert dry_run("search", "DB=a.npz", "QUERIES=b.npz", "ARGS=--k 5")[-4:] == ["a.npz", "b.npz", "--k", "5"]
