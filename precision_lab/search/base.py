"""The strategy protocol: yield batches of plans, receive their outcomes."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Outcome", "Strategy", "drive"]

Plan = frozenset[str]
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """The result of evaluating one plan: its metric value, whether it passes, and the journal key."""

    fp32_layers: Plan
    value: float
    passed: bool
    key: str = ""


Strategy = Generator[list[Plan], list[Outcome], T]


def drive(strategy: Strategy[T], evaluate: Callable[[Sequence[Plan]], list[Outcome]]) -> T:
    """Run ``strategy`` to completion, evaluating each batch it yields with ``evaluate``."""
    try:
        batch = next(strategy)
        while True:
            batch = strategy.send(evaluate(batch))
    except StopIteration as stop:
        return stop.value
