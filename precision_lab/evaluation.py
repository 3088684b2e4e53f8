"""One evaluation of one plan: build its Q/DQ model, run it on the backend, compare with the reference.

Pure (no journal, no progress), so worker processes and Ray actors run exactly the same code as a serial
sweep. A :class:`WorkerSpec` is everything a worker needs, sent to it once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from precision_lab.backends import Backend, PlanBuild, RunTimings
from precision_lab.calibration import Ranges
from precision_lab.compare import OutputSlice, StreamingComparison, TaskMetric
from precision_lab.data import Feed
from precision_lab.early_stop import ReferenceTotals, StopRule, final_bound
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
    suffix_cache: str | None = None  # folder of FP32 activations for suffix evaluation (None: whole model always)
    batch: int = 1  # feeds per inference of whole-model runs, where the model allows it (precision_lab.batching)


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
        self._suffix = None
        self._totals: ReferenceTotals | None = None
        self._batch: int | None = None
        self._batched_feeds: list[dict[str, np.ndarray]] | None = None

    @classmethod
    def from_spec(cls, spec: WorkerSpec) -> PlanRunner:
        return cls(None, spec)

    @property
    def suffix(self):
        """The :class:`~precision_lab.suffix.SuffixEvaluator` of this spec, or ``None`` (no cache folder, or a
        backend that cannot run suffixes exactly)."""
        spec = self.spec
        if self._suffix is None and spec.suffix_cache and spec.backend.runs_suffixes:
            from precision_lab.suffix import SuffixEvaluator

            self._suffix = SuffixEvaluator(self.builder, spec.prepared.model, spec.eval_feeds, spec.suffix_cache)
        return self._suffix

    def prefetch(self, plans: Sequence[PrecisionPlan]) -> None:
        """Cache the FP32 activations the suffixes of ``plans`` read (one FP32 pass; nothing without suffixes)."""
        if self.suffix is not None:
            feeds = self.spec.eval_feeds
            self.suffix.prefetch(plans, lambda model, on_output: self.spec.backend.run(PlanBuild(model), feeds, on_output))

    @property
    def batch(self) -> int:
        """Feeds per inference of whole-model runs: ``spec.batch`` when the backend batches and the FP32 model
        passes :func:`~precision_lab.batching.probe` (checked once), else 1."""
        if self._batch is None:
            spec, self._batch = self.spec, 1
            if spec.batch > 1 and spec.backend.batches_feeds and len(spec.eval_feeds) > 1:
                from precision_lab.batching import probe

                quiet = spec.backend.quiet()

                def run(model: bytes, feeds, on_output) -> None:
                    quiet.run(PlanBuild(model), feeds, on_output)

                if probe(run, spec.prepared.model, spec.eval_feeds, spec.batch):
                    self._batch = spec.batch
        return self._batch

    def _whole_model(self, plan: PrecisionPlan):
        """``plan``'s whole Q/DQ model, its feeds and the feeds per inference: concatenated by :attr:`batch`
        when that is more than 1 (the third value is then the batch size, else ``None``)."""
        model = self.builder.build(plan)
        if self.batch == 1:
            return PlanBuild(qdq_model=model.SerializeToString(), plan=plan), self.spec.eval_feeds, None
        from precision_lab.batching import batch_feeds, batchable

        if self._batched_feeds is None:
            self._batched_feeds = batch_feeds(self.spec.eval_feeds, self.batch)
        return PlanBuild(qdq_model=batchable(model).SerializeToString(), plan=plan), self._batched_feeds, self.batch

    def _stopper(self, stop: StopRule | None, comparison: StreamingComparison):
        """A function of the feeds seen that says whether the evaluation has certainly failed (``None``: never
        stop: no rule, a task metric, or a single feed)."""
        if stop is None or not stop.applies or self.custom is not None or len(self.spec.eval_feeds) < 2:
            return None
        if self._totals is None:
            self._totals = ReferenceTotals.of(self.spec.reference, self.spec.slices, self.spec.judged)
        totals = self._totals
        return lambda seen: final_bound(comparison.total, seen, totals, stop)

    def run(self, plan: PrecisionPlan, stop: StopRule | None = None) -> Measurement:
        """Build ``plan``'s Q/DQ model, run it on the backend and compare it with the reference: the
        :class:`~precision_lab.results.Measurement` (a failed build or run gives ``status="failed"``).

        With ``stop`` (a pass/fail evaluation), feeds stop once the plan certainly fails ``stop``'s tolerance:
        the measurement is then ``status="stopped"`` with the bound in ``stopped`` (see :mod:`early_stop`).
        Binary plans whose FP32 prefix is cached run only their changed part (:mod:`precision_lab.suffix`)."""
        spec = self.spec
        start = time.perf_counter()
        seconds: dict[str, float] = {}
        stopped: dict | None = None
        try:
            suffix = self.suffix.prepare(plan) if self.suffix is not None else None
            batch = None
            if suffix is not None:
                plan_build, feeds = PlanBuild(qdq_model=suffix.qdq_model, plan=plan), suffix.feeds
            else:
                plan_build, feeds, batch = self._whole_model(plan)
            seconds["qdq"] = time.perf_counter() - start
            comparison = StreamingComparison(spec.slices, spec.judged)
            stopper = self._stopper(stop, comparison)
            kept: list[dict[str, np.ndarray]] = []  # only a task metric needs every output at once
            compare_seconds = 0.0

            def on_output(index: int, output: dict[str, np.ndarray]) -> bool:
                nonlocal compare_seconds, stopped
                started = time.perf_counter()
                if suffix is not None:
                    output = suffix.complete(index, output)
                comparison.add(output, spec.reference[index])
                if self.custom is not None:
                    kept.append(output)
                if stopper is not None and index + 1 < count:
                    bound = stopper(index + 1)
                    if stop.certainly_fails(bound):
                        stopped = stop.to_json() | {"bound": bound, "samples": index + 1, "of": count}
                compare_seconds += time.perf_counter() - started
                return stopped is not None

            count = len(spec.eval_feeds)
            if suffix is not None and not suffix.cut.nodes:  # nothing changes: every output is cached
                for index in range(count):
                    if on_output(index, {}):
                        break
                timings = RunTimings(0.0, compare_seconds)
            elif batch is not None:
                from precision_lab.batching import split_outputs

                def on_batch(group: int, outputs: dict[str, np.ndarray]) -> bool:
                    first = group * batch
                    return any(on_output(first + k, o) for k, o in enumerate(split_outputs(outputs, min(batch, count - first))))

                _, timings = spec.backend.run(plan_build, feeds, on_batch)
            else:
                _, timings = spec.backend.run(plan_build, feeds, on_output)
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
                status="ok" if stopped is None else "stopped",
                parts={part: s.values() for part, s in total.parts.items()},
                outputs={name: s.values() for name, s in total.outputs.items()},
                channels={name: c.to_json() for name, c in total.channels.items()},
                samples={part: [s.to_row() for s in rows] for part, rows in total.samples.items()},
                custom=custom,
                custom_samples=custom_samples,
                stopped=stopped,
            )
        except EvaluationError as exc:
            measurement = Measurement(status="failed", error=str(exc))
        seconds["total"] = time.perf_counter() - start
        return replace(measurement, seconds=seconds)
