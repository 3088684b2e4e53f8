"""Typed, frozen result objects of a sweep, with JSON round-trips and pandas views.

Reports, plots and notebooks read only these (``result.json`` in the output folder), never the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from precision_lab.compare import METRICS, Metric, get_metric, worst_value
from precision_lab.precisions import PrecisionPlan
from precision_lab.criterion import AGGREGATE, Criterion, bootstrap_interval, criterion_value, sample_values

__all__ = ["Evaluation", "Measurement", "LayerSensitivity", "VerifiedPlan", "SweepResult", "load", "RESULT_NAME"]

RESULT_NAME = "result.json"


def _finite_or_text(value):
    """JSON-safe floats: infinities and NaN become the strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite_or_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_text(v) for v in value]
    return value


def _from_text(value):
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: _from_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_text(v) for v in value]
    return value


@dataclass(frozen=True)
class Measurement:
    """What one evaluation measured (it crosses process boundaries from workers): ``status`` (``"ok"``,
    ``"failed"`` with ``error``, or ``"stopped"`` early once certainly failing, with ``stopped``), every built-in metric per judged part and per whole output, per-channel error
    sums, per-sample error statistics, a task metric's value and per-feed values, and seconds per step."""

    status: str = "ok"
    parts: dict[str, dict[str, float]] = field(default_factory=dict)
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)
    channels: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    samples: dict[str, list[list[float]]] = field(default_factory=dict)
    custom: float | None = None
    custom_samples: list[float] | None = None
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    stopped: dict | None = None


