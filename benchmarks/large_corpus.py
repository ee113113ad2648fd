"""Text corpora larger than memory (``data.memory_map: true``): peak resident memory of a training slice on a
generated pairs file of millions of rows against the same slice on a small file, the one-time Arrow conversion,
and a mid-epoch resume on the large file that continues on the right rows.

Steps (each its own process, so each peak RSS is its own)::

    python benchmarks/large_corpus.py generate --rows 5000000 --out /tmp/pairs5m.jsonl
    python benchmarks/large_corpus.py convert --source /tmp/pairs5m.jsonl          # one-time conversion
    python benchmarks/large_corpus.py measure -- python -m mrl.cli.train experiment=text_pairs_mrl \
        data.source=/tmp/pairs5m.jsonl data.memory_map=true ...              # peak RSS, anonymous and mapped
    python benchmarks/large_corpus.py resume --source /tmp/pairs5m.jsonl --steps 40

``generate`` writes realistic lengths: each query is 4-14 consecutive words, each passage 30-120, cut at random
places from the prose of the Python reference (the built-in corpus), so lengths and words are those of English
text. The file is large (about 0.5 kB a row): put it under /tmp, never in the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(rows: int, out: Path, seed: int = 0) -> None:
    """``rows`` JSON lines ``{"query", "passage"}`` sliced from the built-in prose at seeded random places."""
    import numpy as np

    from mrl.data.text.corpus import python_docs_paragraphs

    words = [
        w
        for paragraphs in python_docs_paragraphs().values()
        for paragraph in paragraphs
        for sentence in paragraph
        for w in sentence.split()
        if '"' not in w and "\\" not in w and w.isprintable()
    ]
    text = " ".join(words)
    starts = np.zeros(len(words) + 1, dtype=np.int64)  # character offset of each word (and of the end)
    starts[1:] = np.cumsum([len(w) + 1 for w in words])
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    with out.open("w", encoding="utf-8") as file:
        for begin in range(0, rows, 100_000):
            count = min(100_000, rows - begin)
            q_len, p_len = rng.integers(4, 15, count), rng.integers(30, 121, count)
            q_at = rng.integers(0, len(words) - 15, count)
            p_at = rng.integers(0, len(words) - 121, count)
            file.write(
                "".join(
                    f'{{"query": "{text[starts[a] : starts[a + m] - 1]}", '
                    f'"passage": "{text[starts[b] : starts[b + n] - 1]}"}}\n'
                    for a, m, b, n in zip(q_at.tolist(), q_len.tolist(), p_at.tolist(), p_len.tolist())
                )
            )
    size = out.stat().st_size / 2**30
    print(f"wrote {rows:,} pairs to {out} ({size:.2f} GiB) in {time.perf_counter() - started:.0f} s")


def convert(source: str) -> None:
    """Open ``source`` memory-mapped once (the conversion to Arrow files, reused by later runs); time and RSS."""
    from mrl.data.text import TextPairsDataModule

    started = time.perf_counter()
    dm = TextPairsDataModule(
        source, anchor_column="query", positive_column="passage", memory_map=True, val_fraction=0.0002
    )
    seconds = time.perf_counter() - started
    train, val = dm.split_items("train"), dm.split_items("val")
    files = [Path(f["filename"]) for f in train.data.cache_files]
    arrow = sum(f.stat().st_size for f in files) / 2**30
    print(
        f"opened {source}: {len(train):,} train / {len(val):,} val pairs in {seconds:.0f} s, "
        f"{arrow:.2f} GiB of Arrow files in {files[0].parent if files else '?'}, peak RSS {_peak_rss_mib():.0f} MiB"
    )


def _fingerprints(batch) -> list[str]:
    ids, mask = batch[0]["input_ids"], batch[0]["attention_mask"]
    return [hashlib.sha1(bytes(str(row[m.bool()].tolist()), "ascii")).hexdigest()[:12] for row, m in zip(ids, mask)]


def resume(source: str, steps: int, out: Path) -> None:
    """An uninterrupted run of ``steps`` against one stopped at ``steps // 2`` and resumed from its checkpoint:
    the anchors trained on, in order, must be the same rows."""
    import lightning as L

    from mrl_testing.configs import compose_train
    from mrl_testing.training import fit_config

    class Record(L.Callback):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.seen.extend(_fingerprints(batch))

    overrides = [
        "experiment=text_pairs_mrl",
        f"data.source={source}",
        "data.anchor_column=query",
        "data.positive_column=passage",
        "data.memory_map=true",
        "data.max_pairs=null",
        "data.val_fraction=0.0002",
        "data.batch_size=4",
        "model.backbone.max_length=16",  # the order, not the model, is checked: short texts keep CPU runs short
        "logger=none",
        "callbacks=none",
        "print_config=false",
        "test=false",
    ]
    cfg = compose_train(overrides, out / "run")
    whole, first, second = Record(), Record(), Record()
    fit_config(cfg, [whole], max_steps=steps)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=out / "ckpt", save_last=True, every_n_train_steps=steps // 2)
    fit_config(cfg, [first, ckpt], max_steps=steps // 2)
    fit_config(cfg, [second], ckpt_path=str(out / "ckpt" / "last.ckpt"), max_steps=steps)
    same = first.seen + second.seen == whole.seen
    print(
        f"resume: {len(whole.seen)} anchors uninterrupted, {len(first.seen)} + {len(second.seen)} stopped and resumed; "
        f"same rows in the same order: {same}"
    )
    if not same:
        sys.exit(1)


def _memory(pid: int) -> dict[str, int]:
    """The process's resident memory now, MiB: anonymous (its own objects) and file-backed (mapped pages)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) // 1024
    return fields


def measure(command: list[str]) -> None:
    """Run ``command`` and print its wall time and the peaks of its resident memory (polled every 0.2 s), all
    of it and apart: anonymous memory (Python objects, tensors) and file-backed pages (the memory map, libraries;
    the kernel reclaims those under pressure)."""
    import subprocess

    started = time.perf_counter()
    process = subprocess.Popen(command)
    peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    while process.poll() is None:
        try:
            for name, value in _memory(process.pid).items():
                peaks[name] = max(peaks[name], value)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    code = process.wait()
    print(
        f"exit {code} in {time.perf_counter() - started:.0f} s; peak RSS {peaks['VmRSS']} MiB "
        f"(anonymous {peaks['RssAnon']} MiB, file-backed {peaks['RssFile']} MiB)"
    )
    sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--rows", type=int, default=5_000_000)
    g.add_argument("--out", type=Path, default=Path("/tmp/pairs5m.jsonl"))
    c = sub.add_parser("convert")
    c.add_argument("--source", default="/tmp/pairs5m.jsonl")
    r = sub.add_parser("resume")
    r.add_argument("--source", default="/tmp/pairs5m.jsonl")
    r.add_argument("--steps", type=int, default=40)
    r.add_argument("--out", type=Path, default=Path("/tmp/large_corpus_resume"))
    m = sub.add_parser("measure")
    m.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.step == "measure":
        measure(args.command[1:] if args.command[:1] == ["--"] else args.command)
    elif args.step == "generate":
        generate(args.rows, args.out)
    elif args.step == "convert":
        convert(args.source)
    else:
        resume(args.source, args.steps, args.out)


if __name__ == "__main__":
    main()
