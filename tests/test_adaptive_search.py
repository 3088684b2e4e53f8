"""The adaptive search and the Polygraphy-style prefix bisection, against the fake evaluator of test_search.

Evaluations are counted as distinct plans evaluated (``FakeEvaluator.calls``: the fake caches by plan, as the
sweep's journal does), baselines included.
"""

from __future__ import annotations

import math
import random

import pytest
from test_search import FakeEvaluator, assert_one_minimal

from precision_lab.precisions import FP16, FP32, Level, PrecisionPlan
from precision_lab.search import (
    SEARCHES,
    Outcome,
    SearchContext,
    adaptive_plan_search,
    drive,
    prefix_bisect_search,
)
from precision_lab.search.adaptive import group_size, order_is_wrong

SIZES = [10, 20, 50, 100, 300]
ORDERS = ["exact", "front", "reversed", "random"]


def problem(kind: str, n: int, k: int, seed: int) -> tuple[list[str], dict[str, float], float, dict]:
    """Layers, per-layer INT8 errors, tolerance and pair penalties of a monotone problem with about ``k`` needed
    layers: ``hidden`` (passes iff a hidden set of k is pinned), ``weighted`` (log-normal errors, passes iff the
    INT8 layers' sum is at most the sum of all but the k largest) or ``pairs`` (k layers in pairs that only
    break the plan together, plus small errors)."""
    rng = random.Random(seed)
    names = [f"l{i}" for i in range(n)]
    if kind == "hidden":
        needed = set(rng.sample(names, k))
        return names, {x: 1.0 if x in needed else 0.0 for x in names}, 0.5, {}
    if kind == "weighted":
        errors = {x: rng.lognormvariate(0, 2) for x in names}
        return names, errors, sum(sorted(errors.values())[: n - k]) + 1e-9, {}
    members = rng.sample(names, 2 * max(1, k // 2))
    pairs = {frozenset(members[i:i + 2]): 1.0 for i in range(0, len(members), 2)}
    return names, {x: 0.01 / n for x in names}, 0.5, pairs


def signal_order(kind: str, names: list[str], errors: dict[str, float], pairs: dict, k: int, seed: int) -> list[str]:
    """``exact``: by true error, worst first; ``front``: the k worst and 2 harmless ones shuffled at the front;
    ``reversed``: the worst last (an adversarial signal); ``random``: a shuffled order."""
    rng = random.Random(seed + 1)
    harm = {x: errors[x] + sum(p for pair, p in pairs.items() if x in pair) for x in names}
    exact = sorted(names, key=lambda x: -harm[x])
    if kind == "exact":
        return exact
    if kind == "front":
        front = exact[: k + 2]
        rng.shuffle(front)
        return front + exact[len(front):]
    if kind == "reversed":
        return exact[::-1]
    shuffled = list(names)
    rng.shuffle(shuffled)
    return shuffled


def evaluations(name: str, names, errors, tolerance, pairs, order) -> tuple[int, object, FakeEvaluator]:
    fake = FakeEvaluator(errors, tolerance, pairs)
    signals = {x: float(len(order) - i) for i, x in enumerate(order)}
    result = drive(SEARCHES[name](SearchContext(names, signals=lambda: signals)), fake)
    return fake.calls, result, fake


def bound(k: int, n: int) -> int:
    return 2 * k + 2 * math.ceil(math.log2(n)) + 4


CASES = [
    (kind, n, k, order)
    for kind in ("hidden", "weighted", "pairs")
    for n in SIZES
    for k in sorted({1, 2, max(1, n // 10), n // 3})
    for order in ORDERS
]


@pytest.mark.parametrize("kind,n,k,order", CASES)
def test_adaptive_is_one_minimal_and_never_costs_more_than_full(kind, n, k, order):
    """Every result is 1-minimal with evaluated proofs. Evaluations stay within the bound when the signal puts the
    needed layers first (``pairs`` excepted: a signal cannot tell which layer of a pair is the one to keep, so
    half its front is harmless), and never above the full mode's, except by the order checks that failed: the
    first half, and the first three quarters tried after it (more than half the layers may be needed)."""
    seed = sum(map(ord, f"{kind}{n}{k}{order}"))
    names, errors, tolerance, pairs = problem(kind, n, k, seed)
    order_ = signal_order(order, names, errors, pairs, k, seed)
    adaptive, result, fake = evaluations("adaptive", names, errors, tolerance, pairs, order_)
    full, full_result, _ = evaluations("full", names, errors, tolerance, pairs, order_)
    assert result.status == "found"
    assert_one_minimal(result, fake)
    if kind == "hidden":
        assert result.plan == full_result.plan  # one 1-minimal plan exists: the hidden set
    if order in ("exact", "front") and kind != "pairs":
        assert adaptive <= bound(len(result.pinned), n), (adaptive, bound(len(result.pinned), n))
    checks = [fake.seen.get(PrecisionPlan.fp32(order_[:size])) for size in (n // 2, (n // 2 + n) // 2)]
    checks_failed = sum(1 for check in checks if check is not None and not check.passed)
    assert adaptive <= full + checks_failed, (adaptive, full)


def test_the_bound_is_tight_enough_to_fail_a_linear_search():
    """The bound is not vacuous: pruning one layer at a time from a long prefix exceeds it."""
    names, errors, tolerance, _ = problem("hidden", 300, 3, 0)
    order = signal_order("exact", names, errors, {}, 3, 0)
    adaptive, result, _ = evaluations("adaptive", names, errors, tolerance, {}, order)
    assert adaptive <= bound(3, 300) < 300 // 3
    # the same 3 layers behind 60 harmless ones the signal ranks first: group pruning clears them
    front = [x for x in order if x not in result.pinned][:60] + list(result.pinned)
    order2 = front + [x for x in names if x not in front]
    adaptive2, result2, fake = evaluations("adaptive", names, errors, tolerance, {}, order2)
    assert result2.plan == result.plan
    assert_one_minimal(result2, fake)
    assert adaptive2 < 60 and adaptive2 <= bound(3, 300) + 3 * math.ceil(math.log2(60))


def test_a_wrong_order_falls_back_to_the_full_modes_order_and_publishes_isolate():
    names, errors, tolerance, _ = problem("hidden", 50, 10, 3)
    order = signal_order("reversed", names, errors, {}, 10, 3)  # the needed layers last: the probes fail
    adaptive, result, fake = evaluations("adaptive", names, errors, tolerance, {}, order)
    full, full_result, _ = evaluations("full", names, errors, tolerance, {}, order)
    assert set(result.scores) == {"signal", "isolate"} and set(result.scores["isolate"]) == set(names)
    assert result.plan == full_result.plan and adaptive <= full
    assert "sensitivity (isolate)" in fake.phases


def test_a_good_order_needs_no_sensitivity_pass():
    names, errors, tolerance, _ = problem("hidden", 100, 5, 1)
    order = signal_order("exact", names, errors, {}, 5, 1)
    adaptive, result, fake = evaluations("adaptive", names, errors, tolerance, {}, order)
    assert set(result.scores) == {"signal"}
    assert "sensitivity (isolate)" not in fake.phases and fake.phases[1] == "probe (isolate)"
    assert adaptive == 2 + 7 + 1 + 6 + 4  # baselines, 7 probes, the first half, 6 more bisection steps, 4 prunes


@pytest.mark.parametrize("status,tolerance", [("all-int8-passes", 100.0), ("unattainable", -1.0)])
def test_baselines_decide_alone(status, tolerance):
    names, errors, _, _ = problem("hidden", 20, 3, 0)
    fake = FakeEvaluator(errors, tolerance)
    assert drive(adaptive_plan_search(names), fake).status == status
    assert fake.calls == 2


def test_adaptive_works_on_another_level_from_a_start_plan():
    """Three-level plans reuse it: FP16 everywhere, layers raised to FP32, proofs on that level."""
    names = [f"l{i}" for i in range(16)]
    start = PrecisionPlan({layer: FP16 for layer in names})
    errors = {layer: 0.001 for layer in names} | {"l5": 0.5, "l11": 0.5}

    def evaluate(batch):
        outcomes = []
        for plan in batch:
            assert all(plan.precision(layer) in (FP16, FP32) for layer in names)
            value = sum(e for layer, e in errors.items() if plan.precision(layer) != FP32)
            outcomes.append(Outcome(plan, value, value <= 0.05))
        return outcomes

    result = drive(adaptive_plan_search(names[::-1], level=Level(FP32, FP16), start=start), evaluate)
    assert sorted(result.pinned) == ["l11", "l5"]
    assert result.plan == start.with_precision(["l5", "l11"], FP32)
    for layer in result.pinned:
        assert result.evidence[layer].plan == start.with_precision(set(result.pinned) - {layer}, FP32)


def test_group_size_follows_hwangs_rule():
    assert group_size(10, 1, 1) == 1  # the signal's prefix: expected mostly needed, one at a time
    assert group_size(100, 0, 30) == 16  # rate 1/32: d = 3.125, 2**floor(log2(97.9 / 3.125)) = 16
    assert group_size(3, 0, 100) == 2
    assert group_size(1, 0, 0) == 1


def test_order_is_wrong_reads_the_metric_direction():
    def outcome(value, passed=True):
        return Outcome(PrecisionPlan(), value, passed)

    all_int8, all_fp32 = outcome(1.0, False), outcome(0.0)  # a typical layer of 16: 1.0 / sqrt(16) = 0.25
    assert not order_is_wrong([outcome(0.01), outcome(0.24)], all_int8, all_fp32, 16)
    assert order_is_wrong([outcome(0.01), outcome(0.26)], all_int8, all_fp32, 16)
    assert order_is_wrong([outcome(0.0, passed=False)], all_int8, all_fp32, 16)
    # cosine-like: 1.0 is perfect, all-INT8 at 0.6: a typical layer costs 0.1
    assert not order_is_wrong([outcome(0.95)], outcome(0.6, False), outcome(1.0), 16, higher_is_better=True)
    assert order_is_wrong([outcome(0.85)], outcome(0.6, False), outcome(1.0), 16, higher_is_better=True)


# --- Polygraphy-style prefix bisection ------------------------------------------------------------------------


def test_bisect_follows_polygraphys_counts_forward_and_reverse():
    names = [f"l{i}" for i in range(12)]
    errors = {x: 0.001 for x in names} | {"l7": 1.0}
    fake = FakeEvaluator(errors, 0.05)
    result = drive(prefix_bisect_search(names), fake)
    # Polygraphy: 12 (all, the baseline) -> 6 fails -> ceil(9) passes -> floor(7.5)=7 fails -> ceil(8) passes
    assert [len(plan) for plan in fake.seen] == [0, 12, 6, 9, 7, 8]
    assert result.pinned == tuple(names[:8]) and result.outcome.passed
    assert set(result.evidence) == {"l7"} and result.evidence["l7"].plan == PrecisionPlan.fp32(names[:7])

    fake = FakeEvaluator(errors, 0.05)
    result = drive(prefix_bisect_search(names, direction="reverse"), fake)
    # last 6 pass -> last 3 fail -> ceil(4.5)=5 pass -> floor(4) fail; good 5, bad 4
    assert [len(plan) for plan in fake.seen] == [0, 12, 6, 3, 5, 4]
    assert result.pinned == tuple(names[7:])
    assert result.evidence["l7"].plan == PrecisionPlan.fp32(names[8:])


def test_bisect_is_registered_and_not_one_minimal_on_a_planted_pair():
    names = [f"l{i}" for i in range(12)]
    errors = {x: 0.001 for x in names} | {"l2": 0.5, "l9": 0.5}
    fake = FakeEvaluator(errors, 0.05)
    result = drive(SEARCHES["bisect"](SearchContext(names)), fake)
    assert result.pinned == tuple(names[:10])  # everything up to the later planted layer
    assert fake.calls <= 2 + math.ceil(math.log2(12)) + 1
    with pytest.raises(ValueError, match="direction"):
        next(prefix_bisect_search(names, direction="sideways"))


def test_every_hidden_set_of_up_to_6_layers_in_both_orders():
    """Exhaustive on small models (no probes below 2 layers, no first-half check below 4): the hidden set, proven."""
    import itertools

    for n in range(1, 7):
        names = [f"l{i}" for i in range(n)]
        for k in range(1, n + 1):
            for needed in itertools.combinations(names, k):
                for order in (names, names[::-1]):
                    fake = FakeEvaluator({x: 1.0 if x in needed else 0.0 for x in names}, 0.5)
                    result = drive(adaptive_plan_search(order), fake)
                    assert sorted(result.pinned) == sorted(needed)
                    assert_one_minimal(result, fake)
