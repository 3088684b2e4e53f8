"""What the tolerance applies to, and how sure a value is.

Every evaluation keeps, per output part, the error statistics of each sample (one feed) alone
(:meth:`~precision_lab.compare.ErrorStats.to_row`). From them:

* a :class:`Criterion` turns them into the plan's value: ``aggregate`` (the metric over the whole set, as
  docs/design.md defines it), ``worst-sample``, or a quantile ``pNN`` of the per-sample values (``p90``: the value that
  90 % of the samples meet or beat). The worst part decides, as always;
* :func:`bootstrap_interval` gives a confidence interval of that value by resampling the samples;
* :func:`sample_values` gives each sample's value, worst part first, for naming the hardest inputs.

A sample's value of a built-in metric is the metric computed on that feed alone (``rel-l2`` of feed i is
‖yᵢ − rᵢ‖ / ‖rᵢ‖).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from precision_lab.compare import METRICS, ROW_FIELDS, Metric
from precision_lab.errors import InputError

__all__ = [
    "Criterion",
    "AGGREGATE",
    "CRITERIA_HELP",
    "metric_from_rows",
    "sample_values",
    "criterion_value",
    "bootstrap_interval",
]

_COL = {name: i for i, name in enumerate(ROW_FIELDS)}
CRITERIA_HELP = "aggregate (the metric over the whole set), worst-sample, or pNN (e.g. p90: the per-sample quantile)"


@dataclass(frozen=True)
class Criterion:
    """What the tolerance is applied to. ``quantile`` is ``None`` for ``aggregate``, 1.0 for ``worst-sample``,
    and q for ``pNN`` (q = NN/100): the value that a share q of the samples meet or beat."""

    name: str
    quantile: float | None = None

    @classmethod
    def parse(cls, text: str | Criterion) -> Criterion:
        """``aggregate``, ``worst-sample`` (or ``worst``), or ``pNN`` with 50 <= NN < 100 (``p90``, ``p97.5``)."""
        if isinstance(text, Criterion):
            return text
        text = str(text).strip().lower()
        if text == "aggregate":
            return cls("aggregate")
        if text in ("worst-sample", "worst", "max", "p100"):
            return cls("worst-sample", 1.0)
        match = re.fullmatch(r"p(\d+(?:\.\d+)?)", text)
        if match and 50 <= float(match.group(1)) < 100:
            return cls(f"p{match.group(1)}", float(match.group(1)) / 100)
        raise InputError(f"unknown --criterion '{text}'; choose {CRITERIA_HELP}")

    @property
    def per_sample(self) -> bool:
        return self.quantile is not None

    def reduce(self, values: np.ndarray, metric: Metric, axis: int = -1) -> np.ndarray | float:
        """The quantile of per-sample ``values`` along ``axis``, on the bad side: the high tail for
        lower-is-better metrics, the low tail for higher-is-better ones. NaN (a failed sample) is worst."""
        q = 1.0 if self.quantile is None else self.quantile
        q = 1.0 - q if metric.higher_is_better else q
        values = np.asarray(values, dtype=np.float64)
        bad = -np.inf if metric.higher_is_better else np.inf
        values = np.where(np.isnan(values), bad, values)
        result = np.quantile(values, q, axis=axis, method="inverted_cdf" if np.isinf(values).any() else "linear")
        return result


AGGREGATE = Criterion("aggregate")


def _values(sums: np.ndarray, name: str) -> np.ndarray:
    """Metric ``name`` from statistics rows ``sums`` (``[..., len(ROW_FIELDS)]``), vectorized."""
    col = lambda field: sums[..., _COL[field]]  # noqa: E731 - a local accessor reads better than 9 variables
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "rel-l2":
            sse, ssr = col("sum_sq_err"), col("sum_sq_ref")
            return np.where(ssr > 0, np.sqrt(sse / np.where(ssr > 0, ssr, 1)), np.where(sse == 0, 0.0, np.inf))
        if name == "max-abs":
            return col("max_abs_err")
        if name == "mean-abs":
            count = col("count")
            return np.where(count > 0, col("sum_abs_err") / np.where(count > 0, count, 1), 0.0)
        if name == "cosine":
            samples = col("samples")
            return np.where(samples > 0, col("cosine_sum") / np.where(samples > 0, samples, 1), 1.0)
        if name == "sqnr":
            sse, ssr = col("sum_sq_err"), col("sum_sq_ref")
            safe = np.where((sse > 0) & (ssr > 0), ssr / np.where(sse > 0, sse, 1), 1.0)
            return np.where(sse == 0, np.inf, np.where(ssr == 0, -np.inf, 10.0 * np.log10(safe)))
        if name == "top1":
            rows = col("top1_rows")
            return np.where(rows > 0, col("top1_agree") / np.where(rows > 0, rows, 1), 1.0)
    raise KeyError(name)


def _sum_rows(rows: np.ndarray, axis: int) -> np.ndarray:
    """Merge statistics rows along ``axis``: sums, except the maximum of ``max_abs_err``."""
    merged = rows.sum(axis=axis)
    merged[..., _COL["max_abs_err"]] = rows[..., _COL["max_abs_err"]].max(axis=axis)
    return merged


def metric_from_rows(rows: Sequence[Sequence[float]], name: str) -> np.ndarray:
    """Per-sample values of built-in metric ``name`` from per-sample statistics rows."""
    return _values(np.asarray(rows, dtype=np.float64).reshape(-1, len(ROW_FIELDS)), name)


def _worst(values: np.ndarray, metric: Metric, axis: int = 0) -> np.ndarray:
    """Worst along ``axis`` (NaN is worst)."""
    if np.isnan(values).any(axis=axis).all():
        return np.full(np.delete(values.shape, axis), np.nan) if values.ndim > 1 else np.nan
    reduced = np.min(values, axis=axis) if metric.higher_is_better else np.max(values, axis=axis)
    return np.where(np.isnan(values).any(axis=axis), np.nan, reduced)


def sample_values(samples: Mapping[str, Sequence[Sequence[float]]], metric: Metric) -> dict[str, np.ndarray]:
    """Per part, each sample's value of built-in ``metric`` (``samples``: part -> statistics rows)."""
    return {part: metric_from_rows(rows, metric.name) for part, rows in samples.items()}


