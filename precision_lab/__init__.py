"""precision-lab: which layers must stay FP32 so the rest of an ONNX model can run INT8?

Library first::

    import precision_lab
    result = precision_lab.sweep("model.onnx", data="calib/", metric="rel-l2", tolerance=0.05)
    result.plan.fp32_layers, result.layers  # the plan, and a DataFrame of per-layer sensitivity
    result = precision_lab.load("reports/model")  # the same object, from a sweep's output folder
"""

from precision_lab.compare import METRICS, OutputSlice
from precision_lab.errors import (
    EvaluationError,
    InputError,
    MissingDependencyError,
    PrecisionLabError,
    UnattainableToleranceError,
)
from precision_lab.model import list_candidates, prepare_model
from precision_lab.plan import apply_plan
from precision_lab.qdq import RECIPES, QdqBuilder
from precision_lab.report import render_report, write_report
from precision_lab.results import Evaluation, LayerSensitivity, Plan, SweepResult, load
from precision_lab.sweep import DEFAULT_TOLERANCES, sweep

__version__ = "0.1.0"

__all__ = [
    "sweep",
    "load",
    "apply_plan",
    "render_report",
    "write_report",
    "prepare_model",
    "list_candidates",
    "QdqBuilder",
    "SweepResult",
    "Plan",
    "Evaluation",
    "LayerSensitivity",
    "OutputSlice",
    "METRICS",
    "RECIPES",
    "DEFAULT_TOLERANCES",
    "PrecisionLabError",
    "InputError",
    "MissingDependencyError",
    "UnattainableToleranceError",
    "EvaluationError",
]
