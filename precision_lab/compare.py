"""Metrics: Polygraphy's comparator pairs outputs by name; we accumulate error statistics over the whole
evaluation set and turn them into the metrics of docs/design.md.

| name       | definition                                        | better |
|------------|---------------------------------------------------|--------|
| rel-l2     | ||y - r||_2 / ||r||_2                             | lower  |
| max-abs    | max |y - r|                                       | lower  |
| mean-abs   | mean |y - r|                                      | lower  |
| cosine     | mean over samples of cos(y_i, r_i), flattened     | higher |
| sqnr       | 10 log10(||r||^2 / ||y - r||^2) dB                | higher |
| top1       | fraction of rows whose argmax over the last axis agrees | higher |
| accuracy   | top-1 of the first output against the user's labels | higher |

``accuracy`` and custom ``module:function`` metrics are *task metrics* (:class:`TaskMetric`): computed from the
outputs (and labels) of every sample rather than from error statistics.

Every model output (or output slice, ``--output-slice NAME:AXIS:START:STOP``) is a *part*; the worst part
decides. A sample is one row along axis 0 of an output.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from precision_lab.console import quiet_polygraphy
from precision_lab.errors import InputError

__all__ = [
    "Metric",
    "METRICS",
    "OutputSlice",
    "ErrorStats",
    "get_metric",
    "load_custom_metric",
    "compare_outputs",
    "StreamingComparison",
    "Comparison",
    "ChannelStats",
    "worst_value",
    "TASK_METRICS",
    "TaskMetric",
    "top1_accuracy",
]


@dataclass(frozen=True)
class Metric:
    """A metric's name and direction (``lower`` or ``higher`` is better), and the tolerance range it takes."""

    name: str
    direction: str
    low: float = -math.inf
    high: float = math.inf

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    def passes(self, value: float, tolerance: float) -> bool:
        """Whether ``value`` is on the good side of ``tolerance`` (NaN never passes)."""
        if math.isnan(value):
            return False
        return value >= tolerance if self.higher_is_better else value <= tolerance

    def worse(self, a: float, b: float) -> float:
        """The worse of two values (NaN is worst)."""
        if math.isnan(a) or math.isnan(b):
            return math.nan
        return min(a, b) if self.higher_is_better else max(a, b)

    def check_tolerance(self, tolerance: float) -> None:
        if math.isnan(tolerance) or not self.low <= tolerance <= self.high:
            raise InputError(
                f"tolerance {tolerance} is out of range for metric '{self.name}' "
                f"(allowed {self.low} to {self.high}); pick a value in that range"
            )


METRICS: dict[str, Metric] = {
    "rel-l2": Metric("rel-l2", "lower", 0.0),
    "max-abs": Metric("max-abs", "lower", 0.0),
    "mean-abs": Metric("mean-abs", "lower", 0.0),
    "cosine": Metric("cosine", "higher", -1.0, 1.0),
    "sqnr": Metric("sqnr", "higher"),
    "top1": Metric("top1", "higher", 0.0, 1.0),
}


TASK_METRICS: dict[str, Metric] = {"accuracy": Metric("accuracy", "higher", 0.0, 1.0)}


def get_metric(name: str, *, direction: str | None = None) -> Metric:
    """The built-in metric ``name``, or a custom ``module:function`` metric with its declared ``direction``."""
    if name in TASK_METRICS:
        if direction is not None and direction != TASK_METRICS[name].direction:
            raise InputError(f"metric '{name}' is {TASK_METRICS[name].direction}-is-better; drop --metric-direction")
        return TASK_METRICS[name]
    if name in METRICS:
        if direction is not None and direction != METRICS[name].direction:
            raise InputError(f"metric '{name}' is {METRICS[name].direction}-is-better; drop --metric-direction")
        return METRICS[name]
    if ":" in name:
        if direction not in ("lower", "higher"):
            raise InputError(
                f"custom metric '{name}' needs its direction: add --metric-direction lower (or higher) is better"
            )
        return Metric(name, direction)
    raise InputError(
        f"unknown metric '{name}'; choose one of {', '.join([*METRICS, *TASK_METRICS])} or a custom module:function"
    )


def load_custom_metric(spec: str) -> Callable[..., float]:
    """Import ``module:function`` or ``path/to/file.py:function`` (see :class:`TaskMetric` for how it is called)."""
    from precision_lab.user_code import load_function

    return load_function(spec, what="custom metric")