def criterion_value(
    samples: Mapping[str, Sequence[Sequence[float]]] | None,
    metric: Metric,
    criterion: Criterion,
    *,
    custom: float | None = None,
    custom_samples: Sequence[float] | None = None,
) -> float:
    """The value of ``metric`` under ``criterion``: built-in metrics from per-sample statistics (the worst part
    decides), custom metrics from their aggregate (``custom``) or per-sample values. NaN when missing."""
    if metric.name not in METRICS:
        if not criterion.per_sample:
            return math.nan if custom is None else float(custom)
        if not custom_samples:
            return math.nan
        return float(criterion.reduce(np.asarray(custom_samples, dtype=np.float64), metric))
    if not samples:
        return math.nan
    per_part = []
    for rows in samples.values():
        array = np.asarray(rows, dtype=np.float64)
        if criterion.per_sample:
            per_part.append(float(criterion.reduce(_values(array, metric.name), metric)))
        else:
            per_part.append(float(_values(_sum_rows(array, 0), metric.name)))
    return float(_worst(np.asarray(per_part), metric))


def bootstrap_interval(
    samples: Mapping[str, Sequence[Sequence[float]]] | None,
    metric: Metric,
    criterion: Criterion,
    *,
    custom_samples: Sequence[float] | None = None,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval (default 95 %, 2000 resamples, seed 0) of the value under ``criterion``,
    resampling samples (feeds) with replacement; every part is resampled with the same feeds. ``None`` when
    there are fewer than 2 samples or no per-sample values (a custom metric's aggregate that is not the mean
    of its per-sample values has no interval)."""
    if metric.name not in METRICS:
        values = None if custom_samples is None else np.asarray(custom_samples, dtype=np.float64)
        if values is None or values.size < 2:
            return None
        index = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
        stats = values[index].mean(axis=1) if not criterion.per_sample else criterion.reduce(values[index], metric)
    else:
        arrays = [np.asarray(rows, dtype=np.float64) for rows in (samples or {}).values()]
        if not arrays or arrays[0].shape[0] < 2:
            return None
        count = arrays[0].shape[0]
        index = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
        per_part = []
        for array in arrays:
            if criterion.per_sample:
                per_part.append(criterion.reduce(_values(array, metric.name)[index], metric, axis=1))
            else:
                per_part.append(_values(_sum_rows(array[index], 1), metric.name))
        stats = _worst(np.stack(per_part), metric, axis=0)
    stats = np.where(np.isnan(stats), -np.inf if metric.higher_is_better else np.inf, stats)
    tail = (1.0 - level) / 2
    low, high = np.quantile(stats, [tail, 1.0 - tail], method="inverted_cdf")
    return float(low), float(high)
