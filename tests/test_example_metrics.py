"""The task-level example metrics in ``examples/metrics/``: hand-computed cases, then real sweeps with them
(YOLOv8n detections from nudenet, PP-OCRv4 rec strings) whose plans are judged on held-out inputs."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import REPO, run_cli
from real_models import FetchError
from real_tier import TIER, search_and_heldout

METRICS = REPO / "examples" / "metrics"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, METRICS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


det = _load("detection_f1")
ctc = _load("ctc_text")


def _prediction(boxes: list[tuple[float, float, float, float, int, float]], classes: int = 3) -> np.ndarray:
    """A YOLOv8 ``[4 + classes, anchors]`` prediction: one anchor per (cx, cy, w, h, class, score)."""
    out = np.zeros((4 + classes, len(boxes)), dtype=np.float32)
    for j, (cx, cy, w, h, cls, score) in enumerate(boxes):
        out[:4, j] = (cx, cy, w, h)
        out[4 + cls, j] = score
    return out


def test_decode_thresholds_and_suppresses_per_class():
    pred = _prediction([
        (50, 50, 20, 20, 0, 0.9),   # kept
        (52, 50, 20, 20, 0, 0.8),   # IoU 0.82 with the first, same class: suppressed
        (52, 50, 20, 20, 1, 0.7),   # same place, other class: kept
        (150, 150, 10, 10, 2, 0.1), # below the 0.25 threshold
    ])
    boxes, classes, scores = det.decode(pred)
    assert classes.tolist() == [0, 1] and scores == pytest.approx([0.9, 0.7])
    assert boxes[0] == pytest.approx([40, 40, 60, 60])


def test_f1_matches_same_class_at_iou_half():
    reference = _prediction([(50, 50, 20, 20, 0, 0.9), (120, 120, 20, 20, 1, 0.8)])
    same = det.detection_f1({"o": reference[None]}, {"o": reference[None]})
    assert same.tolist() == [1.0]
    moved = _prediction([(50, 50, 20, 20, 0, 0.9), (132, 120, 20, 20, 1, 0.8)])  # IoU 8*20/(2*400-160) = 0.25
    assert det.detection_f1({"o": moved[None]}, {"o": reference[None]}).tolist() == [0.5]
    relabelled = _prediction([(50, 50, 20, 20, 2, 0.9), (120, 120, 20, 20, 1, 0.8)])
    assert det.detection_f1({"o": relabelled[None]}, {"o": reference[None]}).tolist() == [0.5]
    empty = _prediction([(50, 50, 20, 20, 0, 0.1)])
    assert det.detection_f1({"o": empty[None]}, {"o": empty[None]}).tolist() == [1.0]


def _steps(ids: list[int], classes: int = 6) -> np.ndarray:
    out = np.zeros((len(ids), classes), dtype=np.float32)
    out[np.arange(len(ids)), ids] = 1.0
    return out


def test_ctc_greedy_decode_exact_match_and_cer():
    assert ctc.greedy_decode(_steps([0, 3, 3, 0, 3, 4, 4, 0])) == [3, 3, 4]
    reference = _steps([1, 1, 0, 2, 3, 0, 4])  # "1 2 3 4"
    other = _steps([1, 0, 0, 2, 5, 0, 4])  # "1 2 5 4": one substitution
    outputs = {"y": np.stack([reference, other])}
    ref = {"y": np.stack([reference, reference])}
    assert ctc.exact_match(outputs, ref).tolist() == [1.0, 0.0]
    assert ctc.character_error_rate(outputs, ref).tolist() == [0.0, 0.25]
    assert ctc.edit_distance([1, 2, 3], [2, 3, 4]) == 2


def _real_sweep(key: str, tmp_path, metric: str, direction: str, tolerance: float, real_model_log):
    model = TIER[key]
    try:
        search, heldout = search_and_heldout(model, tmp_path, 24, 8)
    except FetchError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "out"
    proc = run_cli(
        "sweep", str(model.fetch()), "--data", str(search), "--metric", metric, "--metric-direction", direction,
        "--tolerance", str(tolerance), "--out", str(out), "--quiet",
        *[a for a in model.args if a not in ("--output-slice", "output0:1:4:22")], timeout=3000,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads((out / "plan.json").read_text())
    # the plan, judged on the held-out inputs with the same task metric
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sessions = [ort.InferenceSession(str(p), options) for p in (out / "plan.onnx", model.fetch())]
    function = getattr(_load(metric.split(":")[0].rsplit("/", 1)[-1].removesuffix(".py")), metric.split(":")[1])
    values = []
    for path in sorted(heldout.glob("*.npz")):
        feed = dict(np.load(path))
        y, r = ({s.get_outputs()[0].name: s.run(None, feed)[0]} for s in sessions)
        values.extend(np.atleast_1d(function(y, r)).tolist())
    value = float(np.mean(values))
    real_model_log(
        f"{key} with {metric.split(':')[1]}: {len(plan['fp32_layers'])} FP32, evaluation {plan['achieved']['value']:.4g}, "
        f"verification {plan['verification'].get('value', float('nan')):.4g}, held-out {value:.4g} (tolerance {tolerance})"
    )
    return plan, value


@pytest.mark.real
def test_yolov8n_detection_f1_on_heldout_photos(tmp_path, real_model_log):
    plan, value = _real_sweep("yolov8n", tmp_path, f"{METRICS / 'detection_f1.py'}:detection_f1", "higher", 0.9,
                              real_model_log)
    assert plan["achieved"]["passed"]
    assert value >= 0.9 - 0.1  # within the tolerance's distance from a perfect 1.0, times 2


@pytest.mark.real_full
def test_ppocr_rec_strings_on_heldout_lines(tmp_path, real_model_log):
    plan, value = _real_sweep("ppocr_rec", tmp_path, f"{METRICS / 'ctc_text.py'}:character_error_rate", "lower", 0.02,
                              real_model_log)
    assert plan["achieved"]["passed"]
    assert value <= 0.02 * 1.5
