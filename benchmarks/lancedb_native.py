"""The funnel served from LanceDB against LanceDB's own index on the full vectors, each tuned to one recall target.

    python benchmarks/lancedb_native.py --n 100000 --dim 1024 --queries 1500 --classes 1000    # issue 26's setting
    python benchmarks/lancedb_native.py --n 5000 --dim 256 --queries 200 --kinds IVF_PQ          # quick run
    python benchmarks/lancedb_native.py --kinds IVF_FLAT,IVF_PQ --pq-sub-vectors 64,128,256      # finer PQ codes

What a LanceDB user builds without Matryoshka prefixes (`mrl.retrieval.lancedb.LanceFullWidth`, one table each):
``IVF_PQ`` on the full vectors searched with ``nprobes`` and ``refine_factor`` (the PQ shortlist re-scored on the
stored vectors), ``IVF_HNSW_SQ`` (one partition: one graph of 8-bit codes; ``ef``, ``refine_factor``) and
``IVF_FLAT`` (``nprobes``); ``--pq-sub-vectors`` builds one IVF_PQ table per number of sub-vectors, each its own
system ``ivf_pq_m<M>`` (default: one table, LanceDB's ``dim / 16``). Against it the funnel (`LanceFunnel`): LanceDB's
native ``IVF_FLAT`` index on the ``--first-size`` prefix column shortlists (``nprobes``, ``c`` candidates), the
shortlist's full vectors are taken from the same table (a second request, or ``inline`` in the shortlist's) or,
memory-tiered (``local``), read from a memmap of the full vectors in this process, and reranked in this process.

Every system is tuned the same way on 70% of the queries (seeded): its knobs raised over a ladder until recall@k
against exact search meets ``--target``; each setting that first meets it is timed, the fastest kept, and confirmed on
the held-out 30%. Then every kept system searches all queries, batched (LanceDB's multi-vector requests), fastest of
``--repeats`` interleaved rounds; and one query per request over the first ``--single`` queries (latency). Where the
time goes: the same requests on a one-row table (LanceDB's fixed cost per request and per query), and the funnel's
shortlist request alone. Build seconds, index and table bytes on disk, and the process's RSS growth at each system's
first search are in the table. The last line is the funnel's speed over the fastest tuned native index.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from mrl.retrieval import Funnel, recall_against_exact
from mrl.retrieval.lancedb import FULL_WIDTH_KINDS, LanceFullWidth, LanceFunnel, load_into_lancedb
from mrl_testing.synthetic import make_mrl_split

NPROBES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
PQ_NPROBES = (8, 12, 16, 24, 32, 48, 64, 96, 128)  # fewer probes miss too much at refine 100 (0.50 at 1, 100k)
SHORTLISTS = (20, 30, 50, 100, 200, 400)
REFINE = (None, 2, 5, 10, 20, 50, 100)
KNOBS = {"funnel": "nprobes, shortlist", "funnel inline": "nprobes, shortlist", "funnel local": "nprobes, shortlist",
         "ivf_pq": "nprobes, refine",
         "ivf_hnsw_sq": "refine, ef", "ivf_flat": "-, nprobes"}  # fmt: skip
EF = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--queries", type=int, default=1500)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--first-size", type=int, default=32, help="the funnel's prefix column")
    p.add_argument("--kinds", default="IVF_PQ,IVF_HNSW_SQ", help=f"native full-width indexes: {FULL_WIDTH_KINDS}")
    p.add_argument("--hnsw-ef-construction", type=int, default=150)
    p.add_argument("--pq-sub-vectors", type=sub_vector_list, default=None,
                   help="IVF_PQ: sub-vector counts, comma-separated, one index each (default: dim / 16)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--single", type=int, default=200, help="queries timed one per request")
    p.add_argument("--holdout", type=float, default=0.3)
    p.add_argument("--where", default=None, help="folder for the LanceDB tables (default: a temporary one)")
    args = p.parse_args(argv)
    bad = [m for m in args.pq_sub_vectors or () if args.dim % m]
    if bad:
        p.error(f"--pq-sub-vectors={bad[0]}: must divide --dim={args.dim}")
    return args


def sub_vector_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected distinct positive integers separated by commas")
    return values


def native_systems(kinds: list[str], args) -> list[tuple[str, str, dict]]:
    """``(name, kind, build options)`` of each native full-width index: one per IVF_PQ sub-vector count given."""
    out = []
    for kind in kinds:
        if kind == "IVF_PQ" and args.pq_sub_vectors:
            out += [(f"ivf_pq_m{m}", kind, {"sub_vectors": m}) for m in args.pq_sub_vectors]
        else:
            hnsw = {"ef_construction": args.hnsw_ef_construction}
            out.append((kind.lower(), kind, hnsw if kind == "IVF_HNSW_SQ" else {}))
    return out


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed(system, q: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    _, ids = system.search(q, k)
    return time.perf_counter() - t, ids


class Candidate:
    """One setting of one system: how to make it, its tuning recall, and later its timings."""

    def __init__(self, system: str, setting: str, make) -> None:
        self.system, self.setting, self.make = system, setting, make
        self.recall = self.holdout = float("nan")
        self.seconds = float("inf")


def sweep(system: str, grid, make, recall_of, tune_q, k: int, target: float, enough: int = 3) -> list[Candidate]:
    """``grid``: outer values, each with inner values raised until the target is met; the first setting meeting it
    per outer value is a candidate. The outer ladder stops where its first inner value meets the target, or after
    ``enough`` outer values met it (the later ones only cost more)."""
    found = []
    for outer, inners in grid:
        seen = []
        for i, inner in enumerate(inners):  # noqa: B007 - i read after the loop
            c = Candidate(system, f"{outer} {inner}", lambda o=outer, n=inner: make(o, n))
            _, ids = c.make().search(tune_q, k)
            c.recall = recall_of(ids)
            print(f"  {system:<12} {c.setting:<36} tuning recall {c.recall:.4f}", flush=True)
            if c.recall >= target:
                found.append(c)
                break
            seen.append(c.recall)
            if len(seen) >= 3 and seen[-1] - seen[-3] < 0.001:
                break  # a plateau: more of the inner knob buys nothing
        else:
            continue
        if i == 0 or len(found) >= enough:
            break
    return found


def knobs(system, **values):
    """``system`` with its search knobs set to ``values``."""
    for key, value in values.items():
        setattr(system, key, value)
    return system


def fastest(cands: list[Candidate], tune_q: np.ndarray, k: int) -> Candidate | None:
    for c in cands:
        system = c.make()
        system.search(tune_q[:32], k)
        c.seconds = min(timed(system, tune_q, k)[0] for _ in range(2))
    return min(cands, key=lambda c: c.seconds) if cands else None


def main(argv=None) -> dict:  # noqa: PLR0915 - one benchmark, read top to bottom
    args = parse_args(argv)
    t0 = time.perf_counter()
    db, _, q, _ = make_mrl_split(args.n, args.queries, args.dim, n_classes=args.classes, seed=args.seed)
    db /= np.linalg.norm(db, axis=1, keepdims=True)  # cosine as inner product: the same for every system
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(q))
    n_hold = int(round(args.holdout * len(q)))
    hold_q, tune_q = q[order[:n_hold]], q[order[n_hold:]]
    k, dim, fs = args.k, args.dim, args.first_size
    import lancedb

    print(f"data: {args.n} x {dim}, {len(tune_q)} tuning + {len(hold_q)} held-out queries, k={k}, "
          f"target {args.target}; LanceDB {lancedb.__version__}; cores {os.cpu_count()}; "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    where = Path(args.where or tempfile.mkdtemp(prefix="mrl_lance_native_"))
    uri = str(where / "bench.lancedb")
    builds, sizes = {}, {}
    try:
        t = time.perf_counter()
        served = Funnel(((fs, 200), (dim, k)), metric="ip")
        load_into_lancedb(db, uri, collection="funnel", first_size=fs, index="ivf", metric="ip", funnel=served,
                          batch_size=5000, progress=False)  # fmt: skip
        builds["funnel"] = time.perf_counter() - t
        sizes["funnel"] = disk_bytes(Path(uri) / "funnel.lance")
        print(f"funnel table (prefix {fs}-d IVF_FLAT, full vectors) loaded and indexed in {builds['funnel']:.1f}s")
        kinds = [s.strip() for s in args.kinds.split(",") if s.strip()]
        natives = native_systems(kinds, args)
        for name, kind, options in natives:
            t = time.perf_counter()
            load_into_lancedb(db, uri, collection=name, first_size=8, index="flat", metric="ip", batch_size=5000,
                              progress=False)  # fmt: skip
            loaded = time.perf_counter() - t
            parts = 1 if kind == "IVF_HNSW_SQ" else None
            builds[name] = LanceFullWidth(uri, name, kind).build(parts, **options)
            sizes[name] = disk_bytes(Path(uri) / f"{name}.lance")
            print(f"{name} table loaded in {loaded:.1f}s, index built in {builds[name]:.1f}s "
                  f"({LanceFullWidth(uri, name, kind).index_bytes() / 2**20:.1f} MiB index)", flush=True)  # fmt: skip
        t_tune = time.perf_counter()
        tune_recall = lambda ids: recall_against_exact(db, tune_q, ids, k)  # noqa: E731
        chosen = {}
        grid = [(p, SHORTLISTS) for p in NPROBES]
        # one object per system, its knobs set per setting: each LanceDB connection keeps its own threads
        served = LanceFunnel(uri, "funnel")
        make = lambda p, c: knobs(served, funnel=served.resolve_funnel([(fs, c), (dim, k)]), nprobe=p)  # noqa: E731
        chosen["funnel"] = fastest(sweep("funnel", grid, make, tune_recall, tune_q, k, args.target), tune_q, k)
        if chosen["funnel"] is not None:  # the same setting, the full vectors read in the shortlist's request
            p, c = (int(v) for v in chosen["funnel"].setting.split())
            inline = Candidate("funnel", chosen["funnel"].setting, lambda p=p, c=c: LanceFunnel(
                uri, "funnel", funnel=[(fs, c), (dim, k)], nprobe=p, fetch="inline"))  # fmt: skip
            chosen["funnel"].make()  # the object set back to the chosen setting
            inline.recall = chosen["funnel"].recall
            chosen["funnel inline"] = inline
            builds["funnel inline"], sizes["funnel inline"] = builds["funnel"], sizes["funnel"]
            # memory-tiered: the same shortlist, the rows read from a memmap of the full vectors in this process
            np.save(where / "full.npy", db)
            mapped = np.load(where / "full.npy", mmap_mode="r")
            local = Candidate("funnel", chosen["funnel"].setting, lambda p=p, c=c: LanceFunnel(
                uri, "funnel", funnel=[(fs, c), (dim, k)], nprobe=p, vectors=mapped))  # fmt: skip
            local.recall = chosen["funnel"].recall
            chosen["funnel local"] = local
            builds["funnel local"] = builds["funnel"]
            sizes["funnel local"] = sizes["funnel"] + (where / "full.npy").stat().st_size
        for name, kind, _ in natives:
            native = LanceFullWidth(uri, name, kind)
            if kind == "IVF_HNSW_SQ":
                grid = [(r, EF) for r in REFINE[:4]]
                make = lambda r, e, x=native: knobs(x, refine_factor=r, ef=e)  # noqa: E731
            elif kind == "IVF_PQ":
                grid = [(p, REFINE[3:]) for p in PQ_NPROBES]
                make = lambda p, r, x=native: knobs(x, nprobes=p, refine_factor=r)  # noqa: E731
            else:
                grid = [(r, NPROBES) for r in (None,)]
                make = lambda r, p, x=native: knobs(x, nprobes=p)  # noqa: E731
            chosen[name] = fastest(sweep(name, grid, make, tune_recall, tune_q, k, args.target), tune_q, k)
        print(f"tuned in {time.perf_counter() - t_tune:.0f}s")
        chosen = {name: c for name, c in chosen.items() if c is not None}
        systems, rss = {}, {}
        for name, c in chosen.items():
            before = rss_bytes()
            systems[name] = c.make()
            _, ids = systems[name].search(hold_q, k)
            c.holdout = recall_against_exact(db, hold_q, ids, k)
            rss[name] = rss_bytes() - before
        # LanceDB's fixed cost: the same requests on a one-row table (no index: a scan of one row)
        tiny = Funnel(((fs, 1), (dim, 1)), metric="ip")
        load_into_lancedb(db[:1], uri, collection="one_row", first_size=fs, metric="ip", funnel=tiny, progress=False)
        one = LanceFunnel(uri, "one_row")
        systems["one-row table, shortlist request"] = _Shortlist(one, 1)
        systems["funnel, its shortlist request alone"] = _Shortlist(systems["funnel"], None)
        load_before = os.getloadavg()[0]
        best = {name: float("inf") for name in systems}
        for name, s in systems.items():
            s.search(q[:32], k if "one-row" not in name else 1)
        for _ in range(args.repeats):
            for name, s in systems.items():
                best[name] = min(best[name], timed(s, q, k if "one-row" not in name else 1)[0])
        single = {}
        for name, s in systems.items():
            kk = k if "one-row" not in name else 1
            t = time.perf_counter()
            for i in range(min(args.single, len(q))):
                s.search(q[i : i + 1], kk)
            single[name] = (time.perf_counter() - t) / min(args.single, len(q))
        load_after = os.getloadavg()[0]
        nq = len(q)
        print(f"\n{nq} queries batched (fastest of {args.repeats}) and {min(args.single, nq)} one per request; "
              f"1-min load average {load_before:.2f} / {load_after:.2f}")  # fmt: skip
        header = (f"{'system':<36} {'setting':<22} {'ms/q batched':>12} {'ms/q single':>11} {'recall':>7} "
                  f"{'held-out':>8} {'build s':>8} {'disk MiB':>8} {'RSS+ MiB':>8}")  # fmt: skip
        print(header)
        out = {}
        for name in systems:
            c = chosen.get(name)
            ms, ms1 = 1e3 * best[name] / nq, 1e3 * single[name]
            row = {"ms_per_query": ms, "ms_single": ms1}
            if c is not None:
                row.update(setting=c.setting, recall=c.recall, holdout=c.holdout, build_seconds=builds[name],
                           disk_bytes=sizes[name], rss_growth=rss[name])  # fmt: skip
            out[name] = row
            label = {
                "funnel": f"funnel ({fs}-d IVF_FLAT -> {dim}-d), take",
                "funnel inline": "the same, inline",
                "funnel local": "the same, rows from a local memmap",
            }.get(name, name)
            knob_names = KNOBS.get(name, KNOBS.get(name.split("_m")[0], ""))
            if c is None:
                print(f"{label:<36} {'':<22} {ms:>12.4f} {ms1:>11.3f}")
                continue
            print(f"{label:<36} {c.setting:<22} {ms:>12.4f} {ms1:>11.3f} {c.recall:>7.4f} {c.holdout:>8.4f} "
                  f"{builds[name]:>8.1f} {sizes[name] / 2**20:>8.1f} {rss[name] / 2**20:>8.1f}"
                  f"   ({knob_names})")  # fmt: skip
    finally:
        if args.where is None:
            shutil.rmtree(where, ignore_errors=True)
    print(f"total {time.perf_counter() - t0:.0f}s; 1-min load average at the end {os.getloadavg()[0]:.2f}")
    native_rows = {n: r for n, r in out.items() if n in {name for name, _, _ in natives} and "setting" in r}
    funnels = {n: r for n, r in out.items() if n.startswith("funnel") and "setting" in r}
    if funnels and native_rows:
        name = min(native_rows, key=lambda n: native_rows[n]["ms_per_query"])
        fname = min(funnels, key=lambda n: funnels[n]["ms_per_query"])
        f, b = funnels[fname], native_rows[name]
        batched, single = b["ms_per_query"] / f["ms_per_query"], b["ms_single"] / f["ms_single"]
        print(f"LanceDB {fname} vs LanceDB's fastest tuned native full-width index ({name.upper()}) at recall@{k} >= "
              f"{args.target}: {batched:.2f}x batched, {single:.2f}x one query per request ({f['ms_per_query']:.4f} "
              f"against {b['ms_per_query']:.4f} ms/query; held-out recall {f['holdout']:.4f} against "
              f"{b['holdout']:.4f})")  # fmt: skip
    else:
        print(f"LanceDB funnel vs native full-width index at recall@{k} >= {args.target}: not measured")
    return out


class _Shortlist:
    """A funnel's first-stage request alone (``candidates``: its own shortlist when None), searchable like a funnel."""

    def __init__(self, funnel: LanceFunnel, candidates: int | None) -> None:
        self.funnel, self.candidates = funnel, candidates

    def search(self, q: np.ndarray, k: int):
        return self.funnel.shortlist(q, self.candidates)


if __name__ == "__main__":
    main()
