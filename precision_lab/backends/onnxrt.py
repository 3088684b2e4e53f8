"""The embedded backend: an ONNX Runtime session run through Polygraphy's ``OnnxrtRunner``.

On CPU, ONNX Runtime runs TensorRT-style Q/DQ graphs as exact quantize-dequantize arithmetic in FP32
kernels: the numerics of an ideal INT8 engine, not INT8 speed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import onnx

from precision_lab.backends.base import RunTimings
from precision_lab.errors import EvaluationError

__all__ = ["OnnxRuntimeBackend"]


class OnnxRuntimeBackend:
    """ONNX Runtime on ``providers`` (default CPU) with ``threads`` intra-op threads (default: ORT's choice).

    Sessions use ONNX Runtime's default graph optimizations, so a plain ``InferenceSession`` of
    ``plan.onnx`` reproduces the numbers.
    """

    name = "onnxrt"

    def __init__(self, *, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None) -> None:
        self.providers = tuple(providers)
        self.threads = threads

    def identity(self) -> str:
        import onnxruntime

        return f"onnxruntime-{onnxruntime.__version__}:{','.join(self.providers)}"

    def session(self, model: onnx.ModelProto | bytes):
        """An ``onnxruntime.InferenceSession`` of ``model``."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        data = model if isinstance(model, bytes) else model.SerializeToString()
        try:
            return onnxruntime.InferenceSession(data, options, providers=list(self.providers))
        except Exception as exc:
            raise EvaluationError(f"ONNX Runtime could not load the model: {str(exc).splitlines()[0][:300]}") from exc

    def run(
        self, model: onnx.ModelProto | bytes, feeds: Sequence[dict[str, np.ndarray]]
    ) -> tuple[list[dict[str, np.ndarray]], RunTimings]:
        """Outputs of ``model`` for each feed (by output name), and the build / inference seconds."""
        from polygraphy.backend.onnxrt import OnnxrtRunner

        start = time.perf_counter()
        runner = OnnxrtRunner(self.session(model), name="onnxrt")
        outputs = []
        with runner:
            built = time.perf_counter()
            try:
                for feed in feeds:
                    outputs.append({name: np.array(value) for name, value in runner.infer(feed).items()})
            except Exception as exc:
                raise EvaluationError(f"ONNX Runtime inference failed: {str(exc).splitlines()[0][:300]}") from exc
        done = time.perf_counter()
        return outputs, RunTimings(build=built - start, infer=done - built)
