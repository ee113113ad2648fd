"""``make export``: a trained run for serving. A text run becomes a sentence-transformers directory
(:mod:`mrl.interop.sentence_transformers`), an image run a ``torch.export`` program with its preprocessing
(:mod:`mrl.interop.torch_export`).

``mrl-export RUN_DIR_OR_CKPT [--out DIR] [--truncate-dim M] [--layers K]`` (default out: ``<run>/export``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["main"]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="mrl-export",
        description="Export a trained run: a text run to a sentence-transformers "
        "directory, an image run to a torch.export program.",
    )
    parser.add_argument("run", help="a run directory (checkpoints/*.ckpt, results.json) or a .ckpt file")
    parser.add_argument("--out", default=None, help="output directory (default: <run>/export)")
    parser.add_argument(
        "--truncate-dim",
        type=int,
        default=None,
        help="text runs: default truncation of the saved model (one of the trained sizes)",
    )
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="text runs: keep the first K transformer layers (a 2D Matryoshka model, trained with model.loss.layers)",
    )
    args = parser.parse_args(argv)
    from mrl.runs import find_checkpoint, load_module, run_dir_of

    path = Path(args.run)
    checkpoint = find_checkpoint(path)
    module: Any = load_module(checkpoint)
    run_dir = run_dir_of(path if path.is_dir() else checkpoint)
    out = Path(args.out) if args.out else run_dir / "export"
    if not hasattr(module.backbone, "tokenize"):
        from mrl.evaluation.user_inputs import image_transform
        from mrl.interop.torch_export import export_image_model

        if args.truncate_dim is not None or args.layers is not None:
            raise SystemExit(
                "--truncate-dim and --layers are for text runs; an image export keeps every size (slice the output)"
            )
        export_image_model(module, image_transform(run_dir, module), out, checkpoint=str(checkpoint))
        print(
            f"exported {checkpoint} -> {out}/embedder.pt2 (sizes {list(module.sizes)}; preprocessing in "
            f"{out}/mrl_export.json; torch.export.load(...).module()(images))"
        )
        return out
    from mrl.interop.sentence_transformers import export_sentence_transformer

    export_sentence_transformer(module, out, truncate_dim=args.truncate_dim, layers=args.layers)
    print(f"exported {checkpoint} -> {out} (sizes {list(module.sizes)}; SentenceTransformer({str(out)!r}))")
    return out


if __name__ == "__main__":
    main()
