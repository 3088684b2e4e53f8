"""Fast search: a verified 1-minimal plan without a full per-layer sweep.

The ordering comes from one-pass signals (:mod:`precision_lab.signals`); then, round by round, bisection over
the remaining layers finds the shortest prefix that passes together with the layers pinned so far; its last
layer is needed and is pinned. Rounds repeat until the pinned set passes; the same pruning passes as the full
search then prove 1-minimality. For k needed layers among N this costs about k * (ceil(log2 N) + 2) + 2
evaluations, against N + O(log N) for the full search.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from precision_lab.precisions import BINARY, Level, PrecisionPlan
from precision_lab.search.base import Outcome, Strategy
from precision_lab.search.minimal import MinimalPlan, baseline_step, prune

__all__ = ["fast_plan_search"]


def fast_plan_search(
    order: Sequence[str],
    *,
    level: Level = BINARY,
    start: PrecisionPlan = PrecisionPlan(),
    baselines: tuple[Outcome, Outcome] | None = None,
) -> Strategy[MinimalPlan]:
    """Search over ``order`` (most suspicious first) for a verified, 1-minimal plan."""
    order = list(order)
    (all_int8, all_fp32), verdict = yield from baseline_step(order, level, start, baselines)
    if verdict is not None:
        return verdict
    plan_of = partial(level.apply, start)

    pinned: list[str] = []
    current: Outcome = all_int8
    while not current.passed:
        rest = [name for name in order if name not in pinned]
        failing, passing = 0, len(rest)  # pinned + rest[:failing] fails, pinned + rest[:passing] passes
        while passing - failing > 1:
            middle = (failing + passing) // 2
            (outcome,) = yield [plan_of(pinned + rest[:middle])]
            if outcome.passed:
                passing = middle
            else:
                failing = middle
        pinned.append(rest[passing - 1])
        (current,) = yield [plan_of(pinned)]

    evidence: dict[str, Outcome] = {}
    plan, best = yield from prune(pinned, current, evidence, level=level, start=start)
    return MinimalPlan("found", tuple(plan), best, all_int8, all_fp32, {n: evidence[n] for n in plan}, tuple(order))
