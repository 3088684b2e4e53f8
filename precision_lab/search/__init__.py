"""Sensitivity strategies and the minimal-plan search. Pure logic: no backend, no I/O.

A strategy is a generator that yields batches of plans (each a frozenset of FP32 layer names) and receives
the list of :class:`Outcome` for each batch; its return value is its result. :func:`drive` runs one against
any evaluation function, which is how tests use a fake evaluator and the sweep uses real backends.
"""

from precision_lab.search.base import Outcome, Strategy, drive
from precision_lab.search.fast import fast_plan_search
from precision_lab.search.minimal import MinimalPlan, minimal_plan_search
from precision_lab.search.sensitivity import SENSITIVITY_MODES, rank_layers, sensitivity_plans

__all__ = [
    "Outcome",
    "Strategy",
    "drive",
    "MinimalPlan",
    "minimal_plan_search",
    "fast_plan_search",
    "SENSITIVITY_MODES",
    "rank_layers",
    "sensitivity_plans",
]
