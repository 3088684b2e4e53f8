"""Q/DQ placement (README "Q/DQ placement") on tiny models built here with ``onnx.helper``.

Each test draws its model in the docstring, builds the Q/DQ model of a plan with :class:`QdqBuilder` and
checks both

* the structure, field by field: which node inputs are fed by ``DequantizeLinear``, Q/DQ counts, scales
  (``amax / 127`` as float32), int8 zero points 0, the ``axis`` of per-channel weight DQs, the int8 weight
  initializers, FP32 biases, ``onnx.checker.check_model(full_check=True)``;
* the numbers: ONNX Runtime (graph optimizations off) on the Q/DQ model against a numpy reference of the
  fake quantization ``x -> clip(round_half_even(x / s), -128, 127) * s`` (weights per channel).

Hand-made :class:`Ranges` make the expected scales exact; some tests calibrate for real. test_placement.py checks
the same placements as data, without building the graphs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from precision_lab.calibration import Ranges, calibrate
from precision_lab.errors import InputError
from precision_lab.model import list_candidates, prepare_model
from precision_lab.qdq import RECIPES, QdqBuilder, count_qdq, tensors_to_calibrate

TRT = RECIPES["trt"]
EXTENDED = RECIPES["extended"]
F32_127 = np.float32(127.0)


# ---------------------------------------------------------------------------------------------------------
# Model building
# ---------------------------------------------------------------------------------------------------------


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _f32(rng: np.random.Generator, *shape, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _uniform(rng: np.random.Generator, shape, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    return rng.uniform(low, high, size=shape).astype(np.float32)


def _vi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _init(array: np.ndarray, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _prepare(model: onnx.ModelProto, path: Path):
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return prepare_model(path)


def _hand_ranges(**amax: float) -> Ranges:
    return Ranges(method="max", key="k", amax={name: float(value) for name, value in amax.items()}, samples=1)


def _run(model: onnx.ModelProto, feed: dict) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [out.name for out in session.get_outputs()]
    return dict(zip(names, session.run(None, feed)))


def _close(got: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    assert got.shape == expected.shape, what
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=what)


# ---------------------------------------------------------------------------------------------------------
# Numpy reference of the fake quantization and of the layers
# ---------------------------------------------------------------------------------------------------------


def _scale(amax: float) -> np.float32:
    return np.float32(amax) / F32_127


def _fq(x: np.ndarray, amax: float) -> np.ndarray:
    """Per-tensor symmetric int8 fake quantization, round half to even, saturating at [-128, 127]."""
    s = _scale(amax)
    x = np.asarray(x, dtype=np.float32)
    return (np.clip(np.round(x / s), -128, 127).astype(np.float32) * s).astype(np.float32)


def _weight_ref(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 values, float32 scale, dequantized weight) of a symmetric int8 weight quantization."""
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        scale = (np.max(np.abs(w)) / F32_127).astype(np.float32)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        return q, scale, (q.astype(np.float32) * scale).astype(np.float32)
    axes = tuple(i for i in range(w.ndim) if i != axis)
    scale = (np.max(np.abs(w), axis=axes) / F32_127).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale, (q.astype(np.float32) * scale.reshape(shape)).astype(np.float32)


def _conv2d(x, w, b=None, pad: int = 0) -> np.ndarray:
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = h - kh + 1, wd - kw + 1
    y = np.zeros((n, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("nchw,oc->nohw", x[:, :, i : i + oh, j : j + ow], np.asarray(w, np.float64)[:, :, i, j])
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, -1, 1, 1)
    return y.astype(np.float32)


def _conv_transpose2d(x, w, b=None) -> np.ndarray:
    """Stride 1, no padding; ``w`` is [C_in, C_out, kh, kw]."""
    x = np.asarray(x, np.float64)
    n, _, h, wd = x.shape
    _, o, kh, kw = w.shape
    y = np.zeros((n, o, h + kh - 1, wd + kw - 1))
    for i in range(kh):
        for j in range(kw):
            y[:, :, i : i + h, j : j + wd] += np.einsum("nchw,co->nohw", x, np.asarray(w, np.float64)[:, :, i, j])
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, -1, 1, 1)
    return y.astype(np.float32)


def _maxpool2(x) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


# ---------------------------------------------------------------------------------------------------------
# Structure helpers
# ---------------------------------------------------------------------------------------------------------


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    matches = [node for node in model.graph.node if node.name == name]
    assert len(matches) == 1, f"expected one node named {name!r}, found {len(matches)}"
    return matches[0]


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _dq_feeding(model: onnx.ModelProto, consumer: str, index: int) -> onnx.NodeProto | None:
    producer = _producers(model).get(_node(model, consumer).input[index])
    return producer if producer is not None and producer.op_type == "DequantizeLinear" else None


def _check(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)


def _assert_zero_point(values: np.ndarray, shape, what: str) -> None:
    assert values.dtype == np.int8, f"{what}: zero point dtype {values.dtype}, expected int8"
    assert values.shape == tuple(shape), f"{what}: zero point shape {values.shape}, expected {tuple(shape)}"
    assert not values.any(), f"{what}: zero point {values}, expected 0"


def _assert_activation_qdq(
    model: onnx.ModelProto, consumer: str, index: int, source: str, amax: float
) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    """``consumer.input[index]`` = DQ(Q(``source``)), per tensor, scale amax/127, zero point int8 0."""
    what = f"{consumer}.input[{index}]"
    dq = _dq_feeding(model, consumer, index)
    assert dq is not None, f"{what} ({_node(model, consumer).input[index]}) is not fed by DequantizeLinear"
    q = _producers(model).get(dq.input[0])
    assert q is not None and q.op_type == "QuantizeLinear", f"{what}: the DequantizeLinear's input is not a Q"
    assert q.input[0] == source, f"{what}: Q reads {q.input[0]!r}, expected {source!r}"
    inits = _inits(model)
    expected = _scale(amax)
    for label, node in (("Q", q), ("DQ", dq)):
        assert len(node.input) == 3, f"{what}: {label} has no explicit zero point"
        scale, zero_point = inits[node.input[1]], inits[node.input[2]]
        assert scale.dtype == np.float32, f"{what}: {label} scale dtype {scale.dtype}"
        assert scale.shape == (), f"{what}: {label} scale shape {scale.shape}, expected per tensor ()"
        assert scale == expected, f"{what}: {label} scale {scale!r}, expected {amax}/127 = {expected!r}"
        _assert_zero_point(zero_point, (), f"{what} {label}")
    return q, dq


