"""``make export``: a trained run for serving. A text run becomes a sentence-transformers directory
(:mod:`mrl.interop.sentence_transformers`), an image run a ``torch.export`` program with its preprocessing
(:mod:`mrl.interop.torch_export`).

``mrl-export RUN_DIR_OR_CKPT [--out DIR] [--truncate-dim M] [--layers K]`` (default out: ``<run>/export``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mrl.common.door import require_writable
from mrl.common.errors import ConfigError, exit_on_config_error
from mrl.embedding import image_transform
from mrl.interop.sentence_transformers import export_sentence_transformer
from mrl.interop.torch_export import export_image_model
from mrl.runs import find_checkpoint, load_module, run_dir_of

__all__ = ["command", "main"]


def _parser() -> argparse.ArgumentParser:
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
    return parser


def export(run: str, out: str | None = None, truncate_dim: int | None = None, layers: int | None = None) -> Path:
    """Export ``run`` (a run directory or a checkpoint) into ``out``; returns the output folder. The options and
    the output folder are checked before the export starts."""
    path = Path(run)
    checkpoint = find_checkpoint(path)
    run_dir = run_dir_of(path if path.is_dir() else checkpoint)
    target = require_writable(Path(out) if out else run_dir / "export", "out", folder=True)
    module: Any = load_module(checkpoint)
    sizes = [int(m) for m in module.sizes]
    if not hasattr(module.backbone, "tokenize"):
        if truncate_dim is not None or layers is not None:
            key, value = ("truncate_dim", truncate_dim) if truncate_dim is not None else ("layers", layers)
            raise ConfigError(
                key,
                value,
                "--truncate-dim and --layers are for text runs; an image export keeps every size "
                f"{sizes} (slice the output)",
            )
        export_image_model(module, image_transform(run_dir, module), target, checkpoint=str(checkpoint))
        print(
            f"exported {checkpoint} -> {target}/embedder.pt2 (sizes {sizes}; preprocessing in "
            f"{target}/mrl_export.json; torch.export.load(...).module()(images))"
        )
        return target
    if truncate_dim is not None and truncate_dim not in sizes:
        raise ConfigError("truncate_dim", truncate_dim, f"expected one of the trained sizes {sizes}")
    export_sentence_transformer(module, target, truncate_dim=truncate_dim, layers=layers)
    print(f"exported {checkpoint} -> {target} (sizes {sizes}; SentenceTransformer({str(target)!r}))")
    return target


def command(argv: list[str] | None = None) -> Path:
    """Parse and export; returns the output folder (for callers in Python). A user's mistake ends the process with
    one line (exit 1)."""
    args = _parser().parse_args(argv)
    return exit_on_config_error(lambda: export(args.run, args.out, args.truncate_dim, args.layers))


def main(argv: list[str] | None = None) -> None:
    """The console script: exits 0 on success (``sys.exit(main())``), 1 with one line on a user's mistake."""
    command(argv)


if __name__ == "__main__":
    main()
