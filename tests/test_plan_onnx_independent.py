"""plan.onnx checked with plain onnx / onnxruntime / numpy: this module imports nothing from precision_lab.

It runs the sweep as a user would (a subprocess), then rebuilds the evaluation from the files alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from conftest import FP16_SAMPLE_NAMES, SAMPLE_NAMES


def _run(model_path: Path, feeds: list[dict]) -> list[dict]:
    # Graph optimizations off: ONNX Runtime's Q/DQ fusions use integer kernels with other arithmetic
    # (README, "How the numbers are made"); plain Q/DQ arithmetic is what precision-lab measures.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(None, feed))) for feed in feeds]


def _rel_l2(outputs, reference) -> float:
    worst = 0.0
    for name in reference[0]:
        y = np.concatenate([o[name].astype(np.float64).ravel() for o in outputs])
        r = np.concatenate([o[name].astype(np.float64).ravel() for o in reference])
        worst = max(worst, float(np.linalg.norm(y - r) / np.linalg.norm(r)))
    return worst


def _p90_rel_l2(outputs, reference) -> float:
    """The default criterion, p90: per output, each feed's rel-l2, their 90th percentile; the worst output."""
    worst = 0.0
    for name in reference[0]:
        per_feed = [
            float(np.linalg.norm(o[name].astype(np.float64) - r[name].astype(np.float64))
                  / np.linalg.norm(r[name].astype(np.float64)))
            for o, r in zip(outputs, reference)
        ]
        worst = max(worst, float(np.quantile(per_feed, 0.9)))
    return worst


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_plan_onnx_reproduces_the_achieved_value(sample_sweeps, name):
    out = sample_sweeps[name]
    plan = json.loads((out / "plan.json").read_text())
    data_dir = Path(plan["data"]["source"])
    feeds = [dict(np.load(data_dir / label)) for label in plan["data"]["eval_feeds"]]
    reference = _run(Path(plan["model"]["path"]), feeds)
    outputs = _run(out / "plan.onnx", feeds)
    assert plan["metric"]["criterion"] == "p90"
    value = _p90_rel_l2(outputs, reference)
    assert value == pytest.approx(plan["achieved"]["value"], rel=1e-5, abs=1e-9)
    # the aggregate of the same outputs is the value under --criterion aggregate, recorded per evaluation
    result = json.loads((out / "result.json").read_text())
    record = next(r for r in result["evaluation_records"] if r["key"] == plan["achieved"]["key"])
    assert _rel_l2(outputs, reference) == pytest.approx(max(p["rel-l2"] for p in record["parts"].values()), rel=1e-5)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_plan_onnx_structure(sample_sweeps, name):
    out = sample_sweeps[name]
    plan = json.loads((out / "plan.json").read_text())
    model = onnx.load(str(out / "plan.onnx"))
    onnx.checker.check_model(model, full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 13
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {out_name: node for node in model.graph.node for out_name in node.output}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if plan["int8_layers"]:
        assert qdq, "an INT8 plan without any Q/DQ"
    for node in qdq:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), f"{node.name}: zero point must be int8 0"
        scale = inits[node.input[1]]
        assert (scale > 0).all()
        if scale.ndim == 1 and scale.size > 1:  # per-channel weights carry axis
            assert any(a.name == "axis" for a in node.attribute), node.name
            assert node.input[0] in inits and inits[node.input[0]].dtype == np.int8
    nodes = {n.name: n for n in model.graph.node}
    for layer in plan["fp32_layers"]:
        for tensor in nodes[layer].input:
            producer = producers.get(tensor)
            assert producer is None or producer.op_type != "DequantizeLinear", f"pinned {layer} has Q/DQ on {tensor}"
    for layer in plan["int8_layers"]:
        inputs = [t for t in nodes[layer].input if t and t not in inits]
        assert any(producers.get(t) is not None and producers[t].op_type == "DequantizeLinear" for t in inputs), layer


@pytest.mark.parametrize("name", FP16_SAMPLE_NAMES)
def test_three_level_plan_value_in_plain_onnxruntime(three_level_sweeps, name):
    """The emulation model reproduces the plan's value exactly; plan.onnx itself runs in ONNX Runtime, whose CPU
    lacks FP16 Conv/MatMul/element-wise kernels (it computes them in FP32 between Casts), so its value is close
    to, not equal to, the emulated one (README, "INT8, FP16 and FP32")."""
    out = three_level_sweeps[name]
    plan = json.loads((out / "plan.json").read_text())
    data_dir = Path(plan["data"]["source"])
    feeds = [dict(np.load(data_dir / label)) for label in plan["data"]["eval_feeds"]]
    reference = _run(Path(plan["model"]["path"]), feeds)
    emulated = _p90_rel_l2(_run(out / "plan_fp16_emulated.onnx", feeds), reference)
    assert emulated == pytest.approx(plan["achieved"]["value"], rel=1e-5, abs=1e-9)
    deployed = _p90_rel_l2(_run(out / "plan.onnx", feeds), reference)
    assert deployed <= plan["metric"]["tolerance"]
    assert deployed == pytest.approx(emulated, rel=0.05)