def _assert_weight_dq(
    model: onnx.ModelProto, consumer: str, index: int, weight: np.ndarray, axis: int | None
) -> None:
    """``consumer.input[index]`` = DQ(int8 initializer) quantized symmetrically along ``axis``."""
    what = f"{consumer}.input[{index}] (weight)"
    dq = _dq_feeding(model, consumer, index)
    assert dq is not None, f"{what} is not fed by DequantizeLinear"
    inits = _inits(model)
    assert dq.input[0] in inits, f"{what}: DQ input {dq.input[0]!r} is not an initializer"
    assert _producers(model).get(dq.input[0]) is None, f"{what}: weight is quantized by a Q node at run time"
    values, scale, zero_point = (inits[name] for name in dq.input[:3])
    expected_q, expected_scale, _ = _weight_ref(weight, axis)
    assert values.dtype == np.int8, f"{what}: dtype {values.dtype}, expected int8"
    assert values.shape == weight.shape, f"{what}: shape {values.shape}, expected {weight.shape}"
    assert values.min() >= -127 and values.max() <= 127, f"{what}: values outside [-127, 127]"
    np.testing.assert_array_equal(values, expected_q, err_msg=f"{what}: int8 values")
    assert scale.dtype == np.float32, f"{what}: scale dtype {scale.dtype}"
    assert scale.shape == expected_scale.shape, f"{what}: scale shape {scale.shape}, expected {expected_scale.shape}"
    np.testing.assert_array_equal(scale, expected_scale, err_msg=f"{what}: scale")
    _assert_zero_point(zero_point, expected_scale.shape, what)
    attrs = _attrs(dq)
    if axis is None:
        assert "axis" not in attrs or expected_scale.shape == (), f"{what}: per-tensor DQ with axis {attrs}"
    else:
        assert attrs.get("axis") == axis, f"{what}: DQ axis {attrs.get('axis')}, expected {axis}"


def _assert_fp32_input(model: onnx.ModelProto, consumer: str, index: int, tensor: str | None = None) -> None:
    node = _node(model, consumer)
    assert _dq_feeding(model, consumer, index) is None, f"{consumer}.input[{index}] is fed by DequantizeLinear"
    if tensor is not None:
        assert node.input[index] == tensor, f"{consumer}.input[{index}] is {node.input[index]!r}, expected {tensor!r}"


def _assert_bias_fp32(model: onnx.ModelProto, consumer: str, index: int, bias: np.ndarray) -> None:
    name = _node(model, consumer).input[index]
    inits = _inits(model)
    assert name in inits, f"{consumer} bias {name!r} is not an initializer"
    assert inits[name].dtype == np.float32, f"{consumer} bias dtype {inits[name].dtype}"
    np.testing.assert_array_equal(inits[name], bias)


def _assert_no_dq_into(model: onnx.ModelProto, name: str) -> None:
    node = _node(model, name)
    for index in range(len(node.input)):
        if node.input[index]:
            assert _dq_feeding(model, name, index) is None, f"pinned {name}.input[{index}] is fed by DequantizeLinear"


def _qdq(**counts: int) -> dict[str, int]:
    return {"QuantizeLinear": counts.get("q", 0), "DequantizeLinear": counts.get("dq", 0)}


# ---------------------------------------------------------------------------------------------------------
# 1. Single Conv
# ---------------------------------------------------------------------------------------------------------


