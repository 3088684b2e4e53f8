"""Adaptive search: a verified 1-minimal plan from a signal order, with group tests instead of a sensitivity pass.

1. Baselines (shared with every strategy).
2. Checks of the order (most suspicious first): ``isolate`` plans of the ceil(log2 N) layers it trusts
   most (:func:`order_is_wrong`: none may fail or add more than a typical layer's error), then its first
   half, and when that fails (more than half the layers may be needed: PP-OCRv4 det needs 27 to 31 of 64) its
   first three quarters; one of the two must pass. They are also the first bisection steps.
3. Order right: bisection for the shortest passing prefix (its last layer is needed, and the failing prefix
   before it is its proof); group pruning of the rest of the prefix, least suspicious first
   (:func:`group_prune`, adaptive splitting in Hwang's manner); then the full mode's pruning passes
   (:func:`~precision_lab.search.minimal.prune`) re-prove the layers whose proof went stale when later groups
   left (one evaluation each on a monotone problem) and repair a problem that is not monotone.
4. Order wrong: the full mode's order, one ``isolate`` evaluation per layer (the probes are among them, so they
   are not lost), its bisection and its pruning, with two shortcuts: prefixes too short to hold every layer that
   breaks the plan alone are known to fail and not evaluated, and those layers alone are tried first when the
   other layers' isolate errors add up to little. On a monotone problem the plan is the full mode's, and
   evaluations exceed the full mode's only by the order checks that failed and a first try that fails (at
   most 3).

Evaluations with k needed layers among N, when the order puts them first: 2 baselines, ceil(log2 N) probes,
ceil(log2 N) bisection steps (the first-half check among them), k - 1 pruning tests and at most k - 1 fresh
proofs: at most 2k + 2 * ceil(log2 N) + 2. With a wrong order no search can promise that bound (telling k of N
layers apart takes log2(N choose k) tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

from precision_lab.precisions import BINARY, Level, PrecisionPlan
from precision_lab.search.base import Batch, Outcome, Strategy
from precision_lab.search.minimal import MinimalPlan, baseline_step, prune
from precision_lab.search.sensitivity import SENSITIVITY_KINDS, rank_layers

__all__ = ["PROBE_SHARE", "adaptive_plan_search", "group_prune", "group_size", "order_is_wrong"]

EVERY_LAYER_AT_BASE = PrecisionPlan()
"""The default start plan: no layer named, so every layer at the level's base precision (INT8)."""

PROBE_SHARE = 1.0
"""A probed layer that adds more than this share of a typical layer's error disproves the order: the all-INT8
error over sqrt(N), what each of N layers adds when independent errors add in quadrature (rel-l2 and the like)."""


