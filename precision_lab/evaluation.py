"""One evaluation of one plan: build its Q/DQ model, run it on the backend, compare with the reference.

Pure (no journal, no progress), so worker processes and Ray actors run exactly the same code as a serial
sweep. A :class:`WorkerSpec` is everything a worker needs, sent to it once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from precision_lab.backends import Backend, PlanBuild
from precision_lab.calibration import Ranges
from precision_lab.compare import OutputSlice, StreamingComparison, TaskMetric
from precision_lab.data import Feed
from precision_lab.errors import EvaluationError
from precision_lab.model import Candidate, PreparedModel
from precision_lab.precisions import PrecisionPlan
from precision_lab.qdq import QdqBuilder
from precision_lab.results import Measurement
from precision_lab.user_qdq import UserQdqBuilder, UserQdqModel

__all__ = ["WorkerSpec", "PlanRunner"]


@dataclass(frozen=True)
class WorkerSpec:
    """What evaluating plans needs: the prepared model, candidates, ranges, backend, data and reference."""

    prepared: PreparedModel
    candidates: tuple[Candidate, ...]
    ranges: Ranges
    recipe: str
    backend: Backend
    eval_feeds: tuple[Feed, ...]
    reference: Sequence[Mapping[str, np.ndarray]]  # a ReferenceStore: pickles as its folder
    slices: tuple[OutputSlice, ...]
    custom_spec: str | None = None  # a task metric: "accuracy" or a custom module:function
    targets: tuple | None = None  # the labels of eval_feeds, for task metrics that take labels
    judged: tuple[str, ...] | None = None  # the outputs that decide the metric (None: every output)
    precisions: tuple[str, ...] = ("int8", "fp32")  # with "fp16": three-level plans, FP16 emulated
    user_qdq: UserQdqModel | None = None  # --qdq-model: plans are applied to the user's Q/DQ model


class PlanRunner:
    """Evaluates plans for one :class:`WorkerSpec` (the Q/DQ builder quantizes weights once, here)."""

    def __init__(self, builder: QdqBuilder | None, spec: WorkerSpec, *, custom: TaskMetric | None = None) -> None:
        self.spec = spec
        if builder is None and spec.user_qdq is not None:
            builder = UserQdqBuilder(spec.user_qdq)
        self.builder = builder or QdqBuilder(
            spec.prepared, spec.candidates, spec.ranges, recipe=spec.recipe, precisions=spec.precisions
        )
        self.custom = custom if custom is not None or not spec.custom_spec else TaskMetric(spec.custom_spec)

    @classmethod
    def from_spec(cls, spec: WorkerSpec) -> PlanRunner:
        return cls(None, spec)

    def run(self, plan: PrecisionPlan) -> Measurement:
        """Build ``plan``'s Q/DQ model, run it on the backend and compare it with the reference: the
        :class:`~precision_lab.results.Measurement` (a failed build or run gives ``status="failed"``)."""
        spec = self.spec
        start = time.perf_counter()
        seconds: dict[str, float] = {}
        try:
            model = self.builder.build(plan)
            plan_build = PlanBuild(qdq_model=model.SerializeToString(), plan=plan)
            seconds["qdq"] = time.perf_counter() - start
            comparison = StreamingComparison(spec.slices, spec.judged)
            kept: list[dict[str, np.ndarray]] = []  # only a task metric needs every output at once
            compare_seconds = 0.0

            def on_output(index: int, output: dict[str, np.ndarray]) -> None:
                nonlocal compare_seconds
                started = time.perf_counter()
                comparison.add(output, spec.reference[index])
                if self.custom is not None:
                    kept.append(output)
                compare_seconds += time.perf_counter() - started

            _, timings = spec.backend.run(plan_build, spec.eval_feeds, on_output)
            seconds["build"], seconds["infer"] = timings.build, timings.infer - compare_seconds
            if timings.latency_ms is not None:
                seconds["latency_ms"] = timings.latency_ms
            started = time.perf_counter()
            total = comparison.total
            custom, custom_samples = None, None
            if self.custom is not None:
                reference = [spec.reference[i] for i in range(len(kept))]
                custom, custom_samples = self.custom.evaluate(kept, reference, spec.targets)
            seconds["compare"] = compare_seconds + time.perf_counter() - started
            measurement = Measurement(
                parts={part: s.values() for part, s in total.parts.items()},
                outputs={name: s.values() for name, s in total.outputs.items()},
                channels={name: c.to_json() for name, c in total.channels.items()},
                samples={part: [s.to_row() for s in rows] for part, rows in total.samples.items()},
                custom=custom,
                custom_samples=custom_samples,
            )
        except EvaluationError as exc:
            measurement = Measurement(status="failed", error=str(exc))
        seconds["total"] = time.perf_counter() - start
        return replace(measurement, seconds=seconds)