def _single_conv(tmp_path, rng, opset: int = 17):
    """::

        x [1,3,6,6] --Conv "conv" (W 4x3x3x3, B 4, pads 1)--> y [1,4,6,6]
    """
    w, b = _f32(rng, 4, 3, 3, 3), _f32(rng, 4)
    model = _model(
        [helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        [_vi("x", [1, 3, 6, 6])],
        [_vi("y", [1, 4, 6, 6])],
        [_init(w, "W"), _init(b, "B")],
        opset=opset,
    )
    return _prepare(model, tmp_path / "conv.onnx"), w, b


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_single_conv_int8_structure_and_numbers(tmp_path, opset):
    """Activation Q/DQ per tensor (amax 2 < max|x| 3, so saturation at both ends is exercised), weight
    per channel on axis 0 (4 scales), bias FP32, no Q/DQ on the output. Opset 11 is raised to 13."""
    rng = _rng(1)
    prepared, w, b = _single_conv(tmp_path, rng, opset)
    candidates = list_candidates(prepared, op_types=TRT)
    assert [c.name for c in candidates] == ["conv"]
    qdq = QdqBuilder(prepared, candidates, _hand_ranges(x=2.0, y=5.0)).build([])

    _check(qdq)
    assert count_qdq(qdq) == _qdq(q=1, dq=2)
    _assert_activation_qdq(qdq, "conv", 0, "x", 2.0)
    _assert_weight_dq(qdq, "conv", 1, w, axis=0)
    _assert_bias_fp32(qdq, "conv", 2, b)
    assert [o.name for o in qdq.graph.output] == ["y"]
    assert _producers(qdq)["y"].name == "conv", "no Q/DQ on a layer output"

    x = _uniform(rng, (1, 3, 6, 6))
    _, _, w_dq = _weight_ref(w, 0)
    expected = _conv2d(_fq(x, 2.0), w_dq, b, pad=1)
    _close(_run(qdq, {"x": x})["y"], expected, "Q/DQ conv vs numpy fake quantization")


def test_single_conv_pinned_has_no_qdq_and_matches_fp32(tmp_path):
    rng = _rng(2)
    prepared, w, b = _single_conv(tmp_path, rng)
    candidates = list_candidates(prepared, op_types=TRT)
    qdq = QdqBuilder(prepared, candidates, _hand_ranges(x=2.0, y=5.0)).build(["conv"])

    _check(qdq)
    assert count_qdq(qdq) == _qdq()
    _assert_fp32_input(qdq, "conv", 0, "x")
    _assert_fp32_input(qdq, "conv", 1, "W")
    _assert_bias_fp32(qdq, "conv", 2, b)
    assert not any(v.dtype == np.int8 for v in _inits(qdq).values())

    x = _uniform(rng, (1, 3, 6, 6))
    np.testing.assert_array_equal(_run(qdq, {"x": x})["y"], _run(prepared.model, {"x": x})["y"])


def test_single_conv_with_calibrated_ranges(tmp_path):
    """``calibrate`` (max) gives amax = largest |x| over the feeds; the activation scale is amax/127."""
    rng = _rng(3)
    prepared, w, b = _single_conv(tmp_path, rng)
    candidates = list_candidates(prepared, op_types=TRT)
    feeds = [{"x": _uniform(rng, (1, 3, 6, 6), -1.5, 2.5)} for _ in range(5)]
    tensors = tensors_to_calibrate(prepared, candidates, "trt")
    ranges = calibrate(prepared, feeds, tensors=tensors, fingerprint="t")
    assert set(ranges.amax) == set(tensors)
    amax_x = float(max(np.max(np.abs(f["x"])) for f in feeds))
    assert ranges.amax["x"] == pytest.approx(amax_x, rel=1e-6)

    qdq = QdqBuilder(prepared, candidates, ranges).build([])
    _check(qdq)
    _assert_activation_qdq(qdq, "conv", 0, "x", ranges.amax["x"])
    _, _, w_dq = _weight_ref(w, 0)
    for feed in feeds[:2]:
        _close(_run(qdq, feed)["y"], _conv2d(_fq(feed["x"], ranges.amax["x"]), w_dq, b, pad=1))


def test_rounding_is_half_to_even_and_activations_saturate(tmp_path):
    """With amax 127 the scale is exactly 1, so ties are exact::

        x [1,8] --MatMul "mm" (M [8,2])--> y [1,2]

    x = [0.5, 1.5, 2.5, -2.5, -0.5, 200, -300, 3.5] quantizes (ONNX Runtime) to [0, 2, 2, -2, 0, 127, -128, 4];
    M's column 0 = [127, 2.5, 3.5, -0.5, -1.5, 0.5, 6.5, 0] quantizes (precision_lab) to
    [127, 2, 4, 0, -2, 0, 6, 0], column 1 (max 63.5, scale 0.5) to [2, -4, 1, 127, 0, -6, 8, 4] (1.75/0.5 = 3.5 -> 4).
    """
    m = np.array(
        [[127, 1], [2.5, -2], [3.5, 0.5], [-0.5, 63.5], [-1.5, 0.25], [0.5, -3], [6.5, 4], [0, 1.75]],
        dtype=np.float32,
    )
    model = _model(
        [helper.make_node("MatMul", ["x", "M"], ["y"], name="mm")], [_vi("x", [1, 8])], [_vi("y", [1, 2])], [_init(m, "M")]
    )
    prepared = _prepare(model, tmp_path / "ties.onnx")
    qdq = QdqBuilder(prepared, list_candidates(prepared, op_types=TRT), _hand_ranges(x=127.0, y=1e6)).build([])
    _check(qdq)
    _assert_weight_dq(qdq, "mm", 1, m, axis=1)
    values = _inits(qdq)[_dq_feeding(qdq, "mm", 1).input[0]]
    np.testing.assert_array_equal(values[:, 0], [127, 2, 4, 0, -2, 0, 6, 0])
    np.testing.assert_array_equal(values[:, 1], [2, -4, 1, 127, 0, -6, 8, 4])
    np.testing.assert_array_equal(_inits(qdq)[_dq_feeding(qdq, "mm", 1).input[1]], np.float32([1.0, 0.5]))

    x = np.array([[0.5, 1.5, 2.5, -2.5, -0.5, 200, -300, 3.5]], dtype=np.float32)
    x_q = np.array([[0, 2, 2, -2, 0, 127, -128, 4]], dtype=np.float32)
    np.testing.assert_array_equal(_fq(x, 127.0), x_q)  # the reference itself
    expected = x_q @ (values.astype(np.float32) * np.float32([1.0, 0.5]))
    np.testing.assert_array_equal(_run(qdq, {"x": x})["y"], expected)


# ---------------------------------------------------------------------------------------------------------
# 2. A tensor feeding two consumers
# ---------------------------------------------------------------------------------------------------------


def _fanout_model(tmp_path, rng):
    """::

        x [1,2,5,5] --Relu "relu"--> r --Conv "conv_a" (WA 3x2x1x1)--> a
                                      `--Conv "conv_b" (WB 4x2x3x3, pads 1)--> b
    """
    wa, wb = _f32(rng, 3, 2, 1, 1), _f32(rng, 4, 2, 3, 3)
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("Conv", ["r", "WA"], ["a"], name="conv_a"),
            helper.make_node("Conv", ["r", "WB"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        ],
        [_vi("x", [1, 2, 5, 5])],
        [_vi("a", [1, 3, 5, 5]), _vi("b", [1, 4, 5, 5])],
        [_init(wa, "WA"), _init(wb, "WB")],
    )
    return _prepare(model, tmp_path / "fanout.onnx"), (wa, wb)


def test_tensor_feeding_two_convs_gets_one_qdq_per_consumer(tmp_path):
    """The fan-out model: each Conv has its own Q and DQ on ``r``; pinning ``conv_a`` leaves ``conv_b``'s pair and
    output as they were."""
    rng = _rng(4)
    prepared, (wa, wb) = _fanout_model(tmp_path, rng)
    candidates = list_candidates(prepared, op_types=TRT)
    builder = QdqBuilder(prepared, candidates, _hand_ranges(r=2.5, a=9.0, b=9.0))

    full = builder.build([])
    _check(full)
    assert count_qdq(full) == _qdq(q=2, dq=4)
    qa, dqa = _assert_activation_qdq(full, "conv_a", 0, "r", 2.5)
    qb, dqb = _assert_activation_qdq(full, "conv_b", 0, "r", 2.5)
    assert qa.name != qb.name and dqa.name != dqb.name, "the two consumers share a Q/DQ pair"
    assert dqa.output[0] != dqb.output[0]
    _assert_weight_dq(full, "conv_a", 1, wa, axis=0)
    _assert_weight_dq(full, "conv_b", 1, wb, axis=0)

    half = builder.build(["conv_a"])
    _check(half)
    assert count_qdq(half) == _qdq(q=1, dq=2)
    _assert_fp32_input(half, "conv_a", 0, "r")
    _assert_fp32_input(half, "conv_a", 1, "WA")
    qb2, dqb2 = _assert_activation_qdq(half, "conv_b", 0, "r", 2.5)
    assert (qb2.name, dqb2.name, list(dqb2.input)) == (qb.name, dqb.name, list(dqb.input))
    _assert_weight_dq(half, "conv_b", 1, wb, axis=0)

    x = _uniform(rng, (1, 2, 5, 5))
    r = np.maximum(x, 0)
    wa_dq, wb_dq = _weight_ref(wa, 0)[2], _weight_ref(wb, 0)[2]
    got_full, got_half = _run(full, {"x": x}), _run(half, {"x": x})
    _close(got_full["a"], _conv2d(_fq(r, 2.5), wa_dq))
    _close(got_full["b"], _conv2d(_fq(r, 2.5), wb_dq, pad=1))
    _close(got_half["a"], _conv2d(r, wa))
    np.testing.assert_array_equal(got_half["b"], got_full["b"])


# ---------------------------------------------------------------------------------------------------------
# 3. Residual Add (recipe trt)
# ---------------------------------------------------------------------------------------------------------


def _residual_model(tmp_path, rng):
    """::

        x [1,3,4,4] --Relu "relu"--> r --Conv "conv" (W 3x3x3x3, B, pads 1)--> c --+
                                      `---------------------------------------------Add "add"--> y
    """
    w, b = _f32(rng, 3, 3, 3, 3), _f32(rng, 3)
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("Conv", ["r", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["c", "r"], ["y"], name="add"),
        ],
        [_vi("x", [1, 3, 4, 4])],
        [_vi("y", [1, 3, 4, 4])],
        [_init(w, "W"), _init(b, "B")],
    )
    return _prepare(model, tmp_path / "residual.onnx"), (w, b)


def test_residual_add_skip_input_follows_the_conv(tmp_path):
    """The residual model, INT8 conv: ``add.input[1]`` (the skip ``r``) gets its own Q/DQ, ``add.input[0]`` (the
    Conv output) none. Pinned conv: no Q/DQ at all."""
    rng = _rng(5)
    prepared, (w, b) = _residual_model(tmp_path, rng)
    candidates = list_candidates(prepared, op_types=TRT)
    assert [c.name for c in candidates] == ["conv"]
    builder = QdqBuilder(prepared, candidates, _hand_ranges(r=2.0, c=8.0, y=9.0))

    int8 = builder.build([])
    _check(int8)
    assert count_qdq(int8) == _qdq(q=2, dq=3)
    q_conv, _ = _assert_activation_qdq(int8, "conv", 0, "r", 2.0)
    q_add, _ = _assert_activation_qdq(int8, "add", 1, "r", 2.0)
    assert q_conv.name != q_add.name, "the skip has its own Q/DQ pair"
    _assert_fp32_input(int8, "add", 0, "c")
    _assert_weight_dq(int8, "conv", 1, w, axis=0)
    _assert_bias_fp32(int8, "conv", 2, b)

    pinned = builder.build(["conv"])
    _check(pinned)
    assert count_qdq(pinned) == _qdq()
    _assert_fp32_input(pinned, "add", 1, "r")

    x = _uniform(rng, (1, 3, 4, 4))
    r = np.maximum(x, 0)
    w_dq = _weight_ref(w, 0)[2]
    _close(_run(int8, {"x": x})["y"], _conv2d(_fq(r, 2.0), w_dq, b, pad=1) + _fq(r, 2.0))
    _close(_run(pinned, {"x": x})["y"], _conv2d(r, w, b, pad=1) + r)


