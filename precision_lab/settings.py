"""Checking a sweep's options before any work: the metric and its tolerance, the search, the output parts.

Each check raises one-line :class:`~precision_lab.errors.InputError` naming the problem and the fix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from precision_lab.calibration import DEFAULT_PERCENTILE, check_calibration
from precision_lab.data import DEFAULT_CALIB_SAMPLES, DEFAULT_EVAL_SAMPLES, DEFAULT_VERIFY_SAMPLES
from precision_lab.compare import METRICS, Metric, OutputSlice, TaskMetric, get_metric
from precision_lab.errors import InputError
from precision_lab.model import PreparedModel
from precision_lab.qdq import RECIPES
from precision_lab.search import SEARCHES, SENSITIVITY_MODES

__all__ = [
    "SweepOptions",
    "DEFAULT_TOLERANCES",
    "DEFAULT_MAX_DROPS",
    "DEFAULT_CRITERION",
    "DEFAULT_UNTIL_VERIFIED",
    "MetricSetting",
    "resolve_metric",
    "check_options",
    "check_precisions",
    "PRECISION_SETS",
    "check_slices",
    "judged_outputs",
    "check_target_gpu",
]

DEFAULT_TOLERANCES: dict[str, float] = {"rel-l2": 0.05, "cosine": 0.999, "sqnr": 20.0, "top1": 0.99}
DEFAULT_MAX_DROPS: dict[str, float] = {"accuracy": 0.01}  # metrics judged by their drop from the FP32 score
DEFAULT_CRITERION = "p90"  # measured on the real-model tier: README, "Plans that hold on new inputs"
DEFAULT_UNTIL_VERIFIED = True


@dataclass(frozen=True)
class SweepOptions:
    """A sweep's options (see :func:`precision_lab.sweep.sweep`, which states every default)."""

    data: str | os.PathLike | None = None
    data_loader_script: str | None = None
    labels: str | os.PathLike | None = None
    metric: str = "rel-l2"
    metric_direction: str | None = None
    tolerance: float | None = None
    max_drop: float | None = None
    criterion: str = DEFAULT_CRITERION
    recipe: str = "trt"
    ops: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    calibration: str = "max"
    percentile: float = DEFAULT_PERCENTILE
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    verify_samples: int = DEFAULT_VERIFY_SAMPLES
    until_verified: bool = DEFAULT_UNTIL_VERIFIED
    seed: int = 0
    input_shapes: Mapping[str, Sequence[int]] | None = None
    output_slices: Sequence[str | OutputSlice] = ()
    judge_outputs: Sequence[str] = ()
    sensitivity: str = "isolate"
    backend: object = "auto"  # a backend name, or a Backend object
    backend_options: Mapping[str, object] | None = None
    resume: bool = True
    progress: bool = True
    search: str = "full"
    jobs: int = 1
    executor: str = "local"
    ray_address: str | None = None
    precisions: tuple[str, ...] = ("int8", "fp32")  # the precision levels a plan may use, lowest first
    target_gpu: str = "H100 SXM"  # the GPU of the cost estimate: a name of precision_lab.cost.GPUS
    qdq_model: str | os.PathLike | None = None  # the user's Q/DQ model (issue 14): candidates and scales from it
    suffix: bool = True  # suffix evaluation (precision_lab.suffix)
    early_stop: bool = True  # exact early stop of pass/fail evaluations (precision_lab.early_stop)
    batch: int = 1  # feeds per inference where the model allows it (precision_lab.batching)


@dataclass(frozen=True)
class MetricSetting:
    """The metric, its tolerance (NaN until the FP32 score is known when judged by ``max_drop``), the task
    metric that computes it (``None`` for built-in output metrics) and the allowed drop (``None``: a tolerance)."""

    metric: Metric
    tolerance: float
    task: TaskMetric | None
    max_drop: float | None


def resolve_metric(
    metric: str, direction: str | None, tolerance: float | None, max_drop: float | None
) -> MetricSetting:
    """The metric's setting. Defaults: :data:`DEFAULT_TOLERANCES`, or :data:`DEFAULT_MAX_DROPS` for metrics
    judged against the FP32 model's own score."""
    metric_obj = get_metric(metric, direction=direction)
    task = TaskMetric(metric) if metric not in METRICS else None
    if max_drop is None and tolerance is None and metric in DEFAULT_MAX_DROPS:
        max_drop = DEFAULT_MAX_DROPS[metric]
    if max_drop is not None:
        if tolerance is not None:
            raise InputError("give either --tolerance or --max-drop, not both")
        if not metric_obj.higher_is_better:
            raise InputError(f"--max-drop is for higher-is-better metrics; '{metric}' is lower-is-better: use --tolerance")
        if not (0 <= max_drop < math.inf):
            raise InputError(f"--max-drop must be a finite value >= 0, got {max_drop}")
        if metric == "sqnr":
            raise InputError("--max-drop does not fit sqnr (the FP32 model's own sqnr is infinite); use --tolerance")
        return MetricSetting(metric_obj, math.nan, task, float(max_drop))
    if tolerance is None:
        if metric not in DEFAULT_TOLERANCES:
            raise InputError(f"metric '{metric}' has no default tolerance; pass --tolerance")
        tolerance = DEFAULT_TOLERANCES[metric]
    metric_obj.check_tolerance(float(tolerance))
    return MetricSetting(metric_obj, float(tolerance), task, None)


