"""The minimal-plan search (DESIGN section 2).

1. Baselines: all-INT8 (passes -> empty plan) and all-FP32 (fails -> the tolerance is unattainable).
2. Bisection over the ranking for the shortest passing prefix.
3. Pruning passes: try returning each pinned layer to INT8, least sensitive first, keeping it INT8 when the
   plan still passes. A pass that returned a layer makes earlier proofs stale, so passes repeat (skipping
   layers whose proof is current) until every pinned layer L has an evaluated, failing plan equal to the
   final plan minus L: the proof of 1-minimality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from precision_lab.search.base import Outcome, Strategy

__all__ = ["MinimalPlan", "minimal_plan_search", "prune"]


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
    evidence: dict[str, Outcome] = {current[0]: all_int8} if passing == 1 else {}
    current, best = yield from prune(current, best, evidence)
    return MinimalPlan("found", tuple(current), best, all_int8, all_fp32, {n: evidence[n] for n in current})


def prune(current: list[str], best: Outcome, evidence: dict[str, Outcome]) -> Strategy[tuple[list[str], Outcome]]:
    """Pruning passes over the passing plan ``current`` (most sensitive first; its outcome ``best``): try
    returning each layer to INT8, least sensitive first, until every layer L left has in ``evidence`` a failing
    outcome of exactly ``current - {L}``. Returns the pruned plan and its outcome."""
    current = list(current)
    while True:
        for name in reversed(list(current)):
            trial = frozenset(current) - {name}
            if name in evidence and evidence[name].fp32_layers == trial:
                continue
            (outcome,) = yield [trial]
            if outcome.passed:
                current.remove(name)
                evidence.pop(name, None)
                best = outcome
            else:
                evidence[name] = outcome
        plan = frozenset(current)
        if all(evidence[name].fp32_layers == plan - {name} for name in current):
            return current, best