@dataclass(frozen=True)
class OutputSlice:
    """A part of an output judged on its own: ``output[..., start:stop, ...]`` along ``axis``."""

    output: str
    axis: int
    start: int
    stop: int

    @classmethod
    def parse(cls, text: str) -> OutputSlice:
        parts = text.rsplit(":", 3)
        try:
            name, axis, start, stop = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
        except (IndexError, ValueError):
            raise InputError(f"bad --output-slice '{text}'; write NAME:AXIS:START:STOP, e.g. output0:1:4:22") from None
        if not name or start < 0 or stop <= start:
            raise InputError(f"bad --output-slice '{text}'; need START >= 0 and STOP > START")
        return cls(name, axis, start, stop)

    @property
    def label(self) -> str:
        return f"{self.output}[axis {self.axis}: {self.start}:{self.stop}]"

    def take(self, array: np.ndarray) -> np.ndarray:
        if not -array.ndim <= self.axis < array.ndim or self.stop > array.shape[self.axis]:
            raise InputError(
                f"--output-slice {self.output}:{self.axis}:{self.start}:{self.stop} does not fit the output's "
                f"shape {tuple(array.shape)}"
            )
        index = [slice(None)] * array.ndim
        index[self.axis] = slice(self.start, self.stop)
        return array[tuple(index)]


@dataclass
class ErrorStats:
    """Sufficient statistics of the difference between an output ``y`` and its reference ``r``."""

    sum_sq_err: float = 0.0
    sum_sq_ref: float = 0.0
    sum_abs_err: float = 0.0
    max_abs_err: float = 0.0
    count: int = 0
    cosine_sum: float = 0.0
    samples: int = 0
    top1_agree: int = 0
    top1_rows: int = 0

    @classmethod
    def of(cls, y: np.ndarray, r: np.ndarray) -> ErrorStats:
        y = np.asarray(y, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if y.shape != r.shape:
            raise InputError(f"output shapes differ: {y.shape} vs reference {r.shape}")
        diff = y - r
        stats = cls(
            sum_sq_err=float(np.sum(diff * diff)),
            sum_sq_ref=float(np.sum(r * r)),
            sum_abs_err=float(np.sum(np.abs(diff))),
            max_abs_err=float(np.max(np.abs(diff))) if diff.size else 0.0,
            count=int(diff.size),
        )
        rows_y = y.reshape(y.shape[0], -1) if y.ndim else y.reshape(1, -1)
        rows_r = r.reshape(rows_y.shape)
        for a, b in zip(rows_y, rows_r):
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            if na == 0 and nb == 0:
                cosine = 1.0
            elif na == 0 or nb == 0:
                cosine = 0.0
            else:
                cosine = float(np.dot(a, b) / (na * nb))
            stats.cosine_sum += cosine
            stats.samples += 1
        if y.ndim >= 1 and y.shape[-1] > 0:
            agree = np.argmax(y, axis=-1) == np.argmax(r, axis=-1)
            stats.top1_agree = int(np.sum(agree))
            stats.top1_rows = int(agree.size)
        return stats

    def merge(self, other: ErrorStats) -> ErrorStats:
        return ErrorStats(
            sum_sq_err=self.sum_sq_err + other.sum_sq_err,
            sum_sq_ref=self.sum_sq_ref + other.sum_sq_ref,
            sum_abs_err=self.sum_abs_err + other.sum_abs_err,
            max_abs_err=max(self.max_abs_err, other.max_abs_err),
            count=self.count + other.count,
            cosine_sum=self.cosine_sum + other.cosine_sum,
            samples=self.samples + other.samples,
            top1_agree=self.top1_agree + other.top1_agree,
            top1_rows=self.top1_rows + other.top1_rows,
        )

    def values(self) -> dict[str, float]:
        """Every built-in metric computed from these statistics."""
        if self.sum_sq_ref > 0:
            rel_l2 = math.sqrt(self.sum_sq_err / self.sum_sq_ref)
        else:
            rel_l2 = 0.0 if self.sum_sq_err == 0 else math.inf
        if self.sum_sq_err == 0:
            sqnr = math.inf
        elif self.sum_sq_ref == 0:
            sqnr = -math.inf
        else:  # an error of inf (an output overflowed, e.g. in FP16) is -inf dB; NaN stays NaN
            ratio = self.sum_sq_ref / self.sum_sq_err
            sqnr = 10.0 * math.log10(ratio) if ratio > 0 else (-math.inf if ratio == 0 else math.nan)
        return {
            "rel-l2": rel_l2,
            "max-abs": self.max_abs_err,
            "mean-abs": self.sum_abs_err / self.count if self.count else 0.0,
            "cosine": self.cosine_sum / self.samples if self.samples else 1.0,
            "sqnr": sqnr,
            "top1": self.top1_agree / self.top1_rows if self.top1_rows else 1.0,
        }

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_row(self) -> list[float]:
        """The statistics as one compact list, in field order (a per-sample record in the journal)."""
        return [getattr(self, f.name) for f in fields(self)]

    @classmethod
    def from_row(cls, row: Sequence[float]) -> ErrorStats:
        """Inverse of :meth:`to_row`."""
        return cls(*(int(v) if f.type == "int" else float(v) for f, v in zip(fields(cls), row)))


ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ErrorStats))


