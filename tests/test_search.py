"""The minimal-plan search and ranking, against a fake evaluator (no backend involved)."""

from __future__ import annotations

import itertools

import pytest

from precision_lab.precisions import PrecisionPlan
from precision_lab.search import (
    SEARCHES,
    Outcome,
    SearchContext,
    drive,
    minimal_plan_search,
    rank_layers,
    sensitivity_plans,
)

LAYERS = [f"l{i}" for i in range(12)]
PEERS = {"bisect", "bisect-reverse"}  # Polygraphy-style prefix bisection: for comparison, not 1-minimal
ONE_MINIMAL = sorted(set(SEARCHES) - PEERS)


class FakeEvaluator:
    """Error = sum of each INT8 layer's error, plus pair penalties; counts and remembers evaluations."""

    def __init__(self, errors: dict[str, float], tolerance: float, pairs: dict[frozenset, float] | None = None):
        self.errors = errors
        self.tolerance = tolerance
        self.pairs = pairs or {}
        self.seen: dict[PrecisionPlan, Outcome] = {}
        self.phases: list[str] = []
        self.calls = 0

    def value(self, plan: PrecisionPlan) -> float:
        int8 = set(self.errors) - plan.fp32_layers
        value = sum(self.errors[name] for name in int8)
        value += sum(penalty for pair, penalty in self.pairs.items() if pair <= int8)
        return value

    def __call__(self, batch):
        self.phases.append(getattr(batch, "phase", "search"))
        outcomes = []
        for plan in batch:
            assert isinstance(plan, PrecisionPlan)
            if plan not in self.seen:
                self.calls += 1
                value = self.value(plan)
                self.seen[plan] = Outcome(plan, value, value <= self.tolerance, key=",".join(sorted(plan)))
            outcomes.append(self.seen[plan])
        return outcomes


def isolate_ranking(fake: FakeEvaluator) -> list[str]:
    plans = sensitivity_plans(LAYERS, "isolate")
    outcomes = fake([plan for _, _, plan in plans])
    values = {layer: o.value for (_, layer, _), o in zip(plans, outcomes)}
    return rank_layers(LAYERS, isolate=values)


def assert_one_minimal(result, fake: FakeEvaluator):
    pinned = frozenset(result.pinned)
    assert result.outcome.passed and result.outcome.fp32_layers == pinned
    for name in pinned:
        proof = result.evidence[name]
        assert proof.fp32_layers == pinned - {name}
        assert not proof.passed
        assert fake.seen[PrecisionPlan.fp32(pinned - {name})] == proof  # the proof was really evaluated


def test_single_planted_layer_is_the_plan():
    errors = {name: 0.001 for name in LAYERS} | {"l7": 1.0}
    fake = FakeEvaluator(errors, tolerance=0.05)
    result = drive(minimal_plan_search(isolate_ranking(fake)), fake)
    assert result.status == "found"
    assert result.pinned == ("l7",)
    assert_one_minimal(result, fake)


def test_two_planted_layers_neither_enough_alone():
    errors = {name: 0.001 for name in LAYERS} | {"l2": 0.5, "l9": 0.5}
    fake = FakeEvaluator(errors, tolerance=0.05)
    result = drive(minimal_plan_search(isolate_ranking(fake)), fake)
    assert sorted(result.pinned) == ["l2", "l9"]
    assert_one_minimal(result, fake)


def test_all_int8_passes_gives_empty_plan():
    fake = FakeEvaluator({name: 0.001 for name in LAYERS}, tolerance=0.05)
    result = drive(minimal_plan_search(LAYERS), fake)
    assert result.status == "all-int8-passes"
    assert result.pinned == ()
    assert result.outcome.passed


def test_unattainable_tolerance_is_reported():
    fake = FakeEvaluator({name: 0.001 for name in LAYERS}, tolerance=-1.0)
    result = drive(minimal_plan_search(LAYERS), fake)
    assert result.status == "unattainable"
    assert not result.all_fp32.passed


def test_bad_ranking_is_repaired_by_pruning():
    """A ranking that puts harmless layers first still yields the 1-minimal plan."""
    errors = {name: 0.001 for name in LAYERS} | {"l11": 1.0}
    fake = FakeEvaluator(errors, tolerance=0.05)
    result = drive(minimal_plan_search(LAYERS), fake)  # l11 is ranked last
    assert result.pinned == ("l11",)
    assert_one_minimal(result, fake)


