"""Memory-tiered serving at scale: the funnel's first stage in RAM, the full vectors on disk (a numpy memmap, read for
the shortlist only), against FAISS HNSW on the full vectors in RAM; resident memory, latency (warm and cold page
cache) and recall@k against exact search, each tuned to one target on held-out queries.

    python benchmarks/tiered_1m.py generate --n 1000000 --out /tmp/tiered       # 4 GB of float32 on disk
    python benchmarks/tiered_1m.py build-hnsw --out /tmp/tiered                 # M 32, efConstruction 64, saved
    python benchmarks/tiered_1m.py serve hnsw --out /tmp/tiered                 # efSearch tuned, RSS, latency
    python benchmarks/tiered_1m.py serve tiered --out /tmp/tiered               # nprobe and shortlist tuned
    python benchmarks/tiered_1m.py serve tiered --out /tmp/tiered --cold --nprobe 32 --shortlist 30   # root
    python benchmarks/tiered_1m.py serve tiered --out /tmp/tiered --cold --nprobe 32 --shortlist 30 --no-random-access

Each step is its own process, so each system's resident memory is the growth of a fresh process's RSS (anonymous
memory, the index's own; and file-backed, the memmap's pages this process touched, listed apart).

* ``generate``: the benchmark's MRL-like generator (``make_mrl_split``, ``--classes`` classes, seed 0), the database
  written re-normalised (cosine) to ``full.npy`` (`write_rerank_memmap`), its re-normalised ``--first-size`` prefix
  to ``prefix.npy``, the queries, and exact top-k by blocks of the memmap (``exact_ids.npy``, ``kth.npy``).
* ``build-hnsw``: ``faiss.IndexHNSWFlat`` on the full vectors (added in blocks of 100,000 read from the memmap; the
  reads not timed), M 32, efConstruction 64 (as
  `mrl.retrieval.baselines`), saved to ``hnsw.faiss`` with its build time.
* ``serve hnsw``: the index read back; efSearch raised over `EF_SEARCH_LADDER` on the tuning queries (70%, seeded)
  until recall@k meets ``--target``, then timed on all queries (fastest of ``--repeats``) and confirmed held-out.
* ``serve tiered``: `AdaptiveRetriever` with an AdANNS-IVF first stage on the prefix (``4 sqrt(N)`` lists, trained on
  ``prefix.npy``) and the full-width rerank from the memmap (``rerank_arrays``), opened by
  `mrl.retrieval.tiered.open_rerank_memmap` with ``madvise(MADV_RANDOM)`` (no read-ahead around a faulted row;
  ``--no-random-access``: the kernel's default read-ahead); nprobe and the shortlist raised until the target is met;
  the fastest setting meeting it is timed with the file in the page cache. ``--cold`` (root; the setting given): the
  page cache dropped (``echo 3 > /proc/sys/vm/drop_caches``) after the first stage is built, then 100 tuning queries
  one at a time from a cold file; the cache dropped again, the held-out queries in one batch from a cold file; then
  warm (fastest of ``--repeats``); then from the page cache but not yet mapped by this process (one at a time, and
  batched). Bytes read from disk per query (``/proc/self/io``) beside each cold figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from mrl.retrieval import AdaptiveRetriever
from mrl.retrieval.baselines import EF_SEARCH_LADDER, HNSW_EF_CONSTRUCTION, HNSW_M, hnsw_bytes
from mrl.retrieval.flat import faiss, prefix
from mrl.retrieval.funnel import write_rerank_memmap
from mrl.retrieval.tiered import open_rerank_memmap
from mrl.retrieval.tune import RECALL_TOLERANCE
from mrl_testing.synthetic import make_mrl_split

NPROBES = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
SHORTLISTS = (20, 30, 50, 100, 200, 400)
RANDOM_ACCESS_DEFAULT = True  # cold: 4.2x faster one at a time, 1.9x batched, warm the same (RESULTS.md)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("generate", "build-hnsw", "serve"))
    p.add_argument("system", nargs="?", choices=("hnsw", "tiered"))
    p.add_argument("--out", required=True, help="folder for the files (not the repository: GBs)")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--queries", type=int, default=1500)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--first-size", type=int, default=32)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--holdout", type=float, default=0.3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cold", action="store_true", help="tiered: drop the page cache first (root)")
    p.add_argument("--nprobe", type=int, default=None, help="tiered --cold: the setting to serve")
    p.add_argument("--shortlist", type=int, default=None, help="tiered --cold: the setting to serve")
    p.add_argument("--random-access", action=argparse.BooleanOptionalAction, default=RANDOM_ACCESS_DEFAULT,
                   help="tiered: the rerank memmap opened with madvise(MADV_RANDOM) (open_rerank_memmap)")  # fmt: skip
    return p.parse_args(argv)


def memory() -> dict[str, int]:
    """This process's resident bytes: ``rss``, ``anon`` (its own allocations) and ``file`` (mapped file pages)."""
    fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in fields:
                out[fields[key]] = int(line.split()[1]) * 1024
    return out