@dataclass(frozen=True)
class Evaluation:
    """One evaluated plan: FP32 layers, every built-in metric per judged part (``parts``) and per whole output
    (``outputs``), per-channel error sums (``channels``: axis 1, ``sum_sq_err``/``sum_sq_ref``), each sample's
    error statistics per part (``samples``: part -> one :meth:`~precision_lab.compare.ErrorStats.to_row` per
    feed, in feed order), a task metric's value and per-feed values (``custom``, ``custom_samples``), and
    where time went.

    ``status`` is ``"ok"``, ``"failed"`` (``error`` says why; its value is NaN) or ``"stopped"``: a pass/fail
    evaluation stopped once it certainly failed (:mod:`precision_lab.early_stop`). A stopped record is *not
    complete*: ``stopped`` holds the metric, criterion and tolerance it was judged by, the feeds run
    (``samples`` of ``of``) and ``bound``, the best value the whole evaluation could have reached; its value is
    that bound (under that metric and criterion only; NaN otherwise), its per-sample statistics cover the feeds
    run, and it has no confidence interval. Only :attr:`complete` records feed sensitivity scores and charts.
    """

    key: str
    fp32_layers: tuple[str, ...]
    phase: str
    status: str
    parts: dict[str, dict[str, float]]
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)
    channels: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    custom: float | None = None
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    sequence: int = 0
    samples: dict[str, list[list[float]]] = field(default_factory=dict)
    custom_samples: list[float] | None = None
    precisions: dict[str, str] = field(default_factory=dict)  # only for plans with FP16 layers
    stopped: dict | None = None  # only for evaluations stopped early (status "stopped")

    @property
    def complete(self) -> bool:
        """Whether every feed was run and compared (a stopped record's value is only a bound)."""
        return self.status == "ok"

    def fails_for_sure(self, metric: Metric, criterion: Criterion, tolerance: float) -> bool:
        """Whether this stopped record still proves a failure under ``metric``, ``criterion`` and ``tolerance``
        (same metric and criterion, and a tolerance no looser than its bound allows)."""
        from precision_lab.early_stop import StopRule

        s = self.stopped
        if self.status != "stopped" or not s or s.get("metric") != metric.name or s.get("criterion") != criterion.name:
            return False
        return StopRule(metric, criterion, tolerance).certainly_fails(float(s["bound"]))

    @classmethod
    def of(cls, *, key: str, plan: PrecisionPlan, fp32_layers: tuple[str, ...], phase: str, sequence: int,
           measurement: Measurement) -> Evaluation:
        """The journal record of ``plan`` (``fp32_layers`` in graph order) and what was measured."""
        return cls(
            key=key,
            fp32_layers=fp32_layers,
            phase=phase,
            sequence=sequence,
            precisions={} if plan.is_binary else plan.to_json(),
            **asdict(measurement),
        )

    @property
    def plan(self) -> PrecisionPlan:
        """The evaluated plan."""
        return PrecisionPlan(self.precisions) if self.precisions else PrecisionPlan.fp32(self.fp32_layers)

    def value(self, metric: Metric, criterion: Criterion = AGGREGATE) -> float:
        """The plan's value of ``metric`` under ``criterion`` (default: the aggregate over the set; the worst
        part decides). NaN for a failed evaluation; for a stopped one, the bound it was stopped at (a lower bound
        of a lower-is-better metric, an upper bound otherwise) under the metric and criterion it was judged by,
        else NaN."""
        if self.status == "stopped" and self.stopped and self.stopped.get("metric") == metric.name:
            return float(self.stopped["bound"]) if self.stopped.get("criterion") == criterion.name else math.nan
        if self.status != "ok":
            return math.nan
        if metric.name in METRICS and not criterion.per_sample:
            return worst_value(self.parts, metric)[0]
        return criterion_value(
            self.samples, metric, criterion, custom=self.custom, custom_samples=self.custom_samples
        )

    def interval(self, metric: Metric, criterion: Criterion = AGGREGATE, *, level: float = 0.95):
        """Bootstrap confidence interval ``(low, high)`` of :meth:`value` over the samples, or ``None``."""
        if self.status != "ok":
            return None
        custom = self.custom_samples
        if metric.name not in METRICS and not criterion.per_sample and custom is not None:
            if self.custom is None or not math.isclose(self.custom, sum(custom) / len(custom), rel_tol=1e-9, abs_tol=1e-12):
                return None  # the aggregate is not the mean of the per-sample values: no honest interval
        return bootstrap_interval(self.samples, metric, criterion, custom_samples=custom, level=level)

    def sample_values(self, metric: Metric) -> dict[str, list[float]]:
        """Per part (or ``metric``'s name for a task metric), each feed's value of ``metric``."""
        if metric.name not in METRICS:
            return {metric.name: list(self.custom_samples or [])}
        return {part: [float(v) for v in values] for part, values in sample_values(self.samples, metric).items()}

    def worst_part(self, metric: Metric) -> str:
        """The output part that decides ``metric`` ("" for a custom metric or a failed evaluation)."""
        if self.status != "ok" or metric.name not in METRICS:
            return ""
        return worst_value(self.parts, metric)[1]

    def worst_per_sample(self, metric: Metric) -> list[tuple[str, float]]:
        """Per feed, the part that does worst on it and its value of ``metric`` (NaN is worst)."""
        by_part = self.sample_values(metric)
        worst = []
        for values in zip(*by_part.values()):
            pairs = list(zip(by_part, values))
            nan = [p for p in pairs if math.isnan(p[1])]
            pick = min if metric.higher_is_better else max
            worst.append(nan[0] if nan else pick(pairs, key=lambda p: p[1]))
        return worst

    def to_json(self) -> dict:
        return _finite_or_text(asdict(self) | {"fp32_layers": list(self.fp32_layers)})

    @classmethod
    def from_json(cls, data: dict) -> Evaluation:
        data = _from_text(data)
        return cls(
            key=data["key"],
            fp32_layers=tuple(data["fp32_layers"]),
            phase=data["phase"],
            status=data["status"],
            parts=data.get("parts", {}),
            outputs=data.get("outputs", {}),
            channels=data.get("channels", {}),
            custom=data.get("custom"),
            error=data.get("error"),
            seconds=data.get("seconds", {}),
            sequence=data.get("sequence", 0),
            samples=data.get("samples", {}),
            custom_samples=data.get("custom_samples"),
            precisions=data.get("precisions", {}),
            stopped=data.get("stopped"),
        )


@dataclass(frozen=True)
class LayerSensitivity:
    """A candidate layer, its rank (1 = most sensitive) and the sensitivity values measured (``signal``: the
    one-pass error it adds, used by the fast search; ``worst_input``: the evaluation sample on which the layer
    alone in INT8 does the most harm, from its ``isolate`` evaluation)."""

    name: str
    op_type: str
    index: int
    rank: int
    scores: dict[str, float] = field(default_factory=dict)  # kind (e.g. "isolate", "signal") -> value
    worst_input: str | None = None
    precision: str = "int8"

    @property
    def isolate(self) -> float | None:
        return self.scores.get("isolate")

    @property
    def leave_one_out(self) -> float | None:
        return self.scores.get("leave-one-out")

    @property
    def signal(self) -> float | None:
        return self.scores.get("signal")

    @classmethod
    def from_json(cls, data: dict) -> LayerSensitivity:
        data = dict(data)
        scores = dict(data.pop("scores", {}) or {})
        for legacy, kind in (("isolate", "isolate"), ("leave_one_out", "leave-one-out"), ("signal", "signal")):
            value = data.pop(legacy, None)
            if value is not None:
                scores.setdefault(kind, value)
        return cls(scores=scores, **data)


