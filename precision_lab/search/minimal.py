"""The minimal-plan search (DESIGN section 2).

1. Baselines: all-INT8 (passes -> empty plan) and all-FP32 (fails -> the tolerance is unattainable).
2. Bisection over the ranking for the shortest passing prefix.
3. Pruning: try returning each pinned layer to INT8, least sensitive first, keeping it INT8 when the plan
   still passes.
4. Proof of 1-minimality: for every pinned layer L there is an evaluated, failing plan equal to the final
   plan minus L. Missing proofs are evaluated; a proof that unexpectedly passes prunes L and repeats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from precision_lab.search.base import Outcome, Strategy

__all__ = ["MinimalPlan", "minimal_plan_search"]


@dataclass(frozen=True)
class MinimalPlan:
    """The search's result.

    ``status`` is ``"found"``, ``"all-int8-passes"`` (empty plan) or ``"unattainable"`` (all-FP32 fails).
    ``evidence`` maps each pinned layer to the failing outcome of the plan without it.
    """

    status: str
    fp32_layers: tuple[str, ...]
    outcome: Outcome
    all_int8: Outcome
    all_fp32: Outcome
    evidence: dict[str, Outcome] = field(default_factory=dict)


def minimal_plan_search(ranking: Sequence[str]) -> Strategy[MinimalPlan]:
    """Search for a verified, 1-minimal plan over ``ranking`` (most sensitive first)."""
    ranking = list(ranking)
    all_int8, all_fp32 = yield [frozenset(), frozenset(ranking)]
    if all_int8.passed:
        return MinimalPlan("all-int8-passes", (), all_int8, all_int8, all_fp32)
    if not all_fp32.passed:
        return MinimalPlan("unattainable", tuple(ranking), all_fp32, all_int8, all_fp32)

    failing, passing, best = 0, len(ranking), all_fp32
    while passing - failing > 1:
        middle = (failing + passing) // 2
        (outcome,) = yield [frozenset(ranking[:middle])]
        if outcome.passed:
            passing, best = middle, outcome
        else:
            failing = middle

    current = list(ranking[:passing])
    evidence: dict[str, Outcome] = {}
    if passing == 1:
        evidence[current[0]] = all_int8
    else:
        for name in reversed(ranking[:passing]):
            (outcome,) = yield [frozenset(current) - {name}]
            if outcome.passed:
                current.remove(name)
                best = outcome
            else:
                evidence[name] = outcome

    while True:
        plan = frozenset(current)
        stale = [name for name in current if name not in evidence or evidence[name].fp32_layers != plan - {name}]
        if not stale:
            break
        outcomes = yield [plan - {name} for name in stale]
        returned = None
        for name, outcome in zip(stale, outcomes):
            if outcome.passed:
                returned = (name, outcome)  # the least sensitive passing one goes back to INT8
            else:
                evidence[name] = outcome
        if returned is None:
            continue
        name, outcome = returned
        current.remove(name)
        best = outcome
        evidence.pop(name, None)
    return MinimalPlan("found", tuple(current), best, all_int8, all_fp32, {n: evidence[n] for n in current})
