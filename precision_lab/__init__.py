"""precision-lab: which layers must stay FP32 so the rest of an ONNX model can run INT8?

Library first::

    import precision_lab
    result = precision_lab.sweep("model.onnx", data="calib/", metric="rel-l2", tolerance=0.05)
    result.plan.fp32_layers, result.layers  # the plan, and a DataFrame of per-layer sensitivity
    result = precision_lab.load("reports/model")  # the same object, from a sweep's output folder

Names are imported on first use, so ``import precision_lab`` (and the command line's ``--help``, and every
worker process) loads neither matplotlib nor pandas nor ONNX Runtime until something needs them.
"""

from __future__ import annotations

import importlib

from precision_lab.errors import (
    EvaluationError,
    InputError,
    MissingDependencyError,
    PrecisionLabError,
    UnattainableToleranceError,
)

__version__ = "0.1.0"

_LAZY = {
    "sweep": "precision_lab.sweep",
    "DEFAULT_TOLERANCES": "precision_lab.settings",
    "load": "precision_lab.results",
    "SweepResult": "precision_lab.results",
    "VerifiedPlan": "precision_lab.results",
    "Evaluation": "precision_lab.results",
    "LayerSensitivity": "precision_lab.results",
    "PrecisionPlan": "precision_lab.precisions",
    "apply_plan": "precision_lab.plan",
    "render_report": "precision_lab.report",
    "write_report": "precision_lab.report",
    "prepare_model": "precision_lab.model",
    "list_candidates": "precision_lab.model",
    "QdqBuilder": "precision_lab.qdq",
    "RECIPES": "precision_lab.qdq",
    "OutputSlice": "precision_lab.compare",
    "METRICS": "precision_lab.compare",
}

__all__ = [
    *_LAZY,
    "PrecisionLabError",
    "InputError",
    "MissingDependencyError",
    "UnattainableToleranceError",
    "EvaluationError",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
