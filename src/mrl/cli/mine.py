"""``make mine``: hard negatives for a pairs file, mined with a trained run or a stock encoder through the prefix
funnel (a short-prefix shortlist, exact cosine at full width), written as a triplets file that
``data.source=<out> data.negative_column=negative`` trains on directly.

``mrl-mine PAIRS [--run RUN | --model DIR] [--out FILE.jsonl] [--num-negatives 3] [--range-min 0]
[--range-max N] [--absolute-margin X] [--relative-margin X] [--max-score X] [--min-score X]
[--sampling top|random] [--seed 0] [--corpus FILE] [--exact]``

The options mean what they mean in sentence-transformers' ``util.mine_hard_negatives``
(:mod:`mrl.retrieval.mining`). Every text (anchors, positives, corpus) is embedded once, longest first, in
batches the encoder packs without padding.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mrl.backbones.hf_text import HFTextEncoder, resolve_name_or_path
from mrl.common.door import require_writable
from mrl.common.errors import ConfigError, InputError, exit_on_config_error
from mrl.data.text.tables import read_table
from mrl.embedding import read_texts
from mrl.evaluation.device import resolve_device
from mrl.retrieval.mining import MiningSettings, mine, mining_problem, triplet_rows
from mrl.runs import find_checkpoint, load_module

__all__ = ["command", "embed_unique", "load_encoder", "main", "mine_pairs"]

log = logging.getLogger(__name__)


def load_encoder(run: str | None = None, model: str | None = None, max_length: int = 256, device: str = "auto"):
    """``(encode, tokenize, device)``: a trained run's embedding (``run``: a run directory or checkpoint), else a
    Hugging Face encoder directory (``model``; default: the bundled all-MiniLM-L6-v2) mean-pooled and normalised as
    sentence-transformers' stock model."""
    torch_device = resolve_device(device)
    if run is not None:
        module = load_module(find_checkpoint(run))
        if not hasattr(module.backbone, "tokenize"):
            raise InputError("run", run, "an image model; mining needs a text model's run")
        module.to(torch_device).eval()
        return module.embed, module.backbone.tokenize, torch_device
    encoder = HFTextEncoder(resolve_name_or_path(model, key="model"), max_length=max_length, normalize=True)
    encoder.to(torch_device).eval()
    return encoder, encoder.tokenize, torch_device


def embed_unique(
    texts: Sequence[str],
    encode: Callable,
    tokenize: Callable,
    batch_size: int = 128,
    progress: Callable[[int], None] | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Normalised full-width embeddings of ``texts`` (rows in ``texts`` order), batched longest first."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out: np.ndarray | None = None
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            features = tokenize([texts[i] for i in rows])
            z = torch.nn.functional.normalize(encode({k: v.to(device) for k, v in features.items()}).float(), dim=-1)
            if out is None:
                out = np.empty((len(texts), z.shape[1]), dtype=np.float32)
            out[rows] = z.cpu().numpy()
            if progress is not None:
                progress(len(rows))
    return out


def mine_pairs(  # noqa: PLR0913 - one argument per command-line flag
    pairs: str,
    out: str | None = None,
    run: str | None = None,
    model: str | None = None,
    corpus: str | None = None,
    settings: MiningSettings | None = None,
    anchor_column: str = "anchor",
    positive_column: str = "positive",
    corpus_column: str = "text",
    exact: bool = False,
    batch_size: int = 128,
    device: str = "auto",
    quiet: bool = False,
) -> dict[str, Any]:
    """Mine ``pairs`` and write the triplets (jsonl); returns a summary (counts, filters, timings, output)."""
    settings = settings or MiningSettings()
    if run is not None and model is not None:
        raise ConfigError("model", model, f"give a run or a model, not both (run={run!r})")
    output = Path(out) if out else Path(pairs).with_name(Path(pairs).stem + "_mined.jsonl")
    require_writable(output)
    rows = read_table(str(pairs), key="pairs")
    if not rows:
        raise InputError("pairs", pairs, "the table has no rows")
    for column in (anchor_column, positive_column):
        if column not in rows[0]:
            raise ValueError(f"{column}: not a column of {Path(pairs).name}; its columns are {', '.join(rows[0])}")
    extra = read_texts(corpus, corpus_column) if corpus else None
    problem = mining_problem([r[anchor_column] for r in rows], [r[positive_column] for r in rows], extra)
    settings.resolved_range_max(problem.max_positives)  # a wrong setting fails before the model loads
    encode, tokenize, torch_device = load_encoder(run, model, device=device)
    texts = list(dict.fromkeys(problem.queries + problem.corpus))  # a text both query and document: embedded once
    began = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        disable=quiet,
    ) as bar:
        task = bar.add_task("embedding", total=len(texts), rate="")

        def advance(n: int) -> None:
            done = bar.tasks[task].completed + n
            bar.update(task, advance=n, rate=f"{done / max(time.perf_counter() - began, 1e-9):.0f} texts/s")

        z = embed_unique(texts, encode, tokenize, batch_size=batch_size, progress=advance, device=torch_device)
        embedded = time.perf_counter()
        where = {text: i for i, text in enumerate(texts)}
        q = z[[where[t] for t in problem.queries]]
        c = z[[where[t] for t in problem.corpus]]
        task = bar.add_task("mining", total=len(problem.queries), rate="")
        mined = mine(
            q, c, problem, settings, funnel="exact" if exact else None, progress=lambda n: bar.advance(task, n)
        )
    searched = time.perf_counter()
    triplets = triplet_rows(problem, mined)
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in triplets:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(output)
    found = mined.ids >= 0
    return {
        "output": str(output),
        "pairs": problem.pairs,
        "queries": len(problem.queries),
        "corpus": len(problem.corpus),
        "triplets": len(triplets),
        "short": int((found.sum(1) < settings.num_negatives).sum()),
        "skipped": mined.skipped,
        "funnel": mined.funnel,
        "embed_s": embedded - began,
        "search_s": searched - embedded,
        "positive_mean": float(mined.positive_scores.mean()),
        "negative_mean": float(mined.scores[found].mean()) if found.any() else float("nan"),
    }


