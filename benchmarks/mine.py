"""Hard-negative mining: ``mrl-mine``'s path (every unique text embedded once, longest first, packed batches;
the prefix funnel with exact cosine at full width last) against sentence-transformers'
``util.mine_hard_negatives`` on the same pairs, the same all-MiniLM-L6-v2, the same settings, in one process.

Prints the time of each (embedding and search apart for ours), the ratio, and how many of our negatives equal
the exact search's choice (the same embeddings searched exactly at full width).

Corpus (offline, real): the Python reference's (sentence, next sentence) pairs (``python_docs_pairs``) and the
standard library's (query, docstring) pairs (``python_query_pairs``); ``--n`` caps the pairs; ``--corpus`` adds
that many docstring paragraphs (the standard library's sources, then the installed packages') as candidate negatives.

    python benchmarks/mine.py [--n PAIRS] [--corpus 20000] [--threads 2] [--batch-size 128] [--max-length 128]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def corpus_pairs(n: int | None) -> list[tuple[str, str]]:
    from mrl.data.text.corpus import python_docs_pairs, python_query_pairs

    pairs = python_docs_pairs() + python_query_pairs()
    return pairs if n is None else pairs[:n]


def docstring_paragraphs(limit: int) -> list[str]:
    """Paragraphs (40-1000 characters) of the docstrings in the standard library's own sources, then in the
    installed packages' (the virtual environment's site-packages), sorted paths, until ``limit``."""
    import ast
    import sysconfig
    from pathlib import Path

    out: dict[str, None] = {}
    stdlib = sorted(p for p in Path(sysconfig.get_paths()["stdlib"]).rglob("*.py") if "site-packages" not in p.parts)
    for path in stdlib + sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.py")):
        if "test" in path.parts or "tests" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                for para in (doc or "").split("\n\n"):
                    para = " ".join(para.split())
                    if 40 <= len(para) <= 1000:
                        out[para] = None
        if len(out) >= limit:
            break
    return list(out)[:limit]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="at most N pairs (default: all of them)")
    parser.add_argument("--corpus", type=int, default=20000, help="extra corpus texts: docstring paragraphs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text, both sides")
    parser.add_argument("--num-negatives", type=int, default=3)
    parser.add_argument("--range-min", type=int, default=0)
    parser.add_argument("--relative-margin", type=float, default=0.05)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from mrl.backbones import default_minilm_path
    from mrl.cli.mine import embed_unique, load_encoder
    from mrl.retrieval.mining import MiningSettings, mine, mining_problem

    torch.set_num_threads(args.threads)
    pairs = corpus_pairs(args.n)
    anchors, positives = [a for a, _ in pairs], [p for _, p in pairs]
    extra = docstring_paragraphs(args.corpus) if args.corpus else []
    problem = mining_problem(anchors, positives, extra)
    texts = list(dict.fromkeys(problem.queries + problem.corpus))
    print(
        f"{len(pairs)} pairs: {len(problem.queries)} queries, corpus of {len(problem.corpus)}, "
        f"{len(texts)} unique texts; {args.threads} threads, batch {args.batch_size}, max_length {args.max_length}"
    )
    kw = {"num_negatives": args.num_negatives, "range_min": args.range_min, "relative_margin": args.relative_margin}

    st = SentenceTransformer(default_minilm_path(), device="cpu")
    st.max_seq_length = args.max_length
    began = time.perf_counter()
    reference = mine_hard_negatives(
        Dataset.from_dict({"anchor": anchors, "positive": positives}),
        st,
        corpus=extra or None,
        batch_size=args.batch_size,
        use_faiss=True,
        verbose=False,
        **kw,
    )
    st_s = time.perf_counter() - began
    del st

    encode, tokenize, device = load_encoder(None, None, max_length=args.max_length, device="cpu")
    began = time.perf_counter()
    z = embed_unique(texts, encode, tokenize, batch_size=args.batch_size, device=device)
    embedded = time.perf_counter()
    where = {t: i for i, t in enumerate(texts)}
    q, c = z[[where[t] for t in problem.queries]], z[[where[t] for t in problem.corpus]]
    settings = MiningSettings(**kw)
    ours = mine(q, c, problem, settings)
    ours_s = time.perf_counter() - began
    search_s = time.perf_counter() - embedded
    exact = mine(q, c, problem, settings, funnel="exact")
    found = (ours.ids >= 0) | (exact.ids >= 0)
    agreement = float((ours.ids == exact.ids)[found].mean())
    sweep = {}
    for first in (48, 96, 192):
        for shortlist in (200, 1000):
            other = mine(q, c, problem, settings, funnel=[(first, shortlist), (q.shape[1], 1)])
            sweep[f"{first}d x {shortlist}"] = float((other.ids == exact.ids)[found].mean())
    print("agreement with exact search per funnel (prefix x shortlist):", {k: round(v, 4) for k, v in sweep.items()})
    triplets = int((ours.ids >= 0).sum(1).repeat([len(p) for p in problem.positive_ids]).sum())
    result = {
        "pairs": len(pairs),
        "texts": len(texts),
        "st_s": st_s,
        "ours_s": ours_s,
        "ours_embed_s": embedded - began,
        "ours_search_s": search_s,
        "ratio": st_s / ours_s,
        "agreement": agreement,
        "st_triplets": len(reference),
        "our_triplets": triplets,
        "funnel": ours.funnel,
        "agreement_per_funnel": sweep,
    }
    print(
        f"sentence-transformers mine_hard_negatives (FAISS flat): {st_s:.1f} s, {len(reference)} triplets\n"
        f"mrl-mine: {ours_s:.1f} s (embedding {result['ours_embed_s']:.1f} s, funnel {ours.funnel} "
        f"{search_s:.2f} s), {triplets} triplets\n"
        f"ratio {result['ratio']:.2f}x faster; agreement with exact search {agreement:.4f}"
    )
    assert np.isfinite(ours_s)
    return result


if __name__ == "__main__":
    main()