def test_interacting_layers_give_a_one_minimal_plan():
    """Layers harmless alone but harmful together: the result is 1-minimal and passes."""
    errors = {name: 0.004 for name in LAYERS}
    pairs = {frozenset({"l1", "l5"}): 0.2, frozenset({"l3", "l8"}): 0.2}
    fake = FakeEvaluator(errors, tolerance=0.05, pairs=pairs)
    result = drive(minimal_plan_search(isolate_ranking(fake)), fake)
    assert result.status == "found"
    assert_one_minimal(result, fake)
    int8 = set(LAYERS) - set(result.pinned)
    assert not ({"l1", "l5"} <= int8 or {"l3", "l8"} <= int8)


@pytest.mark.parametrize("planted", [("l0",), ("l4", "l10"), ("l1", "l6", "l11")])
def test_search_evaluations_stay_logarithmic(planted):
    errors = {name: 0.0005 for name in LAYERS} | {name: 0.5 for name in planted}
    fake = FakeEvaluator(errors, tolerance=0.05)
    ranking = isolate_ranking(fake)
    before = fake.calls
    result = drive(minimal_plan_search(ranking), fake)
    assert sorted(result.pinned) == sorted(planted)
    # baselines + bisection + pruning of the prefix
    assert fake.calls - before <= 2 + 4 + len(planted)


def test_rank_isolate_and_leave_one_out():
    isolate = {"a": 0.1, "b": 0.9, "c": 0.5}
    assert rank_layers(["a", "b", "c"], isolate=isolate) == ["b", "c", "a"]
    # leave-one-out: pinning b lowers the error most -> most sensitive
    loo = {"a": 0.8, "b": 0.2, "c": 0.7}
    assert rank_layers(["a", "b", "c"], leave_one_out=loo) == ["b", "c", "a"]
    # higher-is-better metric (cosine): isolate lower cosine = more sensitive
    assert rank_layers(["a", "b", "c"], isolate={"a": 0.99, "b": 0.5, "c": 0.9}, higher_is_better=True) == ["b", "c", "a"]
    # both: each layer's better rank decides
    both = rank_layers(["a", "b", "c"], isolate={"a": 0.9, "b": 0.1, "c": 0.2}, leave_one_out={"a": 0.5, "b": 0.1, "c": 0.5})
    assert both[:2] == ["a", "b"]


def test_failed_isolate_evaluation_ranks_first():
    assert rank_layers(["a", "b"], isolate={"a": 0.5, "b": float("nan")})[0] == "b"


def test_sensitivity_plans_shapes():
    plans = sensitivity_plans(["a", "b"], "both")
    assert plans == [
        ("isolate", "a", PrecisionPlan.fp32({"b"})),
        ("isolate", "b", PrecisionPlan.fp32({"a"})),
        ("leave-one-out", "a", PrecisionPlan.fp32({"a"})),
        ("leave-one-out", "b", PrecisionPlan.fp32({"b"})),
    ]


def test_every_subset_search_is_one_minimal_on_small_monotone_problems():
    """Exhaustive check over all planted subsets of 5 layers."""
    names = LAYERS[:5]
    for size in range(0, 4):
        for planted in itertools.combinations(names, size):
            errors = {name: 0.001 for name in names} | {name: 0.3 for name in planted}
            fake = FakeEvaluator(errors, tolerance=0.05)
            result = drive(minimal_plan_search(names), fake)
            assert sorted(result.pinned) == sorted(planted)
            if planted:
                assert_one_minimal(result, fake)


# --- fast search --------------------------------------------------------------------------------------------

def _bound(k: int, n: int) -> int:
    import math

    return 2 * k * math.ceil(math.log2(n)) + 4


@pytest.mark.parametrize("planted", [("l0",), ("l7",), ("l4", "l10"), ("l1", "l6", "l11"), ("l11",)])
@pytest.mark.parametrize("order", ["graph", "reversed", "shuffled"])
def test_fast_search_finds_the_planted_layers_within_the_bound(planted, order):
    from precision_lab.search import fast_plan_search

    errors = {name: 0.0005 for name in LAYERS} | {name: 0.5 for name in planted}
    fake = FakeEvaluator(errors, tolerance=0.05)
    ordering = {"graph": LAYERS, "reversed": LAYERS[::-1],
                "shuffled": [LAYERS[i] for i in (5, 2, 9, 0, 11, 7, 3, 8, 1, 10, 4, 6)]}[order]
    result = drive(fast_plan_search(ordering), fake)
    assert sorted(result.pinned) == sorted(planted)
    assert_one_minimal(result, fake)
    assert fake.calls <= _bound(len(planted), len(LAYERS))