def adaptive_plan_search(
    order: Sequence[str],
    *,
    level: Level = BINARY,
    start: PrecisionPlan = EVERY_LAYER_AT_BASE,
    baselines: tuple[Outcome, Outcome] | None = None,
    names: Sequence[str] | None = None,
    higher_is_better: bool = False,
) -> Strategy[MinimalPlan]:
    """Search over ``order`` (most suspicious first) for a verified, 1-minimal plan (see the module). When the
    order is wrong, the full mode's ``isolate`` order takes over and its values are published in ``scores``.
    ``baselines``: when the caller has them already; ``names``: graph order, for ties (default ``order``);
    ``higher_is_better``: the metric's direction (default lower is better)."""
    order = list(order)
    (all_int8, all_fp32), verdict = yield from baseline_step(order, level, start, baselines)
    if verdict is not None:
        return verdict
    isolate = partial(SENSITIVITY_KINDS["isolate"].plan, names=order, level=level, start=start)
    trusted = order[::-1][: math.ceil(math.log2(len(order)))]
    probes = yield Batch([isolate(layer) for layer in trusted], "probe (isolate)")
    wrong = order_is_wrong(probes, all_int8, all_fp32, len(order), higher_is_better)
    half = len(order) // 2
    failed = [all_int8, *(probe for probe in probes if not probe.passed)]
    if not wrong and half >= 2:
        (first,) = yield [level.apply(start, order[:half])]
        failed.append(first)
        if not first.passed and len(order) - half >= 2:  # more than half may be needed: try three quarters
            (second,) = yield [level.apply(start, order[: (half + len(order)) // 2])]
            first = second
            if not second.passed:
                failed.append(second)
        wrong = not first.passed
    if not wrong:
        found = yield from _prefix_then_prune(order, all_int8, all_fp32, 0, group_prune, level, start)
        return found

    outcomes = yield Batch([isolate(layer) for layer in order], "sensitivity (isolate)")
    scores = {"isolate": {layer: outcome.value for layer, outcome in zip(order, outcomes)}}
    ranking = rank_layers(names or order, scores=scores, higher_is_better=higher_is_better)
    alone = {layer for layer, outcome in zip(order, outcomes) if not outcome.passed}
    known, first_try = 0, None
    if alone and set(ranking[: len(alone)]) == alone:  # each breaks every plan without it
        known = len(alone) - 1
        harm = partial(_harm, all_fp32=all_fp32, higher_is_better=higher_is_better)
        rest = sum(harm(outcome) for layer, outcome in zip(order, outcomes) if layer not in alone)
        passed = max(harm(outcome) for outcome in [all_fp32, *outcomes] if outcome.passed)
        failure = min(harm(outcome) for outcome in failed + [o for o in outcomes if not o.passed])
        if rest <= math.sqrt(max(passed, 0.0) * failure):
            first_try = len(alone)  # the others' isolate errors add up to less than the geometric mean of the
            # largest passing and the smallest failing error seen: try these layers alone first
    found = yield from _prefix_then_prune(ranking, all_int8, all_fp32, known, prune, level, start, first_try)
    return replace(found, scores=scores)


def _harm(outcome: Outcome, *, all_fp32: Outcome, higher_is_better: bool) -> float:
    """How much worse than the all-raised plan ``outcome`` is, in the metric's direction."""
    return (all_fp32.value - outcome.value) if higher_is_better else (outcome.value - all_fp32.value)


def order_is_wrong(
    probes: Sequence[Outcome], all_int8: Outcome, all_fp32: Outcome, layers: int, higher_is_better: bool = False
) -> bool:
    """Whether ``isolate`` probes of the layers an order trusts most disprove it: one fails, or one adds more
    than :data:`PROBE_SHARE` of a typical layer's error, ``(all_int8 - all_fp32) / sqrt(layers)``, in the
    metric's direction (``higher_is_better``, default False)."""
    sign = -1.0 if higher_is_better else 1.0
    allowed = PROBE_SHARE * sign * (all_int8.value - all_fp32.value) / math.sqrt(layers)
    return any(not probe.passed or sign * (probe.value - all_fp32.value) > allowed for probe in probes)


def _prefix_then_prune(
    order: list[str],
    all_int8: Outcome,
    all_fp32: Outcome,
    known: int,
    pruning: Callable[..., Strategy[tuple[list[str], Outcome]]],
    level: Level,
    start: PrecisionPlan,
    first_try: int | None = None,
) -> Strategy[MinimalPlan]:
    """The full mode's bisection for the shortest passing prefix of ``order``, without evaluating prefixes of at
    most ``known`` layers (known to fail) and trying the prefix of ``first_try`` layers first when given, then
    ``pruning`` and the proofs of :func:`prune`."""
    plan_of = partial(level.apply, start)
    failing, passing = 0, len(order)
    fail_outcome: Outcome | None = all_int8
    pass_outcome = all_fp32
    if first_try is not None and known < first_try < passing:
        (outcome,) = yield [plan_of(order[:first_try])]
        if outcome.passed:
            failing, fail_outcome, passing, pass_outcome = first_try - 1, None, first_try, outcome
        else:
            failing, fail_outcome = first_try, outcome
    while passing - failing > 1:
        middle = (failing + passing) // 2
        if middle <= known:
            failing, fail_outcome = middle, None
            continue
        (outcome,) = yield [plan_of(order[:middle])]
        if outcome.passed:
            passing, pass_outcome = middle, outcome
        else:
            failing, fail_outcome = middle, outcome

    prefix = order[:passing]
    evidence: dict[str, Outcome] = {prefix[-1]: fail_outcome} if fail_outcome is not None else {}
    kept, best = yield from pruning(prefix, pass_outcome, evidence, level=level, start=start)
    if pruning is not prune:
        kept, best = yield from prune(kept, best, evidence, level=level, start=start)
    evidence = {name: evidence[name] for name in kept}
    return MinimalPlan("found", tuple(kept), best, all_int8, all_fp32, evidence, tuple(order))


def group_prune(
    current: Sequence[str],
    best: Outcome,
    evidence: dict[str, Outcome],
    *,
    level: Level = BINARY,
    start: PrecisionPlan = EVERY_LAYER_AT_BASE,
) -> Strategy[tuple[list[str], Outcome]]:
    """Group tests over the passing plan whose pinned layers are ``current`` (most suspicious first; outcome
    ``best``): every layer without a proof in ``evidence`` is tried, least suspicious first, in groups of
    :func:`group_size`, or of 2**s after s passing groups in a row when that is larger. A failing group is split
    in halves until one needed layer is left. Returns the layers kept (in ``current``'s order) and the plan's
    outcome; each kept layer has in ``evidence`` a failing outcome of the plan without it at the time it was
    found (stale if layers left afterwards: :func:`prune` refreshes it)."""
    plan_of = partial(level.apply, start)
    kept = set(current)
    queue = [name for name in reversed(current) if name not in evidence]
    needed = tried = len(current) - len(queue)
    streak = 0
    while queue:
        group = queue[: max(group_size(len(queue), needed, tried), 2**streak)]
        (outcome,) = yield [plan_of(kept - set(group))]
        if outcome.passed:
            kept -= set(group)
            best = outcome
            del queue[: len(group)]
            tried += len(group)
            streak += 1
            continue
        streak = 0
        suspects, failed = group, outcome  # invariant: failed.plan == plan_of(kept - suspects), and it fails
        while len(suspects) > 1:
            half = suspects[: len(suspects) // 2]  # the less suspicious half first
            (outcome,) = yield [plan_of(kept - set(half))]
            if outcome.passed:
                kept -= set(half)
                best = outcome
                queue = [name for name in queue if name not in half]
                tried += len(half)
                suspects = suspects[len(half):]
            else:
                suspects, failed = half, outcome
        (found,) = suspects
        evidence[found] = failed
        queue.remove(found)
        needed, tried = needed + 1, tried + 1
    return [name for name in current if name in kept], best


def group_size(untested: int, needed: int, tried: int) -> int:
    """Hwang's group size for ``untested`` layers when ``needed`` of the ``tried`` ones were needed: d, the
    expected needed layers left (rate estimated as (needed + 1) / (tried + 2)); 1 when 2d >= untested + 1,
    else 2 ** floor(log2((untested - d + 1) / d))."""
    expected = max(1.0, (needed + 1) / (tried + 2) * untested)
    if 2 * expected >= untested + 1:
        return 1
    return min(untested, 2 ** math.floor(math.log2((untested - expected + 1) / expected)))