def _two_conv_add_model(tmp_path, rng):
    """::

        x [1,2,4,4] --Conv "conv1" (W1 3x2x1x1)--> a --+
                   `--Conv "conv2" (W2 3x2x1x1)--> b --Add "add"--> y
    """
    w1, w2 = _f32(rng, 3, 2, 1, 1), _f32(rng, 3, 2, 1, 1)
    model = _model(
        [
            helper.make_node("Conv", ["x", "W1"], ["a"], name="conv1"),
            helper.make_node("Conv", ["x", "W2"], ["b"], name="conv2"),
            helper.make_node("Add", ["a", "b"], ["y"], name="add"),
        ],
        [_vi("x", [1, 2, 4, 4])],
        [_vi("y", [1, 3, 4, 4])],
        [_init(w1, "W1"), _init(w2, "W2")],
    )
    return _prepare(model, tmp_path / "add2.onnx"), (w1, w2)


def test_add_of_two_int8_convs_quantizes_both_inputs(tmp_path):
    """Both INT8: both Add inputs quantized (a with amax(a), b with amax(b)). Pinning conv1 removes the Q/DQ
    that conv1 motivates (on ``b``) and keeps the one conv2 motivates (on ``a``)."""
    rng = _rng(6)
    prepared, (w1, w2) = _two_conv_add_model(tmp_path, rng)
    candidates = list_candidates(prepared, op_types=TRT)
    builder = QdqBuilder(prepared, candidates, _hand_ranges(x=3.0, a=1.5, b=2.5, y=4.0))

    both = builder.build([])
    _check(both)
    assert count_qdq(both) == _qdq(q=4, dq=6)
    _assert_activation_qdq(both, "add", 0, "a", 1.5)
    _assert_activation_qdq(both, "add", 1, "b", 2.5)

    one = builder.build(["conv1"])
    _check(one)
    assert count_qdq(one) == _qdq(q=2, dq=3)
    _assert_no_dq_into(one, "conv1")
    _assert_activation_qdq(one, "conv2", 0, "x", 3.0)
    _assert_activation_qdq(one, "add", 0, "a", 1.5)
    _assert_fp32_input(one, "add", 1, "b")

    none = builder.build(["conv1", "conv2"])
    assert count_qdq(none) == _qdq()

    x = _uniform(rng, (1, 2, 4, 4), -2.5, 2.5)
    w1_dq, w2_dq = _weight_ref(w1, 0)[2], _weight_ref(w2, 0)[2]
    a8, b8 = _conv2d(_fq(x, 3.0), w1_dq), _conv2d(_fq(x, 3.0), w2_dq)
    _close(_run(both, {"x": x})["y"], _fq(a8, 1.5) + _fq(b8, 2.5))
    _close(_run(one, {"x": x})["y"], _fq(_conv2d(x, w1), 1.5) + b8)


def _add_constant_model(tmp_path, rng):
    """::

        x [1,2,3,3] --Conv "conv" (W 3x2x1x1)--> a --Add "add" (a, K [1,3,1,1])--> y (graph output)
    """
    w, k = _f32(rng, 3, 2, 1, 1), _f32(rng, 1, 3, 1, 1)
    model = _model(
        [
            helper.make_node("Conv", ["x", "W"], ["a"], name="conv"),
            helper.make_node("Add", ["a", "K"], ["y"], name="add"),
        ],
        [_vi("x", [1, 2, 3, 3])],
        [_vi("y", [1, 3, 3, 3])],
        [_init(w, "W"), _init(k, "K")],
    )
    return _prepare(model, tmp_path / "add_const.onnx"), (w, k)


def test_add_with_constant_input_gets_no_qdq_in_trt(tmp_path):
    """The Add-constant model: recipe trt never quantizes the constant ``K``."""
    rng = _rng(7)
    prepared, _ = _add_constant_model(tmp_path, rng)
    qdq = QdqBuilder(prepared, list_candidates(prepared, op_types=TRT), _hand_ranges(x=2.0, a=3.0)).build([])
    _check(qdq)
    assert count_qdq(qdq) == _qdq(q=1, dq=2)
    _assert_fp32_input(qdq, "add", 0, "a")
    _assert_fp32_input(qdq, "add", 1, "K")


# ---------------------------------------------------------------------------------------------------------
# 4. Weight axes of Gemm, MatMul, ConvTranspose; MatMul of two activations
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trans_b, axis", [(0, 1), (1, 0)])
def test_gemm_weight_axis_follows_transb(tmp_path, trans_b, axis):
    """::

        x [2,6] --Gemm "gemm" (B [6,5] or [5,6] with transB=1, C [5])--> y [2,5]

    The output channel is B's axis 1 with transB=0 and axis 0 with transB=1: 5 scales either way.
    """
    rng = _rng(10 + trans_b)
    weight = _f32(rng, 5, 6) if trans_b else _f32(rng, 6, 5)
    bias = _f32(rng, 5)
    model = _model(
        [helper.make_node("Gemm", ["x", "B", "C"], ["y"], name="gemm", transB=trans_b)],
        [_vi("x", [2, 6])],
        [_vi("y", [2, 5])],
        [_init(weight, "B"), _init(bias, "C")],
    )
    prepared = _prepare(model, tmp_path / "gemm.onnx")
    qdq = QdqBuilder(prepared, list_candidates(prepared, op_types=TRT), _hand_ranges(x=1.75, y=9.0)).build([])
    _check(qdq)
    assert count_qdq(qdq) == _qdq(q=1, dq=2)
    _assert_activation_qdq(qdq, "gemm", 0, "x", 1.75)
    _assert_weight_dq(qdq, "gemm", 1, weight, axis=axis)
    _assert_bias_fp32(qdq, "gemm", 2, bias)
    assert _attrs(_node(qdq, "gemm")).get("transB", 0) == trans_b

    x = _uniform(rng, (2, 6), -2.0, 2.0)
    w_dq = _weight_ref(weight, axis)[2]
    w_kn = w_dq.T if trans_b else w_dq
    _close(_run(qdq, {"x": x})["y"], (_fq(x, 1.75).astype(np.float64) @ w_kn + bias).astype(np.float32))


@pytest.mark.parametrize("b_shape", [(6, 5), (2, 6, 5)])
def test_matmul_constant_b_is_quantized_on_its_last_axis(tmp_path, b_shape):
    """::

        x [2,3,6] --MatMul "mm" (M b_shape)--> y [2,3,5]
    """
    rng = _rng(20 + len(b_shape))
    m = _f32(rng, *b_shape)
    model = _model(
        [helper.make_node("MatMul", ["x", "M"], ["y"], name="mm")],
        [_vi("x", [2, 3, 6])],
        [_vi("y", [2, 3, 5])],
        [_init(m, "M")],
    )
    prepared = _prepare(model, tmp_path / "matmul.onnx")
    qdq = QdqBuilder(prepared, list_candidates(prepared, op_types=TRT), _hand_ranges(x=2.2, y=9.0)).build([])
    _check(qdq)
    assert count_qdq(qdq) == _qdq(q=1, dq=2)
    _assert_activation_qdq(qdq, "mm", 0, "x", 2.2)
    _assert_weight_dq(qdq, "mm", 1, m, axis=len(b_shape) - 1)

    x = _uniform(rng, (2, 3, 6))
    expected = np.matmul(_fq(x, 2.2).astype(np.float64), _weight_ref(m, len(b_shape) - 1)[2]).astype(np.float32)
    _close(_run(qdq, {"x": x})["y"], expected)


