"""Writing a sweep's outputs into its folder, each file atomically: ``plan.onnx``, ``plan.json``,
``sensitivity.csv``, ``result.json`` and ``report.html``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from precision_lab.io import write_text_atomic
from precision_lab.onnx_io import save_model
from precision_lab.plan import emulated_path, plan_document, qdq_fp32_path
from precision_lab.qdq import QdqBuilder
from precision_lab.results import RESULT_NAME, SweepResult

__all__ = ["write_outputs"]

log = logging.getLogger("precision_lab")


def write_outputs(result: SweepResult, builder: QdqBuilder, out: Path, *, evaluations_run: int) -> None:
    """Write every output of ``result`` into ``out``; ``plan.onnx`` is built by ``builder``."""
    from precision_lab.report import write_report

    plan = result.plan.plan
    save_model(builder.build_deployable(plan), out / "plan.onnx")  # external data past the 2 GB protobuf limit
    if builder.with_fp16:  # TensorRT 10's implicit flags read the FP32 Q/DQ model; the emulation is what ran here
        save_model(builder.build_qdq(plan), qdq_fp32_path(out / "plan.onnx"))
        save_model(builder.build(plan), emulated_path(out / "plan.onnx"))
    write_text_atomic(out / "plan.json", json.dumps(plan_document(result, out / "plan.onnx"), indent=2) + "\n")
    write_text_atomic(out / "sensitivity.csv", result.layers.to_csv(index=False))
    write_text_atomic(out / RESULT_NAME, json.dumps(result.to_json(), indent=1) + "\n")
    write_report(result, out)
    log.info("wrote %s (%d evaluations this run, %d in total)", out, evaluations_run, len(result.all_records))
