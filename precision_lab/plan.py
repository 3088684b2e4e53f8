"""``plan.json`` (the output contract of ``docs/design.md``) and re-applying a saved plan.

``plan.json`` also carries what is needed to rebuild ``plan.onnx`` without data: the candidate set and the
calibrated ranges (``quantization``), so ``precision-lab apply`` needs only the model and the plan.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from precision_lab.errors import InputError

if TYPE_CHECKING:
    from precision_lab.results import SweepResult

__all__ = [
    "SCHEMA_VERSION", "plan_document", "cost_document", "read_plan", "apply_plan", "qdq_fp32_path", "emulated_path",
]

SCHEMA_VERSION = 1


def qdq_fp32_path(plan_onnx: str | os.PathLike) -> Path:
    """Where a three-level sweep writes its plan's Q/DQ model in FP32 (for TensorRT 10's implicit flags)."""
    return Path(plan_onnx).with_name(Path(plan_onnx).stem + "_qdq_fp32.onnx")


def emulated_path(plan_onnx: str | os.PathLike) -> Path:
    """Where a three-level sweep writes the model it measured: FP16 emulated on FP32 kernels."""
    return Path(plan_onnx).with_name(Path(plan_onnx).stem + "_fp16_emulated.onnx")


def plan_document(result: SweepResult, plan_onnx: str | os.PathLike) -> dict:
    """The content of ``plan.json`` for ``result``, whose plan was written to ``plan_onnx``."""
    from precision_lab.backends.exports import explicit_commands
    from precision_lab.results import _finite_or_text

    plan = result.plan
    three_level = "fp16" in result.precision_levels
    return _finite_or_text(
        {
            "schema_version": SCHEMA_VERSION,
            "model": {
                "path": result.model["path"],
                "sha256": result.model["sha256"],
                "input_shapes": result.model["input_shapes"],
                "renamed_nodes": result.model["renamed_nodes"],
                "constant_inputs": result.model.get("constant_inputs", {}),
            },
            "backend": result.backend,
            "backend_identity": result.backend_info.get("identity"),
            "recipe": result.recipe,
            "calibration": {"method": result.calibration["method"], "samples": result.calibration["samples"]},
            "data": result.data,
            "metric": result.metric,
            "output_slices": list(result.output_slices),
            "status": result.status,
            "precision_levels": list(result.precision_levels),
            "precisions": plan.plan.to_json(),
            "fp32_layers": list(plan.fp32_layers),
            "int8_layers": list(plan.int8_layers),
            "achieved": {"value": plan.value, "passed": plan.passed, "key": plan.key},
            "verification": result.verification,
            "confidence": result.confidence,
            "worst_inputs": [
                {"sample": sample, "part": part, "value": value} for sample, part, value in result.worst_inputs(5)
            ],
            "notices": list(result.notices),
            "evidence": plan.evidence,
            "baselines": result.baselines,
            "evaluations": len(result.all_records),
            "sensitivity": result.sensitivity,
            "plan_onnx": str(plan_onnx),
            "exports": result.exports or explicit_commands(plan_onnx),
            **({"plan_qdq_fp32_onnx": str(qdq_fp32_path(plan_onnx))} if three_level else {}),
            "quantization": result.quantization,
            "cost": cost_document(result.cost),
        }
    )


def cost_document(cost: dict) -> dict | None:
    """``plan.json``'s ``cost``: the target GPU, what FP32 means, the plan's estimated time relative to all-FP16
    and to all-INT8, the baselines relative to all-FP16, the estimate in seconds (a roofline lower bound) and the
    latencies the backend measured, if any. ``{"error": why}`` when the model could not be estimated; ``None``
    for results written before costs existed."""
    if not cost or "error" in cost:
        return {"error": cost["error"]} if cost else None
    document = {
        "gpu": cost["gpu"],
        "fp32_mode": cost["fp32_mode"],
        "default_precision": cost["default"],
        "relative_to_all_fp16": cost["plan"]["relative_to_all_fp16"],
        "relative_to_all_int8": cost["plan"]["relative_to_all_int8"],
        "baselines": cost["baselines"],
        "seconds": cost["plan"]["seconds"],
        "seconds_note": cost["note"],
    }
    if cost.get("measured"):
        document["measured"] = cost["measured"]
    return document


def read_plan(path: str | os.PathLike) -> dict:
    """Load and check a ``plan.json``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"plan file not found: {path}; pass the plan.json a sweep wrote")
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); pass the plan.json a sweep wrote") from exc
    if not isinstance(document, dict) or not isinstance(document.get("schema_version"), int):
        raise InputError(f"{path} is not a precision-lab plan (no schema_version); pass the plan.json a sweep wrote")
    needed = ("schema_version", "fp32_layers", "quantization")
    missing = [key for key in needed if key not in document]
    if missing or "ranges" not in document.get("quantization", {}):
        raise InputError(f"{path} is not a precision-lab plan (missing {missing or ['quantization.ranges']})")
    if document["schema_version"] > SCHEMA_VERSION:
        raise InputError(
            f"{path} has plan schema {document['schema_version']}, newer than this precision-lab "
            f"({SCHEMA_VERSION}); upgrade precision-lab"
        )
    return document


