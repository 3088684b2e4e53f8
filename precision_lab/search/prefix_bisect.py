"""Polygraphy ``debug precision --mode bisect`` as a strategy: the shortest prefix (or suffix) of the graph order
left in high precision, for the peers table. Not 1-minimal.

Semantics copied from Polygraphy's ``BisectMarker`` (``polygraphy/tools/debug/subtool/precision.py``): ``good``
starts at N + 1 ("marking every layer is good") and ``bad`` at 0; the first iteration marks all N layers; after a
passing iteration ``good`` takes its count and the next count is ``floor((good + bad) / 2)``, after a failing one
``bad`` takes it and the next is ``ceil((good + bad) / 2)``; it stops when the count repeats or
``|good - bad| <= 1``, and the answer is the first (``forward``) or last (``reverse``) ``good`` layers.

Differences from Polygraphy, all in what is marked, not in the bisection: the layers are precision-lab's
candidates in graph order (Polygraphy walks every TensorRT layer, and skips constants and non-activation
outputs); like every strategy here, the all-INT8 plan is evaluated first (Polygraphy assumes it fails), so an
all-INT8 model that passes gives the empty plan. The only proof kept is the boundary layer's (the prefix one
shorter fails); the other layers are unproven.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

from precision_lab.precisions import BINARY, Level, PrecisionPlan
from precision_lab.search.base import Outcome, Strategy
from precision_lab.search.minimal import MinimalPlan, baseline_step

__all__ = ["DIRECTIONS", "prefix_bisect_search"]

EVERY_LAYER_AT_BASE = PrecisionPlan()
"""The default start plan: no layer named, so every layer at the level's base precision (INT8)."""

DIRECTIONS = ("forward", "reverse")


def prefix_bisect_search(
    names: Sequence[str],
    *,
    direction: str = "forward",
    level: Level = BINARY,
    start: PrecisionPlan = EVERY_LAYER_AT_BASE,
) -> Strategy[MinimalPlan]:
    """Polygraphy's bisection over ``names`` (graph order): the fewest first (``direction`` ``forward``,
    default) or last (``reverse``) layers raised to ``level.raised`` that pass."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {', '.join(DIRECTIONS)}")
    names = list(names)
    (all_int8, all_fp32), verdict = yield from baseline_step(names, level, start)
    if verdict is not None:
        return verdict
    n = len(names)

    def marked(count: int) -> list[str]:
        return names[:count] if direction == "forward" else names[n - count:]

    plan_of = partial(level.apply, start)
    outcomes: dict[int, Outcome] = {0: all_int8, n: all_fp32}
    good, bad, count = n + 1, 0, n
    while True:
        if count not in outcomes:
            (outcomes[count],) = yield [plan_of(marked(count))]
        if outcomes[count].passed:
            good, rounding = count, math.floor
        else:
            bad, rounding = count, math.ceil
        previous, count = count, int(rounding((good + bad) / 2.0))
        if previous == count or abs(good - bad) <= 1 or count > n:
            break
    pinned = marked(good)
    boundary = pinned[-1] if direction == "forward" else pinned[0]
    evidence = {boundary: outcomes[good - 1]} if good - 1 in outcomes and not outcomes[good - 1].passed else {}
    return MinimalPlan("found", tuple(pinned), outcomes[good], all_int8, all_fp32, evidence, tuple(names))
