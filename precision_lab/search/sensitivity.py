"""Per-layer sensitivity kinds, and the ranking built from their results.

Each kind is one entry of :data:`SENSITIVITY_KINDS`: how to make its plan for a layer, and which way its value
points at the layer.

* ``isolate``: only layer L at the level's base precision (INT8), everything else raised (FP32): the error L
  causes on its own. A worse value is more sensitive.
* ``leave-one-out``: everything at the base precision except L: how much of the whole error L accounts for. A
  better value (raising L helps) is more sensitive.

The mode ``both`` measures the two and ranks each layer by its better rank of the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from precision_lab.precisions import BINARY, Level, PrecisionPlan

__all__ = ["SENSITIVITY_KINDS", "SENSITIVITY_MODES", "SensitivityKind", "sensitivity_plans", "rank_layers", "badness"]


@dataclass(frozen=True)
class SensitivityKind:
    """A sensitivity measurement: ``plan(layer, names, level, start)`` and whether a worse value means a more
    sensitive layer (``worse_is_sensitive``)."""

    name: str
    plan: Callable[[str, Sequence[str], Level, PrecisionPlan], PrecisionPlan]
    worse_is_sensitive: bool


SENSITIVITY_KINDS: dict[str, SensitivityKind] = {
    kind.name: kind
    for kind in (
        SensitivityKind(
            "isolate", lambda layer, names, level, start: start.with_precision(set(names) - {layer}, level.raised), True
        ),
        SensitivityKind(
            "leave-one-out", lambda layer, names, level, start: start.with_precision([layer], level.raised), False
        ),
    )
}
SENSITIVITY_MODES: dict[str, tuple[str, ...]] = {
    "isolate": ("isolate",),
    "leave-one-out": ("leave-one-out",),
    "both": ("isolate", "leave-one-out"),
}


def sensitivity_plans(
    names: Sequence[str], mode: str, *, level: Level = BINARY, start: PrecisionPlan = PrecisionPlan()
) -> list[tuple[str, str, PrecisionPlan]]:
    """``(kind, layer, plan)`` for every kind of ``mode`` and every layer, in layer order."""
    if mode not in SENSITIVITY_MODES:
        raise ValueError(f"unknown sensitivity mode {mode!r}")
    return [
        (kind, name, SENSITIVITY_KINDS[kind].plan(name, names, level, start))
        for kind in SENSITIVITY_MODES[mode]
        for name in names
    ]


def badness(kind: str, value: float, *, higher_is_better: bool) -> float:
    """How strongly a sensitivity value points at the layer (larger = more sensitive). A failed evaluation
    (NaN) counts as most sensitive for a kind where worse is sensitive, least for the others."""
    worse_is_sensitive = SENSITIVITY_KINDS[kind].worse_is_sensitive
    if math.isnan(value):
        return math.inf if worse_is_sensitive else -math.inf
    worse_is_larger = -value if higher_is_better else value
    return worse_is_larger if worse_is_sensitive else -worse_is_larger


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
    scores: Mapping[str, Mapping[str, float]] | None = None,
) -> list[str]:
    """Layers from most to least sensitive; ties keep graph order (``names`` is in graph order). ``scores``
    maps kind -> layer -> value (``isolate`` and ``leave_one_out`` are shorthands for two kinds)."""
    kinds = dict(scores or {})
    if isolate is not None:
        kinds["isolate"] = isolate
    if leave_one_out is not None:
        kinds["leave-one-out"] = leave_one_out
    if not kinds:
        raise ValueError("rank_layers needs the values of at least one sensitivity kind")
    position = {name: i for i, name in enumerate(names)}
    ranks = [_ranks(names, values, kind, higher_is_better) for kind, values in kinds.items()]
    return sorted(names, key=lambda n: (min(r[n] for r in ranks), max(r[n] for r in ranks), position[n]))
