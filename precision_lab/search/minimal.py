"""The minimal-plan search.

1. Baselines (:func:`baseline_verdict`, the one place this rule lives): everything at the base precision
   passes -> empty plan; everything raised fails -> the tolerance is unattainable.
2. Bisection over the ranking for the shortest passing prefix.
3. Pruning passes: try returning each pinned layer to the base precision, least sensitive first, keeping it
   there when the plan still passes. A pass that returned a layer makes earlier proofs stale, so passes repeat
   (skipping layers whose proof is current) until every pinned layer L has an evaluated, failing plan equal to
   the final plan minus L: the proof of 1-minimality.

Plans are :class:`~precision_lab.precisions.PrecisionPlan`: ``start`` with the pinned layers at ``level.raised``
(default: INT8 everywhere, pinned layers FP32).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from precision_lab.precisions import BINARY, Level, PrecisionPlan
from precision_lab.search.base import Batch, Outcome, Strategy

__all__ = ["MinimalPlan", "minimal_plan_search", "prune", "baseline_verdict", "baseline_plans", "baseline_step"]


@dataclass(frozen=True)
class MinimalPlan:
    """A search's result.

    ``status`` is ``"found"``, ``"all-int8-passes"`` (nothing needs raising) or ``"unattainable"`` (even
    everything raised fails). ``pinned`` are the layers raised to the level's precision, ``outcome`` the
    plan's; ``evidence`` maps each pinned layer to the failing outcome of the plan without it. ``ranking`` and
    ``scores`` (kind -> layer -> value) are what the strategy measured to order the layers. Three-level searches
    (:mod:`precision_lab.search.levels`) also give the all-FP16 baseline ``all_fp16`` and ``fp32_first``: whether
    all-FP16 failed, so that the FP32 set repairing it was found first.
    """

    status: str
    pinned: tuple[str, ...]
    outcome: Outcome
    all_int8: Outcome
    all_fp32: Outcome
    evidence: dict[str, Outcome] = field(default_factory=dict)
    ranking: tuple[str, ...] = ()
    scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    all_fp16: Outcome | None = None
    fp32_first: bool = False

    @property
    def plan(self) -> PrecisionPlan:
        return self.outcome.plan


def baseline_plans(names: Sequence[str], level: Level = BINARY, start: PrecisionPlan = PrecisionPlan()) -> Batch:
    """Everything at the base precision, and every layer of ``names`` raised."""
    return Batch([start, start.with_precision(names, level.raised)], "baseline")


def baseline_verdict(names: Sequence[str], all_int8: Outcome, all_fp32: Outcome) -> MinimalPlan | None:
    """The result when the baselines decide it alone (empty plan, or unattainable), else ``None``."""
    if all_int8.passed:
        return MinimalPlan("all-int8-passes", (), all_int8, all_int8, all_fp32)
    if not all_fp32.passed:
        return MinimalPlan("unattainable", tuple(names), all_fp32, all_int8, all_fp32)
    return None


def baseline_step(
    names: Sequence[str], level: Level, start: PrecisionPlan, baselines: tuple[Outcome, Outcome] | None = None
) -> Strategy[tuple[tuple[Outcome, Outcome], MinimalPlan | None]]:
    """Every strategy's first step: the baselines (evaluated unless given) and, when they decide the result
    alone, that result."""
    if baselines is None:
        baselines = tuple((yield baseline_plans(names, level, start)))
    return baselines, baseline_verdict(names, *baselines)


def minimal_plan_search(
    ranking: Sequence[str],
    *,
    level: Level = BINARY,
    start: PrecisionPlan = PrecisionPlan(),
    baselines: tuple[Outcome, Outcome] | None = None,
) -> Strategy[MinimalPlan]:
    """Search for a verified, 1-minimal plan over ``ranking`` (most sensitive first). ``baselines``: the
    outcomes of :func:`baseline_plans`, when the caller has them already."""
    ranking = list(ranking)
    (all_int8, all_fp32), verdict = yield from baseline_step(ranking, level, start, baselines)
    if verdict is not None:
        return verdict
    plan_of = partial(level.apply, start)
    failing, passing, best = 0, len(ranking), all_fp32
    while passing - failing > 1:
        middle = (failing + passing) // 2
        (outcome,) = yield [plan_of(ranking[:middle])]
        if outcome.passed:
            passing, best = middle, outcome
        else:
            failing = middle

    current = list(ranking[:passing])
    evidence: dict[str, Outcome] = {current[0]: all_int8} if passing == 1 else {}
    current, best = yield from prune(current, best, evidence, level=level, start=start)
    return MinimalPlan("found", tuple(current), best, all_int8, all_fp32, {n: evidence[n] for n in current}, tuple(ranking))


def prune(
    current: list[str],
    best: Outcome,
    evidence: dict[str, Outcome],
    *,
    level: Level = BINARY,
    start: PrecisionPlan = PrecisionPlan(),
) -> Strategy[tuple[list[str], Outcome]]:
    """Pruning passes over the passing plan whose pinned layers are ``current`` (most sensitive first; its
    outcome ``best``): try returning each layer to the base precision, least sensitive first, until every layer L
    left has in ``evidence`` a failing outcome of exactly the plan without L. Returns the pruned layers and the
    plan's outcome."""
    current = list(current)
    plan_of = partial(level.apply, start)
    while True:
        for name in reversed(list(current)):
            trial = plan_of(set(current) - {name})
            if name in evidence and evidence[name].plan == trial:
                continue
            (outcome,) = yield [trial]
            if outcome.passed:
                current.remove(name)
                evidence.pop(name, None)
                best = outcome
            else:
                evidence[name] = outcome
        if all(evidence[name].plan == plan_of(set(current) - {name}) for name in current):
            return current, best
