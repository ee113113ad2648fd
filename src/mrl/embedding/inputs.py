"""What ``make embed`` reads: the image files of a folder or a list file, the texts of a ``.txt`` file or a table,
and the datasets that hand them to a DataLoader."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from mrl.common.errors import InputError
from mrl.data.image.folder import BAD_IMAGE_ERRORS, iter_images
from mrl.data.text.tables import FILE_TYPES, read_table

__all__ = ["ImageFiles", "TokenizeTexts", "list_images", "read_texts"]


def list_images(source: str | Path) -> tuple[list[Path], list[str]]:
    """(paths, ids) of the images in a folder (recursively, sorted) or named by a list file."""
    source = Path(source).expanduser()
    if source.is_dir():
        paths = sorted(Path(p) for p in iter_images(str(source)))
        ids = [p.relative_to(source).as_posix() for p in paths]
    elif source.is_file():
        paths, ids = listed_images(source)
    else:
        raise FileNotFoundError(f"input={str(source)!r}: no such folder or list file")
    if not paths:
        raise FileNotFoundError(f"input={str(source)!r}: no image files in it (.jpg, .png, .webp, ...)")
    return paths, ids


def listed_images(source: Path) -> tuple[list[Path], list[str]]:
    """(paths, ids) of the images a list file names, one per line (relative paths from the list's folder); every
    one must exist."""
    lines = [line.strip() for line in source.read_text().splitlines() if line.strip()]
    paths = [
        Path(line).expanduser() if Path(line).expanduser().is_absolute() else source.parent / line for line in lines
    ]
    missing = [line for line, path in zip(lines, paths) if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"input={str(source)!r}: {len(missing)} listed file(s) do not exist, "
            f"e.g. {missing[0]!r} (relative paths are read from the list's folder)"
        )
    return paths, lines


def read_texts(source: str | Path, column: str = "text") -> list[str]:
    """The texts of a ``.txt`` file (one per line, see :func:`text_lines`) or of a table's ``column``."""
    path = Path(source).expanduser()
    if path.is_dir():
        raise ValueError(
            f"input={str(source)!r}: a folder, but this run is a text model, which embeds a .txt file "
            "or a table; for images give an image model's run (RUN=...)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"input={str(source)!r}: no such file (a text model embeds a .txt file or a table)")
    if path.suffix.lower() in FILE_TYPES:
        texts = table_texts(path, column, source)
    else:
        texts = text_lines(path, source)
    if not texts:
        raise InputError("input", source, "no texts in it")
    return texts


def text_lines(path: Path, source: str | Path) -> list[str]:
    """One text per line, so that row i of the output is line i+1. A blank line inside the file is refused (it
    would either shift every later row or embed an empty text nobody meant); blank lines at the end are dropped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    blank = next((number for number, line in enumerate(lines, 1) if not line.strip()), None)
    if blank is not None:
        raise InputError(
            "input",
            source,
            f"line {blank} is blank; every line is one text and output row i is line i+1, so remove the line "
            "or give it a text",
        )
    return lines


def table_texts(path: Path, column: str, source: str | Path) -> list[str]:
    """The ``column`` of the table at ``path`` (``source`` as the user gave it), every row a text."""
    rows = read_table(str(path), key="input")
    if not rows:
        raise ValueError(f"input={str(source)!r}: the table has no rows")
    if column not in rows[0]:
        columns = ", ".join(map(str, rows[0]))
        raise ValueError(f"column={column!r}: not a column of {path.name}; its columns are {columns}")
    texts = [row[column] for row in rows]
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise ValueError(f"column={column!r}: row {bad} of {path.name} holds {texts[bad]!r}, not a text")
    return texts


class ImageFiles(Dataset):
    """``(image, index)`` per file; an unreadable file gives ``(blank, -1)`` so it can be left out afterwards."""

    def __init__(self, paths: Sequence[Path], transform: Callable) -> None:
        self.paths, self.transform = list(paths), transform
        self.blank = transform(Image.new("RGB", (32, 32)))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            with open(self.paths[index], "rb") as handle:
                image = Image.open(handle)
                image.load()
            return self.transform(image), index
        except BAD_IMAGE_ERRORS:
            return self.blank, -1


class TokenizeTexts:
    """Collate ``(text, index)`` pairs into ``(tokenizer features, indices)``."""

    def __init__(self, tokenize: Callable) -> None:
        self.tokenize = tokenize

    def __call__(self, items: list[tuple[str, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        texts, indices = zip(*items)
        return self.tokenize(list(texts)), torch.tensor(indices)