def command(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse, mine and print the summary; returns it (for callers in Python)."""
    parser = argparse.ArgumentParser(prog="mrl-mine", description=__doc__.splitlines()[0].strip("`: "))
    parser.add_argument("pairs", help="a table of (anchor, positive) pairs: .jsonl, .json, .csv, .tsv, .parquet")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", default=None, help="a text run directory (or a checkpoint) to embed with")
    source.add_argument("--model", default=None, help="a Hugging Face encoder directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--out", default=None, help="the triplets .jsonl (default: <pairs>_mined.jsonl beside it)")
    parser.add_argument("--corpus", default=None, help="more candidate texts: a .txt file or a table (--corpus-column)")
    parser.add_argument("--corpus-column", default="text")
    parser.add_argument("--anchor-column", default="anchor")
    parser.add_argument("--positive-column", default="positive")
    parser.add_argument("--num-negatives", type=int, default=3)
    parser.add_argument("--range-min", type=int, default=0, help="skip the first RANGE_MIN candidates left")
    parser.add_argument("--range-max", type=int, default=None, help="look no further than RANGE_MAX candidates")
    parser.add_argument("--absolute-margin", type=float, default=None, help="negative <= positive - X")
    parser.add_argument("--relative-margin", type=float, default=None, help="negative <= positive - |positive| * X")
    parser.add_argument("--max-score", type=float, default=None)
    parser.add_argument("--min-score", type=float, default=None)
    parser.add_argument("--sampling", default="top", help="top (the hardest) or random (seeded, within the window)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exact", action="store_true", help="exact search at full width only (no prefix shortlist)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    settings = MiningSettings(
        num_negatives=args.num_negatives,
        range_min=args.range_min,
        range_max=args.range_max,
        absolute_margin=args.absolute_margin,
        relative_margin=args.relative_margin,
        max_score=args.max_score,
        min_score=args.min_score,
        sampling=args.sampling,
        seed=args.seed,
    )
    summary = exit_on_config_error(
        lambda: mine_pairs(
            args.pairs,
            out=args.out,
            run=args.run,
            model=args.model,
            corpus=args.corpus,
            settings=settings,
            anchor_column=args.anchor_column,
            positive_column=args.positive_column,
            corpus_column=args.corpus_column,
            exact=args.exact,
            batch_size=args.batch_size,
            device=args.device,
            quiet=args.quiet,
        )
    )
    skipped = ", ".join(f"{k} {v}" for k, v in summary["skipped"].items() if v)
    print(
        f"{summary['triplets']} triplets from {summary['pairs']} pairs ({summary['queries']} queries, corpus of "
        f"{summary['corpus']}; {summary['short']} queries short of negatives"
        + (f"; removed: {skipped}" if skipped else "")
        + f"); embedding {summary['embed_s']:.1f} s, search {summary['search_s']:.1f} s -> {summary['output']}"
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    """The console script: exits 0 on success, 1 with one line on a user's mistake."""
    command(argv)


if __name__ == "__main__":
    main()
