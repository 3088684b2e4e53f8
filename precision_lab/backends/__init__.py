"""Backends build a runner for a Q/DQ model. ``onnxrt`` is embedded; ``tensorrt`` is an extra.

``auto`` picks TensorRT when a working ``tensorrt.Builder`` and a CUDA device exist, else ONNX Runtime
(:func:`detect_backend` says which and why).
"""

from __future__ import annotations

from precision_lab.backends.base import Backend, PlanBuild, RunTimings
from precision_lab.backends.detect import detect_backend, require_tensorrt, tensorrt_status  # noqa: F401
from precision_lab.backends.onnxrt import OnnxRuntimeBackend
from precision_lab.errors import InputError

__all__ = [
    "Backend",
    "PlanBuild",
    "RunTimings",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "get_backend",
    "resolve_backend",
    "detect_backend",
    "tensorrt_status",
    "BACKENDS",
]

BACKENDS = ("onnxrt", "tensorrt", "auto")


def __getattr__(name: str):
    if name == "TensorRTBackend":  # lazily: the module itself never imports tensorrt at import time
        from precision_lab.backends.tensorrt import TensorRTBackend

        return TensorRTBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_backend(name: str = "onnxrt", **options) -> tuple[Backend, str | None]:
    """The backend called ``name`` and, for ``auto``, the one-line reason for the choice (else ``None``).

    ``options`` configure the backend; with ``auto`` give them per backend, ``tensorrt={...}`` and
    ``onnxrt={...}``, and only the chosen backend's are used.
    """
    if name == "onnxrt":
        return OnnxRuntimeBackend(**options), None
    if name == "tensorrt":
        from precision_lab.backends.tensorrt import TensorRTBackend

        backend = TensorRTBackend(**options)
        backend.check()  # one line if TensorRT is unusable (what is missing, how to install), too old, or
        # the implicit mode is asked of TensorRT 11: before any work is done
        return backend, None
    if name == "auto":
        unknown = sorted(set(options) - {"onnxrt", "tensorrt"})
        if unknown:
            raise InputError(
                f"backend 'auto' takes options per backend (onnxrt={{...}}, tensorrt={{...}}), not {unknown}"
            )
        chosen, reason = detect_backend()
        backend, _ = resolve_backend(chosen, **dict(options.get(chosen) or {}))
        return backend, reason
    raise InputError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")


def get_backend(name: str = "onnxrt", **options) -> Backend:
    """The backend called ``name`` (default ``onnxrt``), configured with keyword ``options``.

    ``tensorrt`` raises :class:`~precision_lab.errors.MissingDependencyError` (one line) when TensorRT is not
    usable; ``auto`` picks TensorRT or ONNX Runtime (use :func:`resolve_backend` to also get the reason).
    """
    backend, _ = resolve_backend(name, **options)
    return backend
