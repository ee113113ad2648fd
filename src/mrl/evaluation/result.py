"""What one evaluation measured: the object the runner returns and every renderer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SplitCount:
    """A split and how many examples it holds (the retrieval database, the queries)."""

    split: str
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "count": self.count}


@dataclass
class EvaluationResult:
    """Per-size metrics (``eval/{name}@{m}``) and the tables of one evaluated checkpoint.

    ``head`` is the classifier's head kind; a text run (no head) leaves it None and has per-size metrics
    only, so its ``results.json`` holds just ``checkpoint``, ``sizes``, ``metrics``, ``layer_grid`` (the
    (layers, size) grid, :mod:`mrl.evaluation.layer_grid`; empty without one) and ``output_dir``.
    """

    checkpoint: str
    sizes: list[int]
    metrics: dict[str, float]
    head: str | None = None
    embed_dim: int | None = None
    head_sizes: list[int] = field(default_factory=list)
    tta: bool = False
    database: SplitCount | None = None  # None: head accuracy only, no retrieval
    queries: SplitCount | None = None
    only_present_classes: bool = False
    adaptive_classification: list[dict] = field(default_factory=list)  # one row per cascade tolerance
    funnel_retrieval: list[dict] = field(default_factory=list)  # one row per funnel, exact search first
    tuned_funnels: list[dict] = field(default_factory=list)  # one row per recall target: the funnel tuned to it
    funnel_tuning: list[dict] = field(default_factory=list)  # every funnel the tuning tried (recall, cost)
    storage: list[dict] = field(default_factory=list)  # one row per (size, dtype)
    layer_grid: list[dict] = field(default_factory=list)  # text: one row per (layer count, size)
    output_dir: str | None = None  # where the renderers wrote it

    @property
    def is_text(self) -> bool:
        return self.head is None

    def to_dict(self) -> dict[str, Any]:
        """The content of ``results.json``."""
        if self.is_text:
            return {
                "checkpoint": self.checkpoint,
                "sizes": list(self.sizes),
                "metrics": dict(self.metrics),
                "layer_grid": self.layer_grid,
                "output_dir": self.output_dir,
            }
        return {
            "checkpoint": self.checkpoint,
            "head": self.head,
            "embed_dim": self.embed_dim,
            "head_sizes": list(self.head_sizes),
            "tta": self.tta,
            "sizes": list(self.sizes),
            "database": self.database.to_dict() if self.database else None,
            "only_present_classes": self.only_present_classes,
            "queries": self.queries.to_dict() if self.queries else None,
            "metrics": dict(self.metrics),
            "adaptive_classification": self.adaptive_classification,
            "funnel_retrieval": self.funnel_retrieval,
            "tuned_funnels": self.tuned_funnels,
            "funnel_tuning": self.funnel_tuning,
            "storage": self.storage,
            "output_dir": self.output_dir,
        }
