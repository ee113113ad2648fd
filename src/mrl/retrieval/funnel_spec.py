"""A funnel as data: `Funnel` (its stages, the first stage's number format, metric and index) and `FORMATS`, the
number formats a first stage can take. Plain values: the databases, ``make index`` and the tuner read and write
them; ``Funnel(...).build(database)`` is the `AdaptiveRetriever` that runs one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mrl.retrieval.funnel import (
    METRICS,
    AdaptiveRetriever,
    check_gap,
    check_middle,
    first_stage_bytes,
    funnel_bytes,
    funnel_mflops,
)

__all__ = ["FORMATS", "FORMAT_INDEXES", "INDEX_FORMATS", "INDEX_OPTIONS", "Funnel"]

FORMATS = {"float": "flat", "int8": "int8", "bits": "binary"}  # number format of a first stage -> its exact index
INDEX_FORMATS = {index: name for name, index in FORMATS.items()}
FORMAT_INDEXES = {"float": ("flat", "hnsw", "ivf"), "int8": ("int8",), "bits": ("binary",)}  # first-stage indexes
INDEX_OPTIONS = {"hnsw": ("hnsw_m", "ef_construction", "ef_search"), "ivf": ("nlist", "nprobe", "coarse_size")}


@dataclass(frozen=True)
class Funnel:
    """A funnel as data: ``stages`` ``((size, candidates), ...)``, the first stage's number ``format`` (``float``,
    ``int8`` or ``bits``; later stages are float), the ``metric`` and the first stage's `AdaptiveRetriever`
    ``index``: by default the format's exact scan (``flat``, ``int8``, ``binary``); ``hnsw`` for a float first
    stage searched through an HNSW graph (`AdaptiveRetriever`'s defaults: M 32, efConstruction 64, efSearch the
    first stage's candidates), ``ivf`` for one through inverted lists on the prefix (AdANNS-IVF). ``options``: the
    index's settings (`INDEX_OPTIONS`: ``hnsw_m``, ``ef_construction``, ``ef_search``; ``nlist``, ``nprobe``,
    ``coarse_size``: the prefix the lists are assigned on, when not the first stage's own), a dict or pairs, kept as
    sorted pairs. ``middle``: the number format of the stages between the first and the last
    (``float``, ``fp16``, ``int8``; `AdaptiveRetriever`'s ``middle``). ``gap``: the shortlist sized per query, the
    first stage's candidates within ``gap`` of the query's k-th best first-stage score (`AdaptiveRetriever`'s
    ``shortlist_gap``; None: all of them). Printable, comparable, reusable: ``Funnel(...).build(database)`` is the
    `AdaptiveRetriever`; `to_dict` / `from_dict` round-trip through JSON (a dict without ``index``, as saved
    before HNSW first stages, is the exact scan); `spec` and `cli_args` are what ``make search`` takes."""

    stages: tuple[tuple[int, int], ...]
    format: str = "float"
    metric: str = "cosine"
    index: str | None = None  # None: the format's exact scan (FORMATS)
    options: tuple[tuple[str, int], ...] = ()
    middle: str = "float"
    gap: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple((int(m), int(c)) for m, c in self.stages))
        check_middle(self.middle, self.stages)
        object.__setattr__(self, "gap", check_gap(self.gap, self.stages, "gap"))
        if self.format not in FORMATS:
            raise ValueError(f"format={self.format!r}: expected one of {', '.join(FORMATS)}")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r}: expected one of {', '.join(METRICS)}")
        if self.index is None:
            object.__setattr__(self, "index", FORMATS[self.format])
        if self.index not in FORMAT_INDEXES[self.format]:
            valid = " or ".join(FORMAT_INDEXES[self.format])
            raise ValueError(f"index={self.index!r}: expected {valid} with format={self.format!r}")
        options = dict(self.options.items() if isinstance(self.options, dict) else self.options)
        valid = INDEX_OPTIONS.get(self.index, ())
        for key, value in options.items():
            if key not in valid or isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(
                    f"options={options!r}: index={self.index!r} takes positive integers for "
                    f"{', '.join(valid) or 'no options'}"
                )
        object.__setattr__(self, "options", tuple(sorted((k, int(v)) for k, v in options.items())))

    @property
    def k(self) -> int:
        """The most results a search can ask for: the last stage's candidates."""
        return self.stages[-1][1]

    @property
    def spec(self) -> str:
        """``"16:200,2048:10"``, the ``--funnel`` text of ``make search``."""
        return ",".join(f"{m}:{c}" for m, c in self.stages)

    def cli_args(self) -> list[str]:
        """The ``make search`` arguments that run this funnel."""
        extra = (["--middle", self.middle] if self.middle != "float" else []) + (
            ["--gap", f"{self.gap:g}"] if self.gap is not None else []
        )
        return ["--funnel", self.spec, "--index", self.index, "--metric", self.metric, *extra]

    def build(self, database: np.ndarray, **kwargs: Any) -> AdaptiveRetriever:
        """The `AdaptiveRetriever` of this funnel over ``database`` (``kwargs`` passed on)."""
        settings = {**dict(self.options), "middle": self.middle, "shortlist_gap": self.gap, **kwargs}
        return AdaptiveRetriever(database, list(self.stages), metric=self.metric, index=self.index, **settings)

    def mflops_per_query(self, n: int) -> float:
        """MFLOPs per query over ``n`` items (`funnel_mflops`); for an HNSW first stage the flat scan's count, an
        upper bound (the searched count depends on the graph: `AdaptiveRetriever.mflops_per_query`, the table's)."""
        return funnel_mflops(n, self.stages, self.index)

    def first_stage_bytes(self) -> int:
        return first_stage_bytes(self.stages[0][0], self.index, self.metric)

    def bytes_per_item(self) -> int:
        return funnel_bytes(self.stages, self.index, self.metric, middle=self.middle)

    def to_dict(self) -> dict[str, Any]:
        out = {"stages": [list(s) for s in self.stages], "format": self.format, "metric": self.metric}
        out["index"] = self.index
        if self.options:
            out["options"] = dict(self.options)
        if self.middle != "float":
            out["middle"] = self.middle
        if self.gap is not None:
            out["gap"] = self.gap
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Funnel:
        return cls(
            tuple(tuple(s) for s in data["stages"]),
            data.get("format", "float"),
            data.get("metric", "cosine"),
            data.get("index"),
            tuple((data.get("options") or {}).items()),
            data.get("middle", "float"),
            data.get("gap"),
        )

    def __str__(self) -> str:
        (m1, c1), rest = self.stages[0], self.stages[1:]
        first = f"{m1}-d {self.format}" + {"hnsw": " HNSW", "ivf": " IVF"}.get(self.index, "")
        if self.options:
            first += " (" + ", ".join(f"{_OPTION_NAMES[k]} {v}" for k, v in self.options) + ")"
        if not rest:
            return f"{first} top {c1}"
        shortlist = f"shortlist of {c1}" if self.gap is None else f"shortlist of up to {c1} within {self.gap:.3g}"
        formats = [self.middle] * (len(rest) - 1) + ["float"]
        return f"{first} {shortlist} -> " + " -> ".join(f"{m}-d {f} top {c}" for (m, c), f in zip(rest, formats))


_OPTION_NAMES = {"hnsw_m": "M", "ef_construction": "efConstruction", "ef_search": "efSearch", "nlist": "nlist",
                 "nprobe": "nprobe", "coarse_size": "lists on the first"}  # fmt: skip
