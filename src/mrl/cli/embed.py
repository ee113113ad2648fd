"""``make embed``: embeddings of your own images or texts from a trained run, at the size you choose
(:mod:`mrl.embedding` says what is read and what the ``.npz`` holds).

``mrl-embed RUN_OR_CKPT INPUT [--out FILE.npz] [--dim M] [--normalize] [--dtype fp16]``
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from mrl.common.errors import exit_on_config_error
from mrl.embedding import embed_inputs

__all__ = ["command", "main"]


def command(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse, embed and print the summary; returns the written file's meta (for callers in Python)."""
    parser = argparse.ArgumentParser(prog="mrl-embed", description=__doc__.splitlines()[0].strip("`: "))
    parser.add_argument("run", help="a run directory, or a .ckpt file inside a run's checkpoints/")
    parser.add_argument("input", help="images: a folder or a list file; texts: a .txt file or a table")
    parser.add_argument("--out", default=None, help="the .npz to write (default: <run>/embed/<input>_<dim>d.npz)")
    parser.add_argument("--dim", type=int, default=None, help="keep the first DIM coordinates (default: all)")
    parser.add_argument(
        "--normalize", action="store_true", help="L2-normalise each kept prefix (for dot-product search)"
    )
    parser.add_argument("--dtype", default="fp32", help="fp32 or fp16 (half the file)")
    parser.add_argument("--column", default="text", help="the table column holding the texts (default: text)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for decoding images")
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or fp16 (autocast)")
    parser.add_argument(
        "--reference",
        nargs="?",
        const="auto",
        default=None,
        metavar="KIND",
        help="RUN is an official RAIVNLab/MRL ResNet-50 file, read with ImageNet's evaluation "
        "preprocessing; KIND (mrl, mrl_e, ff, standard) checks or sets its head",
    )
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("mrl").addHandler(handler)
    logging.getLogger("mrl").setLevel(logging.INFO)
    meta = exit_on_config_error(
        lambda: embed_inputs(
            args.run,
            args.input,
            out=args.out,
            dim=args.dim,
            normalize=args.normalize,
            dtype=args.dtype,
            column=args.column,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=args.device,
            precision=args.precision,
            reference=args.reference,
        )
    )
    print(
        f"{meta['count']} {meta['kind']} embeddings of {meta['dim']} dimensions -> {meta['output']}"
        + (f" ({len(meta['skipped'])} unreadable left out)" if meta["skipped"] else "")
    )
    return meta


def main(argv: list[str] | None = None) -> None:
    """The console script: exits 0 on success (``sys.exit(main())``), 1 with one line on a user's mistake."""
    command(argv)


if __name__ == "__main__":
    main()