def mib(x: float) -> str:
    return f"{x / 2**20:.1f} MiB"


def generate(args, out: Path) -> None:
    t = time.perf_counter()
    db, _, q, _ = make_mrl_split(args.n, args.queries, args.dim, n_classes=args.classes, seed=0)
    print(f"generated {args.n} x {args.dim} in {time.perf_counter() - t:.1f}s", flush=True)
    t = time.perf_counter()
    np.save(out / "prefix.npy", prefix(db, args.first_size, True))
    np.save(out / "queries.npy", q)
    write_rerank_memmap(db, out / "full.npy", "cosine")
    del db
    gc.collect()
    print(f"wrote full.npy ({mib((out / 'full.npy').stat().st_size)}) and prefix.npy in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    full = np.load(out / "full.npy", mmap_mode="r")
    qn = prefix(q, args.dim, True)
    best_s = np.full((len(q), args.k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), args.k), dtype=np.int64)
    for start in range(0, len(full), 65536):
        block = np.asarray(full[start : start + 65536])
        s = qn @ block.T
        top = np.argpartition(-s, args.k - 1, axis=1)[:, : args.k]
        s_all = np.concatenate([best_s, np.take_along_axis(s, top, axis=1)], axis=1)
        i_all = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-s_all, axis=1, kind="stable")[:, : args.k]
        best_s, best_i = np.take_along_axis(s_all, keep, axis=1), np.take_along_axis(i_all, keep, axis=1)
    np.save(out / "exact_ids.npy", best_i)
    np.save(out / "kth.npy", best_s[:, -1])
    print(f"exact top-{args.k} of {len(q)} queries by blocks of the memmap in {time.perf_counter() - t:.1f}s")


