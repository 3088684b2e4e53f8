"""Control flow (``If``, ``Loop``) on small models built here (see docs/control_flow.md).

- an ``If`` whose condition is fixed once the input shapes are fixed is folded: the taken branch's Conv
  becomes a main-graph candidate and is quantized;
- an ``If`` whose condition reads an input that has the same value in every feed (a sample rate) is folded
  given :func:`constant_inputs`; the input stays a graph input, so the same feeds run the prepared model;
- an ``If`` whose condition depends on the data, with branches that read outer-scope tensors: the main graph
  is quantized, the branches' Conv/MatMul stay FP32 (one warning names them), and a shape-fixed two-output
  ``If`` nested in a branch is folded in place without leaving a dangling tensor (the calibration crash);
- a ``Loop`` is left alone in the same way.

Every fixture is swept or quantized for real in ONNX Runtime and compared with the FP32 model.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import precision_lab
from precision_lab.calibration import calibrate
from precision_lab.model import (
    constant_inputs,
    constant_inputs_from_json,
    constant_inputs_to_json,
    list_candidates,
    prepare_model,
)
from precision_lab.qdq import RECIPES, QdqBuilder, count_qdq, tensors_to_calibrate

TRT = RECIPES["trt"]
RNG = np.random.default_rng(11)


def _f32(*shape, scale: float = 0.5) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _init(value, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _vi(name: str, shape, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def _branch(name: str, nodes, output: str, shape=(1, 4, 8, 8)) -> onnx.GraphProto:
    """A subgraph without inputs (If branches read outer-scope tensors by name)."""
    return helper.make_graph(nodes, name, [], [_vi(output, list(shape))])


def _save(model: onnx.ModelProto, path) -> str:
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return str(path)


def _run(model: onnx.ModelProto | str, feed: dict) -> list[np.ndarray]:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(None, feed)


def _rel_l2(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


def _feeds(count: int, **fixed) -> list[dict[str, np.ndarray]]:
    feeds = []
    for _ in range(count):
        feed = {"x": RNG.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)}
        feed.update({name: np.array(value).copy() for name, value in fixed.items()})
        feeds.append(feed)
    return feeds


def _write_feeds(folder, feeds) -> str:
    folder.mkdir()
    for index, feed in enumerate(feeds):
        np.savez(folder / f"feed{index:02d}.npz", **feed)
    return str(folder)


def _sweep(model_path, data, out, **kwargs):
    return precision_lab.sweep(
        model_path, data=data, out_dir=str(out), progress=False, calib_samples=6, eval_samples=4, **kwargs
    )


def _dq_into(model: onnx.ModelProto, node_name: str) -> list[int]:
    """Indices of the inputs of ``node_name`` that a DequantizeLinear feeds."""
    dq_outputs = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    node = next(n for n in model.graph.node if n.name == node_name)
    return [index for index, name in enumerate(node.input) if name in dq_outputs]


def _conv(name: str, x: str, w: str, y: str) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w], [y], name=name, pads=[1, 1, 1, 1])


def _branch_convs(cond_nodes, cond: str, extra_inits=(), width="8"):
    """Main graph shared by the If fixtures; the If has two outputs, the second a Reshape shape that the then
    branch computes from constants and the else branch passes through from the outer scope::

        x [1,3,8,W] -> conv_in (W_in) -> h -> If(cond) --then: conv_a(h, W_a), Concat(1, -1)--> y, s
                                                 \\-else: conv_b(h, W_b), Identity(shape_b)-/
        y -> Reshape(s) -> out
    Both branches read ``h`` and their weight from the outer scope.
    """
    shape = (1, 4, 8, int(width) if width.isdigit() else width)
    then_branch = helper.make_graph(
        [_conv("conv_a", "h", "W_a", "y_a"),
         helper.make_node("Concat", ["one", "minus_one"], ["s_a"], name="s_a", axis=0)],
        "then", [], [_vi("y_a", list(shape)), _vi("s_a", [2], TensorProto.INT64)],
    )
    else_branch = helper.make_graph(
        [_conv("conv_b", "h", "W_b", "y_b"), helper.make_node("Identity", ["shape_b"], ["s_b"], name="s_b")],
        "else", [], [_vi("y_b", list(shape)), _vi("s_b", [2], TensorProto.INT64)],
    )
    nodes = [_conv("conv_in", "x", "W_in", "h"), *cond_nodes,
             helper.make_node("If", [cond], ["y", "s"], name="if", then_branch=then_branch, else_branch=else_branch),
             helper.make_node("Reshape", ["y", "s"], ["out"], name="flatten")]
    inits = [_init(_f32(4, 3, 3, 3), "W_in"), _init(_f32(4, 4, 3, 3), "W_a"), _init(_f32(4, 4, 3, 3), "W_b"),
             _init(np.array([1], np.int64), "one"), _init(np.array([-1], np.int64), "minus_one"),
             _init(np.array([4, -1], np.int64), "shape_b"), *extra_inits]
    return nodes, inits


# ---------------------------------------------------------------------------------------------------------
# If fixed by the input shapes
# ---------------------------------------------------------------------------------------------------------


def _shape_if_model() -> onnx.ModelProto:
    """The condition is ``Shape(x)[3] == 8``, fixed once the dynamic width is fixed::

        x [1,3,8,W] -> Shape -> Gather(3) -> Equal(8) -> cond
        x -> conv_in -> h -> If(cond) then (conv_a(h), [1,-1]) else (conv_b(h), shape_b) -> Reshape -> out
    """
    cond_nodes = [
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
        helper.make_node("Gather", ["x_shape", "three"], ["width"], name="width", axis=0),
        helper.make_node("Equal", ["width", "eight"], ["cond"], name="is_eight"),
    ]
    nodes, inits = _branch_convs(
        cond_nodes, "cond", [_init(np.array(3, np.int64), "three"), _init(np.array(8, np.int64), "eight")], "W"
    )
    graph = helper.make_graph(nodes, "shape_if", [_vi("x", [1, 3, 8, "W"])], [_vi("out", ["a", "b"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_if_fixed_by_the_input_shape_is_folded_and_its_conv_quantized(tmp_path):
    path = _save(_shape_if_model(), tmp_path / "shape_if.onnx")
    prepared = prepare_model(path, input_shapes={"x": (1, 3, 8, 8)})
    feeds = _feeds(10)
    np.testing.assert_allclose(_run(prepared.model, feeds[0])[0], _run(path, feeds[0])[0], rtol=1e-5, atol=1e-5)

    assert prepared.folded_ifs == {"if": "then_branch"}
    assert prepared.constant_inputs == {}
    assert [n.op_type for n in prepared.model.graph.node] == ["Conv", "Conv", "Reshape"]
    assert [c.name for c in list_candidates(prepared, op_types=TRT)] == ["conv_in", "conv_a"]

    result = _sweep(path, _write_feeds(tmp_path / "data", feeds), tmp_path / "out")
    assert set(result.layers["name"]) == {"conv_in", "conv_a"}
    plan = onnx.load(str(tmp_path / "out" / "plan.onnx"))
    builder_model = QdqBuilder(prepared, list_candidates(prepared, op_types=TRT),
                               calibrate(prepared, feeds, tensors=tensors_to_calibrate(
                                   prepared, list_candidates(prepared, op_types=TRT), "trt"),
                                   fingerprint="shape-if")).build(())
    assert count_qdq(builder_model) == {"QuantizeLinear": 2, "DequantizeLinear": 4}
    assert _dq_into(builder_model, "conv_a") == [0, 1]
    for feed in feeds[:3]:
        (expected,) = _run(path, feed)
        (got,) = _run(builder_model, feed)
        assert 0 < _rel_l2(got, expected) < 0.05
        assert _run(plan, feed)[0].shape == expected.shape


# ---------------------------------------------------------------------------------------------------------
# If fixed by an input that is constant across the feeds
# ---------------------------------------------------------------------------------------------------------


def _sample_rate_if_model() -> onnx.ModelProto:
    """A streaming model's shape: the branch depends on a sample-rate input, and a state input (zeros in every
    feed) is added to the activations::

        sr (int64 scalar) -> Equal(16000) -> cond
        x [1,3,8,8] -> conv_in -> Add(state [1,4,8,8]) -> h
        h -> If(cond) then (conv_a(h), [1,-1]) else (conv_b(h), shape_b) -> Reshape -> out
    """
    cond_nodes = [helper.make_node("Equal", ["sr", "sr16k"], ["cond"], name="is_16k")]
    nodes, inits = _branch_convs(cond_nodes, "cond", [_init(np.array(16000, np.int64), "sr16k")])
    nodes[0] = _conv("conv_in", "x", "W_in", "c")
    nodes.insert(1, helper.make_node("Add", ["c", "state"], ["h"], name="add_state"))
    inputs = [_vi("x", [1, 3, 8, 8]), _vi("state", [1, 4, 8, 8]), _vi("sr", [], TensorProto.INT64)]
    graph = helper.make_graph(nodes, "sr_if", inputs, [_vi("out", ["a", "b"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_constant_inputs_are_the_inputs_equal_in_every_feed():
    feeds = _feeds(3, sr=np.array(16000, np.int64), state=np.zeros((1, 4, 8, 8), np.float32))
    found = constant_inputs(feeds)
    assert sorted(found) == ["sr", "state"]
    assert found["sr"].dtype == np.int64 and found["sr"].shape == ()
    assert constant_inputs(feeds[:1]) == {}  # one feed says nothing
    feeds[2]["sr"] = np.array(8000, np.int64)
    assert sorted(constant_inputs(feeds)) == ["state"]
    assert constant_inputs_from_json(constant_inputs_to_json(found))["sr"] == found["sr"]


def test_if_fixed_by_a_constant_input_is_folded_and_the_input_kept(tmp_path):
    path = _save(_sample_rate_if_model(), tmp_path / "sr_if.onnx")
    feeds = _feeds(10, sr=np.array(16000, np.int64), state=np.zeros((1, 4, 8, 8), np.float32))

    unfolded = prepare_model(path)  # without the feeds' constants the condition is data
    assert unfolded.folded_ifs == {}
    assert [c.name for c in list_candidates(unfolded, op_types=TRT)] == ["conv_in"]

    prepared = prepare_model(path, constant_inputs=constant_inputs(feeds))
    assert prepared.folded_ifs == {"if": "then_branch"}
    assert list(prepared.constant_inputs) == ["sr"]  # state decides no condition
    assert [n.op_type for n in prepared.model.graph.node] == ["Conv", "Add", "Conv", "Reshape"]
    assert [i.name for i in prepared.model.graph.input] == ["x", "state", "sr"]  # same feeds as the original
    assert [s.name for s in prepared.inputs] == ["x", "state", "sr"]
    candidates = list_candidates(prepared, op_types=TRT)
    assert [c.name for c in candidates] == ["conv_in", "conv_a"]

    ranges = calibrate(prepared, feeds[:6], tensors=tensors_to_calibrate(prepared, candidates, "trt"),
                       fingerprint="sr-if")
    model = QdqBuilder(prepared, candidates, ranges).build(())
    assert _dq_into(model, "conv_a") == [0, 1]
    for feed in feeds[6:]:
        (expected,) = _run(path, feed)
        (got,) = _run(model, feed)
        assert 0 < _rel_l2(got, expected) < 0.05
    other = dict(feeds[0], sr=np.array(8000, np.int64))  # the original takes the other branch
    assert _run(path, other)[0].shape == (4, 64) and _run(prepared.model, other)[0].shape == (1, 256)


# ---------------------------------------------------------------------------------------------------------
# If that depends on the data, branches reading outer-scope tensors
# ---------------------------------------------------------------------------------------------------------


def _data_if_model() -> onnx.ModelProto:
    """The condition is ``mean(x) > 0``; the branches read ``h``, ``h2`` and weights from the outer scope, and the
    then branch holds an If of its own whose condition (``width(h) == 8``) is fixed by the shapes and whose two
    outputs are an activation and a constant (the streaming model's nesting that broke calibration)::

        x -> conv_in -> h -> conv_mid -> h2
        x -> ReduceMean -> Greater(0) -> cond
        If(cond) then: conv_a(h) + h2 -> a2
                       If(width(h) == 8) then (Reshape(a2, 1x4x64), M) else (Reshape(a2, 1x64x4), M_alt)
                       -> MatMul -> Reshape(1x4x8x8) -> y_a
                 else: conv_b(h2) -> y_b
        If output -> Relu -> conv_out -> z
    """
    inner_then = helper.make_graph(
        [helper.make_node("Reshape", ["a2", "rows"], ["r1"], name="inner_rows"),
         helper.make_node("Identity", ["M"], ["m1"], name="inner_m1")],
        "inner_then", [], [_vi("r1", [1, 4, 64]), _vi("m1", [64, 64])],
    )
    inner_else = helper.make_graph(
        [helper.make_node("Reshape", ["a2", "rows_alt"], ["r2"], name="inner_rows_alt"),
         helper.make_node("Identity", ["M_alt"], ["m2"], name="inner_m2")],
        "inner_else", [], [_vi("r2", [1, 4, 64]), _vi("m2", [64, 64])],
    )
    then_branch = _branch("then", [
        _conv("conv_a", "h", "W_a", "a"),
        helper.make_node("Add", ["a", "h2"], ["a2"], name="add_a"),
        helper.make_node("Shape", ["h"], ["h_shape"], name="h_shape"),
        helper.make_node("Gather", ["h_shape", "three"], ["h_width"], name="h_width", axis=0),
        helper.make_node("Equal", ["h_width", "eight"], ["inner_cond"], name="is_eight"),
        helper.make_node("If", ["inner_cond"], ["a3", "m"], name="inner_if", then_branch=inner_then,
                         else_branch=inner_else),
        helper.make_node("MatMul", ["a3", "m"], ["a4"], name="matmul_a"),
        helper.make_node("Reshape", ["a4", "shape4"], ["y_a"], name="to_maps"),
    ], "y_a")
    else_branch = _branch("else", [_conv("conv_b", "h2", "W_b", "y_b")], "y_b")
    nodes = [
        _conv("conv_in", "x", "W_in", "h"),
        _conv("conv_mid", "h", "W_mid", "h2"),
        helper.make_node("ReduceMean", ["x"], ["mean"], name="mean", keepdims=0),
        helper.make_node("Greater", ["mean", "zero"], ["cond"], name="positive"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Relu", ["y"], ["r"], name="relu"),
        _conv("conv_out", "r", "W_out", "z"),
    ]
    i64 = {"rows": [1, 4, 64], "rows_alt": [1, 64, 4], "shape4": [1, 4, 8, 8],
           "three": 3, "eight": 8}
    inits = [_init(_f32(4, 3, 3, 3), "W_in"), _init(_f32(4, 4, 3, 3), "W_mid"), _init(_f32(4, 4, 3, 3), "W_a"),
             _init(_f32(4, 4, 3, 3), "W_b"), _init(_f32(64, 64, scale=0.1), "M"), _init(_f32(64, 64), "M_alt"),
             _init(np.float32(0), "zero"), _init(_f32(2, 4, 3, 3), "W_out"),
             *[_init(np.array(v, np.int64), name) for name, v in i64.items()]]
    graph = helper.make_graph(nodes, "data_if", [_vi("x", [1, 3, 8, 8])], [_vi("z", [1, 2, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("recipe", ["trt", "extended"])
def test_data_dependent_if_keeps_its_layers_fp32_and_the_sweep_runs(tmp_path, caplog, recipe):
    path = _save(_data_if_model(), tmp_path / "data_if.onnx")
    feeds = _feeds(10)
    for index, feed in enumerate(feeds):  # both branches are taken
        feed["x"] += np.float32(0.5 if index % 2 else -0.5)

    with caplog.at_level(logging.WARNING, logger="precision_lab"):
        result = _sweep(path, _write_feeds(tmp_path / "data", feeds), tmp_path / "out", recipe=recipe)
    warnings = [r.getMessage() for r in caplog.records if "control-flow subgraphs" in r.getMessage()]
    assert len(warnings) == 1
    for name in ("conv_a (Conv, in if.then_branch)", "matmul_a (MatMul", "conv_b (Conv, in if.else_branch)"):
        assert name in warnings[0]
    assert "condition depends on the input data" in warnings[0]

    names = set(result.layers["name"])
    assert {"conv_in", "conv_mid", "conv_out"} <= names
    assert not names & {"conv_a", "matmul_a", "conv_b", "add_a"}
    plan = onnx.load(str(tmp_path / "out" / "plan.onnx"))
    for feed in feeds[:4]:
        (expected,) = _run(path, feed)
        (got,) = _run(plan, feed)
        assert _rel_l2(got, expected) < 0.05

    prepared = prepare_model(path)
    assert prepared.folded_ifs == {"inner_if": "then_branch"}  # fixed by the shapes, inside the kept branch
    assert [n.op_type for n in prepared.model.graph.node if n.op_type == "If"] == ["If"]
    candidates = list_candidates(prepared, op_types=RECIPES[recipe])
    model = QdqBuilder(prepared, candidates, calibrate(
        prepared, feeds[:6], tensors=tensors_to_calibrate(prepared, candidates, recipe), fingerprint="data-if",
    ), recipe=recipe).build(())
    assert _dq_into(model, "conv_out") == [0, 1]
    inner = [n for n in model.graph.node if n.op_type == "If"][0]
    for attribute in inner.attribute:
        assert "QuantizeLinear" not in {n.op_type for n in attribute.g.node}
    for feed in feeds[6:]:
        assert 0 < _rel_l2(_run(model, feed)[0], _run(path, feed)[0]) < 0.05


# ---------------------------------------------------------------------------------------------------------
# Loop
# ---------------------------------------------------------------------------------------------------------


def _loop_model() -> onnx.ModelProto:
    """A Loop with a constant trip count (3) whose body reads ``h`` from the outer scope::

        x -> conv_in -> h
        Loop(M=3, cond=true, v0=h): v <- v + conv_body(h) * 0.5  -> v_final
        v_final -> conv_out -> z
    """
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
            _conv("conv_body", "h", "W_body", "step"),
            helper.make_node("Mul", ["step", "half"], ["half_step"], name="halve"),
            helper.make_node("Add", ["v_in", "half_step"], ["v_out"], name="accumulate"),
        ],
        "body",
        [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("v_in", [1, 4, 8, 8])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out", [1, 4, 8, 8])],
        [_init(np.float32(0.5), "half")],
    )
    nodes = [
        _conv("conv_in", "x", "W_in", "h"),
        helper.make_node("Loop", ["trips", "go", "h"], ["v_final"], name="loop", body=body),
        _conv("conv_out", "v_final", "W_out", "z"),
    ]
    inits = [_init(_f32(4, 3, 3, 3), "W_in"), _init(_f32(4, 4, 3, 3), "W_body"), _init(_f32(2, 4, 3, 3), "W_out"),
             _init(np.array(3, np.int64), "trips"), _init(np.array(True), "go")]
    graph = helper.make_graph(nodes, "loop", [_vi("x", [1, 3, 8, 8])], [_vi("z", [1, 2, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_loop_is_left_alone_and_its_conv_stays_fp32(tmp_path, caplog):
    path = _save(_loop_model(), tmp_path / "loop.onnx")
    feeds = _feeds(10)
    with caplog.at_level(logging.WARNING, logger="precision_lab"):
        result = _sweep(path, _write_feeds(tmp_path / "data", feeds), tmp_path / "out", recipe="extended")
    warnings = [r.getMessage() for r in caplog.records if "control-flow subgraphs" in r.getMessage()]
    assert len(warnings) == 1
    assert "conv_body (Conv, in loop.body)" in warnings[0] and "Loop bodies are not unrolled" in warnings[0]
    assert set(result.layers["name"]) == {"conv_in", "conv_out"}

    prepared = prepare_model(path)
    assert [n.op_type for n in prepared.model.graph.node] == ["Conv", "Loop", "Conv"]
    candidates = list_candidates(prepared, op_types=TRT)
    model = QdqBuilder(prepared, candidates, calibrate(
        prepared, feeds[:6], tensors=tensors_to_calibrate(prepared, candidates, "trt"), fingerprint="loop",
    )).build(())
    assert count_qdq(model) == {"QuantizeLinear": 2, "DequantizeLinear": 4}
    for feed in feeds[6:]:
        assert 0 < _rel_l2(_run(model, feed)[0], _run(path, feed)[0]) < 0.05