def apply_plan(
    model: str | os.PathLike,
    plan: str | os.PathLike,
    output: str | os.PathLike,
    *,
    qdq_model: str | os.PathLike | None = None,
) -> list[str]:
    """Write ``model`` with the saved ``plan`` applied as Q/DQ to ``output``. Returns warnings to show.

    ``qdq_model`` (default none): apply the plan to this user Q/DQ model of ``model`` instead (``--qdq-model``)."""
    if qdq_model is not None:
        from precision_lab.user_qdq import apply_user_plan

        return apply_user_plan(model, qdq_model, read_plan(plan), output)
    document = read_plan(plan)
    if "qdq_model" in document["quantization"]:
        raise InputError(
            f"{plan} was made with --qdq-model {document['quantization']['qdq_model']}; pass that model as --qdq-model"
        )
    from precision_lab.calibration import Ranges
    from precision_lab.onnx_io import save_model
    from precision_lab.model import constant_inputs_from_json, list_candidates, prepare_model
    from precision_lab.precisions import PrecisionPlan
    from precision_lab.qdq import QdqBuilder

    warnings = []
    quantization = document["quantization"]
    shapes = document.get("model", {}).get("input_shapes", {})
    prepared = prepare_model(
        model,
        input_shapes={k: v for k, v in shapes.items() if all(isinstance(d, int) for d in v)},
        constant_inputs=constant_inputs_from_json(document.get("model", {}).get("constant_inputs", {})),
    )
    if document.get("model", {}).get("sha256") not in (None, prepared.sha256):
        warnings.append(
            f"{model} differs from the model the plan was made for (sha256 mismatch); the plan's layer "
            "names are applied anyway"
        )
    candidates = list_candidates(prepared, op_types=quantization["op_types"], exclude=quantization.get("exclude", []))
    wanted = set(quantization["candidates"])
    candidates = [c for c in candidates if c.name in wanted]
    missing = wanted - {c.name for c in candidates}
    if missing:
        raise InputError(
            f"the plan's layers {sorted(missing)[:5]} are not in {model}; apply the plan to the model it was made for"
        )
    ranges = Ranges("saved", quantization.get("ranges_key", ""), dict(quantization["ranges"]), 0)
    builder = QdqBuilder(
        prepared, candidates, ranges, recipe=quantization["recipe"],
        precisions=document.get("precision_levels", ("int8", "fp32")),
    )
    plan_obj = PrecisionPlan(document.get("precisions") or {n: "fp32" for n in document["fp32_layers"]})
    save_model(builder.build_deployable(plan_obj), output)
    return warnings
