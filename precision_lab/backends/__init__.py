"""Backends build and run a plan's Q/DQ model. Looked up by name in :data:`BACKENDS`.

* ``onnxrt`` (embedded): ONNX Runtime on the CPU, exact quantize-dequantize arithmetic;
* ``onnxrt-optimized``: ONNX Runtime with its production graph optimizations (its own INT8 kernels);
* ``tensorrt`` (extra ``tensorrt``): engines built through Polygraphy.

``auto`` picks TensorRT when a working ``tensorrt.Builder`` and a CUDA device exist, else ONNX Runtime
(:func:`detect_backend` says which and why). Adding a backend is one module (a :class:`Backend` subclass with a
``from_options`` class method) and one line in :data:`BACKENDS`. Backend modules are imported only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass

from precision_lab.backends.base import Backend, PlanBuild, RunTimings
from precision_lab.backends.detect import detect_backend, require_tensorrt, tensorrt_status  # noqa: F401
from precision_lab.errors import InputError

__all__ = [
    "Backend",
    "PlanBuild",
    "RunTimings",
    "BackendEntry",
    "BACKENDS",
    "get_backend",
    "resolve_backend",
    "reference_backend",
    "detect_backend",
    "tensorrt_status",
    "add_backend_arguments",
    "backend_options_from_args",
]


@dataclass(frozen=True)
class BackendEntry:
    """A registered backend: its class (``module:Class``, imported when used) and, if it takes options, its
    options class (``module:Class`` with ``add_arguments(group)`` and ``from_args(args)``)."""

    name: str
    summary: str
    backend: str
    options: str | None = None

    def load(self) -> type[Backend]:
        return _load(self.backend)

    def options_class(self):
        return _load(self.options) if self.options else None


def _load(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


BACKENDS: dict[str, BackendEntry] = {
    entry.name: entry
    for entry in (
        BackendEntry("onnxrt", "ONNX Runtime, CPU, exact Q/DQ arithmetic", "precision_lab.backends.onnxrt:OnnxRuntimeBackend"),
        BackendEntry(
            "onnxrt-optimized", "ONNX Runtime with graph optimizations on (its own INT8 kernels, as deployed)",
            "precision_lab.backends.onnxrt_optimized:OptimizedOnnxRuntimeBackend",
        ),
        BackendEntry(
            "tensorrt", "TensorRT engines through Polygraphy (extra: tensorrt)",
            "precision_lab.backends.tensorrt:TensorRTBackend", "precision_lab.backends.tensorrt:TensorRTOptions",
        ),
    )
}


def __getattr__(name: str):
    classes = {"OnnxRuntimeBackend": "onnxrt", "TensorRTBackend": "tensorrt"}
    if name in classes:  # lazily: importing the package imports no backend module
        return BACKENDS[classes[name]].load()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_backend(name: str = "onnxrt", options: Mapping[str, object] | None = None) -> tuple[Backend, str | None]:
    """The backend called ``name`` (or ``auto``) and, for ``auto``, the one-line reason for the choice (else
    ``None``). ``options`` maps backend names to their options objects; only the chosen backend's are used."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(BACKENDS))
    if unknown:
        raise InputError(
            f"backend options are given per backend name ({', '.join(BACKENDS)}: options), not {unknown}"
        )
    reason = None
    if name == "auto":
        name, reason = detect_backend()
    if name not in BACKENDS:
        raise InputError(f"unknown backend '{name}'; choose one of auto, {', '.join(BACKENDS)}")
    return BACKENDS[name].load().from_options(options.get(name)), reason


def get_backend(name: str = "onnxrt", options: Mapping[str, object] | None = None) -> Backend:
    """The backend called ``name`` (default ``onnxrt``); see :func:`resolve_backend`."""
    return resolve_backend(name, options)[0]


def reference_backend() -> Backend:
    """The backend that computes FP32 references: ONNX Runtime on the CPU, graph optimizations off."""
    return BACKENDS["onnxrt"].load()()


def add_backend_arguments(group) -> None:
    """Every backend's command-line options, in an argparse group."""
    for entry in BACKENDS.values():
        if entry.options:
            entry.options_class().add_arguments(group)


def backend_options_from_args(args) -> dict[str, object]:
    """Backend name -> options object, from parsed command-line arguments."""
    return {entry.name: entry.options_class().from_args(args) for entry in BACKENDS.values() if entry.options}
