"""Per-layer sensitivity plans and the ranking built from their results.

* ``isolate``: only layer L in INT8, everything else FP32: the error L causes on its own.
* ``leave-one-out``: everything INT8 except L: how much of the all-INT8 error L accounts for.
* ``both``: the two, ranked by each layer's better rank of the two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["SENSITIVITY_MODES", "sensitivity_plans", "rank_layers", "badness"]

SENSITIVITY_MODES = ("isolate", "leave-one-out", "both")


def sensitivity_plans(names: Sequence[str], mode: str) -> list[tuple[str, frozenset[str]]]:
    """``(kind, fp32 layers)`` for every layer and kind of ``mode``, in layer order."""
    if mode not in SENSITIVITY_MODES:
        raise ValueError(f"unknown sensitivity mode {mode!r}")
    everything = frozenset(names)
    plans = []
    if mode in ("isolate", "both"):
        plans += [("isolate", everything - {name}) for name in names]
    if mode in ("leave-one-out", "both"):
        plans += [("leave-one-out", frozenset({name})) for name in names]
    return plans


def badness(kind: str, value: float, *, higher_is_better: bool) -> float:
    """How strongly a sensitivity value points at the layer (larger = more sensitive).

    ``isolate``: a worse value is more sensitive. ``leave-one-out``: a better value (pinning the layer helps)
    is more sensitive. A failed evaluation (NaN) counts as most sensitive for ``isolate``, least for the other.
    """
    if math.isnan(value):
        return math.inf if kind == "isolate" else -math.inf
    worse_is_larger = -value if higher_is_better else value
    return worse_is_larger if kind == "isolate" else -worse_is_larger


def _ranks(names: Sequence[str], values: Mapping[str, float], kind: str, higher_is_better: bool) -> dict[str, int]:
    order = sorted(
        range(len(names)), key=lambda i: (-badness(kind, values[names[i]], higher_is_better=higher_is_better), i)
    )
    return {names[i]: rank for rank, i in enumerate(order)}


def rank_layers(
    names: Sequence[str],
    *,
    isolate: Mapping[str, float] | None = None,
    leave_one_out: Mapping[str, float] | None = None,
    higher_is_better: bool = False,
) -> list[str]:
    """Layers from most to least sensitive; ties keep graph order (``names`` is in graph order)."""
    position = {name: i for i, name in enumerate(names)}
    ranks = [
        _ranks(names, values, kind, higher_is_better)
        for kind, values in (("isolate", isolate), ("leave-one-out", leave_one_out))
        if values is not None
    ]
    if not ranks:
        raise ValueError("rank_layers needs isolate or leave_one_out values")
    return sorted(names, key=lambda n: (min(r[n] for r in ranks), max(r[n] for r in ranks), position[n]))
