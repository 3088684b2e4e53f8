"""Sensitivity strategies and the minimal-plan search. Pure logic: no backend, no I/O.

A strategy is a generator that yields batches of :class:`~precision_lab.precisions.PrecisionPlan` and receives
the list of :class:`Outcome` for each batch; its return value is its result. :func:`drive` runs one against
any evaluation function, which is how tests use a fake evaluator and the sweep uses real backends. Strategies
are looked up by name in :data:`SEARCHES`.
"""

from precision_lab.search.adaptive import adaptive_plan_search
from precision_lab.search.base import Batch, Outcome, Strategy, drive
from precision_lab.search.fast import fast_plan_search
from precision_lab.search.minimal import (
    MinimalPlan,
    baseline_plans,
    baseline_verdict,
    minimal_plan_search,
)
from precision_lab.search.prefix_bisect import prefix_bisect_search
from precision_lab.search.sensitivity import (
    SENSITIVITY_KINDS,
    SENSITIVITY_MODES,
    rank_layers,
    sensitivity_plans,
)
from precision_lab.search.strategies import (
    SEARCHES,
    SearchContext,
    adaptive_search,
    fast_search,
    full_search,
)

__all__ = [
    "SEARCHES",
    "SENSITIVITY_KINDS",
    "SENSITIVITY_MODES",
    "Batch",
    "MinimalPlan",
    "Outcome",
    "SearchContext",
    "Strategy",
    "adaptive_plan_search",
    "adaptive_search",
    "baseline_plans",
    "baseline_verdict",
    "drive",
    "fast_plan_search",
    "fast_search",
    "full_search",
    "minimal_plan_search",
    "prefix_bisect_search",
    "rank_layers",
    "sensitivity_plans",
]
