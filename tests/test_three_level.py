"""Three-level plans (``--precisions int8,fp16,fp32``) on the two FP16 sample models (issue 13).

Each model plants FP16 overflow (nodes that must stay FP32) and an INT8-fragile, FP16-safe layer. The sweep must
give exactly the planted plan, with 1-minimality evidence at both levels in the journal, and a plan.onnx that is
a valid FP16 graph with FP32 islands. The checks on the written files use onnx, onnxruntime and numpy only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, shape_inference

from conftest import SAMPLES, run_in_process, sweep_sample_models, write_random_feeds
from test_plan_onnx_independent import _p90_rel_l2, _run

EXPECTED = json.loads((SAMPLES / "expected_plans_fp16.json").read_text())
NAMES = sorted(Path(name).stem for name in EXPECTED)
THREE = "int8,fp16,fp32"


@pytest.fixture(scope="module")
def three_level_sweeps(tmp_path_factory) -> dict[str, Path]:
    return sweep_sample_models(tmp_path_factory.mktemp("three_level"), EXPECTED, NAMES, "--precisions", THREE)


def _plan(out: Path) -> dict:
    return json.loads((out / "plan.json").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_plan_is_exactly_the_planted_three_level_plan(three_level_sweeps, name):
    plan = _plan(three_level_sweeps[name])
    assert plan["precision_levels"] == ["int8", "fp16", "fp32"]
    assert plan["precisions"] == EXPECTED[f"{name}.onnx"]["precisions"]
    assert plan["achieved"]["passed"] is True
    assert plan["baselines"]["all_fp16"] > plan["metric"]["tolerance"]  # both models plant FP16 overflow
    assert any("all-FP16 already fails" in notice for notice in plan["notices"])


@pytest.mark.parametrize("name", NAMES)
def test_two_level_sweep_still_gives_the_two_level_plan(tmp_path, name):
    expected = EXPECTED[f"{name}.onnx"]
    model = SAMPLES / f"{name}.onnx"
    data = write_random_feeds(model, tmp_path / "data")
    proc = run_in_process("sweep", str(model), "--data", str(data), "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    plan = _plan(tmp_path / "out")
    assert sorted(plan["fp32_layers"]) == sorted(expected["two_level_planted"])
    assert plan["precision_levels"] == ["int8", "fp32"]


def _journal(out: Path) -> dict[frozenset, dict]:
    """Search evaluations (not verification) by their precisions (layer -> precision, INT8 unnamed)."""
    records = {}
    for line in (out / "journal.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["phase"] != "verification":
            precisions = record.get("precisions") or {n: "fp32" for n in record["fp32_layers"]}
            records[frozenset(precisions.items())] = record
    return records


@pytest.mark.parametrize("name", NAMES)
def test_one_minimality_evidence_at_both_levels_is_in_the_journal(three_level_sweeps, name):
    out = three_level_sweeps[name]
    plan = _plan(out)
    journal = _journal(out)
    tolerance = plan["metric"]["tolerance"]
    candidates = set(plan["quantization"]["candidates"])
    precisions = dict(plan["precisions"])

    assert journal[frozenset(precisions.items())]["key"] == plan["achieved"]["key"]
    lowered = 0
    for layer, precision in precisions.items():
        trial = dict(precisions)
        if precision == "fp16":  # back to INT8: unnamed
            del trial[layer]
        elif layer in candidates:  # an FP32 candidate back to FP16
            trial[layer] = "fp16"
        else:  # an FP32 non-candidate node back to FP16, every other node's default: unnamed
            del trial[layer]
        record = journal.get(frozenset(trial.items()))
        assert record is not None, f"no evaluation of the plan with {layer} lowered from {precision}"
        assert plan["evidence"][layer]["key"] == record["key"]
        assert plan["evidence"][layer]["passed"] is False
        assert plan["evidence"][layer]["value"] > tolerance
        lowered += 1
    assert lowered == len(EXPECTED[f"{name}.onnx"]["precisions"])
    levels = {p for p in precisions.values()}
    assert levels == {"fp16", "fp32"}  # evidence at both levels


def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*graph.value_info, *graph.input, *graph.output]}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


@pytest.mark.parametrize("name", NAMES)
def test_plan_onnx_is_fp16_with_fp32_islands(three_level_sweeps, name):
    out = three_level_sweeps[name]
    plan = _plan(out)
    model = onnx.load(str(out / "plan.onnx"))
    onnx.checker.check_model(model, full_check=True)
    original = onnx.load(plan["model"]["path"])
    types = _float_types(model)
    # inputs and outputs keep their types
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == [
        (i.name, i.type.tensor_type.elem_type) for i in original.graph.input
    ]
    assert [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output] == [
        (o.name, o.type.tensor_type.elem_type) for o in original.graph.output
    ]
    fp32 = {n for n, p in plan["precisions"].items() if p == "fp32"}
    nodes = {n.name: n for n in model.graph.node}
    assert fp32 <= set(nodes)
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
    for node in model.graph.node:
        if node.op_type == "Cast":
            continue  # the converter's boundaries
        tensors = [t for t in [*node.input, *node.output] if t and types.get(t) in floats]
        if node.op_type == "QuantizeLinear":
            tensors = [node.input[0], node.input[1]]  # its output is int8
        if node.op_type == "DequantizeLinear":
            tensors = [node.input[1], node.output[0]]
        want = TensorProto.FLOAT if node.name in fp32 else TensorProto.FLOAT16
        wrong = [t for t in tensors if types.get(t) != want]
        assert not wrong, f"{node.name} ({node.op_type}) should be {TensorProto.DataType.Name(want)}: {wrong}"
    int8 = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert int8, "the plan's INT8 layers lost their Q/DQ"


@pytest.mark.parametrize("name", NAMES)
def test_plan_value_in_plain_onnxruntime(three_level_sweeps, name):
    """The emulation model reproduces the plan's value exactly; plan.onnx itself runs in ONNX Runtime, whose CPU
    lacks FP16 Conv/MatMul/element-wise kernels (it computes them in FP32 between Casts), so its value is close
    to, not equal to, the emulated one (README, "INT8, FP16 and FP32")."""
    out = three_level_sweeps[name]
    plan = _plan(out)
    data_dir = Path(plan["data"]["source"])
    feeds = [dict(np.load(data_dir / label)) for label in plan["data"]["eval_feeds"]]
    reference = _run(Path(plan["model"]["path"]), feeds)
    emulated = _p90_rel_l2(_run(out / "plan_fp16_emulated.onnx", feeds), reference)
    assert emulated == pytest.approx(plan["achieved"]["value"], rel=1e-5, abs=1e-9)
    deployed = _p90_rel_l2(_run(out / "plan.onnx", feeds), reference)
    assert deployed <= plan["metric"]["tolerance"]
    assert deployed == pytest.approx(emulated, rel=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_exports_build_the_three_level_plan(three_level_sweeps, name):
    out = three_level_sweeps[name]
    plan = _plan(out)
    exports = plan["exports"]
    assert "--stronglyTyped" in exports["trtexec"] and "--noTF32" in exports["trtexec"]
    assert "--int8" not in exports["trtexec"] and "--fp16" not in exports["trtexec"]  # never with strongly typed
    implicit = exports["trtexec_implicit"]
    assert "--int8 --fp16 --precisionConstraints=obey" in implicit and Path(plan["plan_qdq_fp32_onnx"]).name in implicit
    spec = next(part for part in implicit.split() if part.startswith("--layerPrecisions="))
    pinned = dict(entry.rsplit(":", 1) for entry in spec.split("=", 1)[1].split(","))
    assert pinned == plan["precisions"]
    assert "--strongly-typed" in exports["polygraphy"]
    assert onnx.load(plan["plan_qdq_fp32_onnx"]).graph.node  # the FP32 Q/DQ model is written


def test_fp32_ops_are_the_converters_block_list():
    from onnxconverter_common import float16

    from precision_lab.fp16 import FP32_OPS

    assert FP32_OPS == frozenset(float16.DEFAULT_OP_BLOCK_LIST)


def test_unknown_precision_set_is_one_line_exit_2(tmp_path):
    proc = run_in_process("sweep", str(SAMPLES / "plain_cnn.onnx"), "--out", str(tmp_path / "o"), "--precisions", "int8,bf16")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--precisions" in proc.stderr


def _islands_model() -> onnx.ModelProto:
    """``up`` (x 1000) feeds ``down1`` and ``down2``; all three must stay FP32 (``up``'s output passes 65504).
    ``scale`` is one initializer read by the FP32 ``up`` and the FP16 ``tail``."""
    from onnx import helper, numpy_helper

    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["up"], name="up"),
        helper.make_node("Mul", ["up", "tenth"], ["down1"], name="down1"),
        helper.make_node("Mul", ["up", "hundredth"], ["down2"], name="down2"),
        helper.make_node("Add", ["down1", "down2"], ["sum"], name="sum"),
        helper.make_node("Mul", ["sum", "scale"], ["y"], name="tail"),
    ]
    inits = [
        numpy_helper.from_array(np.array(1000.0, np.float32), "scale"),
        numpy_helper.from_array(np.array(0.001, np.float32), "tenth"),
        numpy_helper.from_array(np.array(0.0001, np.float32), "hundredth"),
    ]
    graph = helper.make_graph(
        nodes, "islands", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fp16_plan_keeps_an_island_with_two_readers_in_fp32():
    """onnxconverter-common leaves a Cast16 -> Cast32 pair between an FP32 node and two FP32 readers (the tensor
    overflows there) and keeps a shared initializer FP32 for an FP16 reader; fp16_plan_model repairs both."""
    from precision_lab.fp16 import fp16_plan_model

    model = _islands_model()
    x = np.array([100.0, 200.0, -300.0, 1.0], np.float32)
    plan = fp16_plan_model(model, {"up", "down1", "down2"})
    onnx.checker.check_model(plan, full_check=True)
    session = ort.InferenceSession(plan.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    expected = (x * 1000 * 0.001 + x * 1000 * 0.0001) * 1000
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, expected, rtol=2e-3)


def _quirks_model() -> onnx.ModelProto:
    """Three exporter quirks: a graph output declared with dimension -1 (Paddle), a ``Cast(to=FLOAT)`` of a
    boolean (tf2onnx's one-hot) read by an FP16 ``Mul``, and a graph output (``y``) that another node reads too
    (a sentence encoder's token embeddings, pooled into its sentence embedding)."""
    from onnx import helper, numpy_helper

    nodes = [
        helper.make_node("Equal", ["ids", "three"], ["hot"], name="equal"),
        helper.make_node("Cast", ["hot"], ["hot_f"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["hot_f", "x"], ["y"], name="mul"),
        helper.make_node("Add", ["y", "x"], ["z"], name="add"),
    ]
    inits = [numpy_helper.from_array(np.array(3, np.int64), "three")]
    graph = helper.make_graph(
        nodes, "quirks",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4]), helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4]), helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fp16_plan_of_exporter_quirks_passes_the_checker():
    from precision_lab.fp16 import fp16_plan_model

    plan = fp16_plan_model(_quirks_model(), set())
    onnx.checker.check_model(plan, full_check=True)
    session = ort.InferenceSession(plan.SerializeToString(), providers=["CPUExecutionProvider"])
    ids, x = np.array([[1, 3, 3, 0]], np.int64), np.array([[1.5, 2.5, -4.0, 8.0]], np.float32)
    y, z = session.run(None, {"ids": ids, "x": x})
    np.testing.assert_array_equal(y, [[0.0, 2.5, -4.0, 0.0]])
    np.testing.assert_array_equal(z, [[1.5, 5.0, -8.0, 8.0]])


@pytest.mark.parametrize("name", NAMES)
def test_apply_rebuilds_the_three_level_plan_onnx(three_level_sweeps, name, tmp_path):
    out = three_level_sweeps[name]
    plan = _plan(out)
    rebuilt = tmp_path / "rebuilt.onnx"
    proc = run_in_process("apply", plan["model"]["path"], str(out / "plan.json"), "-o", str(rebuilt))
    assert proc.returncode == 0, proc.stderr
    written, again = onnx.load(str(out / "plan.onnx")), onnx.load(str(rebuilt))
    assert [(n.op_type, n.name) for n in again.graph.node] == [(n.op_type, n.name) for n in written.graph.node]
    assert again.graph.initializer == written.graph.initializer


def test_three_levels_with_a_users_qdq_model_is_one_line_exit_2(tmp_path):
    model = SAMPLES / "residual_branches.onnx"
    qdq = SAMPLES / "modelopt" / "residual_branches.modelopt.onnx"
    proc = run_in_process(
        "sweep", str(model), "--qdq-model", str(qdq), "--precisions", THREE, "--out", str(tmp_path / "o"), "--quiet"
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "two-level plans only" in proc.stderr
