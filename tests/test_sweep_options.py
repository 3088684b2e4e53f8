"""Sweep options end to end on a sample model: calibration methods, sensitivity modes, custom metrics."""

from __future__ import annotations

import pytest

import precision_lab
from conftest import SAMPLES, write_random_feeds

MODEL = SAMPLES / "plain_cnn.onnx"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_random_feeds(MODEL, tmp_path_factory.mktemp("data"), count=24)


@pytest.mark.parametrize("calibration", ["max", "percentile", "entropy"])
def test_calibration_methods_find_the_planted_layer(tmp_path, data, calibration):
    result = precision_lab.sweep(MODEL, data=data, out_dir=tmp_path, calibration=calibration, progress=False,
                                 calib_samples=16, eval_samples=8)
    assert result.plan.fp32_layers == ("conv4",)
    assert result.calibration["method"] == calibration
    cached = list((tmp_path / "cache").glob("ranges-*.json"))
    assert len(cached) == 1


def test_calibration_methods_give_different_ranges(tmp_path, data):
    import json

    amax = {}
    for method in ("max", "percentile"):
        precision_lab.sweep(MODEL, data=data, out_dir=tmp_path / method, calibration=method, progress=False,
                            calib_samples=16, eval_samples=8, percentile=99.0)
        (cache,) = (tmp_path / method / "cache").glob("ranges-*.json")
        amax[method] = json.loads(cache.read_text())["amax"]
    assert amax["max"].keys() == amax["percentile"].keys()
    assert all(amax["percentile"][k] <= amax["max"][k] + 1e-6 for k in amax["max"])
    assert any(amax["percentile"][k] < amax["max"][k] * 0.999 for k in amax["max"])


@pytest.mark.parametrize("mode", ["isolate", "leave-one-out", "both"])
def test_sensitivity_modes(tmp_path, data, mode):
    result = precision_lab.sweep(MODEL, data=data, out_dir=tmp_path, sensitivity=mode, progress=False,
                                 calib_samples=16, eval_samples=8)
    assert result.plan.fp32_layers == ("conv4",)
    layers = result.layers
    assert layers["isolate"].notna().all() == (mode in ("isolate", "both"))
    assert layers["leave_one_out"].notna().all() == (mode in ("leave-one-out", "both"))
    phases = result.evaluations["phase"].tolist()
    assert phases.count(f"sensitivity ({mode})") == len(layers) * (2 if mode == "both" else 1)


def test_custom_metric_from_a_file(tmp_path, data):
    metric = tmp_path / "my_metric.py"
    metric.write_text(
        "import numpy as np\n"
        "def worst_logit_error(outputs, reference):\n"
        "    return float(max(np.abs(outputs[k] - reference[k]).max() for k in reference))\n"
    )
    result = precision_lab.sweep(MODEL, data=data, out_dir=tmp_path / "out", metric=f"{metric}:worst_logit_error",
                                 metric_direction="lower", tolerance=0.05, progress=False, calib_samples=16,
                                 eval_samples=8)
    assert result.metric["direction"] == "lower"
    assert result.plan.passed and result.plan.value <= 0.05
    assert "conv4" in result.plan.fp32_layers
    record = result.evaluation_records[0]
    assert record.custom is not None


def test_result_round_trips_through_load(tmp_path, data):
    result = precision_lab.sweep(MODEL, data=data, out_dir=tmp_path, progress=False, calib_samples=16, eval_samples=8)
    loaded = precision_lab.load(tmp_path)
    assert loaded == result
    assert loaded.layers.equals(result.layers)
