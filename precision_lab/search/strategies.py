"""Search strategies by name: each turns a :class:`SearchContext` into a strategy that starts from the baselines
and ends with a verified, 1-minimal :class:`~precision_lab.search.minimal.MinimalPlan`.

Adding a strategy is one function and one line in :data:`SEARCHES`. A strategy publishes the per-layer values
it measured as ``MinimalPlan.scores`` (kind -> layer -> value); results, ``sensitivity.csv``, the terminal and the
report show every kind they find there.

* ``full`` (default): one sensitivity evaluation per layer (``isolate``, ``leave-one-out`` or ``both``), the
  ranking, then bisection and pruning.
* ``fast``: one-pass signals order the layers (no per-layer evaluations); bisection rounds and the same pruning.
* ``adaptive``: one-pass signals order the layers; one bisection, then group pruning; the full mode's order
  when probes show the signal's order is wrong (:mod:`precision_lab.search.adaptive`).
* ``bisect`` / ``bisect-reverse``: Polygraphy ``debug precision``'s bisection for the shortest prefix / suffix
  of the graph order (:mod:`precision_lab.search.prefix_bisect`); for comparison, not 1-minimal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from precision_lab.precisions import BINARY, Level, PrecisionPlan
from precision_lab.search.adaptive import adaptive_plan_search
from precision_lab.search.base import Batch, Strategy
from precision_lab.search.fast import fast_plan_search
from precision_lab.search.minimal import MinimalPlan, baseline_step, minimal_plan_search
from precision_lab.search.prefix_bisect import prefix_bisect_search
from precision_lab.search.sensitivity import rank_layers, sensitivity_plans

__all__ = ["SEARCHES", "SearchContext", "adaptive_search", "fast_search", "full_search"]


@dataclass(frozen=True)
class SearchContext:
    """What a strategy may use: the candidate layers in graph order, the metric's direction, the sensitivity
    mode (``full``), the one-pass signals (``fast``; computed only when called), the level and start plan
    (default INT8 -> FP32 from all-INT8), and ``tie_order``: the order that breaks ties between layers of equal
    sensitivity (default graph order; the sweep passes the layers by estimated cost of raising them, cheapest
    first, so that of two equivalent layers the cheaper is kept)."""

    names: Sequence[str]
    higher_is_better: bool = False
    sensitivity: str = "isolate"
    signals: Callable[[], Mapping[str, float]] | None = None
    level: Level = BINARY
    start: PrecisionPlan = field(default_factory=PrecisionPlan)
    tie_order: Sequence[str] | None = None

    def ordered(self) -> list[str]:
        """``names`` in tie-break order (``tie_order``, then any name it lacks in graph order)."""
        names = list(self.names)
        if not self.tie_order:
            return names
        wanted = set(names)
        first = [n for n in self.tie_order if n in wanted]
        seen = set(first)
        return first + [n for n in names if n not in seen]


def full_search(context: SearchContext) -> Strategy[MinimalPlan]:
    """Baselines, one sensitivity evaluation per layer and kind, the ranking, bisection and pruning."""
    names, level, start = list(context.names), context.level, context.start
    baselines, verdict = yield from baseline_step(names, level, start)
    if verdict is not None:
        return verdict
    plans = sensitivity_plans(names, context.sensitivity, level=level, start=start)
    outcomes = yield Batch([plan for _, _, plan in plans], f"sensitivity ({context.sensitivity})")
    scores: dict[str, dict[str, float]] = {}
    for (kind, layer, _), outcome in zip(plans, outcomes):
        scores.setdefault(kind, {})[layer] = outcome.value
    ranking = rank_layers(context.ordered(), scores=scores, higher_is_better=context.higher_is_better)
    found = yield from minimal_plan_search(ranking, level=level, start=start, baselines=baselines)
    return replace(found, scores=scores)


def fast_search(context: SearchContext) -> Strategy[MinimalPlan]:
    """Baselines, one-pass signals for the order, bisection rounds and pruning."""
    names, level, start = list(context.names), context.level, context.start
    baselines, verdict = yield from baseline_step(names, level, start)
    if verdict is not None:
        return verdict
    signal, order = _signal_order(context, "fast")
    found = yield from fast_plan_search(order, level=level, start=start, baselines=baselines)
    return replace(found, scores={"signal": signal})


def adaptive_search(context: SearchContext) -> Strategy[MinimalPlan]:
    """Baselines, one-pass signals for the order, probes, bisection and group pruning (isolate order when the
    probes disprove the signal's)."""
    names, level, start = list(context.names), context.level, context.start
    baselines, verdict = yield from baseline_step(names, level, start)
    if verdict is not None:
        return verdict
    signal, order = _signal_order(context, "adaptive")
    found = yield from adaptive_plan_search(
        order, level=level, start=start, baselines=baselines, names=context.ordered(),
        higher_is_better=context.higher_is_better,
    )
    return replace(found, scores={"signal": signal, **found.scores})


def _signal_order(context: SearchContext, search: str) -> tuple[dict[str, float], list[str]]:
    """The one-pass signals and the layers by signal, largest first (ties in ``context.ordered()`` order)."""
    if context.signals is None:
        raise ValueError(f"the {search} search needs one-pass signals")
    signal = dict(context.signals())
    position = {name: i for i, name in enumerate(context.ordered())}
    return signal, sorted(context.names, key=lambda n: (-signal[n], position[n]))


SEARCHES: dict[str, Callable[[SearchContext], Strategy[MinimalPlan]]] = {
    "full": full_search,
    "fast": fast_search,
    "adaptive": adaptive_search,
    "bisect": lambda context: prefix_bisect_search(context.names, level=context.level, start=context.start),
    "bisect-reverse": lambda c: prefix_bisect_search(c.names, direction="reverse", level=c.level, start=c.start),
}
