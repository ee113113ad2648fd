"""What mining buys: ``text_pairs_mrl`` trained on pairs against the same training on triplets mined by ``mrl-mine``
from those pairs, MRR@10 per size on held-out real pairs.

    python benchmarks/mined_negatives.py                    # 100 steps, batch 16, seeds 0 and 1 (about 10 min, 2 cores)
    python benchmarks/mined_negatives.py --seeds 0 1 2 --num-negatives 1 --relative-margin 0.05
    python benchmarks/mined_negatives.py --quick            # a smoke run for the tests

The pairs and the held-out split are those of ``benchmarks/text.py`` (``builtin:python-queries``: a docstring's
one-line summary against the prose that follows it, a reference paragraph's first sentence against the rest; 200
pairs held out with ``--split-seed``, 0 as there). The training pairs are written to a JSON-lines file and mined
with ``mrl.cli.mine.mine_pairs`` (what ``make mine`` runs: the stock all-MiniLM-L6-v2, the prefix funnel), the
corpus being the training pairs' own documents, so no held-out text is ever seen. The triplets file has one row
per (pair, negative found); a pair whose query found no negative is left out.

Both runs per seed are ``make train EXP=text_pairs_mrl`` as composed by ``benchmarks/text.py`` (batch ``--batch``,
max length ``--max-length``, AdamW 5e-5, weight decay 0.01, linear after ``--warmup`` warm-up steps, clipping 1.0,
``--steps`` steps, sizes 8..384, in-batch negatives at scale 20), the second with ``data.negative_column=negative``:
each anchor is then scored against the batch's positives and its mined negatives, so a triplet step embeds three
texts a row instead of two (its training time is printed beside). The held-out pairs are scored as in
``benchmarks/text.py``: each query against all held-out documents, cosine of the m-prefixes. The last line is the
mean over sizes and seeds of (mined - pairs) MRR@10.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent


def text_benchmark():
    """``benchmarks/text.py`` as a module: its pairs, held-out split and MRR@10 are the ones reused here."""
    spec = importlib.util.spec_from_file_location("bench_text_for_mining", HERE / "text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def count_rows(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def train(bench, table: Path, args, seed: int, negatives: bool):
    """``text_pairs_mrl`` on ``table`` for ``args.steps`` steps (``bench``: `text_benchmark`'s module); returns
    (the trained module, fit seconds)."""
    import lightning as L

    from mrl.training.procedure import build_datamodule, build_model
    from mrl_testing.configs import compose_train

    steps_per_epoch = -(-count_rows(table) // args.batch)
    overrides = [
        "experiment=text_pairs_mrl",
        "trainer=cpu",
        f"data.source={table}",
        f"data.negative_column={'negative' if negatives else 'null'}",
        f"data.batch_size={args.batch}",
        "data.max_pairs=null",
        f"data.val_fraction={args.val_fraction}",
        f"model.backbone.max_length={args.max_length}",
        "model.optimizer.lr=5e-5",
        "model.optimizer.weight_decay=0.01",
        "model.scheduler.name=linear",
        f"model.scheduler.warmup_epochs={args.warmup / steps_per_epoch}",
        f"seed={seed}",
        "logger=none",
        "callbacks=none",
        "print_config=false",
    ]
    cfg = compose_train(overrides, Path(tempfile.mkdtemp(prefix="bench_mined_")))
    L.seed_everything(seed, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    trainer = bench.step_trainer(cfg, args.steps)
    began = time.perf_counter()
    trainer.fit(model, datamodule)
    return model, time.perf_counter() - began


def stock_encoder(max_length: int):
    """The untrained all-MiniLM-L6-v2 (mean-pooled, as shipped) through the framework's encoder."""
    import torch

    from mrl.cli.mine import load_encoder

    encoder, tokenize, _ = load_encoder(None, None, max_length=max_length, device="cpu")

    def embed(texts: list[str]):
        with torch.no_grad():
            return torch.cat([encoder(tokenize(texts[i : i + 64])).float() for i in range(0, len(texts), 64)])

    return embed


def table(rows: dict[str, dict[int, float]], sizes: list[int]) -> list[str]:
    lines = ["| model | " + " | ".join(str(m) for m in sizes) + " | mean |", "|---|" + "---|" * (len(sizes) + 1)]
    for name, row in rows.items():
        values = [row[m] for m in sizes]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {statistics.mean(values):.3f} |")
    return lines


def main(argv: list[str] | None = None) -> dict:  # noqa: PLR0915 - one straight script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (both runs each)")
    parser.add_argument("--split-seed", type=int, default=0, help="the held-out split (benchmarks/text.py's seed)")
    parser.add_argument("--eval-pairs", type=int, default=200)
    parser.add_argument("--val-fraction", type=float, default=0.01)
    parser.add_argument("--num-negatives", type=int, default=1, help="mrl-mine --num-negatives")
    parser.add_argument("--range-min", type=int, default=0, help="mrl-mine --range-min")
    parser.add_argument("--range-max", type=int, default=None, help="mrl-mine --range-max")
    parser.add_argument("--relative-margin", type=float, default=0.05, help="mrl-mine --relative-margin")
    parser.add_argument("--max-score", type=float, default=None, help="mrl-mine --max-score")
    parser.add_argument("--sampling", default="top", choices=("top", "random"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the pairs and triplets files go")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 steps, the reference pairs only")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.max_length, args.warmup, args.eval_pairs = 3, 4, 32, 1, 24
        args.seeds, args.val_fraction = args.seeds[:1], max(args.val_fraction, 0.02)

    import torch

    from mrl.cli.mine import mine_pairs
    from mrl.retrieval.mining import MiningSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    bench = text_benchmark()
    sizes = bench.SIZES
    train_pairs, held_out = bench.build_pairs(args.eval_pairs, args.split_seed, docstrings=not args.quick)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_mined_"))
    pairs_file = bench.write_pairs(work / "pairs.jsonl", train_pairs)
    print(
        f"pairs: {len(train_pairs)} for training, {len(held_out)} held out (split seed {args.split_seed}); "
        f"batch {args.batch}, {args.steps} steps, max length {args.max_length}, seeds {args.seeds}; "
        f"torch threads {torch.get_num_threads()}; 1-min load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    settings = MiningSettings(
        num_negatives=args.num_negatives,
        range_min=args.range_min,
        range_max=args.range_max,
        relative_margin=args.relative_margin,
        max_score=args.max_score,
        sampling=args.sampling,
    )
    began = time.perf_counter()
    mined = mine_pairs(str(pairs_file), out=str(work / "triplets.jsonl"), settings=settings, device="cpu", quiet=True)
    print(
        f"mined (stock MiniLM, {mined['funnel']}, num_negatives {args.num_negatives}, range_min {args.range_min}, "
        f"relative_margin {args.relative_margin}, sampling {args.sampling}): {mined['triplets']} triplets from "
        f"{mined['pairs']} pairs, {mined['short']} queries short of negatives; mean cosine positive "
        f"{mined['positive_mean']:.3f}, negative {mined['negative_mean']:.3f}; {time.perf_counter() - began:.1f} s",
        flush=True,
    )

    results: dict = {"mrr": {"stock all-MiniLM-L6-v2": bench.mrr_per_size(stock_encoder(args.max_length), held_out)}}
    results["seconds"] = {"pairs": [], "mined": []}
    for seed in args.seeds:
        for name, table_file, negatives in (("pairs", pairs_file, False), ("mined", Path(mined["output"]), True)):
            model, seconds = train(bench, table_file, args, seed, negatives)
            results["seconds"][name].append(seconds)
            results["mrr"][f"{name}, seed {seed}"] = bench.mrr_per_size(bench.framework_encoder(model), held_out)
            print(f"seed {seed}: {name}: trained in {seconds:.1f} s", flush=True)

    for name in ("pairs", "mined"):
        rows = [results["mrr"][f"{name}, seed {s}"] for s in args.seeds]
        results["mrr"][f"{name}, mean of {len(rows)}"] = {m: statistics.mean(r[m] for r in rows) for m in sizes}
    diffs = {
        m: [results["mrr"][f"mined, seed {s}"][m] - results["mrr"][f"pairs, seed {s}"][m] for s in args.seeds]
        for m in sizes
    }
    results["difference"] = {m: statistics.mean(d) for m, d in diffs.items()}
    results["mean_difference"] = statistics.mean(results["difference"].values())

    print("\nMRR@10 per size on the held-out pairs")
    print("\n".join(table(results["mrr"], sizes)))
    print(
        "| mined - pairs (seed range) | "
        + " | ".join(f"{results['difference'][m]:+.3f} ({min(diffs[m]):+.3f}..{max(diffs[m]):+.3f})" for m in sizes)
        + f" | {results['mean_difference']:+.3f} |"
    )
    print(
        f"training wall time (s, mean of {len(args.seeds)}): pairs {statistics.mean(results['seconds']['pairs']):.1f}, "
        f"mined {statistics.mean(results['seconds']['mined']):.1f}; 1-min load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"mined - pairs, MRR@10 mean over {len(sizes)} sizes and {len(args.seeds)} seed(s): "
        f"{results['mean_difference']:+.4f}"
    )
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
