"""The noise floor: how much of the tolerance the all-FP32 plan already uses.

The all-FP32 plan is the prepared model (BatchNorm and constants folded) with no Q/DQ, so it differs from the
original only by float rounding. When that alone uses a sizeable share of the tolerance, the metric measures
noise rather than quantization: typically an output that is almost all zeros, where a relative error divides
rounding noise by a tiny norm. :func:`warn_noise_floor` says so, with the reason and a better metric or slice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from precision_lab.compare import Metric, OutputSlice
from precision_lab.console import fmt_value

__all__ = ["tolerance_share", "noise_floor_warning", "warn_noise_floor", "SIZEABLE_SHARE", "NEAR_ZERO"]

log = logging.getLogger("precision_lab")

SIZEABLE_SHARE = 0.25  # the all-FP32 plan using this share of the tolerance or more is worth a warning
NEAR_ZERO = 1e-6  # a reference value below this fraction of the part's largest magnitude counts as zero
_ALMOST_ALL = 0.9  # "almost all zeros": at least this fraction of the values


def tolerance_share(metric: Metric, value: float, tolerance: float) -> float:
    """The share of the tolerance's error budget that ``value`` uses (0: perfect, 1: at the tolerance)."""
    if math.isnan(value):
        return math.inf
    if metric.name == "sqnr":  # in dB: compare noise powers
        return 0.0 if value == math.inf else 10 ** ((tolerance - value) / 10)
    if metric.name in ("cosine", "top1"):
        return (1.0 - value) / (1.0 - tolerance) if tolerance < 1 else (0.0 if value >= 1 else math.inf)
    if metric.higher_is_better:
        return 0.0  # a custom higher-is-better metric: no known ideal value
    return value / tolerance if tolerance > 0 else (0.0 if value <= 0 else math.inf)


def _reference_part(reference, part: str, slices: Sequence[OutputSlice]):
    """The reference arrays of ``part`` (an output name or a slice label), one per sample."""
    chosen = next((s for s in slices if s.label == part), None)
    output = chosen.output if chosen else part
    for sample in reference:
        if output in sample:
            array = np.asarray(sample[output], dtype=np.float64)
            yield chosen.take(array) if chosen else array


def noise_floor_warning(
    metric: Metric, tolerance: float, all_fp32, reference, slices: Sequence[OutputSlice] = ()
) -> str | None:
    """The warning for the all-FP32 evaluation ``all_fp32`` (an :class:`~precision_lab.results.Evaluation`),
    or ``None`` when it uses less than :data:`SIZEABLE_SHARE` of the tolerance."""
    if all_fp32 is None or all_fp32.status != "ok":
        return None
    value = all_fp32.value(metric)
    share = tolerance_share(metric, value, tolerance)
    if share < SIZEABLE_SHARE:
        return None
    part = all_fp32.worst_part(metric)
    where = f" on {part}" if part else ""
    head = (
        f"noise floor: the all-FP32 plan already has {metric.name} = {fmt_value(value, tolerance)}{where}, "
        f"{share:.0%} of the tolerance {tolerance:g}, although it differs from the original model only by float "
        "rounding (folded BatchNorm and constants)"
    )
    if not part:
        return head + "; the metric measures rounding noise here: choose a metric or tolerance above it"
    arrays = list(_reference_part(reference, part, slices))
    peak = max((float(np.max(np.abs(a))) for a in arrays if a.size), default=0.0)
    size = sum(a.size for a in arrays)
    zeros = sum(int(np.sum(np.abs(a) <= NEAR_ZERO * peak)) for a in arrays) / size if size else 0.0
    if zeros >= _ALMOST_ALL:
        return (
            f"{head}: {zeros:.0%} of the FP32 reference values of {part} are (almost) zero, so a relative metric "
            "divides rounding noise by a tiny norm. Judge it with --metric max-abs or mean-abs and an absolute "
            "--tolerance, or with --output-slice on the part of the output that carries the signal"
        )
    return (
        f"{head}: the metric measures rounding noise, and no plan can do better than this floor. Judge {part} "
        "with an absolute metric (--metric max-abs or mean-abs), loosen --tolerance, or leave this part out "
        "with --output-slice"
    )


def warn_noise_floor(metric: Metric, tolerance: float, all_fp32, reference, slices: Sequence[OutputSlice] = ()) -> None:
    """Log :func:`noise_floor_warning` when there is one."""
    message = noise_floor_warning(metric, tolerance, all_fp32, reference, slices)
    if message:
        log.warning(message)