PRECISION_SETS: tuple[tuple[str, ...], ...] = (("int8", "fp32"), ("int8", "fp16", "fp32"))


def check_precisions(precisions: str | Sequence[str]) -> tuple[str, ...]:
    """``precisions`` (``"int8,fp16,fp32"`` or a sequence) as a tuple lowest first, if it is a supported set."""
    levels = tuple(p.strip().lower() for p in (precisions.split(",") if isinstance(precisions, str) else precisions))
    if levels not in PRECISION_SETS:
        choices = " or ".join(",".join(s) for s in PRECISION_SETS)
        raise InputError(f"unknown --precisions '{','.join(levels)}'; choose {choices}")
    return levels


def check_options(
    *, recipe: str, sensitivity: str, calibration: str, percentile: float, seed: int, search: str,
    executor: str = "local", ray_address: str | None = None, batch: int = 1, qdq_model: object = None,
    precisions: Sequence[str] = (),
) -> None:
    """The search, sensitivity mode, calibration, seed, executor, ``batch`` (default 1) and ``qdq_model`` with
    ``precisions`` (two levels only) are known, in range and consistent."""
    if qdq_model is not None and "fp16" in precisions:
        raise InputError(
            "--qdq-model searches two-level plans only: the user's Q/DQ model fixes the INT8 layers and their "
            "scales; drop --precisions int8,fp16,fp32, or sweep the FP32 model with it"
        )
    if batch < 1:
        raise InputError(f"--batch must be 1 or more, got {batch}")
    if ray_address and executor != "ray":
        raise InputError("--ray-address needs --executor ray")
    if search not in SEARCHES:
        raise InputError(f"unknown --search '{search}'; choose one of {', '.join(SEARCHES)}")
    if sensitivity not in SENSITIVITY_MODES:
        raise InputError(f"unknown --sensitivity '{sensitivity}'; choose one of {', '.join(SENSITIVITY_MODES)}")
    if recipe not in RECIPES:
        raise InputError(f"unknown --recipe '{recipe}'; choose one of {', '.join(RECIPES)}")
    check_calibration(calibration, percentile)
    if not 0 <= seed < 2**32:
        raise InputError(f"--seed must be between 0 and 2**32 - 1, got {seed}")


def check_slices(prepared: PreparedModel, slices: Sequence[OutputSlice]) -> None:
    """Every ``--output-slice`` names an output and fits its (inferred) shape."""
    shapes = {vi.name: vi.type.tensor_type.shape.dim for vi in prepared.model.graph.output}
    for part in slices:
        if part.output not in shapes:
            raise InputError(
                f"--output-slice names output '{part.output}', but the model's outputs are {list(prepared.output_names)}"
            )
        dims = [d.dim_value if d.HasField("dim_value") else None for d in shapes[part.output]]
        if dims and not -len(dims) <= part.axis < len(dims):
            raise InputError(f"--output-slice axis {part.axis} does not exist: output '{part.output}' has rank {len(dims)}")
        if dims and dims[part.axis] is not None and part.stop > dims[part.axis]:
            raise InputError(
                f"--output-slice {part.output}:{part.axis}:{part.start}:{part.stop} does not fit: axis {part.axis} "
                f"of '{part.output}' has size {dims[part.axis]}"
            )


def judged_outputs(
    prepared: PreparedModel, judge_outputs: Sequence[str], slices: Sequence[OutputSlice]
) -> tuple[str, ...] | None:
    """The outputs that decide the metric: ``judge_outputs`` plus those named by slices (``None``: all)."""
    if not judge_outputs:
        return None
    unknown = [name for name in judge_outputs if name not in prepared.output_names]
    if unknown:
        raise InputError(f"--judge-output names {unknown}, but the model's outputs are {list(prepared.output_names)}")
    return tuple(dict.fromkeys([*judge_outputs, *(s.output for s in slices)]))


def check_target_gpu(name: str) -> str:
    """The name in :data:`precision_lab.cost.GPUS` of ``--target-gpu`` ``name`` (case, spaces and dashes do not
    matter); a one-line :class:`InputError` listing the choices otherwise."""
    from precision_lab.cost import gpu_named

    try:
        return gpu_named(name).name
    except ValueError as exc:
        raise InputError(f"--target-gpu: {exc}") from None
