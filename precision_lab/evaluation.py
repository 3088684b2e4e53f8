"""One evaluation of one plan: build its Q/DQ model, run it on the backend, compare with the reference.

Pure (no journal, no progress), so worker processes and Ray actors run exactly the same code as a serial
sweep. A :class:`WorkerSpec` is everything a worker needs, sent to it once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from precision_lab.backends import Backend, PlanBuild
from precision_lab.calibration import Ranges
from precision_lab.compare import OutputSlice, StreamingComparison, load_custom_metric
from precision_lab.data import Feed
from precision_lab.errors import EvaluationError, InputError
from precision_lab.model import Candidate, PreparedModel
from precision_lab.qdq import QdqBuilder

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
    custom_spec: str | None = None


class PlanRunner:
    """Evaluates plans for one :class:`WorkerSpec` (the Q/DQ builder quantizes weights once, here)."""

    def __init__(self, builder: QdqBuilder | None, spec: WorkerSpec, *, custom: Callable | None = None) -> None:
        self.spec = spec
        self.builder = builder or QdqBuilder(spec.prepared, spec.candidates, spec.ranges, recipe=spec.recipe)
        self.custom = custom if custom is not None or not spec.custom_spec else load_custom_metric(spec.custom_spec)

    @classmethod
    def from_spec(cls, spec: WorkerSpec) -> PlanRunner:
        return cls(None, spec)

    def run(self, fp32: tuple[str, ...]) -> dict:
        """Fields of the plan's :class:`~precision_lab.results.Evaluation`: ``status``, ``parts``, ``outputs``,
        ``channels``, ``custom``, ``error`` and ``seconds`` (qdq, build, infer, compare, total)."""
        spec = self.spec
        start = time.perf_counter()
        fields: dict = {"status": "ok", "parts": {}, "outputs": {}, "channels": {}, "custom": None, "error": None}
        seconds: dict[str, float] = {}
        try:
            model = self.builder.build(fp32)
            plan_build = PlanBuild(qdq_model=model.SerializeToString(), fp32_layers=fp32)
            seconds["qdq"] = time.perf_counter() - start
            comparison = StreamingComparison(spec.slices)
            kept: list[dict[str, np.ndarray]] = []  # only a custom metric needs every output at once
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
            fields["parts"] = {part: s.values() for part, s in total.parts.items()}
            fields["outputs"] = {name: s.values() for name, s in total.outputs.items()}
            fields["channels"] = {name: c.to_json() for name, c in total.channels.items()}
            if self.custom is not None:
                joined = {name: np.concatenate([o[name] for o in kept]) for name in kept[0]}
                joined_ref = {name: np.concatenate([spec.reference[i][name] for i in range(len(kept))]) for name in kept[0]}
                fields["custom"] = _call_custom(self.custom, spec.custom_spec, joined, joined_ref)
            seconds["compare"] = compare_seconds + time.perf_counter() - started
        except EvaluationError as exc:
            fields["status"], fields["error"] = "failed", str(exc)
        seconds["total"] = time.perf_counter() - start
        fields["seconds"] = seconds
        return fields


def _call_custom(custom: Callable, spec: str | None, outputs: dict, reference: dict) -> float:
    """The user's metric on ``outputs``; its own failure is the user's to fix (exit code 2), not a bug here."""
    try:
        return float(custom(outputs, reference))
    except Exception as exc:
        from precision_lab.console import first_line

        raise InputError(
            f"custom metric '{spec or getattr(custom, '__name__', 'custom')}' raised {type(exc).__name__}: "
            f"{first_line(exc)}; fix the function (--verbose shows its traceback)"
        ) from exc
