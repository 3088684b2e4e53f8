"""Exact early stop of pass/fail evaluations.

A search that only needs to know whether a plan passes can stop running feeds as soon as the plan is certain to
fail: the reference of every feed is known in advance, so after each feed the best value the whole evaluation
could still reach is computed (the remaining feeds assumed perfect: no error, cosine 1, top-1 agreeing) and, when
even that fails the tolerance, the plan has failed. The value recorded is that bound (a lower bound of a
lower-is-better metric, an upper bound of a higher-is-better one), never the partial value, and the record's
status is ``"stopped"`` so nothing that needs a full value (sensitivity scores, charts, confidence intervals)
uses it.

Built-in metrics only (task metrics need every output). Every criterion: ``aggregate`` from the running sums,
``worst-sample`` and ``pNN`` from the order statistic that both of numpy's quantile methods used by
:meth:`~precision_lab.criterion.Criterion.reduce` are bounded by (for ``p90`` on 32 feeds: once 5 feeds fail).
A small relative margin (:data:`MARGIN`) absorbs float rounding, so a stop is never decided by the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from precision_lab.compare import (
    METRICS,
    Comparison,
    ErrorStats,
    Metric,
    StreamingComparison,
)
from precision_lab.criterion import Criterion, metric_from_rows

__all__ = ["MARGIN", "ReferenceTotals", "StopRule", "final_bound"]

#: relative margin by which a bound must fail the tolerance before an evaluation stops
MARGIN = 1e-9


@dataclass(frozen=True)
class StopRule:
    """Stop an evaluation once ``metric`` under ``criterion`` is certain to fail ``tolerance``."""

    metric: Metric
    criterion: Criterion
    tolerance: float

    @property
    def applies(self) -> bool:
        """Whether the metric can be bounded before the last feed (built-in metrics only)."""
        return self.metric.name in METRICS

    def certainly_fails(self, bound: float) -> bool:
        """Whether a final value bounded by ``bound`` fails the tolerance, with :data:`MARGIN` to spare (a NaN
        bound means a NaN value, which always fails)."""
        if math.isnan(bound):
            return True
        margin = MARGIN * abs(self.tolerance)
        if self.metric.higher_is_better:
            return bound < self.tolerance - margin
        return bound > self.tolerance + margin

    def to_json(self) -> dict:
        return {"metric": self.metric.name, "criterion": self.criterion.name, "tolerance": self.tolerance}


class ReferenceTotals:
    """Per judged part, the statistics each feed's reference has against itself: its squared norm, element,
    row and top-1 row counts (what a perfect output of that feed would add)."""

    def __init__(self, per_feed: Mapping[str, Sequence[ErrorStats]]) -> None:
        self.per_feed = {part: list(rows) for part, rows in per_feed.items()}
        self.count = len(next(iter(self.per_feed.values()), []))

    @classmethod
    def of(cls, reference: Sequence[Mapping[str, np.ndarray]], slices=(), judged=None) -> ReferenceTotals:
        """The totals of ``reference`` (one dict per feed), parts as :class:`StreamingComparison` makes them."""
        comparison = StreamingComparison(slices, judged)
        for outputs in reference:
            comparison.add({k: np.asarray(v) for k, v in outputs.items()}, outputs)
        return cls(comparison.total.samples)

    def perfect(self, part: str, start: int) -> ErrorStats:
        """What feeds ``start``.. of ``part`` add when their outputs equal the reference."""
        total = ErrorStats()
        for stats in self.per_feed[part][start:]:
            total.sum_sq_ref += stats.sum_sq_ref
            total.count += stats.count
            total.samples += stats.samples
            total.cosine_sum += stats.samples
            total.top1_agree += stats.top1_rows
            total.top1_rows += stats.top1_rows
        return total


def _aggregate_bound(seen: ErrorStats, perfect: ErrorStats, metric: Metric) -> float:
    best = ErrorStats(
        sum_sq_err=seen.sum_sq_err,
        sum_sq_ref=seen.sum_sq_ref + perfect.sum_sq_ref,
        sum_abs_err=seen.sum_abs_err,
        max_abs_err=seen.max_abs_err,
        count=seen.count + perfect.count,
        cosine_sum=seen.cosine_sum + perfect.cosine_sum,
        samples=seen.samples + perfect.samples,
        top1_agree=seen.top1_agree + perfect.top1_agree,
        top1_rows=seen.top1_rows + perfect.top1_rows,
    )
    return best.values()[metric.name]


def _quantile_bound(values: np.ndarray, total: int, metric: Metric, criterion: Criterion) -> float:
    """A bound of ``criterion.reduce`` over ``total`` feeds of which ``values`` are known: the remaining ones
    are taken as perfect (-inf or +inf), and the order statistic below (above) both quantile methods is read."""
    higher = metric.higher_is_better
    values = np.where(np.isnan(values), -np.inf if higher else np.inf, np.asarray(values, dtype=np.float64))
    filled = np.sort(np.concatenate([values, np.full(total - values.size, np.inf if higher else -np.inf)]))
    q = 1.0 if criterion.quantile is None else criterion.quantile
    if higher:
        k = min(total - 1, math.ceil((total - 1) * (1.0 - q) + 1e-9))
    else:
        k = max(0, math.floor((total - 1) * q - 1e-9))
    return float(filled[k])


def final_bound(total: Comparison, seen: int, reference: ReferenceTotals, rule: StopRule) -> float:
    """The best value the whole evaluation can still reach after ``seen`` feeds (``total``: their running
    comparison): a lower bound for lower-is-better metrics, an upper bound otherwise; the worst part decides."""
    metric, criterion = rule.metric, rule.criterion
    bounds = []
    for part, stats in total.parts.items():
        if criterion.per_sample:
            rows = [s.to_row() for s in total.samples[part]]
            bounds.append(_quantile_bound(metric_from_rows(rows, metric.name), reference.count, metric, criterion))
        else:
            bounds.append(_aggregate_bound(stats, reference.perfect(part, seen), metric))
    if not bounds:
        return math.nan
    if any(math.isnan(b) for b in bounds):
        return math.nan
    return min(bounds) if metric.higher_is_better else max(bounds)
