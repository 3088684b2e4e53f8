"""Output folders written by an earlier precision-lab resume without redoing any evaluation.

``tests/data/resume_before_plan_type`` was written (journal, cached ranges and FP32 references) by the version
before plans became a precision per layer, with the command in its ``written_by.json``. Binary plans must keep
their journal keys, so re-running that command finds every evaluation in the journal; the only new one is the
verification check added since (the plan on the verification and calibration feeds together).
"""

from __future__ import annotations

import json
import shutil

import onnx
import onnxruntime
import pytest

from conftest import REPO
from precision_lab.cli import main

FOLDER = REPO / "tests" / "data" / "resume_before_plan_type"


def test_folder_of_the_previous_version_resumes_with_zero_new_evaluations(tmp_path, capsys):
    written_by = json.loads((FOLDER / "written_by.json").read_text())
    if (written_by["onnxruntime"], written_by["onnx"]) != (onnxruntime.__version__, onnx.__version__):
        pytest.skip(
            f"the folder was written with onnxruntime {written_by['onnxruntime']} / onnx {written_by['onnx']}; "
            f"results (and journal contexts) depend on them, and this machine has {onnxruntime.__version__} / "
            f"{onnx.__version__}: regenerate it with the command in written_by.json"
        )
    out = tmp_path / "out"
    shutil.copytree(FOLDER, out)
    model_record = json.loads((out / ".model.json").read_text())
    model_record["path"] = str(REPO / "sample_models" / "two_planted_cnn.onnx")
    (out / ".model.json").write_text(json.dumps(model_record))
    before = (out / "journal.jsonl").read_text()
    code = main([
        "sweep", str(REPO / "sample_models" / "two_planted_cnn.onnx"), "--out", str(out), "-q",
        "--calib-samples", "8", "--eval-samples", "8", "--verify-samples", "4",
        "--criterion", "aggregate", "--no-until-verified",  # the defaults of the version that wrote the folder
    ])
    assert code == 0, capsys.readouterr().err
    after = (out / "journal.jsonl").read_text()
    assert after.startswith(before)  # every earlier evaluation was found, none redone
    # the one evaluation new since that version: the plan on the verification and calibration feeds together
    (new,) = [json.loads(line) for line in after[len(before):].splitlines()]
    assert new["phase"] == "verification" and [len(rows) for rows in new["samples"].values()] == [8 + 4]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["evaluations"] == written_by["evaluations"] + 1
    assert sorted(plan["fp32_layers"]) == ["conv3", "conv6"]
