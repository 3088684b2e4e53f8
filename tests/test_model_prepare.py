"""The preparation step (docs/design.md, "Prepared model") on small models built here with ``onnx.helper``.

Each test draws its model in the docstring. Where preparation rewrites the graph, ONNX Runtime (graph
optimizations off) must give the original and the prepared model the same outputs within 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from precision_lab.calibration import Ranges
from precision_lab.errors import InputError
from precision_lab.model import MIN_OPSET, list_candidates, prepare_model
from precision_lab.qdq import RECIPES, QdqBuilder, count_qdq, tensors_to_calibrate

TRT = RECIPES["trt"]
RNG = np.random.default_rng(1234)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17, value_info=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers), value_info=list(value_info))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _f32(*shape, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _vi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape) if shape is not None else None)


def _run(model: onnx.ModelProto | Path, feed: dict) -> list[np.ndarray]:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _assert_same_outputs(original: Path, prepared_model: onnx.ModelProto, feed: dict) -> None:
    expected = _run(original, feed)
    got = _run(prepared_model, feed)
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _ranges_for(prepared, candidates, recipe: str = "trt", amax: float = 4.0) -> Ranges:
    names = tensors_to_calibrate(prepared, candidates, recipe)
    return Ranges("max", "test", {name: amax for name in names}, 1)


# ---------------------------------------------------------------------------------------------------------
# Constant nodes -> initializers
# ---------------------------------------------------------------------------------------------------------


def test_constant_node_weights_become_initializers(tmp_path):
    """Paddle-style export: the Conv's weight and bias come from ``Constant`` nodes::

        Constant(W 4x3x3x3) --+
        Constant(B 4) --------+
        x [1,3,8,8] ------- Conv --> Relu --> y [1,4,8,8]

    After preparation W and B are initializers, no Constant node is left, the Conv is a candidate and its
    weight gets a per-channel (axis 0, 4 scales) DequantizeLinear in the Q/DQ model.
    """
    weight, bias = _f32(4, 3, 3, 3), _f32(4)
    model = _model(
        [
            helper.make_node("Constant", [], ["W"], name="const_w", value=numpy_helper.from_array(weight, "W")),
            helper.make_node("Constant", [], ["B"], name="const_b", value=numpy_helper.from_array(bias, "B")),
            helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 4, 8, 8])],
    )
    path = _save(model, tmp_path / "paddle.onnx")
    prepared = prepare_model(path)

    assert "Constant" not in _ops(prepared.model)
    inits = {init.name: numpy_helper.to_array(init) for init in prepared.model.graph.initializer}
    conv = next(n for n in prepared.model.graph.node if n.op_type == "Conv")
    assert conv.input[1] in inits and conv.input[2] in inits
    np.testing.assert_array_equal(inits[conv.input[1]], weight)
    np.testing.assert_array_equal(inits[conv.input[2]], bias)

    candidates = list_candidates(prepared, op_types=TRT)
    assert [c.name for c in candidates] == ["conv"]

    feed = {"x": RNG.random((1, 3, 8, 8), dtype=np.float32)}
    _assert_same_outputs(path, prepared.model, feed)

    qdq = QdqBuilder(prepared, candidates, _ranges_for(prepared, candidates)).build([])
    dq_weight = [
        n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in set(
            next(m for m in qdq.graph.node if m.op_type == "Conv").input[1:2]
        )
    ]
    assert len(dq_weight) == 1
    attrs = {a.name: helper.get_attribute_value(a) for a in dq_weight[0].attribute}
    assert attrs.get("axis") == 0
    qinits = {init.name: numpy_helper.to_array(init) for init in qdq.graph.initializer}
    assert qinits[dq_weight[0].input[0]].dtype == np.int8
    assert qinits[dq_weight[0].input[1]].shape == (4,)
    # the Q/DQ model runs and stays close to FP32
    y = _run(qdq, feed)[0]
    ref = _run(path, feed)[0]
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 0.1


def test_constant_subgraph_feeding_a_weight_is_folded(tmp_path):
    """A weight computed from constants (``Constant -> Transpose``) is folded too::

        Constant(Wt 3x4x3x3) --Transpose(1,0,2,3)--+
        x [1,3,8,8] --------------------------- Conv --> y
    """
    weight = _f32(4, 3, 3, 3)
    model = _model(
        [
            helper.make_node(
                "Constant", [], ["Wt"], name="const_wt",
                value=numpy_helper.from_array(np.ascontiguousarray(weight.transpose(1, 0, 2, 3)), "Wt"),
            ),
            helper.make_node("Transpose", ["Wt"], ["W"], name="transpose_w", perm=[1, 0, 2, 3]),
            helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 4, 8, 8])],
    )
    path = _save(model, tmp_path / "const_subgraph.onnx")
    prepared = prepare_model(path)
    assert _ops(prepared.model) == ["Conv"]
    inits = {init.name: numpy_helper.to_array(init) for init in prepared.model.graph.initializer}
    np.testing.assert_array_equal(inits[prepared.model.graph.node[0].input[1]], weight)
    assert [c.name for c in list_candidates(prepared, op_types=TRT)] == ["conv"]
    _assert_same_outputs(path, prepared.model, {"x": RNG.random((1, 3, 8, 8), dtype=np.float32)})


# ---------------------------------------------------------------------------------------------------------
# Opset
# ---------------------------------------------------------------------------------------------------------


def test_opset_11_is_raised_to_13(tmp_path):
    """Opset 11, where Squeeze/Unsqueeze take ``axes`` as an attribute::

        x [1,3,8,8] --Conv(W 4x3x3x3)--> Relu --Unsqueeze(axes=[0])--> [1,1,4,8,8]
                    --Squeeze(axes=[0])--> y [1,4,8,8]
    """
    model = _model(
        [
            helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("Unsqueeze", ["r"], ["u"], name="unsqueeze", axes=[0]),
            helper.make_node("Squeeze", ["u"], ["y"], name="squeeze", axes=[0]),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 4, 8, 8])],
        [numpy_helper.from_array(_f32(4, 3, 3, 3), "W"), numpy_helper.from_array(_f32(4), "B")],
        opset=11,
    )
    model.ir_version = 6
    path = _save(model, tmp_path / "opset11.onnx")
    prepared = prepare_model(path)

    assert prepared.original_opset == 11
    assert _opset(prepared.model) >= MIN_OPSET >= 13
    onnx.checker.check_model(prepared.model)
    for node in prepared.model.graph.node:
        if node.op_type in ("Squeeze", "Unsqueeze"):
            assert not any(a.name == "axes" for a in node.attribute), "axes must be an input from opset 13 on"
    assert [c.name for c in list_candidates(prepared, op_types=TRT)] == ["conv"]
    feed = {"x": RNG.random((1, 3, 8, 8), dtype=np.float32)}
    expected, got = _run(path, feed)[0], _run(prepared.model, feed)[0]
    assert got.shape == (1, 4, 8, 8)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# BatchNormalization folding
# ---------------------------------------------------------------------------------------------------------


def _bn_params(channels: int, prefix: str = "bn"):
    return [
        numpy_helper.from_array((RNG.random(channels) + 0.5).astype(np.float32), f"{prefix}_scale"),
        numpy_helper.from_array(_f32(channels), f"{prefix}_bias"),
        numpy_helper.from_array(_f32(channels), f"{prefix}_mean"),
        numpy_helper.from_array((RNG.random(channels) + 0.1).astype(np.float32), f"{prefix}_var"),
    ]


def _bn_inputs(prefix: str = "bn") -> list[str]:
    return [f"{prefix}_scale", f"{prefix}_bias", f"{prefix}_mean", f"{prefix}_var"]


@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_batchnorm_is_folded(tmp_path, with_bias):
    """::

        x [1,3,8,8] --Conv(W 4x3x3x3[, B])--> c --BatchNormalization(eps 1e-3)--> bn --Relu--> y

    becomes ``Conv(folded W, folded B) --> Relu`` with the same outputs; ``folded_batchnorms == ("bn",)``.
    """
    conv_inputs = ["x", "W", "B"] if with_bias else ["x", "W"]
    inits = [numpy_helper.from_array(_f32(4, 3, 3, 3), "W"), *_bn_params(4)]
    if with_bias:
        inits.append(numpy_helper.from_array(_f32(4), "B"))
    model = _model(
        [
            helper.make_node("Conv", conv_inputs, ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c", *_bn_inputs()], ["bn"], name="bn", epsilon=1e-3),
            helper.make_node("Relu", ["bn"], ["y"], name="relu"),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 4, 8, 8])],
        inits,
    )
    path = _save(model, tmp_path / "conv_bn.onnx")
    prepared = prepare_model(path)

    assert "BatchNormalization" not in _ops(prepared.model)
    assert _ops(prepared.model) == ["Conv", "Relu"]
    assert prepared.folded_batchnorms == ("bn",)
    conv = prepared.model.graph.node[0]
    assert conv.name == "conv" and len(conv.input) == 3
    names = {init.name for init in prepared.model.graph.initializer}
    assert conv.input[1] in names and conv.input[2] in names
    onnx.checker.check_model(prepared.model)
    assert [c.name for c in list_candidates(prepared, op_types=TRT)] == ["conv"]
    _assert_same_outputs(path, prepared.model, {"x": RNG.random((1, 3, 8, 8), dtype=np.float32)})


def test_folded_batchnorm_leaves_no_dead_initializers(tmp_path):
    """After folding ``x --Conv(W, B)--> BN --> y`` into ``Conv(folded W, folded B)``, the original W and B
    and the BN parameters feed nothing: the prepared model must not carry them (for a large model they
    double the weight memory of every copy made from the prepared model)."""
    model = _model(
        [
            helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c", *_bn_inputs()], ["y"], name="bn"),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 4, 8, 8])],
        [numpy_helper.from_array(_f32(4, 3, 3, 3), "W"), numpy_helper.from_array(_f32(4), "B"), *_bn_params(4)],
    )
    prepared = prepare_model(_save(model, tmp_path / "conv_bn.onnx"))
    assert prepared.folded_batchnorms == ("bn",)
    used = {name for node in prepared.model.graph.node for name in node.input}
    dead = sorted(init.name for init in prepared.model.graph.initializer if init.name not in used)
    assert dead == [], f"unused initializers left after BN folding: {dead}"


def test_batchnorm_of_shared_conv_output_is_not_folded(tmp_path):
    """The Conv output has two consumers, so folding BN into the Conv would change the other branch::

        x --Conv--> c --BatchNormalization--> bn --+
                     \\                             Add --> y
                      +---------------------------+
    """
    model = _model(
        [
            helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c", *_bn_inputs()], ["bn"], name="bn"),
            helper.make_node("Add", ["bn", "c"], ["y"], name="add"),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 4, 8, 8])],
        [numpy_helper.from_array(_f32(4, 3, 3, 3), "W"), *_bn_params(4)],
    )
    path = _save(model, tmp_path / "shared.onnx")
    prepared = prepare_model(path)
    assert _ops(prepared.model) == ["Conv", "BatchNormalization", "Add"]
    assert prepared.folded_batchnorms == ()
    _assert_same_outputs(path, prepared.model, {"x": RNG.random((1, 3, 8, 8), dtype=np.float32)})


def test_batchnorm_of_conv_output_that_is_a_graph_output_is_not_folded(tmp_path):
    """::

        x --Conv--> c (graph output) --BatchNormalization--> y (graph output)
    """
    model = _model(
        [
            helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c", *_bn_inputs()], ["y"], name="bn"),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("c", [1, 4, 8, 8]), _vi("y", [1, 4, 8, 8])],
        [numpy_helper.from_array(_f32(4, 3, 3, 3), "W"), *_bn_params(4)],
    )
    path = _save(model, tmp_path / "conv_out.onnx")
    prepared = prepare_model(path)
    assert "BatchNormalization" in _ops(prepared.model)
    assert prepared.folded_batchnorms == ()
    _assert_same_outputs(path, prepared.model, {"x": RNG.random((1, 3, 8, 8), dtype=np.float32)})


def test_two_conv_batchnorm_pairs_fold_independently(tmp_path):
    """::

        x --Conv conv1--> BN bn1 --Relu--> Conv conv2 --> BN bn2 --> y
    """
    model = _model(
        [
            helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c1", *_bn_inputs("bn1")], ["b1"], name="bn1"),
            helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
            helper.make_node("Conv", ["r1", "W2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c2", *_bn_inputs("bn2")], ["y"], name="bn2"),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 5, 8, 8])],
        [
            numpy_helper.from_array(_f32(4, 3, 3, 3), "W1"),
            numpy_helper.from_array(_f32(5, 4, 3, 3), "W2"),
            *_bn_params(4, "bn1"),
            *_bn_params(5, "bn2"),
        ],
    )
    path = _save(model, tmp_path / "two_bn.onnx")
    prepared = prepare_model(path)
    assert _ops(prepared.model) == ["Conv", "Relu", "Conv"]
    assert prepared.folded_batchnorms == ("bn1", "bn2")
    assert [o.name for o in prepared.model.graph.output] == ["y"]
    _assert_same_outputs(path, prepared.model, {"x": RNG.random((1, 3, 8, 8), dtype=np.float32)})


# ---------------------------------------------------------------------------------------------------------
# Node names
# ---------------------------------------------------------------------------------------------------------


def _naming_model() -> onnx.ModelProto:
    """::

        x --Conv ""--> a --Relu "dup"--> b --Relu "dup"--> c --Sigmoid ""--> d --Relu "Sigmoid_3"--> y
    """
    return _model(
        [
            helper.make_node("Conv", ["x", "W"], ["a"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["a"], ["b"], name="dup"),
            helper.make_node("Relu", ["b"], ["c"], name="dup"),
            helper.make_node("Sigmoid", ["c"], ["d"]),
            helper.make_node("Relu", ["d"], ["y"], name="Sigmoid_3"),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 4, 8, 8])],
        [numpy_helper.from_array(_f32(4, 3, 3, 3), "W")],
    )


def test_unnamed_and_duplicate_nodes_get_unique_deterministic_names(tmp_path):
    """Unnamed nodes and the second ``dup`` get new names; a generated name never collides with an existing
    one (``Sigmoid_3`` is taken by a later node); the names are the same on every run; ``renamed_nodes``
    records exactly the renamed nodes."""
    model = _naming_model()
    path = _save(model, tmp_path / "names.onnx")
    # ONNX Runtime refuses duplicate node names, so the reference runs a copy with hand-made unique names
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    for i, node in enumerate(reference.graph.node):
        node.name = f"ref_{i}"
    reference_path = _save(reference, tmp_path / "names_reference.onnx")
    first = prepare_model(path)
    second = prepare_model(path)

    names = [node.name for node in first.model.graph.node]
    assert all(names), names
    assert len(set(names)) == len(names), names
    assert names == [node.name for node in second.model.graph.node]
    assert first.renamed_nodes == second.renamed_nodes
    assert first.prepared_sha256 == second.prepared_sha256

    # names kept: the first "dup" and "Sigmoid_3"; renamed: the Conv, the second "dup", the Sigmoid
    assert names[1] == "dup" and names[4] == "Sigmoid_3"
    renamed = {names[0], names[2], names[3]}
    assert set(first.renamed_nodes) == renamed
    assert names[0].startswith("Conv") and names[2].startswith("Relu") and names[3].startswith("Sigmoid")
    assert names[3] != "Sigmoid_3"
    assert "dup" in first.renamed_nodes[names[2]]  # the record says what it was

    candidates = list_candidates(first, op_types=TRT)
    assert [c.name for c in candidates] == [names[0]]
    _assert_same_outputs(reference_path, first.model, {"x": RNG.random((1, 3, 8, 8), dtype=np.float32)})


def test_named_model_is_not_renamed(tmp_path):
    """::

        x --Conv conv--> Relu relu--> y
    """
    model = _model(
        [
            helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 4, 8, 8])],
        [numpy_helper.from_array(_f32(4, 3, 3, 3), "W")],
    )
    prepared = prepare_model(_save(model, tmp_path / "named.onnx"))
    assert prepared.renamed_nodes == {}
    assert [n.name for n in prepared.model.graph.node] == ["conv", "relu"]


# ---------------------------------------------------------------------------------------------------------
# Dynamic input dimensions
# ---------------------------------------------------------------------------------------------------------


def _dynamic_model() -> onnx.ModelProto:
    """::

        x [N,3,H,8] --Conv(W 4x3x3x3, pads 1)--> y [N,4,H,8]
    """
    return _model(
        [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        [_vi("x", ["N", 3, "H", 8])],
        [_vi("y", ["N", 4, "H", 8])],
        [numpy_helper.from_array(_f32(4, 3, 3, 3), "W")],
    )


def test_dynamic_dims_are_fixed_by_input_shapes(tmp_path):
    path = _save(_dynamic_model(), tmp_path / "dynamic.onnx")
    prepared = prepare_model(path, input_shapes={"x": (2, 3, 16, 8)})
    assert prepared.inputs[0].name == "x"
    assert prepared.inputs[0].shape == (2, 3, 16, 8)
    assert prepared.inputs[0].is_static
    dims = prepared.model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 16, 8]
    assert not any(d.dim_param for d in dims)
    (candidate,) = list_candidates(prepared, op_types=TRT)
    assert candidate.input_shapes[0] == (2, 3, 16, 8)
    assert candidate.output_shapes[0] == (2, 4, 16, 8)
    _assert_same_outputs(path, prepared.model, {"x": RNG.random((2, 3, 16, 8), dtype=np.float32)})


def test_dynamic_dims_without_input_shapes_raise(tmp_path):
    path = _save(_dynamic_model(), tmp_path / "dynamic.onnx")
    with pytest.raises(InputError, match=r"--input-shape x:1x3x1x8"):
        prepare_model(path)


@pytest.mark.parametrize(
    "shape, why",
    [((2, 3, 16), "rank 3"), ((2, 3, 16, 8, 1), "rank 5"), ((2, 4, 16, 8), "fixed dim changed"), ((2, 3, 16, 9), "fixed dim changed")],
)
def test_input_shapes_that_do_not_fit_raise(tmp_path, shape, why):
    path = _save(_dynamic_model(), tmp_path / "dynamic.onnx")
    with pytest.raises(InputError, match="does not fit"):
        prepare_model(path, input_shapes={"x": shape})


def test_input_shapes_naming_an_unknown_input_raise(tmp_path):
    path = _save(_dynamic_model(), tmp_path / "dynamic.onnx")
    with pytest.raises(InputError, match="'image'"):
        prepare_model(path, input_shapes={"image": (1, 3, 8, 8)})


def test_static_input_shape_may_be_restated(tmp_path):
    """Giving a static input its own shape is allowed and changes nothing."""
    model = _model(
        [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 4, 8, 8])],
        [numpy_helper.from_array(_f32(4, 3, 3, 3), "W")],
    )
    prepared = prepare_model(_save(model, tmp_path / "static.onnx"), input_shapes={"x": (1, 3, 8, 8)})
    assert prepared.inputs[0].shape == (1, 3, 8, 8)


# ---------------------------------------------------------------------------------------------------------
# Identity chains
# ---------------------------------------------------------------------------------------------------------


def test_identity_chains_between_layers_keep_candidates(tmp_path):
    """::

        x --Conv conv1--> a --Identity--> b --Identity--> c --Conv conv2--> d --Identity--> e
          --MatMul(M 8x6) matmul--> y
        W2 (initializer) --Identity--> W2i (conv2's weight)
    """
    model = _model(
        [
            helper.make_node("Conv", ["x", "W1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Identity", ["a"], ["b"], name="id1"),
            helper.make_node("Identity", ["b"], ["c"], name="id2"),
            helper.make_node("Identity", ["W2"], ["W2i"], name="id_w"),
            helper.make_node("Conv", ["c", "W2i"], ["d"], name="conv2", pads=[1, 1, 1, 1]),
            helper.make_node("Identity", ["d"], ["e"], name="id3"),
            helper.make_node("MatMul", ["e", "M"], ["y"], name="matmul"),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 4, 8, 6])],
        [
            numpy_helper.from_array(_f32(4, 3, 3, 3), "W1"),
            numpy_helper.from_array(_f32(4, 4, 3, 3), "W2"),
            numpy_helper.from_array(_f32(8, 6), "M"),
        ],
    )
    path = _save(model, tmp_path / "identity.onnx")
    prepared = prepare_model(path)
    candidates = list_candidates(prepared, op_types=TRT)
    assert [c.name for c in candidates] == ["conv1", "conv2", "matmul"]
    assert [c.op_type for c in candidates] == ["Conv", "Conv", "MatMul"]
    assert candidates[1].input_shapes[0] == (1, 4, 8, 8)
    inits = {init.name for init in prepared.model.graph.initializer}
    conv2 = next(n for n in prepared.model.graph.node if n.name == "conv2")
    assert conv2.input[1] in inits, "the weight behind an Identity is an initializer after preparation"
    feed = {"x": RNG.random((1, 3, 8, 8), dtype=np.float32)}
    _assert_same_outputs(path, prepared.model, feed)

    # and every candidate gets its Q/DQ: 3 activation Q/DQ pairs + 3 weight DQs
    builder = QdqBuilder(prepared, candidates, _ranges_for(prepared, candidates))
    qdq = builder.build([])
    assert count_qdq(qdq) == {"QuantizeLinear": 3, "DequantizeLinear": 6}
    assert _run(qdq, feed)[0].shape == (1, 4, 8, 6)


# ---------------------------------------------------------------------------------------------------------
# Subgraphs
# ---------------------------------------------------------------------------------------------------------


def test_conv_inside_if_branch_stays_fp32_with_one_warning(tmp_path, caplog):
    """Both branches read ``x`` and ``W`` from the main graph::

        cond (bool) --If "branchy"--> y [1,4,8,8]
            then_branch: x --Conv "inner_conv"(W)--> t
            else_branch: x --Neg "inner_neg"--> n --Conv "inner_conv_else"(W)--> e

    The condition is a graph input (data): list_candidates keeps both inner Convs out of the candidates and
    names them, with their subgraphs, in one warning.
    """
    then_graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["t"], name="inner_conv", pads=[1, 1, 1, 1])],
        "then_body",
        [],
        [_vi("t", [1, 4, 8, 8])],
    )
    else_graph = helper.make_graph(
        [
            helper.make_node("Neg", ["x"], ["n"], name="inner_neg"),
            helper.make_node("Conv", ["n", "W"], ["e"], name="inner_conv_else", pads=[1, 1, 1, 1]),
        ],
        "else_body",
        [],
        [_vi("e", [1, 4, 8, 8])],
    )
    model = _model(
        [
            helper.make_node("If", ["cond"], ["y"], name="branchy", then_branch=then_graph, else_branch=else_graph),
        ],
        [_vi("x", [1, 3, 8, 8]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [_vi("y", [1, 4, 8, 8])],
        [numpy_helper.from_array(_f32(4, 3, 3, 3), "W")],
    )
    path = _save(model, tmp_path / "if.onnx")
    prepared = prepare_model(path)
    with caplog.at_level("WARNING", logger="precision_lab"):
        assert list_candidates(prepared, op_types=TRT) == []
    (message,) = [r.getMessage() for r in caplog.records]
    assert "inner_conv (Conv, in branchy.then_branch)" in message, message
    assert "inner_conv_else (Conv, in branchy.else_branch)" in message, message
    caplog.clear()
    # op types outside the subgraph give no warning
    assert list_candidates(prepared, op_types=["MatMul"]) == []
    assert not caplog.records


def test_if_without_candidates_inside_is_fine(tmp_path):
    """::

        x --Conv conv--> c ; cond --If(then: Relu(c), else: Neg(c))--> y
    """
    then_graph = helper.make_graph(
        [helper.make_node("Relu", ["c"], ["t"], name="inner_relu")], "then_body", [], [_vi("t", [1, 4, 8, 8])]
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["c"], ["e"], name="inner_neg")], "else_body", [], [_vi("e", [1, 4, 8, 8])]
    )
    model = _model(
        [
            helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("If", ["cond"], ["y"], name="branchy", then_branch=then_graph, else_branch=else_graph),
        ],
        [_vi("x", [1, 3, 8, 8]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [_vi("y", [1, 4, 8, 8])],
        [numpy_helper.from_array(_f32(4, 3, 3, 3), "W")],
    )
    prepared = prepare_model(_save(model, tmp_path / "if_ok.onnx"))
    assert [c.name for c in list_candidates(prepared, op_types=TRT)] == ["conv"]


# ---------------------------------------------------------------------------------------------------------
# list_candidates: exclude patterns and op types
# ---------------------------------------------------------------------------------------------------------


def _backbone_head_model() -> onnx.ModelProto:
    """::

        x --Conv backbone/conv1--> Relu backbone/relu --Conv backbone/conv2--> Conv head/conv
          --Flatten head/flatten--> MatMul head/matmul --Add head/add(bias)--> y
    """
    return _model(
        [
            helper.make_node("Conv", ["x", "W1"], ["a"], name="backbone/conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["a"], ["b"], name="backbone/relu"),
            helper.make_node("Conv", ["b", "W2"], ["c"], name="backbone/conv2", pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["c", "W3"], ["d"], name="head/conv", pads=[1, 1, 1, 1]),
            helper.make_node("Flatten", ["d"], ["f"], name="head/flatten"),
            helper.make_node("MatMul", ["f", "M"], ["m"], name="head/matmul"),
            helper.make_node("Add", ["m", "bias"], ["y"], name="head/add"),
        ],
        [_vi("x", [1, 3, 4, 4])],
        [_vi("y", [1, 5])],
        [
            numpy_helper.from_array(_f32(4, 3, 3, 3), "W1"),
            numpy_helper.from_array(_f32(4, 4, 3, 3), "W2"),
            numpy_helper.from_array(_f32(2, 4, 3, 3), "W3"),
            numpy_helper.from_array(_f32(32, 5), "M"),
            numpy_helper.from_array(_f32(5), "bias"),
        ],
    )


@pytest.fixture()
def backbone_head(tmp_path):
    return prepare_model(_save(_backbone_head_model(), tmp_path / "bh.onnx"))


def _names(candidates) -> list[str]:
    return [c.name for c in candidates]


def test_candidates_follow_the_recipe(backbone_head):
    assert _names(list_candidates(backbone_head, op_types=TRT)) == [
        "backbone/conv1", "backbone/conv2", "head/conv", "head/matmul",
    ]
    assert _names(list_candidates(backbone_head, op_types=RECIPES["extended"])) == [
        "backbone/conv1", "backbone/conv2", "head/conv", "head/matmul", "head/add",
    ]
    indices = [c.index for c in list_candidates(backbone_head, op_types=TRT)]
    assert indices == sorted(indices)
    for c in list_candidates(backbone_head, op_types=TRT):
        assert backbone_head.model.graph.node[c.index].name == c.name


@pytest.mark.parametrize(
    "exclude, expected",
    [
        (["backbone/*"], ["head/conv", "head/matmul"]),
        (["head/conv"], ["backbone/conv1", "backbone/conv2", "head/matmul"]),
        (["*conv?"], ["head/conv", "head/matmul"]),
        (["*/conv*", "head/*"], []),
        (["backbone/conv[12]"], ["head/conv", "head/matmul"]),
        (["BACKBONE/*"], ["backbone/conv1", "backbone/conv2", "head/conv", "head/matmul"]),  # case-sensitive
        (["conv1"], ["backbone/conv1", "backbone/conv2", "head/conv", "head/matmul"]),  # whole names only
        ([], ["backbone/conv1", "backbone/conv2", "head/conv", "head/matmul"]),
    ],
)
def test_exclude_patterns(backbone_head, exclude, expected):
    assert _names(list_candidates(backbone_head, op_types=TRT, exclude=exclude)) == expected


@pytest.mark.parametrize(
    "op_types, expected",
    [
        (["MatMul"], ["head/matmul"]),
        (["Conv"], ["backbone/conv1", "backbone/conv2", "head/conv"]),
        (["Relu", "Add"], ["backbone/relu", "head/add"]),
        (("Gemm",), []),
        (iter(["MatMul", "Conv"]), ["backbone/conv1", "backbone/conv2", "head/conv", "head/matmul"]),
    ],
)
def test_op_types_override(backbone_head, op_types, expected):
    assert _names(list_candidates(backbone_head, op_types=op_types)) == expected


def test_op_types_and_exclude_together(backbone_head):
    assert _names(list_candidates(backbone_head, op_types=["Conv", "Add"], exclude=["head/*"])) == [
        "backbone/conv1", "backbone/conv2",
    ]


def test_node_without_activation_input_is_not_a_candidate(tmp_path):
    """A MatMul of two constants has nothing to quantize at run time (constant folding removes it anyway)::

        x --MatMul(x, A) mm_live--> y ;  A = MatMul(P, Q) mm_const (both initializers)
    """
    model = _model(
        [
            helper.make_node("MatMul", ["P", "Q"], ["A"], name="mm_const"),
            helper.make_node("MatMul", ["x", "A"], ["y"], name="mm_live"),
        ],
        [_vi("x", [2, 4])],
        [_vi("y", [2, 3])],
        [numpy_helper.from_array(_f32(4, 5), "P"), numpy_helper.from_array(_f32(5, 3), "Q")],
    )
    path = _save(model, tmp_path / "const_mm.onnx")
    prepared = prepare_model(path)
    assert _names(list_candidates(prepared, op_types=TRT)) == ["mm_live"]
    _assert_same_outputs(path, prepared.model, {"x": RNG.random((2, 4), dtype=np.float32)})
