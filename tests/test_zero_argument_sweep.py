"""``precision-lab sweep model.onnx`` with no other argument: synthetic data, loud warning, defaults shown."""

from __future__ import annotations

import json
import shutil

from conftest import SAMPLES, run_cli


def test_sweep_with_only_a_model(tmp_path):
    model = tmp_path / "plain_cnn.onnx"
    shutil.copy(SAMPLES / "plain_cnn.onnx", model)
    proc = run_cli("sweep", str(model), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "NO DATA GIVEN" in proc.stderr and "synthetic" in proc.stderr
    assert "rel-l2" in proc.stdout and "tolerance 0.05" in proc.stdout
    assert "FP32  conv4" in proc.stdout
    out = tmp_path / "reports" / "plain_cnn"
    for name in ("plan.json", "plan.onnx", "sensitivity.csv", "journal.jsonl", "result.json"):
        assert (out / name).is_file(), name
    plan = json.loads((out / "plan.json").read_text())
    assert plan["data"]["synthetic"] is True
    assert plan["metric"] == {
        "name": "rel-l2", "direction": "lower", "tolerance": 0.05, "criterion": "p90", "max_drop": None,
        "search_tolerance": 0.05,
    }
    assert plan["fp32_layers"] == ["conv4"]


def test_layers_and_apply_commands(tmp_path):
    model = SAMPLES / "plain_cnn.onnx"
    proc = run_cli("layers", str(model))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[1]: line.split() for line in proc.stdout.splitlines()[1:-1]}
    assert rows["conv4"][2] == "Conv"
    assert " ".join(rows["conv4"][3:]) == "1x16x16x16, 16x16x3x3, 16 -> 1x16x16x16"
    assert rows["fc"][2] == "Gemm"
    assert "7 candidate layers" in proc.stdout

    out = tmp_path / "out"
    assert run_cli("sweep", str(model), "--out", str(out), "--quiet").returncode == 0
    applied = tmp_path / "applied.onnx"
    proc = run_cli("apply", str(model), str(out / "plan.json"), "-o", str(applied))
    assert proc.returncode == 0, proc.stderr
    assert applied.read_bytes() == (out / "plan.onnx").read_bytes()
