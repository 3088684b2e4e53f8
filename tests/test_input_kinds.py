"""Every kind of op input: integer, boolean, scalar and shape-like tensors never get Q/DQ, in every recipe.

The fixture is a byte-level classifier like the ones that crashed ``--recipe extended`` (an int64 ``Add``/``Mul``
on token ids, a ``Mul`` by a rank-0 float constant), with a ``Where`` on a boolean mask, ``Reshape``,
``Resize``, ``Slice``, ``Pad``, ``Expand`` and ``Gather`` shape/index inputs. It is swept in ONNX Runtime with
both recipes, and the all-INT8 model is checked for structure (which nodes are candidates, which tensors get
Q/DQ) and numbers (against the FP32 model).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference

import precision_lab
from precision_lab.calibration import calibrate
from precision_lab.model import list_candidates, prepare_model
from precision_lab.qdq import RECIPES, QdqBuilder, tensors_to_calibrate

RNG = np.random.default_rng(5)
INT_OPS = ("ids_plus_one", "ids_times_two", "ids_concat")  # Add, Mul, Concat on int64 token ids
FLOAT_CANDIDATES = {
    "trt": ["matmul", "conv", "fc"],
    "extended": ["matmul", "scale_mul", "bias_add", "resize", "conv", "pool", "concat", "fc"],
}


def _init(value, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _byte_classifier() -> onnx.ModelProto:
    """Token ids and an image in, class logits out::

        ids int64 [1,16] -> Add(1 int64 scalar) -> Mul(2 int64 scalar) -> ids2
        Concat(ids2, ids) int64 [1,32] -> Gather(emb [130,8]) -> e [1,32,8]
        mask bool [1,32,1] -> Where(mask, e, 0.0) -> MatMul(W [8,8]) -> Mul(0.125 rank 0) -> Add(0.5 rank 0)
            -> Slice(starts/ends/axes int64) -> Reshape(shape [1,128]) -> t [1,128]
        x [1,3,8,8] -> Pad(pads int64) -> Resize(scales [1,1,0.5,0.5]) -> Conv -> Expand(shape int64)
            -> GlobalAveragePool -> Reshape([1,4]) -> i [1,4]
        Concat(t, i) [1,132] -> Gemm(G, transB=1) -> logits [1,5]
    """
    nodes = [
        helper.make_node("Add", ["ids", "one"], ["ids1"], name="ids_plus_one"),
        helper.make_node("Mul", ["ids1", "two"], ["ids2"], name="ids_times_two"),
        helper.make_node("Concat", ["ids2", "ids"], ["all_ids"], name="ids_concat", axis=1),
        helper.make_node("Gather", ["emb", "all_ids"], ["e"], name="embed", axis=0),
        helper.make_node("Where", ["mask", "e", "zero"], ["w"], name="masked"),
        helper.make_node("MatMul", ["w", "W"], ["mm"], name="matmul"),
        helper.make_node("Mul", ["mm", "scale"], ["ms"], name="scale_mul"),
        helper.make_node("Add", ["ms", "bias"], ["a"], name="bias_add"),
        helper.make_node("Slice", ["a", "starts", "ends", "axes"], ["sl"], name="slice"),
        helper.make_node("Reshape", ["sl", "flat"], ["t"], name="flatten_text"),
        helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad", mode="reflect"),
        helper.make_node("Resize", ["xp", "", "scales"], ["xr"], name="resize", mode="nearest"),
        helper.make_node("Conv", ["xr", "C"], ["c"], name="conv"),
        helper.make_node("Expand", ["c", "expand_to"], ["ce"], name="expand"),
        helper.make_node("GlobalAveragePool", ["ce"], ["g"], name="pool"),
        helper.make_node("Reshape", ["g", "flat_image"], ["i"], name="flatten_image"),
        helper.make_node("Concat", ["t", "i"], ["features"], name="concat", axis=1),
        helper.make_node("Gemm", ["features", "G"], ["logits"], name="fc", transB=1),
    ]
    inits = [
        _init(np.array(1, np.int64), "one"),
        _init(np.array(2, np.int64), "two"),
        _init(RNG.standard_normal((130, 8)).astype(np.float32), "emb"),
        _init(np.float32(0.0), "zero"),
        _init((RNG.standard_normal((8, 8)) * 0.5).astype(np.float32), "W"),
        _init(np.float32(0.125), "scale"),
        _init(np.float32(0.5), "bias"),
        _init(np.array([0], np.int64), "starts"),
        _init(np.array([16], np.int64), "ends"),
        _init(np.array([1], np.int64), "axes"),
        _init(np.array([1, 128], np.int64), "flat"),
        _init(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
        _init(np.array([1, 1, 0.5, 0.5], np.float32), "scales"),
        _init((RNG.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "C"),
        _init(np.array([1, 4, 3, 3], np.int64), "expand_to"),
        _init(np.array([1, 4], np.int64), "flat_image"),
        _init((RNG.standard_normal((5, 132)) * 0.1).astype(np.float32), "G"),
    ]
    inputs = [
        helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 16]),
        helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 32, 1]),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
    ]
    graph = helper.make_graph(
        nodes, "byte_classifier", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _feeds(count: int) -> list[dict[str, np.ndarray]]:
    return [
        {
            "ids": RNG.integers(0, 64, (1, 16)).astype(np.int64),
            "mask": RNG.random((1, 32, 1)) > 0.2,
            "x": RNG.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32),
        }
        for _ in range(count)
    ]


def _run(model: onnx.ModelProto | str, feed: dict) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _quantized_tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """{tensor: element type} of every tensor that a QuantizeLinear reads or a DequantizeLinear feeds into a
    node that is not a Q/DQ node (the tensor the Q/DQ stands in for)."""
    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*graph.value_info, *graph.input, *graph.output]}
    types.update({init.name: init.data_type for init in graph.initializer})
    return {node.input[0]: types.get(node.input[0], 0) for node in graph.node if node.op_type == "QuantizeLinear"}


def _dq_fed_inputs(model: onnx.ModelProto) -> set[tuple[str, int]]:
    dq_outputs = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return {
        (node.name, index)
        for node in model.graph.node
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear")
        for index, name in enumerate(node.input)
        if name in dq_outputs
    }


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("byte_classifier")
    path = folder / "byte_classifier.onnx"
    onnx.save(_byte_classifier(), str(path))
    feeds = _feeds(12)
    data = folder / "data"
    data.mkdir()
    for index, feed in enumerate(feeds):
        np.savez(data / f"feed{index:02d}.npz", **feed)
    return path, data, feeds


@pytest.mark.parametrize("recipe", ["trt", "extended"])
def test_only_ops_on_float_activations_are_candidates(classifier, recipe):
    path, _, _ = classifier
    prepared = prepare_model(path)
    names = [c.name for c in list_candidates(prepared, op_types=RECIPES[recipe])]
    assert names == FLOAT_CANDIDATES[recipe]
    assert not set(names) & set(INT_OPS)


@pytest.mark.parametrize("recipe", ["trt", "extended"])
def test_all_int8_has_qdq_only_on_float_tensors_and_runs(classifier, recipe):
    path, _, feeds = classifier
    prepared = prepare_model(path)
    candidates = list_candidates(prepared, op_types=RECIPES[recipe])
    ranges = calibrate(prepared, feeds[:8], tensors=tensors_to_calibrate(prepared, candidates, recipe),
                       fingerprint="byte-classifier")
    model = QdqBuilder(prepared, candidates, ranges, recipe=recipe).build(())
    onnx.checker.check_model(model, full_check=True)

    quantized = _quantized_tensor_types(model)
    assert quantized and set(quantized.values()) == {TensorProto.FLOAT}
    fed = _dq_fed_inputs(model)
    shape_like = {("flatten_text", 1), ("flatten_image", 1), ("resize", 2), ("slice", 1), ("slice", 2),
                  ("slice", 3), ("pad", 1), ("expand", 1), ("embed", 1), ("masked", 0), ("ids_plus_one", 1),
                  ("ids_times_two", 1), ("ids_concat", 0), ("ids_concat", 1)}
    assert not fed & shape_like
    assert ("matmul", 0) in fed and ("matmul", 1) in fed and ("fc", 1) in fed
    if recipe == "extended":  # a rank-0 float constant gets a per-tensor scalar Q/DQ (exact: its own amax)
        assert {("scale_mul", 1), ("bias_add", 1)} <= fed
        scalar_dq = next(n for n in model.graph.node if n.name == "scale_mul/input1/weight_DequantizeLinear")
        values = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == scalar_dq.input[0]))
        assert values.shape == () and values.dtype == np.int8 and int(values) == 127

    for feed in feeds[8:]:
        expected, got = _run(str(path), feed), _run(model, feed)
        error = float(np.linalg.norm(got - expected) / np.linalg.norm(expected))
        assert 0 < error < 0.1


@pytest.mark.parametrize("recipe", ["trt", "extended"])
def test_sweep_runs_on_integer_boolean_and_shape_inputs(classifier, tmp_path, recipe):
    path, data, feeds = classifier
    result = precision_lab.sweep(
        str(path), data=str(data), out_dir=str(tmp_path / "out"), progress=False, recipe=recipe,
        calib_samples=8, eval_samples=4, tolerance=0.5,
    )
    assert list(result.layers.sort_values("name")["name"]) == sorted(FLOAT_CANDIDATES[recipe])
    plan = onnx.load(str(tmp_path / "out" / "plan.onnx"))
    assert set(_quantized_tensor_types(plan).values()) <= {TensorProto.FLOAT}
    expected = _run(str(path), feeds[0])
    assert _run(plan, feeds[0]).shape == expected.shape


def test_float16_ops_are_not_candidates(tmp_path):
    """Opset-13 Q/DQ takes float32 only, so an op on float16 tensors stays as it is::

        x [1,8] -> Cast(float16) -> Mul(h, 0.5 float16) -> Add(h, m) -> Cast(float32) -> MatMul(W) -> y
    """
    nodes = [
        helper.make_node("Cast", ["x"], ["h"], name="to_half", to=TensorProto.FLOAT16),
        helper.make_node("Mul", ["h", "half"], ["m"], name="half_mul"),
        helper.make_node("Add", ["h", "m"], ["s"], name="half_add"),
        helper.make_node("Cast", ["s"], ["f"], name="to_float", to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["f", "W"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes, "half", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [_init(np.float16(0.5), "half"), _init(RNG.standard_normal((8, 4)).astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "half.onnx"))
    prepared = prepare_model(tmp_path / "half.onnx")
    assert [c.name for c in list_candidates(prepared, op_types=RECIPES["extended"])] == ["matmul"]
