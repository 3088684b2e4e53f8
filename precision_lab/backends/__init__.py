"""Backends build a runner for a Q/DQ model. ``onnxrt`` is embedded; ``tensorrt`` is an extra."""

from __future__ import annotations

from precision_lab.backends.base import Backend, PlanBuild, RunTimings
from precision_lab.backends.onnxrt import OnnxRuntimeBackend
from precision_lab.errors import InputError

__all__ = ["Backend", "PlanBuild", "RunTimings", "OnnxRuntimeBackend", "get_backend", "BACKENDS"]

BACKENDS = ("onnxrt",)


def get_backend(name: str = "onnxrt", **options) -> Backend:
    """The backend called ``name`` (default ``onnxrt``), configured with keyword ``options``."""
    if name == "onnxrt":
        return OnnxRuntimeBackend(**options)
    raise InputError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