#: score kinds every layer table shows, measured or not (others appear when a strategy publishes them)
STANDARD_SCORES = ("isolate", "leave-one-out", "signal")


@dataclass(frozen=True)
class VerifiedPlan:
    """The verified plan: the precision of every layer that does not run INT8 (``precisions``), the FP32 and
    INT8 layers as views, its value, and for each raised layer the failing evaluation without it."""

    fp32_layers: tuple[str, ...]
    int8_layers: tuple[str, ...]
    value: float
    passed: bool
    key: str
    evidence: dict[str, dict] = field(default_factory=dict)
    precisions: dict[str, str] = field(default_factory=dict)

    @property
    def plan(self) -> PrecisionPlan:
        return PrecisionPlan(self.precisions) if self.precisions else PrecisionPlan.fp32(self.fp32_layers)


@dataclass(frozen=True)
class SweepResult:
    """Everything a sweep found. ``layers`` and ``evaluations`` are pandas DataFrames."""

    model: dict
    backend: str
    recipe: str
    calibration: dict
    data: dict
    metric: dict
    output_slices: tuple[str, ...]
    sensitivity: str
    status: str
    plan: VerifiedPlan
    baselines: dict
    layer_results: tuple[LayerSensitivity, ...]
    evaluation_records: tuple[Evaluation, ...]
    wall_seconds: float
    out_dir: str
    search: str = "full"
    quantization: dict = field(default_factory=dict)
    exports: dict = field(default_factory=dict)
    backend_info: dict = field(default_factory=dict)
    verification: dict = field(default_factory=dict)
    verification_records: tuple[Evaluation, ...] = ()
    with_calibration_records: tuple[Evaluation, ...] = ()  # on the verification feeds, then the calibration feeds
    confidence: dict = field(default_factory=dict)
    notices: tuple[str, ...] = ()
    precision_levels: tuple[str, ...] = ("int8", "fp32")  # the levels the plan was searched over, lowest first
    cost: dict = field(default_factory=dict)  # what the plans cost on the target GPU ({"error": why} if unknown)

    @property
    def all_records(self) -> tuple[Evaluation, ...]:
        """Every evaluation of the sweep: on the evaluation set, the verification set and the two checks' union."""
        return self.evaluation_records + self.verification_records + self.with_calibration_records

    @property
    def metric_obj(self) -> Metric:
        return get_metric(self.metric["name"], direction=None if ":" not in self.metric["name"] else self.metric["direction"])

    @property
    def criterion(self) -> Criterion:
        """What the tolerance applies to (``metric["criterion"]``, default ``aggregate``)."""
        return Criterion.parse(self.metric.get("criterion", "aggregate"))

    @property
    def samples(self):
        """One row per evaluated plan, data set, sample (data file) and part: ``key``, ``plan`` (``plan``,
        ``all_int8``, ``all_fp32`` or ``""``), ``set`` (``evaluation``/``verification``/``calibration``),
        ``sample``, ``part``, ``value`` of the sweep's metric on that sample alone."""
        import pandas as pd

        metric = self.metric_obj
        roles = {self.plan.key: "plan"}
        everything = [layer.name for layer in self.layer_results]
        rows = []
        sets = (("evaluation", self.evaluation_records), ("verification", self.verification_records),
                ("calibration", self.with_calibration_records))
        for data_set, records in sets:
            for record in records:
                role = roles.get(record.key, "")
                if not record.fp32_layers:
                    role = "all_int8"
                elif sorted(record.fp32_layers) == sorted(everything):
                    role = "all_fp32"
                elif data_set != "evaluation" and sorted(record.fp32_layers) == sorted(self.plan.fp32_layers):
                    role = "plan"
                names, skip = self._feed_names(data_set)
                for part, values in record.sample_values(metric).items():
                    for i, value in enumerate(values):
                        if i < skip:
                            continue  # a verification feed: its row is the verification record's
                        sample = names[i] if i < len(names) else f"#{i}"
                        rows.append((record.key, role, data_set, sample, part, value))
        return pd.DataFrame(rows, columns=["key", "plan", "set", "sample", "part", "value"])

    def _feed_names(self, data_set: str) -> tuple[list[str], int]:
        """The feed file of each sample of ``data_set``'s records, and how many leading samples to leave out: the
        ``calibration`` records judge the verification feeds, then the calibration feeds, and only the latter
        are theirs to show."""
        verify = self.data.get("verify_feeds", [])
        if data_set == "calibration":
            return [*verify, *self.data.get("calib_feeds", [])], len(verify)
        return (self.data.get("eval_feeds", []) if data_set == "evaluation" else verify), 0

    def worst_inputs(self, count: int = 3, *, data_set: str = "evaluation") -> list[tuple[str, str, float]]:
        """The ``count`` hardest inputs for the final plan in ``data_set`` (``evaluation``, ``verification`` or
        ``calibration``): ``(sample, part, value)``, worst first."""
        metric = self.metric_obj
        names, skip = self._feed_names(data_set)
        if data_set == "evaluation":
            record = self.plan_record
        else:
            records = self.verification_records if data_set == "verification" else self.with_calibration_records
            record = next((r for r in records if sorted(r.fp32_layers) == sorted(self.plan.fp32_layers)), None)
        if record is None or record.status != "ok":
            return []
        entries = [
            (names[i] if i < len(names) else f"#{i}", part, value)
            for i, (part, value) in enumerate(record.worst_per_sample(metric)) if i >= skip
        ]
        sign = -1.0 if metric.higher_is_better else 1.0
        entries.sort(key=lambda e: -math.inf if math.isnan(e[2]) else -sign * e[2])
        return entries[:count]

    @property
    def layers(self):
        """One row per candidate layer: name, op_type, index, rank, isolate, leave_one_out, signal, fp32,
        worst_input."""
        import pandas as pd

        kinds = self.score_kinds
        columns = ["name", "op_type", "index", "rank", *(k.replace("-", "_") for k in kinds), "fp32", "precision",
                   "worst_input"]
        rows = [
            [layer.name, layer.op_type, layer.index, layer.rank]
            + [layer.scores.get(kind, math.nan) for kind in kinds]
            + [layer.name in self.plan.fp32_layers, layer.precision, layer.worst_input]
            for layer in self.layer_results
        ]
        frame = pd.DataFrame(rows, columns=columns)
        for kind in kinds:
            frame[kind.replace("-", "_")] = frame[kind.replace("-", "_")].astype(float)
        return frame

    @property
    def score_kinds(self) -> list[str]:
        """The per-layer score kinds: the standard ones, then any other a strategy published."""
        extra = {kind for layer in self.layer_results for kind in layer.scores} - set(STANDARD_SCORES)
        return [*STANDARD_SCORES, *sorted(extra)]

    @property
    def evaluations(self):
        """One row per evaluation: sequence, phase, FP32 layer count, value, passed, complete (``False``: stopped
        early once it certainly failed; its value is a bound, and ``passed`` is ``None`` when that bound does not
        decide the sweep's tolerance, e.g. a record of a stricter until-verified round), status, seconds, key,
        ``estimated_cost`` (the plan's roofline time on the target GPU relative to all-FP16; NaN when the model
        could not be estimated) and ``latency_ms`` (the latency the backend measured; NaN when it measures
        none)."""
        import pandas as pd

        metric = self.metric_obj
        criterion = self.criterion
        tolerance = self.metric["tolerance"]
        costs = self.cost.get("evaluations", {})
        rows = []
        for record in self.evaluation_records:
            value = record.value(metric, criterion)
            rows.append(
                {
                    "sequence": record.sequence,
                    "phase": record.phase,
                    "num_fp32": len(record.fp32_layers),
                    "fp32_layers": list(record.fp32_layers),
                    "value": value,
                    # a stopped record proves a failure at its own (search) tolerance only: at the user's
                    # tolerance it may be unknown (None)
                    "passed": metric.passes(value, tolerance) if record.complete or record.status == "failed"
                    else (False if record.fails_for_sure(metric, criterion, tolerance) else None),
                    "complete": record.complete,  # False: stopped early, ``value`` is only a bound
                    "status": record.status,
                    "seconds": record.seconds.get("total", math.nan),
                    "key": record.key,
                    "estimated_cost": costs.get(record.key, math.nan),
                    "latency_ms": record.seconds.get("latency_ms", math.nan),
                }
            )
        return pd.DataFrame(rows)

    def record(self, key: str) -> Evaluation | None:
        """The evaluation with journal ``key``, or ``None``."""
        return next((r for r in self.evaluation_records if r.key == key), None)

    def record_of(self, fp32_layers) -> Evaluation | None:
        """The evaluation of the plan whose FP32 layers are ``fp32_layers``, or ``None``."""
        wanted = set(fp32_layers)
        return next((r for r in self.evaluation_records if set(r.fp32_layers) == wanted), None)

    @property
    def all_int8_record(self) -> Evaluation | None:
        return self.record_of(())

    @property
    def all_fp32_record(self) -> Evaluation | None:
        return self.record_of([layer.name for layer in self.layer_results])

    @property
    def plan_record(self) -> Evaluation | None:
        return self.record(self.plan.key)

    def plot_sensitivity(self, *, top: int = 20):
        """Bar chart of the most sensitive layers (matplotlib Figure)."""
        from precision_lab.report.plots import plot_sensitivity

        return plot_sensitivity(self, top=top)

    def plot_tradeoff(self):
        """Metric value against the number of FP32 layers for every evaluated plan (matplotlib Figure)."""
        from precision_lab.report.plots import plot_tradeoff

        return plot_tradeoff(self)

    def plot_pareto(self, *, ax=None):
        """Metric value against estimated cost relative to all-FP16 for every evaluated plan, the Pareto front,
        the tolerance and the chosen plan; drawn on ``ax`` (default: a new figure). Returns the matplotlib
        Figure."""
        from precision_lab.report.plots import plot_pareto

        return plot_pareto(self, ax=ax)

    def plot_output_channels(self, output: str | None = None):
        """Per-channel error of an output for all-INT8 and the plan (matplotlib Figure)."""
        from precision_lab.report.plots import plot_output_channels

        return plot_output_channels(self, output)

    def plot_samples(self):
        """Per-sample values of the plan and the baselines on the evaluation and verification feeds (Figure)."""
        from precision_lab.report.samples import plot_samples

        return plot_samples(self)

    def plot_positions(self):
        """Sensitivity against position in the graph (matplotlib Figure)."""
        from precision_lab.report.plots import plot_positions

        return plot_positions(self)

    def to_json(self) -> dict:
        data = asdict(self)
        data["layer_results"] = [asdict(layer) for layer in self.layer_results]  # scores, not the legacy columns
        data["evaluation_records"] = [record.to_json() for record in self.evaluation_records]
        data["verification_records"] = [record.to_json() for record in self.verification_records]
        data["with_calibration_records"] = [record.to_json() for record in self.with_calibration_records]
        data["output_slices"] = list(self.output_slices)
        data["notices"] = list(self.notices)
        return _finite_or_text(data)

    @classmethod
    def from_json(cls, data: dict) -> SweepResult:
        data = _from_text(data)
        plan = data["plan"]
        return cls(
            model=data["model"],
            backend=data["backend"],
            recipe=data["recipe"],
            calibration=data["calibration"],
            data=data["data"],
            metric=data["metric"],
            output_slices=tuple(data.get("output_slices", ())),
            sensitivity=data["sensitivity"],
            status=data["status"],
            plan=VerifiedPlan(
                fp32_layers=tuple(plan["fp32_layers"]),
                int8_layers=tuple(plan["int8_layers"]),
                value=plan["value"],
                passed=plan["passed"],
                key=plan["key"],
                evidence=plan.get("evidence", {}),
                precisions=plan.get("precisions", {}),
            ),
            baselines=data["baselines"],
            layer_results=tuple(LayerSensitivity.from_json(layer) for layer in data["layer_results"]),
            evaluation_records=tuple(
                Evaluation.from_json(record) for record in data["evaluation_records"]
            ),
            wall_seconds=data["wall_seconds"],
            out_dir=data["out_dir"],
            search=data.get("search", "full"),
            quantization=data.get("quantization", {}),
            exports=data.get("exports", {}),
            backend_info=data.get("backend_info", {}),
            verification=data.get("verification", {}),
            verification_records=tuple(Evaluation.from_json(r) for r in data.get("verification_records", [])),
            with_calibration_records=tuple(
                Evaluation.from_json(r) for r in data.get("with_calibration_records", [])
            ),
            confidence=data.get("confidence", {}),
            notices=tuple(data.get("notices", ())),
            precision_levels=tuple(data.get("precision_levels", ("int8", "fp32"))),
            cost=data.get("cost", {}),
        )


def load(out_dir: str | Path) -> SweepResult:
    """The result of the sweep whose output folder is ``out_dir`` (reads ``result.json``)."""
    from precision_lab.errors import InputError

    path = Path(out_dir) / RESULT_NAME
    if not path.exists():
        raise InputError(f"{path} not found; pass the --out folder of a finished sweep")
    return SweepResult.from_json(json.loads(path.read_text()))