MAX_CHANNELS = 256  # outputs with more channels on axis 1 get no per-channel breakdown


@dataclass
class ChannelStats:
    """Per-channel (axis 1) sums of squared error and squared reference, for outputs of rank >= 2."""

    sum_sq_err: np.ndarray
    sum_sq_ref: np.ndarray
    count: int  # elements per channel

    @classmethod
    def of(cls, y: np.ndarray, r: np.ndarray) -> ChannelStats | None:
        if y.ndim < 2 or not 2 <= y.shape[1] <= MAX_CHANNELS:
            return None
        axes = tuple(i for i in range(y.ndim) if i != 1)
        y, r = y.astype(np.float64), r.astype(np.float64)
        return cls(np.sum((y - r) ** 2, axis=axes), np.sum(r * r, axis=axes), int(y.size // y.shape[1]))

    def merge(self, other: ChannelStats) -> ChannelStats:
        return ChannelStats(
            self.sum_sq_err + other.sum_sq_err, self.sum_sq_ref + other.sum_sq_ref, self.count + other.count
        )

    def to_json(self) -> dict:
        return {"sum_sq_err": self.sum_sq_err.tolist(), "sum_sq_ref": self.sum_sq_ref.tolist(), "count": self.count}


@dataclass
class Comparison:
    """Statistics of one evaluation: per judged part, per whole output, per channel of each output, and per
    sample (one feed) and part (``samples[part][i]``: the statistics of feed ``i`` alone)."""

    parts: dict[str, ErrorStats]
    outputs: dict[str, ErrorStats]
    channels: dict[str, ChannelStats]
    samples: dict[str, list[ErrorStats]] = field(default_factory=dict)


class _OutputStats:
    """What the compare function returns per output. Truthy for Polygraphy."""

    def __init__(self, parts: dict[str, ErrorStats], whole: ErrorStats, channels: ChannelStats | None) -> None:
        self.parts = parts
        self.whole = whole
        self.channels = channels

    def __bool__(self) -> bool:
        return True


def _output_stats(name: str, y: np.ndarray, r: np.ndarray, slices: Sequence[OutputSlice]) -> _OutputStats:
    whole = ErrorStats.of(y, r)
    own = [s for s in slices if s.output == name]
    parts = {s.label: ErrorStats.of(s.take(y), s.take(r)) for s in own} if own else {name: whole}
    return _OutputStats(parts, whole, ChannelStats.of(y, r))


def _make_compare_func(slices: Sequence[OutputSlice]):
    """Per iteration and output (paired by name by Polygraphy's ``run_comparison`` and
    ``default_find_output_func``, both public since Polygraphy 0.49): error statistics of each part."""
    import functools

    from polygraphy.comparator.compare import default_find_output_func, run_comparison

    def match(out0_name, output0, out1_name, output1):
        return _output_stats(out0_name, np.asarray(output0), np.asarray(output1), slices)

    def compare(iter_result0, iter_result1):
        find = functools.partial(default_find_output_func, base_iter_result=iter_result0)
        with quiet_polygraphy():  # no "[I] Comparing Output ... PASSED" lines per output and iteration
            return run_comparison(match, False, iter_result0, iter_result1, find)

    return compare


class StreamingComparison:
    """Accumulates a :class:`Comparison` one iteration at a time, so no evaluation holds all its outputs.

    Each iteration's outputs are paired with the reference's by name by Polygraphy's comparison function
    (``run_comparison``). It is called per iteration rather than through ``Comparator.compare_accuracy``, which
    also computes medians and histograms of every output for log lines that precision-lab never prints.
    """

    def __init__(self, slices: Sequence[OutputSlice] = (), judged: Sequence[str] | None = None) -> None:
        self.slices = tuple(slices)
        self.judged = None if judged is None else frozenset(judged)  # outputs that decide (None: every output)
        self.total = Comparison({}, {}, {}, {})
        self._compare = _make_compare_func(self.slices)
        self.iterations = 0

    def add(self, output: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> None:
        from polygraphy.comparator.struct import IterationResult

        if self.iterations == 0:
            missing = set(reference) - set(output)
            if missing:
                raise InputError(f"outputs {sorted(missing)} of the reference are missing from the evaluated model")
            for part in self.slices:
                if part.output not in reference:
                    raise InputError(
                        f"--output-slice names output '{part.output}', but the outputs are {sorted(reference)}"
                    )
        per_output = self._compare(
            IterationResult(OrderedDict(output), runner_name="candidate"),
            IterationResult(OrderedDict(reference), runner_name="reference"),
        )
        total = self.total
        for name, output_stats in per_output.items():
            for part, stats in output_stats.parts.items() if self.judged is None or name in self.judged else ():
                total.parts[part] = total.parts[part].merge(stats) if part in total.parts else stats
                total.samples.setdefault(part, []).append(stats)
            total.outputs[name] = total.outputs[name].merge(output_stats.whole) if name in total.outputs else output_stats.whole
            if output_stats.channels is not None:
                channels = total.channels.get(name)
                total.channels[name] = channels.merge(output_stats.channels) if channels else output_stats.channels
        self.iterations += 1


def compare_outputs(
    outputs: Sequence[Mapping[str, np.ndarray]],
    reference: Sequence[Mapping[str, np.ndarray]],
    *,
    slices: Sequence[OutputSlice] = (),
) -> Comparison:
    """Statistics over all iterations, outputs paired by name through Polygraphy's comparison function."""
    if len(outputs) != len(reference):
        raise InputError(f"{len(outputs)} output iterations but {len(reference)} reference iterations")
    comparison = StreamingComparison(slices)
    for output, ref in zip(outputs, reference):
        comparison.add(output, ref)
    return comparison.total


def worst_value(part_values: Mapping[str, Mapping[str, float]], metric: Metric) -> tuple[float, str]:
    """The worst part's value of ``metric`` and that part's name (NaN is worst)."""
    items = list(part_values.items())
    if not items:
        return math.nan, ""
    worst_part, worst = items[0][0], items[0][1][metric.name]
    for part, values in items[1:]:
        value = values[metric.name]
        if not math.isnan(worst) and (math.isnan(value) or metric.worse(value, worst) != worst):
            worst_part, worst = part, value
    return worst, worst_part


def top1_accuracy(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
    """Built-in ``accuracy``: the share of rows of the model's first output whose argmax over the last axis equals
    the label (labels: one integer per row)."""
    first = next(iter(outputs.values()))
    predicted = np.argmax(np.asarray(first), axis=-1).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if labels.size != predicted.size:
        raise InputError(
            f"metric accuracy: {labels.size} labels for {predicted.size} predictions (rows of the first output); "
            "give one integer class label per row"
        )
    return float(np.mean(predicted == labels)) if labels.size else math.nan


class TaskMetric:
    """A metric computed from whole outputs: ``accuracy`` or a user function ``f(outputs, reference[, labels])``.

    ``outputs`` and ``reference`` are dicts output name -> array with the samples concatenated on axis 0;
    ``labels`` (when the function takes a third parameter) are the samples' labels concatenated likewise. The
    function returns a float, or one value per sample (a sequence as long as the number of feeds). For a float,
    the per-sample values come from calling it on each sample alone; for per-sample values, the aggregate is
    their mean.
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.function = top1_accuracy if spec in TASK_METRICS else load_custom_metric(spec)
        self.takes_labels = spec in TASK_METRICS or _positional_count(self.function) >= 3

    def evaluate(
        self,
        outputs: Sequence[Mapping[str, np.ndarray]],
        reference: Sequence[Mapping[str, np.ndarray]],
        labels: Sequence[object] | None,
    ) -> tuple[float, list[float]]:
        """The aggregate value and the per-sample values over ``outputs`` (one dict per feed)."""
        if self.takes_labels and labels is None:
            raise InputError(
                f"metric '{self.spec}' needs labels: pass --labels FILE (JSON or CSV keyed by data file name) or a "
                "data loader script that yields (feed, label) pairs"
            )
        count = len(outputs)
        joined = {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}
        joined_ref = {name: np.concatenate([np.asarray(r[name]) for r in reference]) for name in outputs[0]}
        args = [joined, joined_ref]
        if self.takes_labels:
            args.append(np.concatenate([np.atleast_1d(np.asarray(label)) for label in labels]))
        result = self._call(*args)
        values = np.asarray(result, dtype=np.float64)
        if values.ndim == 1 and values.size == count:
            per_sample = [float(v) for v in values]
            return float(np.mean(values)), per_sample
        if values.ndim != 0:
            raise InputError(
                f"metric '{self.spec}' returned an array of shape {values.shape}; return a float or one value per "
                f"sample ({count})"
            )
        per_sample = []
        for i in range(count):
            args = [dict(outputs[i]), {name: np.asarray(reference[i][name]) for name in outputs[i]}]
            if self.takes_labels:
                args.append(np.atleast_1d(np.asarray(labels[i])))
            per_sample.append(float(self._call(*args)))
        return float(values), per_sample

    def _call(self, *args) -> object:
        try:
            return self.function(*args)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"metric '{self.spec}' raised {type(exc).__name__}: {str(exc)[:200]}; fix the metric function"
            ) from exc


def _positional_count(function: Callable) -> int:
    """How many positional parameters ``function`` accepts (3 or more when it takes ``*args``)."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return 3
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)
