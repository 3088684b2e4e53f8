"""The strategy protocol: yield batches of plans, receive their outcomes.

A strategy is a generator. Each ``yield`` hands over a batch of :class:`~precision_lab.precisions.PrecisionPlan`
(a plain list, or a :class:`Batch` that also names its phase) and receives one :class:`Outcome` per plan; the
generator's return value is the strategy's result. :func:`drive` runs a strategy against any evaluation function,
which is how tests use a fake evaluator and the sweep uses real backends.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from precision_lab.precisions import PrecisionPlan

__all__ = ["Outcome", "Strategy", "Batch", "drive"]

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """The result of evaluating one plan: its metric value, whether it passes, and the journal key."""

    plan: PrecisionPlan
    value: float
    passed: bool
    key: str = ""

    @property
    def fp32_layers(self) -> frozenset[str]:
        return self.plan.fp32_layers


class Batch(list):
    """Plans to evaluate together, and the phase they belong to (progress and journal; default ``search``)."""

    def __init__(self, plans: Iterable[PrecisionPlan] = (), phase: str = "search") -> None:
        super().__init__(plans)
        self.phase = phase


Strategy = Generator[list[PrecisionPlan], list[Outcome], T]


def drive(strategy: Strategy[T], evaluate: Callable[[Sequence[PrecisionPlan]], list[Outcome]]) -> T:
    """Run ``strategy`` to completion, evaluating each batch it yields with ``evaluate``."""
    try:
        batch = next(strategy)
        while True:
            batch = strategy.send(evaluate(batch))
    except StopIteration as stop:
        return stop.value