def _two_activation_matmul_model(tmp_path):
    """::

        a [2,4,6] --+
        b [2,6,5] --MatMul "mm"--> y [2,4,5]
    """
    model = _model(
        [helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
        [_vi("a", [2, 4, 6]), _vi("b", [2, 6, 5])],
        [_vi("y", [2, 4, 5])],
    )
    return _prepare(model, tmp_path / "mm2.onnx")


def test_matmul_of_two_activations_quantizes_both_per_tensor(tmp_path):
    """Both inputs are activations: two per-tensor Q/DQ pairs, no weight DQ, no int8 initializer."""
    rng = _rng(30)
    prepared = _two_activation_matmul_model(tmp_path)
    candidates = list_candidates(prepared, op_types=TRT)
    assert [c.name for c in candidates] == ["mm"]
    qdq = QdqBuilder(prepared, candidates, _hand_ranges(a=1.5, b=2.5, y=9.0)).build([])
    _check(qdq)
    assert count_qdq(qdq) == _qdq(q=2, dq=2)
    _assert_activation_qdq(qdq, "mm", 0, "a", 1.5)
    _assert_activation_qdq(qdq, "mm", 1, "b", 2.5)
    assert not any(v.dtype == np.int8 and v.ndim > 0 for v in _inits(qdq).values())

    a, b = _uniform(rng, (2, 4, 6)), _uniform(rng, (2, 6, 5))
    expected = np.matmul(_fq(a, 1.5).astype(np.float64), _fq(b, 2.5)).astype(np.float32)
    _close(_run(qdq, {"a": a, "b": b})["y"], expected)


def test_conv_transpose_weight_is_quantized_on_axis_1(tmp_path):
    """::

        x [1,3,4,4] --ConvTranspose "deconv" (W 3x5x3x3 = [C_in, C_out, kh, kw], B 5)--> y [1,5,6,6]
    """
    rng = _rng(40)
    w, b = _f32(rng, 3, 5, 3, 3), _f32(rng, 5)
    model = _model(
        [helper.make_node("ConvTranspose", ["x", "W", "B"], ["y"], name="deconv")],
        [_vi("x", [1, 3, 4, 4])],
        [_vi("y", [1, 5, 6, 6])],
        [_init(w, "W"), _init(b, "B")],
    )
    prepared = _prepare(model, tmp_path / "deconv.onnx")
    qdq = QdqBuilder(prepared, list_candidates(prepared, op_types=TRT), _hand_ranges(x=2.0, y=9.0)).build([])
    _check(qdq)
    assert count_qdq(qdq) == _qdq(q=1, dq=2)
    _assert_activation_qdq(qdq, "deconv", 0, "x", 2.0)
    _assert_weight_dq(qdq, "deconv", 1, w, axis=1)
    _assert_bias_fp32(qdq, "deconv", 2, b)

    x = _uniform(rng, (1, 3, 4, 4))
    _close(_run(qdq, {"x": x})["y"], _conv_transpose2d(_fq(x, 2.0), _weight_ref(w, 1)[2], b))


# ---------------------------------------------------------------------------------------------------------
# 5. Recipe extended
# ---------------------------------------------------------------------------------------------------------


def _concat_model(tmp_path, rng):
    """::

        x [1,2,3,3] --Conv "conv1" (W1 3x2x1x1)--> a --+
                   `--Conv "conv2" (W2 2x2x1x1)--> b --Concat "cat" (axis 1)--> c [1,5,3,3] (graph output)
        c --Conv "conv3" (W3 2x5x1x1)--> y
        c --Relu "relu"--> r (graph output)
    """
    w1, w2, w3 = _f32(rng, 3, 2, 1, 1), _f32(rng, 2, 2, 1, 1), _f32(rng, 2, 5, 1, 1)
    model = _model(
        [
            helper.make_node("Conv", ["x", "W1"], ["a"], name="conv1"),
            helper.make_node("Conv", ["x", "W2"], ["b"], name="conv2"),
            helper.make_node("Concat", ["a", "b"], ["c"], name="cat", axis=1),
            helper.make_node("Conv", ["c", "W3"], ["y"], name="conv3"),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
        ],
        [_vi("x", [1, 2, 3, 3])],
        [_vi("c", [1, 5, 3, 3]), _vi("y", [1, 2, 3, 3]), _vi("r", [1, 5, 3, 3])],
        [_init(w1, "W1"), _init(w2, "W2"), _init(w3, "W3")],
    )
    return _prepare(model, tmp_path / "concat.onnx"), (w1, w2, w3)


CONCAT_RANGES = dict(x=2.0, a=1.0, b=2.0, c=3.0, y=9.0, r=3.0)


def test_extended_concat_shares_one_scale_and_quantizes_its_output(tmp_path):
    """All INT8: both Concat inputs and its output use amax = max(1, 2, 3) = 3; the graph output ``c`` keeps
    its name and is produced by a DequantizeLinear; ``conv3`` and the non-candidate ``relu`` each read ``c``
    through their own Q/DQ with the shared scale."""
    rng = _rng(50)
    prepared, (w1, w2, w3) = _concat_model(tmp_path, rng)
    candidates = list_candidates(prepared, op_types=EXTENDED)
    assert [c.name for c in candidates] == ["conv1", "conv2", "cat", "conv3"]
    qdq = QdqBuilder(prepared, candidates, _hand_ranges(**CONCAT_RANGES), recipe="extended").build([])
    _check(qdq)

    shared = 3.0
    _assert_activation_qdq(qdq, "conv1", 0, "x", 2.0)
    _assert_activation_qdq(qdq, "conv2", 0, "x", 2.0)
    _assert_activation_qdq(qdq, "cat", 0, "a", shared)
    _assert_activation_qdq(qdq, "cat", 1, "b", shared)
    for name, axis_weight in (("conv1", w1), ("conv2", w2), ("conv3", w3)):
        _assert_weight_dq(qdq, name, 1, axis_weight, axis=0)

    # the graph output keeps its name and is the DQ's output
    assert [o.name for o in qdq.graph.output] == ["c", "y", "r"]
    producers = _producers(qdq)
    out_dq = producers["c"]
    assert out_dq.op_type == "DequantizeLinear", f"graph output c is produced by {out_dq.op_type}"
    out_q = producers[out_dq.input[0]]
    assert out_q.op_type == "QuantizeLinear"
    concat_out = _node(qdq, "cat").output[0]
    assert out_q.input[0] == concat_out
    assert _inits(qdq)[out_q.input[1]] == _scale(shared)
    assert _inits(qdq)[out_dq.input[1]] == _scale(shared)

    # the consumers of the Concat output read it through Q/DQ with the shared scale
    _assert_activation_qdq(qdq, "conv3", 0, concat_out, shared)
    _assert_activation_qdq(qdq, "relu", 0, concat_out, shared)
    assert count_qdq(qdq) == _qdq(q=7, dq=10)

    x = _uniform(rng, (1, 2, 3, 3))
    xq = _fq(x, 2.0)
    a = _conv2d(xq, _weight_ref(w1, 0)[2])
    b = _conv2d(xq, _weight_ref(w2, 0)[2])
    c = np.concatenate([_fq(a, shared), _fq(b, shared)], axis=1)
    got = _run(qdq, {"x": x})
    _close(got["c"], _fq(c, shared), "graph output c")
    _close(got["y"], _conv2d(_fq(c, shared), _weight_ref(w3, 0)[2]), "conv3")
    _close(got["r"], np.maximum(_fq(c, shared), 0), "relu")


def test_extended_pinned_consumer_of_int8_concat_reads_the_unquantized_tensor(tmp_path):
    rng = _rng(51)
    prepared, (w1, w2, w3) = _concat_model(tmp_path, rng)
    candidates = list_candidates(prepared, op_types=EXTENDED)
    builder = QdqBuilder(prepared, candidates, _hand_ranges(**CONCAT_RANGES), recipe="extended")
    full, pinned = builder.build([]), builder.build(["conv3"])
    _check(pinned)

    _assert_no_dq_into(pinned, "conv3")
    conv3_input = _node(pinned, "conv3").input[0]
    assert _producers(pinned)[conv3_input].name == "cat", "pinned conv3 must read the Concat output directly"
    assert _node(pinned, "conv3").input[1] == "W3"
    concat_out = _node(pinned, "cat").output[0]
    _assert_activation_qdq(pinned, "relu", 0, concat_out, 3.0)
    _assert_activation_qdq(pinned, "cat", 0, "a", 3.0)
    _assert_activation_qdq(pinned, "cat", 1, "b", 3.0)
    assert _producers(pinned)["c"].op_type == "DequantizeLinear"
    assert count_qdq(pinned) == _qdq(q=6, dq=8)

    x = _uniform(rng, (1, 2, 3, 3))
    xq = _fq(x, 2.0)
    c = np.concatenate(
        [_fq(_conv2d(xq, _weight_ref(w1, 0)[2]), 3.0), _fq(_conv2d(xq, _weight_ref(w2, 0)[2]), 3.0)], axis=1
    )
    got, got_full = _run(pinned, {"x": x}), _run(full, {"x": x})
    _close(got["y"], _conv2d(c, w3))
    np.testing.assert_array_equal(got["c"], got_full["c"])
    np.testing.assert_array_equal(got["r"], got_full["r"])


def _concat_constant_model(tmp_path, rng):
    """::

        x [1,2,3,3] --Relu "relu"--> a --+
        K [1,1,3,3] (initializer, max|K| 1) --Concat "cat" (axis 1)--> c --Conv "conv" (W 2x3x1x1)--> y
    """
    k = np.full((1, 1, 3, 3), 0.5, dtype=np.float32)
    k[0, 0, 1, 1] = -1.0
    w = _f32(rng, 2, 3, 1, 1)
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["a"], name="relu"),
            helper.make_node("Concat", ["a", "K"], ["c"], name="cat", axis=1),
            helper.make_node("Conv", ["c", "W"], ["y"], name="conv"),
        ],
        [_vi("x", [1, 2, 3, 3])],
        [_vi("y", [1, 2, 3, 3])],
        [_init(k, "K"), _init(w, "W")],
    )
    return _prepare(model, tmp_path / "concat_const.onnx")