def build_hnsw(args, out: Path) -> None:
    full = np.load(out / "full.npy", mmap_mode="r")
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(full.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    read = 0.0
    for start in range(0, len(full), 100_000):  # added in blocks: the index's own copy is the only one in RAM
        r = time.perf_counter()
        block = np.array(full[start : start + 100_000])
        read += time.perf_counter() - r
        index.add(block)
    seconds = time.perf_counter() - t - read
    faiss.write_index(index, str(out / "hnsw.faiss"))
    info = {"build_seconds": seconds, "index_bytes": hnsw_bytes(index), "n": int(index.ntotal), "load": os.getloadavg()}
    (out / "hnsw.json").write_text(json.dumps(info))
    print(f"read {len(full)} x {full.shape[1]} in {read:.1f}s; HNSW (M {HNSW_M}, efConstruction "
          f"{HNSW_EF_CONSTRUCTION}) built in {seconds:.1f}s, {mib(info['index_bytes'])}; saved")  # fmt: skip


class Data:
    """The queries, their tuning / held-out split (seeded) and the recall of found ids against exact search (ties
    with the k-th counted as hits, as `mrl.retrieval.tune` counts them)."""

    def __init__(self, args, out: Path) -> None:
        self.q = np.load(out / "queries.npy")
        self.qn = prefix(self.q, self.q.shape[1], True)
        self.kth = np.load(out / "kth.npy")
        self.full = np.load(out / "full.npy", mmap_mode="r")
        # the rerank stage's own mapping (the one above serves the recall checks): advised MADV_RANDOM or not
        self.rerank = open_rerank_memmap(out / "full.npy", self.full.shape, random_access=args.random_access)
        order = np.random.default_rng(0).permutation(len(self.q))
        n_hold = int(round(args.holdout * len(self.q)))
        self.hold, self.tune = np.sort(order[:n_hold]), np.sort(order[n_hold:])
        self.k = args.k

    def recall(self, rows: np.ndarray, ids: np.ndarray) -> float:
        ids = ids[:, : self.k]
        vectors = self.full[np.maximum(ids, 0).ravel()].reshape(*ids.shape, -1)
        scores = np.einsum("qkd,qd->qk", vectors, self.qn[rows])
        good = (scores >= (self.kth[rows] - RECALL_TOLERANCE)[:, None]) & (ids >= 0)
        return float(np.minimum(good.sum(axis=1), self.k).mean() / self.k)


def fastest_ms(system, q: np.ndarray, k: int, repeats: int) -> float:
    system.search(q[:64], k)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        system.search(q, k)
        best = min(best, time.perf_counter() - t)
    return 1e3 * best / len(q)


class Ef:
    def __init__(self, index, ef: int) -> None:
        self.index, self.ef = index, ef

    def search(self, q: np.ndarray, k: int):
        self.index.hnsw.efSearch = self.ef
        return self.index.search(prefix(q, q.shape[1], True), k)


def serve_hnsw(args, out: Path) -> dict:
    data = Data(args, out)
    before = memory()
    t = time.perf_counter()
    index = faiss.read_index(str(out / "hnsw.faiss"))
    read = time.perf_counter() - t
    after = memory()
    info = json.loads((out / "hnsw.json").read_text())
    chosen = None
    for ef in EF_SEARCH_LADDER:
        _, ids = Ef(index, ef).search(data.q[data.tune], args.k)
        recall = data.recall(data.tune, ids)
        print(f"  efSearch {ef}: tuning recall {recall:.4f}", flush=True)
        if recall >= args.target:
            chosen = (ef, recall)
            break
    ef, recall = chosen or (EF_SEARCH_LADDER[-1], recall)
    system = Ef(index, ef)
    load = os.getloadavg()[0]
    ms = fastest_ms(system, data.q, args.k, args.repeats)
    _, ids = system.search(data.q[data.hold], args.k)
    row = {"system": "hnsw", "setting": f"efSearch {ef}", "ms_per_query": ms, "recall": recall,
           "holdout_recall": data.recall(data.hold, ids), "build_seconds": info["build_seconds"],
           "index_bytes": info["index_bytes"], "rss_growth": after["rss"] - before["rss"],
           "anon_growth": after["anon"] - before["anon"], "read_seconds": read, "load": load}  # fmt: skip
    print(f"HNSW (M {HNSW_M}, efConstruction {HNSW_EF_CONSTRUCTION}) read in {read:.1f}s: "
          f"RSS +{mib(row['rss_growth'])} "
          f"(anonymous +{mib(row['anon_growth'])}; index {mib(row['index_bytes'])}); efSearch {ef}: {ms:.4f} ms/query "
          f"warm, recall {recall:.4f} tuning / {row['holdout_recall']:.4f} held-out; built in "
          f"{info['build_seconds']:.0f}s; load {load:.2f}")  # fmt: skip
    return row


def build_tiered(args, out: Path, data: Data, nprobe: int, shortlist: int, cache: dict) -> AdaptiveRetriever:
    dim = data.full.shape[1]
    return AdaptiveRetriever(data.full, [(args.first_size, shortlist), (dim, args.k)], metric="cosine", index="ivf",
                             nprobe=nprobe, prefix_cache=cache, rerank_arrays={dim: data.rerank})  # fmt: skip


def disk_read_bytes() -> int:
    """Bytes this process has caused to be read from the block device (page faults and their read-ahead included)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))


def unmap_pages(array: np.ndarray) -> None:
    """Unmap the pages of ``array``'s memory map from this process (they stay in the page cache, now droppable)."""
    array.base.madvise(mmap.MADV_DONTNEED)  # open_rerank_memmap's array: its base is the mmap


def drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def serve_cold(args, data: Data, system: AdaptiveRetriever, anon_growth: int) -> dict:
    """``serve tiered --cold``: latency from a cold page cache (one query at a time, then batched), warm, and from
    the page cache but not yet mapped; bytes read from disk per query."""
    # cold: the page cache dropped before any row of the memmap is mapped here. A row this process has mapped
    # stays cached (drop_caches frees unmapped pages only), so after one query at a time on 100 tuning queries
    # the rerank mapping's pages are unmapped (MADV_DONTNEED) and the cache dropped again: the held-out queries
    # in one batch start from a cold file too. Bytes read from disk per phase: /proc/self/io read_bytes
    drop_page_cache()
    io = disk_read_bytes()
    singles = 0.0
    for i in data.tune[:100]:
        t = time.perf_counter()
        system.search(data.q[i : i + 1], args.k)
        singles += time.perf_counter() - t
    n_single = min(100, len(data.tune))
    cold_single, read_single = 1e3 * singles / n_single, (disk_read_bytes() - io) / n_single
    unmap_pages(data.rerank)
    drop_page_cache()
    hold = data.q[data.hold]
    io = disk_read_bytes()
    t = time.perf_counter()
    _, ids = system.search(hold, args.k)
    cold = 1e3 * (time.perf_counter() - t) / len(hold)
    read_batch = (disk_read_bytes() - io) / len(hold)
    warm = fastest_ms(system, hold, args.k, args.repeats)
    # in the page cache but not yet mapped here (a long-running server's first touch of a cached row): the
    # mapping's pages unmapped, the cache kept; one at a time on 100 held-out queries, then all in one batch
    unmap_pages(data.rerank)
    t = time.perf_counter()
    for i in range(min(100, len(hold))):
        system.search(hold[i : i + 1], args.k)
    cached_single = 1e3 * (time.perf_counter() - t) / min(100, len(hold))
    unmap_pages(data.rerank)
    t = time.perf_counter()
    system.search(hold, args.k)
    cached = 1e3 * (time.perf_counter() - t) / len(hold)
    row = {"system": "tiered cold", "setting": f"nprobe {args.nprobe}, {args.shortlist} candidates",
           "random_access": args.random_access, "load": os.getloadavg()[0],
           "ms_cold_batch": cold, "ms_cold_single": cold_single, "ms_warm": warm,
           "ms_cached_single": cached_single, "ms_cached_batch": cached,
           "read_bytes_single": read_single, "read_bytes_batch": read_batch,
           "holdout_recall": data.recall(data.hold, ids), "anon_growth": anon_growth}  # fmt: skip
    advice = "MADV_RANDOM" if args.random_access else "MADV_NORMAL"
    print(f"tiered ({advice}), page cache dropped: {cold_single:.3f} ms/query one at a time (100 tuning queries, "
          f"{read_single / 2**10:.0f} KiB read from disk per query); page cache dropped again: {cold:.4f} ms/query "
          f"for {len(hold)} held-out queries in one batch ({read_batch / 2**10:.0f} KiB per query); {warm:.4f} "
          f"warm; in the page cache, not yet mapped: {cached_single:.3f} one at a time, {cached:.4f} batched; held-out "
          f"recall {row['holdout_recall']:.4f}; load {row['load']:.2f}")  # fmt: skip
    return row


def serve_tiered(args, out: Path) -> dict:
    data = Data(args, out)
    gc.collect()
    before = memory()
    cache = {(args.first_size, True): np.load(out / "prefix.npy")}  # the first stage's input: never the memmap
    t = time.perf_counter()
    if args.cold:
        system = build_tiered(args, out, data, args.nprobe, args.shortlist, cache)
        del cache
        gc.collect()
        built = memory()
        return serve_cold(args, data, system, built["anon"] - before["anon"])
    candidates = []
    for nprobe in NPROBES:
        for i, c in enumerate(SHORTLISTS):  # noqa: B007 - i read after the loop
            _, ids = build_tiered(args, out, data, nprobe, c, cache).search(data.q[data.tune], args.k)
            recall = data.recall(data.tune, ids)
            print(f"  nprobe {nprobe}, {c} candidates: tuning recall {recall:.4f}", flush=True)
            if recall >= args.target:
                candidates.append((nprobe, c, recall))
                break
        else:
            continue
        if i == 0 or len(candidates) >= 3:
            break
    tune_s = time.perf_counter() - t
    timed = []
    for nprobe, c, recall in candidates:
        ms = fastest_ms(build_tiered(args, out, data, nprobe, c, cache), data.q[data.tune], args.k, 2)
        timed.append((ms, nprobe, c, recall))
    _, nprobe, c, recall = min(timed)
    system = build_tiered(args, out, data, nprobe, c, cache)
    del cache
    gc.collect()
    built = memory()
    subprocess.run(["cat", str(out / "full.npy")], stdout=subprocess.DEVNULL, check=True)  # the file in page cache
    load = os.getloadavg()[0]
    ms = fastest_ms(system, data.q, args.k, args.repeats)
    _, ids = system.search(data.q[data.hold], args.k)
    after = memory()
    row = {"system": "tiered", "setting": f"nprobe {nprobe}, {c} candidates", "ms_per_query": ms, "recall": recall,
           "holdout_recall": data.recall(data.hold, ids), "index_bytes": system.resident_bytes(),
           "anon_growth": built["anon"] - before["anon"], "rss_growth": after["rss"] - before["rss"],
           "file_growth": after["file"] - before["file"], "tune_seconds": tune_s, "load": load,
           "random_access": args.random_access}  # fmt: skip
    print(f"tiered ({args.first_size}-d IVF {system.index.nlist} lists, nprobe {nprobe}, {c} candidates -> "
          f"{data.full.shape[1]}-d from the memmap): {ms:.4f} ms/query warm, recall {recall:.4f} tuning / "
          f"{row['holdout_recall']:.4f} held-out; resident_bytes {mib(row['index_bytes'])}, anonymous RSS growth "
          f"{mib(row['anon_growth'])}, file pages mapped after the searches {mib(row['file_growth'])}; tuned in "
          f"{tune_s:.0f}s; load {load:.2f}")  # fmt: skip
    return row


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{args.step} {args.system or ''}: cores {os.cpu_count()}, FAISS threads {faiss.omp_get_max_threads()}, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    if args.step == "generate":
        return generate(args, out)
    if args.step == "build-hnsw":
        return build_hnsw(args, out)
    row = serve_hnsw(args, out) if args.system == "hnsw" else serve_tiered(args, out)
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


if __name__ == "__main__":
    main()
