"""The one place ONNX Runtime sessions are configured (backends, one-pass signals, the shape probe)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["create_session"]


def create_session(
    model: bytes | str,
    *,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    optimize: bool = False,
    threads: int | None = None,
    log_severity: int = 3,
):
    """An ``onnxruntime.InferenceSession`` of ``model`` (serialized bytes or a path): graph optimizations off
    unless ``optimize`` (exact Q/DQ arithmetic), ``threads`` intra-op threads (default ONNX Runtime's choice), no
    busy-waiting between runs (the comparison of each output runs in between and would compete with spinning
    threads for the cores), ONNX Runtime's own log at ``log_severity`` (3: errors; 4: fatal only)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = log_severity
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model, options, providers=list(providers))
