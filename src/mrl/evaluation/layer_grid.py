"""The (layers, size) grid of a text run: its metrics with the encoder cut to its first k transformer layers
(2D Matryoshka, ``model.loss.layers``), at every size.

``layers=`` of conf/eval.yaml chooses the rows: null (every layer for a run trained with ``model.loss.layers``,
none otherwise), ``all``, a list of layer counts, or ``[]`` (none). The full model is always the last row, so each
row's cost (``k / L`` of the transformer layers; the embedding lookup and pooling are negligible) reads against
it. Metrics of an earlier layer k are keyed ``eval/layer{k}/{name}@{m}`` (as validation's
``val/layer{k}/mrr@10@{m}``); the full model's are the plain ``eval/{name}@{m}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

VALID = (
    "expected all, a list of layer counts (e.g. [2, 4, 6]), [] for none, or null (every layer for a run trained "
    "with model.loss.layers)"
)
HEADLINE = ("mrr@10", "spearman")  # the grid's summary.md table shows the first of these the run has


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return f"layers={value!r}" if isinstance(value, str) else f"layers={value}"


def check_layers(value: Any) -> Any:
    """``value`` if it is a valid ``layers=`` setting, else a one-line ValueError naming it."""
    if value is None or value == "all":
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if all(v >= 1 for v in value):
            return value
    raise ValueError(f"{_show(value)}: {VALID}")


def layer_counts(setting: Any, module: Any, eval_kind: str | None) -> list[int]:
    """The layer counts to measure, ascending and ending with the full model's ``L``; ``[]`` for no grid.

    ``setting`` is the checked ``layers=`` value, ``eval_kind`` the data's (``pairs``, ``scored``,
    ``classification``; None for a classifier run, which has no grid)."""
    if setting is not None and not setting:
        return []  # layers=[]
    asked = setting is not None
    if not asked and getattr(module, "layers", None) is None:
        return []  # null, for a run trained without model.loss.layers
    if eval_kind is None or hasattr(module, "head"):
        raise ValueError(
            f"{_show(setting)}: the (layers, size) grid is measured for text embedding runs (sentence pairs or scored "
            f"pairs); this run is a classifier ({type(module).__name__}); leave layers=null"
        )
    backbone = getattr(module, "backbone", None)
    if not callable(getattr(backbone, "forward_layers", None)):
        raise ValueError(
            f"{_show(setting)}: per-layer embeddings need a transformer backbone with forward_layers "
            f"(mrl.backbones.HFTextEncoder); {type(backbone).__name__} has none; leave layers=null"
        )
    if eval_kind == "classification":
        if not asked:
            return []  # a 2D run evaluated on labelled sentences: no text metrics, no grid
        raise ValueError(
            f"{_show(setting)}: the evaluation data are labelled sentences, which give no text metrics to grid; "
            "evaluate on sentence pairs or scored pairs (data=...), or leave layers=null"
        )
    total = int(backbone.num_layers)
    if setting is None or setting == "all":
        return list(range(1, total + 1))
    outside = [k for k in setting if k > total]
    if outside:
        raise ValueError(
            f"{_show(setting)}: layer {outside[0]} is beyond this model's {total} transformer layers; give counts "
            f"in 1..{total}, all, [] or null"
        )
    return sorted({*setting, total})


def layer_key(layer: int, total: int, name: str) -> str:
    """The metric key of ``name`` (e.g. ``mrr@10@8``) at ``layer`` of ``total``: plain for the full model."""
    return f"eval/{name}" if layer == total else f"eval/layer{layer}/{name}"


def grid_rows(metrics: dict[str, float], layers: Sequence[int], sizes: Sequence[int]) -> list[dict]:
    """One row per (layer count, size): ``layers``, ``relative_cost`` (k / L), ``size`` and every metric family
    the full model has at that size (``mrr@10``, ``ndcg@10``, ``recall@k`` or ``spearman``)."""
    if not layers:
        return []
    total = layers[-1]
    families = sorted({k[len("eval/") :].rsplit("@", 1)[0] for k in metrics if k.count("/") == 1 and "@" in k})
    rows = []
    for layer in layers:
        for m in sizes:
            values = {f: metrics.get(layer_key(layer, total, f"{f}@{m}")) for f in families}
            rows.append({"layers": layer, "relative_cost": layer / total, "size": m, **values})
    return rows


def headline(rows: Sequence[dict]) -> str | None:
    """The family the summary's grid shows: MRR@10 for sentence pairs, Spearman for scored pairs."""
    return next((name for name in HEADLINE if rows and name in rows[0]), None)