def test_fast_search_empty_and_unattainable():
    from precision_lab.search import fast_plan_search

    fake = FakeEvaluator({name: 0.001 for name in LAYERS}, tolerance=0.05)
    assert drive(fast_plan_search(LAYERS), fake).status == "all-int8-passes"
    assert fake.calls == 2
    fake = FakeEvaluator({name: 0.001 for name in LAYERS}, tolerance=-1)
    assert drive(fast_plan_search(LAYERS), fake).status == "unattainable"


def test_fast_search_interacting_layers_is_one_minimal():
    from precision_lab.search import fast_plan_search

    errors = {name: 0.004 for name in LAYERS}
    pairs = {frozenset({"l1", "l5"}): 0.2, frozenset({"l3", "l8"}): 0.2}
    fake = FakeEvaluator(errors, tolerance=0.05, pairs=pairs)
    result = drive(fast_plan_search(LAYERS), fake)
    assert result.status == "found"
    assert_one_minimal(result, fake)


# --- strategies by name -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_MINIMAL)
def test_registered_strategies_start_from_the_baselines_and_publish_scores(name):
    errors = {layer: 0.001 for layer in LAYERS} | {"l3": 0.6, "l8": 0.6}
    fake = FakeEvaluator(errors, tolerance=0.05)
    signals = {layer: errors[layer] for layer in LAYERS}
    context = SearchContext(LAYERS, sensitivity="both", signals=lambda: signals)
    result = drive(SEARCHES[name](context), fake)
    assert fake.phases[0] == "baseline"
    assert sorted(result.pinned) == ["l3", "l8"] and result.plan == PrecisionPlan.fp32({"l3", "l8"})
    assert_one_minimal(result, fake)
    kinds = {"full": {"isolate", "leave-one-out"}, "fast": {"signal"}, "adaptive": {"signal"}}[name]
    assert set(result.scores) == kinds and all(set(values) == set(LAYERS) for values in result.scores.values())
    assert result.ranking[:2] in (("l3", "l8"), ("l8", "l3"))


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_registered_strategies_report_an_unattainable_tolerance_without_more_work(name):
    fake = FakeEvaluator({layer: 0.001 for layer in LAYERS}, tolerance=-1.0)
    result = drive(SEARCHES[name](SearchContext(LAYERS, signals=lambda: {})), fake)
    assert result.status == "unattainable" and fake.calls == 2


def test_a_search_at_another_level_raises_layers_from_a_start_plan():
    """The same search, from a plan whose layers are FP16, pins layers to FP32 and proves each on that level."""
    from precision_lab.precisions import FP16, FP32, Level

    start = PrecisionPlan({layer: FP16 for layer in LAYERS})
    fake_errors = {layer: 0.001 for layer in LAYERS} | {"l5": 0.5}

    def evaluate(batch):
        outcomes = []
        for plan in batch:
            value = sum(e for layer, e in fake_errors.items() if plan.precision(layer) != FP32)
            outcomes.append(Outcome(plan, value, value <= 0.05))
        return outcomes

    result = drive(minimal_plan_search(LAYERS, level=Level(FP32, FP16), start=start), evaluate)
    assert result.pinned == ("l5",)
    assert result.plan == start.with_precision(["l5"], FP32)
    assert result.evidence["l5"].plan == start


@pytest.mark.parametrize("search", ["full", "fast", "adaptive"])
@pytest.mark.parametrize("cheaper", ["l3", "l7"])
def test_of_two_equivalent_layers_the_cheaper_is_kept(search, cheaper):
    """l3 and l7 are interchangeable (each alone repairs the pair penalty; same isolate value and signal): the
    tie-break order (the sweep passes layers cheapest to raise first) decides which one the plan keeps."""
    errors = {name: 0.001 for name in LAYERS}
    fake = FakeEvaluator(errors, tolerance=0.05, pairs={frozenset({"l3", "l7"}): 1.0})
    other = "l7" if cheaper == "l3" else "l3"
    order = [cheaper, other] + [n for n in LAYERS if n not in (cheaper, other)]
    signals = {name: (1.0 if name in ("l3", "l7") else 0.0) for name in LAYERS}
    context = SearchContext(names=LAYERS, signals=lambda: signals, tie_order=order, sensitivity="leave-one-out")
    result = drive(SEARCHES[search](context), fake)
    assert result.status == "found"
    assert list(result.pinned) == [cheaper]
