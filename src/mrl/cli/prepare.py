"""``make prepare``: an ImageNet-layout image folder into litdata shards that ``data=image_shards`` trains from.

``mrl-prepare SRC OUT [--max-side 512] [--quality 90] [--raw-fraction 0.0] [--workers N] [--splits train,val]``
``mrl-prepare --verify OUT``

SRC holds ``train/<class>/<image>`` and ``val/<class>/<image>`` (and optionally ``test/``). Each split becomes
``OUT/<split>/`` (see :mod:`mrl.data.image.shard_writer`): images resized so their longest side is at most
``--max-side``, re-encoded as JPEG at ``--quality`` where they had to change, a ``--raw-fraction`` share stored
as raw pixels (no decoding when training, more disk). Unreadable images are skipped and listed in
``OUT/<split>/skipped.txt``. A rerun skips the splits that finished and resumes an interrupted one.
``--verify`` decodes every item and checks the counts.
"""

from __future__ import annotations

import argparse
import sys

from mrl.common.errors import exit_on_config_error
from mrl.data.image.shard_writer import prepare, verify

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mrl-prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("src", nargs="?", help="image folder in the ImageNet layout (train/<class>/<image>, val/...)")
    p.add_argument("out", nargs="?", help="output folder for the shards")
    p.add_argument("--verify", metavar="OUT", help="decode every item of the shards in OUT and check the counts")
    p.add_argument("--max-side", type=int, default=512, help="longest side of the stored images (default 512)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of re-encoded images (default 90)")
    p.add_argument("--raw-fraction", type=float, default=0.0, help="share of images stored as raw pixels (0..1)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: every available core)")
    p.add_argument("--splits", default=None, help="comma-separated split folders (default: train,val,test found)")
    p.add_argument("--chunk-bytes", default="64MB", help="size of each shard file (default 64MB)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    if args.verify:
        report = verify(args.verify, progress=not args.quiet)
        bad = sum(r["bad"] for r in report.values())
        for split, r in report.items():
            print(f"{split}: {r['images']} items, {r['bad']} that do not decode, {r['skipped']} skipped when prepared")
        if bad:
            raise ValueError(f"verify={args.verify}: {bad} item(s) do not decode; prepare again into a new folder")
        print("verify: ok")
        return report
    if not args.src or not args.out:
        raise ValueError("src=: give SRC (an image folder) and OUT (the shard folder), or --verify OUT")
    splits = [s for s in args.splits.split(",") if s] if args.splits else None
    summary = prepare(
        args.src,
        args.out,
        splits=splits,
        max_side=args.max_side,
        quality=args.quality,
        raw_fraction=args.raw_fraction,
        workers=args.workers,
        chunk_bytes=args.chunk_bytes,
        progress=not args.quiet,
    )
    for split, s in summary.items():
        print(f"{split}: {s['images']} images, {s['skipped']} skipped")
    print(f"prepared {args.out}; train with data=image_shards data.root={args.out}")
    return summary


def main(argv: list[str] | None = None) -> None:
    exit_on_config_error(lambda: run(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
