"""YOLOv8n from nudenet==3.4.2 (docs/design.md, "Real models"), swept on real photos with the class-score slice.

The model's output0 [1, 22, 2100] concatenates 4 box coordinates in pixels with 18 class scores in 0..1; one
``Concat`` merges them, and in INT8 its single scale (set by the pixel range) zeroes every score. Recipe
``extended`` sees that Concat; the output slice makes the metric judge the scores on their own.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import run_cli
from real_models import fetch_wheel_member, photo_feeds

pytestmark = pytest.mark.real


def test_yolov8n_extended_sweep_ranks_the_box_score_concat_first(tmp_path, real_model_log):
    model = fetch_wheel_member("nudenet", "3.4.2", "nudenet/320n.onnx")
    data = photo_feeds(tmp_path / "photos", "images", 320, 12)
    out = tmp_path / "out"
    started = time.perf_counter()
    proc = run_cli(
        "sweep", str(model), "--data", str(data), "--calib-samples", "8", "--eval-samples", "4",
        "--recipe", "extended", "--output-slice", "output0:1:4:22", "--tolerance", "0.2",
        # this test is about the ranking and the report's collapse warning, on a few photos: the aggregate
        # criterion and no verification split (tests/test_real_heldout.py judges plans on held-out inputs)
        "--verify-samples", "0", "--criterion", "aggregate",
        "--out", str(out), "--quiet", timeout=1800,
    )
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    plan = json.loads((out / "plan.json").read_text())
    ranking = [line.split(",")[0] for line in (out / "sensitivity.csv").read_text().splitlines()[1:]]
    real_model_log(
        f"YOLOv8n (nudenet 3.4.2, extended, score slice): {len(ranking)} candidates, {plan['evaluations']} evaluations, {seconds:.0f} s, "
        f"all-INT8 {plan['baselines']['all_int8']:.4g}, plan {plan['achieved']['value']:.4g} "
        f"with {len(plan['fp32_layers'])} FP32 layers"
    )
    assert ranking[0] == "/model.22/Concat_25"
    assert "/model.22/Concat_25" in plan["fp32_layers"]
    assert plan["achieved"]["passed"] and plan["achieved"]["value"] <= 0.2
    assert plan["baselines"]["all_int8"] > 0.9  # every class score lost
    assert plan["output_slices"] == ["output0[axis 1: 4:22]"]

    # the report warns that the class-score channels collapse under all-INT8 while the aggregate looks fine
    import precision_lab
    from precision_lab.report.channels import collapses

    result = precision_lab.load(out)
    found = collapses(result.all_int8_record)
    assert [(group.output, group.channels) for group, _ in found] == [("output0", tuple(range(4, 22)))]
    assert found[0][1] >= 0.99  # whole-output cosine: looks fine
    report = (out / "report.html").read_text()
    assert "Channel collapse in all INT8: output &#x27;output0&#x27; channels 4-21" in report
    assert "judged through your --output-slice output0:1:4:22" in report  # never asks for the slice given