def test_extended_concat_constant_input_uses_the_shared_scale(tmp_path):
    """"An INT8 Concat uses one scale for all its inputs and its output": the constant input's DQ must use the
    shared scale max(amax(a), max|K|, amax(c)) / 127 too, not a scale of its own."""
    prepared = _concat_constant_model(tmp_path, _rng(52))
    candidates = list_candidates(prepared, op_types=EXTENDED)
    assert [c.name for c in candidates] == ["cat", "conv"]
    qdq = QdqBuilder(prepared, candidates, _hand_ranges(a=2.0, c=2.0, y=9.0), recipe="extended").build([])
    _check(qdq)
    _assert_activation_qdq(qdq, "cat", 0, "a", 2.0)
    dq = _dq_feeding(qdq, "cat", 1)
    assert dq is not None, "the Concat's constant input is not quantized"
    scale = _inits(qdq)[dq.input[1]]
    assert scale.shape == () and scale == _scale(2.0), (
        f"Concat constant input DQ scale {scale!r}; expected the shared scale 2/127 = {_scale(2.0)!r} "
        f"(max|K|/127 = {_scale(1.0)!r} is the constant's own scale)"
    )


def test_extended_add_with_constant_input(tmp_path):
    """The Add-constant model, INT8 Add: ``a`` per-tensor Q/DQ, the constant K a per-tensor int8 initializer + DQ
    (scale max|K|/127, no axis), and the output y quantized with amax(y) and still named ``y``."""
    rng = _rng(53)
    prepared, (w, k) = _add_constant_model(tmp_path, rng)
    candidates = list_candidates(prepared, op_types=EXTENDED)
    assert [c.name for c in candidates] == ["conv", "add"]
    builder = QdqBuilder(prepared, candidates, _hand_ranges(x=2.0, a=2.5, y=3.5), recipe="extended")
    qdq = builder.build([])
    _check(qdq)
    _assert_activation_qdq(qdq, "conv", 0, "x", 2.0)
    _assert_weight_dq(qdq, "conv", 1, w, axis=0)
    _assert_activation_qdq(qdq, "add", 0, "a", 2.5)
    _assert_weight_dq(qdq, "add", 1, k, axis=None)
    assert "axis" not in _attrs(_dq_feeding(qdq, "add", 1))
    assert [o.name for o in qdq.graph.output] == ["y"]
    out_dq = _producers(qdq)["y"]
    assert out_dq.op_type == "DequantizeLinear"
    assert _inits(qdq)[out_dq.input[1]] == _scale(3.5)
    assert _producers(qdq)[out_dq.input[0]].input[0] == _node(qdq, "add").output[0]
    assert count_qdq(qdq) == _qdq(q=3, dq=5)

    x = _uniform(rng, (1, 2, 3, 3))
    a = _conv2d(_fq(x, 2.0), _weight_ref(w, 0)[2])
    expected = _fq(_fq(a, 2.5) + _weight_ref(k, None)[2], 3.5)
    _close(_run(qdq, {"x": x})["y"], expected)

    # pinned Add: nothing on its inputs (not even the constant), no output Q/DQ
    pinned = builder.build(["add"])
    _check(pinned)
    _assert_no_dq_into(pinned, "add")
    assert _node(pinned, "add").input[1] == "K"
    assert _producers(pinned)["y"].name == "add"
    assert count_qdq(pinned) == _qdq(q=1, dq=2)


def _maxpool_model(tmp_path, rng, *, indices: bool = False):
    """::

        x [1,2,4,4] --MaxPool "pool" (2x2, stride 2)--> p [1,2,2,2] --Conv "conv" (W 3x2x1x1)--> y
                                                    `--> idx [1,2,2,2] int64 (graph output; with ``indices``)
    """
    w = _f32(rng, 3, 2, 1, 1)
    idx = [helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 2, 2, 2])] if indices else []
    model = _model(
        [
            helper.make_node(
                "MaxPool", ["x"], ["p", "idx"] if indices else ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]
            ),
            helper.make_node("Conv", ["p", "W"], ["y"], name="conv"),
        ],
        [_vi("x", [1, 2, 4, 4])],
        [_vi("y", [1, 3, 2, 2]), *idx],
        [_init(w, "W")],
    )
    return _prepare(model, tmp_path / "pool.onnx"), w


