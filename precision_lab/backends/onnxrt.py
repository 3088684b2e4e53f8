"""The embedded backend: an ONNX Runtime session run through Polygraphy's ``OnnxrtRunner``.

On CPU, ONNX Runtime runs TensorRT-style Q/DQ graphs as exact quantize-dequantize arithmetic in FP32
kernels: the numerics of an ideal INT8 engine, not INT8 speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

from precision_lab.backends.base import Backend, PlanBuild, RunTimings
from precision_lab.console import first_line, quiet_polygraphy
from precision_lab.errors import EvaluationError

__all__ = ["OnnxRuntimeBackend"]


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on ``providers`` (default CPU) with ``threads`` intra-op threads (default: ORT's choice).

    Graph optimizations are disabled (``optimize=False``, the default): at its EXTENDED level ONNX Runtime
    fuses Q/DQ + MatMul/Conv into integer kernels whose arithmetic is not ideal INT8 (on x86 the u8s8 path
    can saturate), which would measure ONNX Runtime's kernels instead of the plan. Unoptimized sessions run
    exact quantize-dequantize arithmetic in FP32 and are also the fastest to create. Reproduce the numbers
    with ``SessionOptions.graph_optimization_level = ORT_DISABLE_ALL``.
    """

    name = "onnxrt"

    def __init__(
        self,
        *,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
        optimize: bool = False,
    ) -> None:
        self.providers = tuple(providers)
        self.threads = threads
        self.optimize = optimize
        self.log_severity = 3  # ONNX Runtime's own log: errors (4: fatal only, for probes expected to fail)

    @classmethod
    def from_options(cls, options: Mapping[str, object] | None = None):
        """The backend with keyword ``options`` (``providers``, ``threads``; default: none). It has no
        command-line options."""
        return cls(**dict(options or {}))

    def identity(self) -> str:
        import onnxruntime

        return f"onnxruntime-{onnxruntime.__version__}:{','.join(self.providers)}:optimize={self.optimize}"

    def describe(self) -> str:
        import onnxruntime

        how = "graph optimizations on" if self.optimize else "exact Q/DQ arithmetic, graph optimizations off"
        return f"ONNX Runtime {onnxruntime.__version__} ({', '.join(self.providers)}; {how})"

    @property
    def runs_suffixes(self) -> bool:
        """True without graph optimizations: each node then runs the same kernel on the same inputs, whether
        in the FP32 model, the whole Q/DQ model or a part of it (optimizations could fuse differently)."""
        return not self.optimize

    @property
    def batches_feeds(self) -> bool:
        """ONNX Runtime runs any batch a model's symbolic dimensions allow."""
        return True

    def quiet(self) -> OnnxRuntimeBackend:
        """This backend with ONNX Runtime's log at fatal only (a probe's expected failures print nothing)."""
        import copy

        moved = copy.copy(self)
        moved.log_severity = 4
        return moved

    def for_workers(self, jobs: int) -> OnnxRuntimeBackend:
        """The same session settings with cores // ``jobs`` threads, so workers do not oversubscribe."""
        import copy
        import os

        moved = copy.copy(self)
        moved.threads = max(1, (os.cpu_count() or 1) // jobs)
        return moved

    def session(self, model: onnx.ModelProto | bytes):
        """An ``onnxruntime.InferenceSession`` of ``model``."""
        from precision_lab.ort_session import create_session

        data = model if isinstance(model, bytes) else model.SerializeToString()
        try:
            return create_session(
                data, providers=self.providers, optimize=self.optimize, threads=self.threads,
                log_severity=getattr(self, "log_severity", 3),
            )
        except Exception as exc:
            raise EvaluationError(f"ONNX Runtime could not load the model: {first_line(exc)}") from exc

    def run(
        self,
        plan: PlanBuild | onnx.ModelProto | bytes,
        feeds: Sequence[dict[str, np.ndarray]],
        on_output: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    ) -> tuple[list[dict[str, np.ndarray]], RunTimings]:
        """Outputs of the plan's Q/DQ model (or of a model) for each feed, and build / inference seconds.

        With ``on_output``, each feed's outputs go to ``on_output(index, outputs)`` as they are produced and are
        not kept (the returned list is empty); when it returns true, the remaining feeds are not run."""
        from polygraphy.backend.onnxrt import OnnxrtRunner

        model = plan.qdq_model if isinstance(plan, PlanBuild) else plan
        start = time.perf_counter()
        runner = OnnxrtRunner(self.session(model), name="onnxrt")
        outputs = []
        with quiet_polygraphy(), runner:
            built = time.perf_counter()
            for index, feed in enumerate(feeds):
                try:
                    result = {name: np.array(value) for name, value in runner.infer(feed).items()}
                except Exception as exc:
                    raise EvaluationError(f"ONNX Runtime inference failed: {first_line(exc)}") from exc
                # outside the try: an error of the caller's comparison (e.g. an output slice that does not fit)
                # is the caller's, not a failed evaluation
                if on_output is None:
                    outputs.append(result)
                elif on_output(index, result):
                    break
        done = time.perf_counter()
        return outputs, RunTimings(build=built - start, infer=done - built)
