"""Writing a sweep's outputs into its folder, each file atomically: ``plan.onnx``, ``plan.json``,
``sensitivity.csv``, ``result.json`` and ``report.html``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from precision_lab.io import write_text_atomic
from precision_lab.onnx_io import save_model
from precision_lab.plan import plan_document
from precision_lab.qdq import QdqBuilder
from precision_lab.results import RESULT_NAME, SweepResult

__all__ = ["write_outputs"]

log = logging.getLogger("precision_lab")


def write_outputs(result: SweepResult, builder: QdqBuilder, out: Path, *, evaluations_run: int) -> None:
    """Write every output of ``result`` into ``out``; ``plan.onnx`` is built by ``builder``."""
    from precision_lab.report import write_report

    save_model(builder.build(result.plan.plan), out / "plan.onnx")  # external data past the 2 GB protobuf limit
    write_text_atomic(out / "plan.json", json.dumps(plan_document(result, out / "plan.onnx"), indent=2) + "\n")
    write_text_atomic(out / "sensitivity.csv", result.layers.to_csv(index=False))
    write_text_atomic(out / RESULT_NAME, json.dumps(result.to_json(), indent=1) + "\n")
    write_report(result, out)
    total = len(result.evaluation_records) + len(result.verification_records)
    log.info("wrote %s (%d evaluations this run, %d in total)", out, evaluations_run, total)
