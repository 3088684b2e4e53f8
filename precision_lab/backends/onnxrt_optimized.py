"""A second opinion: ONNX Runtime as it runs Q/DQ models in production, with graph optimizations on.

At its default optimization level ONNX Runtime fuses ``DequantizeLinear -> Conv/MatMul -> QuantizeLinear`` into
its own integer kernels (QLinearConv, MatMulIntegerToFloat, ...), whose arithmetic differs from ideal INT8 (on x86
the u8s8 path can saturate, requantization rounds differently). The ``onnxrt`` backend measures the plan with
exact Q/DQ arithmetic; this one measures what an optimized ONNX Runtime deployment computes, so a plan can be
checked against the kernels a CPU user will actually run: ``--backend onnxrt-optimized``.
"""

from __future__ import annotations

from collections.abc import Sequence

from precision_lab.backends.onnxrt import OnnxRuntimeBackend

__all__ = ["OptimizedOnnxRuntimeBackend"]


class OptimizedOnnxRuntimeBackend(OnnxRuntimeBackend):
    """ONNX Runtime on ``providers`` (default CPU) with every graph optimization on (``ORT_ENABLE_ALL``)."""

    name = "onnxrt-optimized"

    def __init__(self, *, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None) -> None:
        super().__init__(providers=providers, threads=threads, optimize=True)

    def build_commands(self, plan_onnx, *, out, prepared, plan) -> dict[str, str]:
        """The usual build commands; the ONNX Runtime one keeps the default (full) optimizations, as measured."""
        commands = super().build_commands(plan_onnx, out=out, prepared=prepared, plan=plan)
        commands["onnxruntime"] = (
            f"python -c \"import onnxruntime as ort; s = ort.InferenceSession('{plan_onnx}'); "
            "print([i.name for i in s.get_inputs()])\""
        )
        return commands