@pytest.mark.parametrize("amax_x, amax_p", [(2.0, 3.0), (4.0, 3.0)])
def test_extended_maxpool_shares_scale_between_input_and_output(tmp_path, amax_x, amax_p):
    """The MaxPool model: the pool's input Q/DQ and the Q/DQ on its output edge to conv both use
    max(amax(x), amax(p)) / 127."""
    rng = _rng(54)
    prepared, w = _maxpool_model(tmp_path, rng)
    candidates = list_candidates(prepared, op_types=EXTENDED)
    assert [c.name for c in candidates] == ["pool", "conv"]
    qdq = QdqBuilder(prepared, candidates, _hand_ranges(x=amax_x, p=amax_p, y=9.0), recipe="extended").build([])
    _check(qdq)
    shared = max(amax_x, amax_p)
    _assert_activation_qdq(qdq, "pool", 0, "x", shared)
    _assert_activation_qdq(qdq, "conv", 0, "p", shared)
    _assert_weight_dq(qdq, "conv", 1, w, axis=0)
    assert count_qdq(qdq) == _qdq(q=2, dq=3)

    x = _uniform(rng, (1, 2, 4, 4), -4.5, 4.5)
    expected = _conv2d(_fq(_maxpool2(_fq(x, shared)), shared), _weight_ref(w, 0)[2])
    _close(_run(qdq, {"x": x})["y"], expected)


def test_extended_maxpool_with_indices_output(tmp_path):
    """MaxPool's optional second output (int64 Indices, e.g. for MaxUnpool) is not an activation (the MaxPool model
    with ``idx``): the calibrated build succeeds, the scale shared by the pool's input and output is
    max(amax(x), amax(p)), and ``idx`` stays the int64 output of the pool with no Q/DQ."""
    rng = _rng(55)
    prepared, _ = _maxpool_model(tmp_path, rng, indices=True)
    candidates = list_candidates(prepared, op_types=EXTENDED)
    assert [c.name for c in candidates] == ["pool", "conv"]
    feeds = [{"x": _uniform(rng, (1, 2, 4, 4))} for _ in range(3)]
    ranges = calibrate(prepared, feeds, tensors=tensors_to_calibrate(prepared, candidates, "extended"), fingerprint="t")
    qdq = QdqBuilder(prepared, candidates, ranges, recipe="extended").build([])
    _check(qdq)
    shared = max(ranges.amax["x"], ranges.amax["p"])
    _assert_activation_qdq(qdq, "pool", 0, "x", shared)
    _assert_activation_qdq(qdq, "conv", 0, "p", shared)
    assert _producers(qdq)["idx"].name == "pool", "the int64 Indices output must not be quantized"
    assert count_qdq(qdq) == _qdq(q=2, dq=3)


# ---------------------------------------------------------------------------------------------------------
# 6-9. Mixed model: pinned layers, unknown names, determinism, tensors_to_calibrate
# ---------------------------------------------------------------------------------------------------------


