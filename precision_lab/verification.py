"""Judging a plan on feeds the search never saw, and saying plainly when it may not hold on new inputs.

After the search, the final plan is evaluated on the verification feeds (disjoint from calibration and
evaluation). It passes them when its value passes the tolerance **and** so does the median of its value over
bootstrap resamples of those feeds (:func:`verification_verdict`): a percentile of a dozen heavy-tailed samples
sits between the two worst of them, and a plan that passes by less than that resolution fails on half the equally
likely verification sets. It must also pass, by the same rule, on the verification and calibration feeds together:
the search never judged a plan on either, so the calibration feeds double the evidence against a plan fitted to
its evaluation feeds. They can only add a failure, never rescue one: their ranges were calibrated on them, which
flatters any plan there. With ``until_verified``, a plan that fails verification sends the search round again at
a stricter *search* tolerance (:func:`tighten_tolerance`), until the plan passes both checks; the user's tolerance
itself never changes. :func:`generalization_notice` collects every reason to doubt the plan into one warning with
the fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from precision_lab.compare import Metric
from precision_lab.criterion import Criterion
from precision_lab.results import Evaluation

__all__ = [
    "VerificationRound", "VerificationVerdict", "verification_verdict", "failure_reason", "ON_RESAMPLES",
    "tighten_tolerance", "generalization_notice", "MIN_TRUSTED_EVAL_SAMPLES",
]

MIN_TRUSTED_EVAL_SAMPLES = 8  # below this the evaluation set cannot speak for new inputs
ON_RESAMPLES = "on the median resampled set"  # failure_reason's set when the verification feeds' median decided


@dataclass(frozen=True)
class VerificationRound:
    """One search at ``search_tolerance`` and its plan's values on the evaluation and verification sets:
    ``held_back`` is the verdict on the verification feeds, ``with_calibration`` the one on those and the
    calibration feeds together (``None`` when not judged), and ``with_calibration_samples`` how many feeds that is."""

    search_tolerance: float
    fp32_layers: tuple[str, ...]
    eval_value: float
    held_back: VerificationVerdict
    with_calibration: VerificationVerdict | None = None
    with_calibration_samples: int = 0

    @property
    def passed(self) -> bool:
        """Whether the plan passed verification: both checks."""
        return self.held_back.passed and (self.with_calibration is None or self.with_calibration.passed)

    def to_json(self) -> dict:
        return {
            "search_tolerance": self.search_tolerance,
            "fp32_layers": list(self.fp32_layers),
            "eval_value": self.eval_value,
            "verify_value": self.held_back.value,
            "verify_resampled_median": self.held_back.resampled_median,
            "verify_passed": self.passed,
            "held_back_passed": self.held_back.passed,
            "with_calibration": None if self.with_calibration is None else {
                "samples": self.with_calibration_samples,
                "value": self.with_calibration.value,
                "resampled_median": self.with_calibration.resampled_median,
                "deciding_value": self.with_calibration.deciding_value,
                "passed": self.with_calibration.passed,
            },
        }


@dataclass(frozen=True)
class VerificationVerdict:
    """A plan on the verification feeds: its ``value``, the median of that value over bootstrap resamples of the
    feeds (``None`` without per-sample values), whether it ``passed`` (both meet the tolerance), and the value that
    decided (the worse of the two)."""

    value: float
    resampled_median: float | None
    passed: bool
    deciding_value: float

    @property
    def failed_on_resamples_only(self) -> bool:
        """It meets the tolerance on the feeds themselves, but not on the median resampled set."""
        return not self.passed and self.deciding_value != self.value


def verification_verdict(
    record: Evaluation, metric: Metric, criterion: Criterion, tolerance: float, value: float | None = None
) -> VerificationVerdict:
    """Judge a plan's verification ``record`` against ``tolerance``: it passes when its value (``value`` if given,
    e.g. a custom metric's aggregate) passes and so does the median of that value over 2000 bootstrap resamples of
    the verification feeds (seed 0)."""
    value = record.value(metric, criterion) if value is None else value
    middle = record.interval(metric, criterion, level=0.0)  # a 0 % interval is the resampled median
    median = None if middle is None or math.isnan(middle[0]) or math.isinf(middle[0]) else middle[0]
    deciding = value
    if median is not None and metric.passes(value, tolerance) and not metric.passes(median, tolerance):
        deciding = median
    return VerificationVerdict(value, median, metric.passes(deciding, tolerance), deciding)


def failure_reason(metric: Metric, verification: dict, tolerance: float) -> tuple[str, float] | None:
    """Which value failed a failed verification, when it is not the plain value on the verification feeds, for
    the terminal, the report and the warning: ``(ON_RESAMPLES, 0.0551)`` or ``("on these and the calibration
    feeds, 24 samples", 0.21)``. ``verification`` is plan.json's ``verification`` block or one of
    its ``rounds``; ``None`` when it passed or its own value failed."""
    passed = verification.get("passed", verification.get("verify_passed"))
    if passed is not False:
        return None
    value = verification.get("value", verification.get("verify_value"))
    median = verification.get("resampled_median", verification.get("verify_resampled_median"))
    held_back = verification.get("held_back_passed", passed)
    if held_back is False and value is not None and median is not None and metric.passes(value, tolerance):
        return ON_RESAMPLES, median
    wide = verification.get("with_calibration")
    if held_back and wide and not wide["passed"]:
        where = f"these and the calibration feeds, {wide['samples']} samples"
        if wide["deciding_value"] != wide["value"]:
            return f"on the median resampled set of {where}", wide["deciding_value"]
        return f"on {where}", wide["value"]
    return None


def _error(metric: Metric, value: float) -> float | None:
    """Distance of ``value`` from a perfect result, where the metric has a perfect value (else ``None``)."""
    if metric.name == "sqnr":
        return 10.0 ** (-value / 10.0)  # noise-to-signal power ratio
    if not metric.higher_is_better and metric.low == 0.0:
        return value
    if metric.higher_is_better and math.isfinite(metric.high):
        return metric.high - value
    return None


def _from_error(metric: Metric, error: float) -> float:
    if metric.name == "sqnr":
        return -10.0 * math.log10(error)
    return error if not metric.higher_is_better else metric.high - error


def tighten_tolerance(metric: Metric, search_tolerance: float, tolerance: float, verify_value: float) -> float:
    """A stricter search tolerance after a plan measured ``verify_value`` on the verification set against
    ``tolerance``: the distance from a perfect result shrinks by the verification overshoot (between 0.25x and
    0.8x per round); metrics without a perfect value move by the overshoot itself."""
    target, got, current = _error(metric, tolerance), _error(metric, verify_value), _error(metric, search_tolerance)
    if target is not None and got is not None and current is not None and got > 0 and not math.isnan(got):
        factor = min(0.8, max(0.25, target / got))
        return _from_error(metric, current * factor)
    overshoot = abs(verify_value - tolerance) if math.isfinite(verify_value) else abs(tolerance) * 0.2 or 0.1
    return search_tolerance + overshoot if metric.higher_is_better else search_tolerance - overshoot


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def generalization_notice(
    *,
    metric: Metric,
    tolerance: float,
    eval_samples: int,
    verify_samples: int,
    interval: tuple[float, float] | None,
    verification: dict,
    rounds: Sequence[VerificationRound],
    until_verified: bool,
    criterion: str,
) -> str | None:
    """One warning naming every reason the plan may not hold on new inputs, with the fix; ``None`` if none.
    ``verification`` is plan.json's ``verification`` block."""
    reasons = []
    tried = f" after {len(rounds)} search rounds" if until_verified and len(rounds) > 1 else ""
    verify_value, verify_passed = verification.get("value"), verification.get("passed")
    reason = failure_reason(metric, verification, tolerance)
    if reason and reason[0] == ON_RESAMPLES:
        reasons.append(
            f"it passes the verification feeds it was not fitted to only by less than they can resolve{tried} "
            f"({metric.name} {_fmt(verify_value)}, but {_fmt(reason[1])} on the median resampled set, vs "
            f"tolerance {_fmt(tolerance)})"
        )
    elif reason:
        where, value = reason
        reasons.append(
            f"it passes the verification feeds ({metric.name} {_fmt(verify_value)}) but fails {where}{tried} "
            f"({_fmt(value)} vs tolerance {_fmt(tolerance)})"
        )
    elif verify_passed is False:
        reasons.append(
            f"it fails the verification feeds it was not fitted to{tried} ({metric.name} {_fmt(verify_value)} vs "
            f"tolerance {_fmt(tolerance)})"
        )
    if verify_samples == 0:
        reasons.append("there were too few feeds to hold any back for verification")
    if eval_samples < MIN_TRUSTED_EVAL_SAMPLES:
        reasons.append(f"only {eval_samples} evaluation samples judged it")
    if interval is not None and (metric.passes(interval[0], tolerance) != metric.passes(interval[1], tolerance)):
        reasons.append(
            f"its 95% confidence interval over the evaluation samples, {_fmt(interval[0])} to {_fmt(interval[1])}, "
            f"crosses the tolerance"
        )
    if not reasons:
        return None
    fixes = ["give more data (a few dozen feeds or more: see the README's 'How much data')"]
    if not until_verified and verify_passed is False:
        fixes.append("drop --no-until-verified to search again until the plan also holds on the verification feeds")
    if criterion == "aggregate":
        fixes.append("or judge inputs one by one with --criterion p90")
    return "the plan may not hold on new inputs: " + "; ".join(reasons) + ". Fix: " + ", ".join(fixes)
