"""The evaluation loop: the only place that runs plans.

An :class:`Evaluator` looks each plan up in the journal, runs the missing ones on its executor (serially, in
worker processes or on Ray actors), and appends every result to the journal as it finishes, so a sweep
interrupted at any point resumes without redoing finished work. It drives search strategies
(:meth:`Evaluator.drive`) and turns records into :class:`~precision_lab.search.Outcome` values with the sweep's
metric, criterion and tolerance.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from precision_lab.compare import Metric
from precision_lab.console import fmt_value
from precision_lab.criterion import Criterion
from precision_lab.early_stop import StopRule
from precision_lab.executors import Executor
from precision_lab.journal import JOURNAL_FORMAT, Journal
from precision_lab.precisions import PrecisionPlan
from precision_lab.progress import Progress
from precision_lab.results import Evaluation, Measurement
from precision_lab.search import Outcome, Strategy, drive

__all__ = ["PASS_FAIL_PHASES", "Evaluator", "stable_hash"]

#: phases whose evaluations only need pass or fail, and so may stop early (baselines, sensitivity and
#: verification values are shown and used as numbers, and always run every feed)
PASS_FAIL_PHASES = frozenset({"search"})

log = logging.getLogger("precision_lab")


def stable_hash(*parts: object) -> str:
    """sha256 of ``parts`` as sorted-key JSON: the same on every machine and run."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Evaluator:
    """Evaluates plans for one data set (``context_key`` names everything that affects results) and keeps them
    in ``journal``. ``tolerance`` may change between searches; records never do. ``order`` gives each
    candidate's graph position (FP32 layers are recorded in graph order)."""

    executor: Executor
    metric: Metric
    tolerance: float
    journal: Journal
    context_key: str
    order: Mapping[str, int]
    progress: Progress
    criterion: Criterion = Criterion("aggregate")
    ran: int = 0
    early_stop: bool = False  # stop pass/fail evaluations once they certainly fail (PASS_FAIL_PHASES)
    asked: set[str] = field(default_factory=set)  # keys of the plans this run asked for, evaluated or resumed

    def key(self, plan: PrecisionPlan) -> str:
        """The journal key of ``plan`` (binary plans keep the key they always had)."""
        return stable_hash(self.context_key, plan.key_material())[:40]

    def outcome(self, record: Evaluation) -> Outcome:
        value = record.value(self.metric, self.criterion)
        return Outcome(record.plan, value, self.metric.passes(value, self.tolerance), record.key)

    def record(self, plan: PrecisionPlan) -> Evaluation:
        """The journal's evaluation of ``plan`` (``KeyError`` if it was never evaluated)."""
        data = self.journal.get(self.key(plan))
        if data is None:
            raise KeyError(f"plan {plan!r} was not evaluated")
        return Evaluation.from_json(data)

    def records(self) -> tuple[Evaluation, ...]:
        """The evaluations of the plans this run asked for, from the journal, in the order they were made. A
        journal may hold more of the same context (a sweep resumed with another ``--search``); they are not this
        run's."""
        chosen = (
            Evaluation.from_json(r)
            for r in self.journal.records.values()
            if r.get("context") == self.context_key and r["key"] in self.asked
        )
        return tuple(sorted(chosen, key=lambda r: r.sequence))

    def stop_rule(self, phase: str) -> StopRule | None:
        """The early-stop rule of ``phase``: only pass/fail phases, only with ``early_stop``."""
        if not self.early_stop or phase not in PASS_FAIL_PHASES:
            return None
        return StopRule(self.metric, self.criterion, self.tolerance)

    def usable(self, key: str, phase: str) -> bool:
        """Whether the journal's record ``key`` answers ``phase``: a complete record always; a stopped one only
        in a pass/fail phase and while it still proves the failure (same metric and criterion, a tolerance no
        looser); anything that needs the full value evaluates the plan again."""
        data = self.journal.get(key)
        if data is None:
            return False
        if data.get("status") != "stopped":
            return True
        record = Evaluation.from_json(data)
        return phase in PASS_FAIL_PHASES and record.fails_for_sure(self.metric, self.criterion, self.tolerance)

    def evaluate(self, plans: Sequence[PrecisionPlan], phase: str) -> list[Outcome]:
        """Outcomes of ``plans``, evaluating those the journal does not hold (progress under ``phase``)."""
        keys = {plan: self.key(plan) for plan in plans}
        self.asked.update(keys.values())
        todo = [plan for plan, key in keys.items() if not self.usable(key, phase)]
        if todo:
            bar = self.progress.bar(phase, len(todo))
            stop = self.stop_rule(phase)
            prefetch = getattr(self.executor, "prefetch", None)
            if prefetch is not None:
                prefetch(todo)
            for plan, measurement in self.executor.run(todo, stop) if stop else self.executor.run(todo):
                record = self._append(plan, phase, measurement)
                bar.update(1)
                bar.set_postfix_str(self.shown_metric(record), refresh=False)
        return [self.outcome(self.record(plan)) for plan in plans]

    def shown_value(self, record: Evaluation) -> str:
        """``record``'s value as the terminal shows it: a stopped evaluation's bound as ``>=x`` (``<=x`` for
        higher-is-better metrics) with the feeds it ran, never as if it were the full value."""
        value = fmt_value(record.value(self.metric, self.criterion), self.tolerance)
        if record.status == "stopped" and record.stopped:
            side = "<=" if self.metric.higher_is_better else ">="
            return f"{side}{value} (failed after {record.stopped['samples']}/{record.stopped['of']} feeds)"
        return value

    def shown_metric(self, record: Evaluation) -> str:
        """``rel-l2=0.0412``, or ``rel-l2>=0.05169 (failed after 14/24 feeds)`` for a stopped evaluation."""
        shown = self.shown_value(record)
        return f"{self.metric.name}{'' if shown[:2] in ('>=', '<=') else '='}{shown}"

    def drive(self, strategy: Strategy):
        """Run ``strategy`` to its result; each batch is evaluated under its phase (default ``search``)."""
        return drive(strategy, lambda batch: self.evaluate(batch, getattr(batch, "phase", "search")))

    def close(self) -> None:
        self.progress.close()
        self.executor.close()

    def _append(self, plan: PrecisionPlan, phase: str, measurement: Measurement) -> Evaluation:
        if measurement.status == "failed":
            log.warning(
                "evaluation of a plan with %d layers out of INT8 failed: %s", len(plan.high_precision), measurement.error
            )
        record = Evaluation.of(
            key=self.key(plan),
            plan=plan,
            fp32_layers=tuple(sorted(plan.fp32_layers, key=lambda n: self.order.get(n, 0))),
            phase=phase,
            sequence=len(self.journal.records),
            measurement=measurement,
        )
        self.journal.append(record.to_json() | {"context": self.context_key, "format": JOURNAL_FORMAT})
        self.ran += 1
        return record