def _mixed_model(tmp_path, rng):
    """::

        x [1,3,8,8] --Conv "c1" (W1 4x3x3x3, B1, pads 1)--> a --Relu "relu"--> r --MaxPool "mp" (2x2)--> p --+
          `--AveragePool "ap" (2x2)--> q -----------------------------------------------------Concat "cat"--> c
        c --Conv "c2" (W2 7x7x1x1)--> d ; Add "add" (d, c)--> e ; Mul "mul" (e, K [1,7,1,1])--> f
        f --Flatten "flat"--> g [1,112] --Gemm "gemm" (G [112,5], C [5])--> h --MatMul "mm" (M [5,3])--> y [1,3]
    """
    inits = {
        "W1": _f32(rng, 4, 3, 3, 3), "B1": _f32(rng, 4), "W2": _f32(rng, 7, 7, 1, 1), "K": _f32(rng, 1, 7, 1, 1),
        "G": _f32(rng, 112, 5, scale=0.2), "C": _f32(rng, 5), "M": _f32(rng, 5, 3),
    }
    model = _model(
        [
            helper.make_node("Conv", ["x", "W1", "B1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["a"], ["r"], name="relu"),
            helper.make_node("MaxPool", ["r"], ["p"], name="mp", kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("AveragePool", ["x"], ["q"], name="ap", kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Concat", ["p", "q"], ["c"], name="cat", axis=1),
            helper.make_node("Conv", ["c", "W2"], ["d"], name="c2"),
            helper.make_node("Add", ["d", "c"], ["e"], name="add"),
            helper.make_node("Mul", ["e", "K"], ["f"], name="mul"),
            helper.make_node("Flatten", ["f"], ["g"], name="flat"),
            helper.make_node("Gemm", ["g", "G", "C"], ["h"], name="gemm"),
            helper.make_node("MatMul", ["h", "M"], ["y"], name="mm"),
        ],
        [_vi("x", [1, 3, 8, 8])],
        [_vi("y", [1, 3])],
        [_init(v, k) for k, v in inits.items()],
    )
    return _prepare(model, tmp_path / "mixed.onnx"), inits


MIXED_CANDIDATES = {
    "trt": ["c1", "c2", "gemm", "mm"],
    "extended": ["c1", "mp", "ap", "cat", "c2", "add", "mul", "gemm", "mm"],
}
# the inputs an INT8 layer quantizes (activations and constant weights)
MIXED_QUANTIZED_INPUTS = {
    "c1": (0, 1), "mp": (0,), "ap": (0,), "cat": (0, 1), "c2": (0, 1), "add": (0, 1), "mul": (0, 1),
    "gemm": (0, 1), "mm": (0, 1),
}


@pytest.fixture()
def mixed(tmp_path):
    rng = _rng(60)
    prepared, inits = _mixed_model(tmp_path, rng)
    feeds = [{"x": _uniform(rng, (1, 3, 8, 8))} for _ in range(4)]
    return prepared, inits, feeds


def _calibrated_builder(prepared, feeds, recipe: str) -> QdqBuilder:
    candidates = list_candidates(prepared, op_types=RECIPES[recipe])
    tensors = tensors_to_calibrate(prepared, candidates, recipe)
    ranges = calibrate(prepared, feeds, tensors=tensors, fingerprint="t")
    return QdqBuilder(prepared, candidates, ranges, recipe=recipe)


def _plans(names: list[str], seed: int) -> list[list[str]]:
    rng = _rng(seed)
    plans = [[], list(names)] + [[name] for name in names]
    plans += [[name for name in names if name != left_out] for left_out in names]
    plans += [sorted(rng.choice(names, size=len(names) // 2, replace=False).tolist()) for _ in range(4)]
    return plans


@pytest.mark.parametrize("recipe", ["trt", "extended"])
def test_pinned_layers_never_read_a_dequantized_tensor(mixed, recipe):
    """For many plans: no DequantizeLinear feeds any input of a pinned layer; every INT8 layer's activation
    inputs and constant weights are fed by a DequantizeLinear; every Q/DQ model is valid and runs."""
    prepared, _, feeds = mixed
    builder = _calibrated_builder(prepared, feeds, recipe)
    names = MIXED_CANDIDATES[recipe]
    assert sorted(builder.candidates) == sorted(names)
    before = prepared.model.SerializeToString(deterministic=True)
    reference = _run(prepared.model, feeds[0])["y"]
    for plan in _plans(names, seed=61):
        model = builder.build(plan)
        _check(model)
        for name in plan:
            _assert_no_dq_into(model, name)
        for name in set(names) - set(plan):
            for index in MIXED_QUANTIZED_INPUTS[name]:
                assert _dq_feeding(model, name, index) is not None, f"plan {plan}: INT8 {name}.input[{index}]"
        producers = _producers(model)
        if recipe == "trt":
            # no Q/DQ on layer (or graph) outputs: every DQ feeds an INT8 layer or a residual Add
            assert producers["y"].name == "mm"
            for node in model.graph.node:
                for tensor in node.input:
                    producer = producers.get(tensor)
                    if producer is not None and producer.op_type == "DequantizeLinear":
                        assert node.op_type == "Add" or (node.name in names and node.name not in plan), (
                            f"plan {plan}: DQ feeds {node.name} ({node.op_type})"
                        )
        got = _run(model, feeds[0])["y"]
        assert got.shape == (1, 3) and np.all(np.isfinite(got))
        if len(plan) == len(names):
            assert count_qdq(model) == _qdq(), f"all pinned ({recipe}) leaves Q/DQ nodes"
            np.testing.assert_array_equal(got, reference)
    assert prepared.model.SerializeToString(deterministic=True) == before, "build() changed the prepared model"


def test_trt_residual_add_in_mixed_model_follows_c2(mixed):
    prepared, _, feeds = mixed
    builder = _calibrated_builder(prepared, feeds, "trt")
    model = builder.build([])
    _assert_fp32_input(model, "add", 0, "d")
    assert _dq_feeding(model, "add", 1) is not None, "the residual Add's other input (c) is not quantized"
    assert _dq_feeding(builder.build(["c2"]), "add", 1) is None, "pinning c2 must remove the Add's Q/DQ"
    assert _dq_feeding(builder.build(["c1", "gemm", "mm"]), "add", 1) is not None


@pytest.mark.parametrize("recipe", ["trt", "extended"])
@pytest.mark.parametrize("bad", ["nope", "relu", "flat", "C1"])
def test_build_rejects_names_that_are_not_candidates(mixed, recipe, bad):
    prepared, _, feeds = mixed
    candidates = list_candidates(prepared, op_types=RECIPES[recipe])
    builder = QdqBuilder(prepared, candidates, _hand_ranges(), recipe=recipe)
    with pytest.raises(InputError, match=bad):
        builder.build(["c1", bad])


def test_build_rejects_excluded_and_other_recipe_layers(mixed):
    prepared, _, _ = mixed
    candidates = list_candidates(prepared, op_types=TRT, exclude=["gemm"])
    builder = QdqBuilder(prepared, candidates, _hand_ranges())
    with pytest.raises(InputError, match="gemm"):
        builder.build(["gemm"])
    with pytest.raises(InputError, match="cat"):  # an extended-only candidate in a trt plan
        builder.build(["cat"])


def test_unknown_recipe_is_an_input_error(mixed):
    prepared, _, _ = mixed
    with pytest.raises(InputError, match="recipe"):
        QdqBuilder(prepared, list_candidates(prepared, op_types=TRT), _hand_ranges(), recipe="tensorrt")


@pytest.mark.parametrize("recipe", ["trt", "extended"])
def test_builds_are_deterministic(tmp_path, recipe):
    """Two builders from two preparations and calibrations of the same file give byte-identical models for
    the same plan, whatever the plan's order and whatever was built before."""
    rng = _rng(70)
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    prepared_1, _ = _mixed_model(model_dir, rng)
    prepared_2 = prepare_model(model_dir / "mixed.onnx")
    feeds = [{"x": _uniform(rng, (1, 3, 8, 8))} for _ in range(4)]
    b1 = _calibrated_builder(prepared_1, feeds, recipe)
    b2 = _calibrated_builder(prepared_2, feeds, recipe)
    names = MIXED_CANDIDATES[recipe]
    plan = [names[0], names[-1]]

    first = b1.build(plan).SerializeToString(deterministic=True)
    assert b2.build(plan).SerializeToString(deterministic=True) == first
    assert b1.build(list(reversed(plan))).SerializeToString(deterministic=True) == first
    b1.build([])
    b1.build(names)
    assert b1.build(iter(plan)).SerializeToString(deterministic=True) == first
    assert b1.build(plan).SerializeToString() == b2.build(plan).SerializeToString()


def test_tensors_to_calibrate(mixed):
    """Inputs and outputs of the candidates and both inputs of every Add; no initializer; sorted, unique;
    and enough for every single-layer plan (a build with exactly these ranges never lacks one)."""
    prepared, inits, _ = mixed
    initializers = {init.name for init in prepared.model.graph.initializer}
    assert set(inits) <= initializers
    expected = {
        "trt": {"x", "a", "c", "d", "g", "h", "y"},  # c1 x->a, c2 c->d, gemm g->h, mm h->y, add d,c
        "extended": {"x", "a", "r", "p", "q", "c", "d", "e", "f", "g", "h", "y"},
    }
    for recipe, wanted in expected.items():
        candidates = list_candidates(prepared, op_types=RECIPES[recipe])
        tensors = tensors_to_calibrate(prepared, candidates, recipe)
        assert tensors == sorted(set(tensors)), "sorted and unique"
        assert not set(tensors) & initializers, f"initializers listed: {sorted(set(tensors) & initializers)}"
        missing = wanted - set(tensors)
        assert not missing, f"{recipe}: missing {sorted(missing)}"
        ranges = _hand_ranges(**{name: 1.0 + i for i, name in enumerate(tensors)})
        builder = QdqBuilder(prepared, candidates, ranges, recipe=recipe)
        for plan in _plans([c.name for c in candidates], seed=80):
            builder.build(plan)


def test_tensors_to_calibrate_includes_both_inputs_of_a_non_candidate_add(tmp_path):
    """``x --Conv "conv"--> c ; Add "add"(c, s)`` with a second graph input ``s``, and ``Add "bias"(c, K)``
    with a constant ``K``: both activation inputs of the residual Add are listed, ``K`` is not."""
    rng = _rng(90)
    model = _model(
        [
            helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
            helper.make_node("Add", ["c", "s"], ["y"], name="add"),
            helper.make_node("Add", ["c", "K"], ["z"], name="bias"),
        ],
        [_vi("x", [1, 2, 3, 3]), _vi("s", [1, 3, 3, 3])],
        [_vi("y", [1, 3, 3, 3]), _vi("z", [1, 3, 3, 3])],
        [_init(_f32(rng, 3, 2, 1, 1), "W"), _init(_f32(rng, 1, 3, 1, 1), "K")],
    )
    prepared = _prepare(model, tmp_path / "adds.onnx")
    candidates = list_candidates(prepared, op_types=TRT)
    tensors = tensors_to_calibrate(prepared, candidates, "trt")
    assert {"x", "c", "s"} <= set(tensors)
    assert "K" not in tensors and "W" not in tensors
    feeds = [{"x": _uniform(rng, (1, 2, 3, 3)), "s": _uniform(rng, (1, 3, 3, 3), -0.5, 0.5)} for _ in range(3)]
    ranges = calibrate(prepared, feeds, tensors=tensors, fingerprint="t")
    qdq = QdqBuilder(prepared, candidates, ranges).build([])
    _check(qdq)
    _assert_activation_qdq(qdq, "add", 1, "s", ranges.amax["s"])
    assert ranges.amax["s"] == pytest.approx(float(max(np.max(np.abs(f["s"])) for f in feeds)), rel=1e-6)
    _assert_fp32_input(qdq, "bias", 1, "K")
