"""The roofline cost model (issue 13, item 5): a layer's estimate equals a hand computation, precisions order as
their rates, and a model's total is the sum of its layers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import SAMPLES
from onnx import TensorProto, helper, numpy_helper

from precision_lab.cost import GPUS, layer_cost, model_cost, relative_cost
from precision_lab.model import list_candidates, prepare_model
from precision_lab.op_rules import WEIGHTED_OPS
from precision_lab.precisions import PrecisionPlan

H100 = GPUS["H100 SXM"]
BW = 3.35e12  # H100 SXM bytes/s
INT8_RATE, FP16_RATE, TF32_RATE, FP32_RATE = 1979e12, 989e12, 494e12, 67e12  # H100 SXM dense ops/s

# Conv: X 1x16x32x32, W 32x16x3x3, B 32, pad 1, stride 1 -> Y 1x32x32x32
CONV_SHAPES = {"x": (1, 16, 32, 32), "w": (32, 16, 3, 3), "b": (32,), "y": (1, 32, 32, 32)}
CONV_MACS = 1 * 32 * 32 * 32 * 16 * 3 * 3  # N*Cout*Hout*Wout*(Cin/groups)*kH*kW = 4_718_592
CONV_ELEMENTS = 16_384 + 4_608 + 32 + 32_768  # X + W + B + Y = 53_792

# MatMul: A [1,128,768] x B [768,3072] -> Y [1,128,3072]
MM_SHAPES = {"a": (1, 128, 768), "w": (768, 3072), "y": (1, 128, 3072)}
MM_MACS = 1 * 128 * 768 * 3072  # batch*M*K*N = 301_989_888
MM_ELEMENTS = 98_304 + 2_359_296 + 393_216  # A + B + Y = 2_850_816


def _conv(name: str = "conv", x: str = "x", w: str = "w", b: str = "b", y: str = "y") -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w, b], [y], name=name, pads=[1, 1, 1, 1], kernel_shape=[3, 3])


def _matmul(name: str = "mm", a: str = "a", w: str = "w", y: str = "y") -> onnx.NodeProto:
    return helper.make_node("MatMul", [a, w], [y], name=name)


def _roofline(macs: int, rate: float, nbytes: int) -> float:
    return max(2 * macs / rate, nbytes / BW)


def test_the_default_gpu_is_h100_sxm_with_the_issues_dense_rates():
    assert (H100.int8_tops, H100.fp16_tflops, H100.tf32_tflops, H100.fp32_tflops, H100.bandwidth_tbs) == (
        1979, 989, 494, 67, 3.35)
    assert set(GPUS) >= {"H100 SXM", "A100 SXM 80GB", "L4", "L40S", "RTX 4090", "Jetson AGX Orin"}
    assert all(gpu.source for gpu in GPUS.values())
    assert "derived" in GPUS["Jetson AGX Orin"].source and "derived" in GPUS["L4"].source


def test_conv_fp16_is_memory_bound_and_equals_the_hand_computation():
    cost = layer_cost(_conv(), CONV_SHAPES, "fp16", H100)
    assert cost.macs == CONV_MACS == 4_718_592
    assert cost.bytes == 2 * CONV_ELEMENTS == 107_584
    assert cost.compute_seconds == pytest.approx(9_437_184 / FP16_RATE, rel=1e-12)  # 9.54 ns
    assert cost.memory_seconds == pytest.approx(107_584 / BW, rel=1e-12)  # 32.1 ns
    assert cost.bound == "memory" and cost.seconds == pytest.approx(107_584 / BW, rel=1e-12)


def test_conv_int8_reads_one_byte_keeps_the_bias_fp32_and_writes_the_surrounding_precision():
    cost = layer_cost(_conv(), CONV_SHAPES, "int8", H100)  # output at FP16 (the default)
    assert cost.bytes == 16_384 * 1 + 4_608 * 1 + 32 * 4 + 32_768 * 2 == 86_656
    assert cost.seconds == pytest.approx(86_656 / BW, rel=1e-12)  # memory-bound: compute is 4.8 ns
    in_fp32 = layer_cost(_conv(), CONV_SHAPES, "int8", H100, int8_output="fp32")
    assert in_fp32.bytes == 16_384 + 4_608 + 32 * 4 + 32_768 * 4 == 152_192


def test_conv_true_fp32_is_compute_bound_and_tf32_is_not():
    true_fp32 = layer_cost(_conv(), CONV_SHAPES, "fp32", H100, fp32_mode="fp32")
    assert true_fp32.bytes == 4 * CONV_ELEMENTS == 215_168
    assert true_fp32.bound == "compute"
    assert true_fp32.seconds == pytest.approx(9_437_184 / FP32_RATE, rel=1e-12)  # 140.9 ns > 64.2 ns of memory
    tf32 = layer_cost(_conv(), CONV_SHAPES, "fp32", H100)  # TF32 by default
    assert tf32.compute_seconds == pytest.approx(9_437_184 / TF32_RATE, rel=1e-12)  # 19.1 ns
    assert tf32.bound == "memory" and tf32.seconds == pytest.approx(215_168 / BW, rel=1e-12)


def test_matmul_equals_the_hand_computation():
    fp16 = layer_cost(_matmul(), MM_SHAPES, "fp16", H100)
    assert fp16.macs == MM_MACS == 301_989_888
    assert fp16.bytes == 2 * MM_ELEMENTS == 5_701_632
    assert fp16.bound == "memory" and fp16.seconds == pytest.approx(5_701_632 / BW, rel=1e-12)  # 1.70 us
    int8 = layer_cost(_matmul(), MM_SHAPES, "int8", H100)
    assert int8.bytes == 98_304 + 2_359_296 + 393_216 * 2 == 3_244_032
    assert int8.seconds == pytest.approx(3_244_032 / BW, rel=1e-12)  # 0.97 us; compute 0.31 us
    true_fp32 = layer_cost(_matmul(), MM_SHAPES, "fp32", H100, fp32_mode="fp32")
    assert true_fp32.bytes == 4 * MM_ELEMENTS == 11_403_264
    assert true_fp32.bound == "compute"
    assert true_fp32.seconds == pytest.approx(603_979_776 / FP32_RATE, rel=1e-12)  # 9.01 us > 3.40 us


def test_gemm_and_conv_transpose_macs():
    gemm = helper.make_node("Gemm", ["a", "w", "c"], ["y"], name="g", transA=1, transB=1)
    shapes = {"a": (64, 8), "w": (16, 64), "c": (16,), "y": (8, 16)}  # A^T [8,64] x W^T [64,16]
    assert layer_cost(gemm, shapes, "fp16").macs == 8 * 16 * 64
    deconv = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="d", strides=[2, 2])
    shapes = {"x": (2, 8, 5, 5), "w": (8, 4, 3, 3), "y": (2, 4, 11, 11)}
    assert layer_cost(deconv, shapes, "fp16").macs == 2 * 8 * 5 * 5 * 4 * 3 * 3  # N*Cin*Hin*Win*(Cout/g)*kH*kW


def test_a_compute_bound_layer_orders_int8_fp16_tf32_fp32():
    shapes = {"x": (1, 256, 32, 32), "w": (256, 256, 3, 3), "b": (256,), "y": (1, 256, 32, 32)}
    costs = [
        layer_cost(_conv(), shapes, "int8", H100),
        layer_cost(_conv(), shapes, "fp16", H100),
        layer_cost(_conv(), shapes, "fp32", H100, fp32_mode="tf32"),
        layer_cost(_conv(), shapes, "fp32", H100, fp32_mode="fp32"),
    ]
    assert all(cost.bound == "compute" for cost in costs)
    times = [cost.seconds for cost in costs]
    assert times == sorted(times) and len(set(times)) == 4
    flops = 2 * 256 * 32 * 32 * 256 * 3 * 3
    assert times == pytest.approx([flops / r for r in (INT8_RATE, FP16_RATE, TF32_RATE, FP32_RATE)], rel=1e-12)


def test_a_non_weighted_op_moves_bytes_and_a_view_op_costs_nothing():
    relu = layer_cost(helper.make_node("Relu", ["y"], ["r"], name="relu"), {"y": (1, 32, 32, 32), "r": (1, 32, 32, 32)},
                      "fp16", H100)
    assert (relu.macs, relu.bytes, relu.compute_seconds) == (0, 131_072, 0.0)
    reshape = helper.make_node("Reshape", ["y", "shape"], ["r"], name="reshape")
    assert layer_cost(reshape, {"y": (4, 4), "r": (16,)}, "fp32", H100).seconds == 0.0


def test_unknown_shapes_and_precisions_are_refused():
    with pytest.raises(ValueError, match="static"):
        layer_cost(_conv(), {**CONV_SHAPES, "x": (None, 16, 32, 32)}, "fp16", H100)
    with pytest.raises(ValueError, match="precision"):
        layer_cost(_conv(), CONV_SHAPES, "bf16", H100)
    with pytest.raises(ValueError, match="fp32_mode"):
        layer_cost(_conv(), CONV_SHAPES, "fp32", H100, fp32_mode="fast")


def _conv_relu_matmul() -> onnx.ModelProto:
    """Conv (16 -> 32 channels, 3x3, pad 1) -> Relu -> MatMul by a [32, 64] weight on the last axis."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32), "conv.w"),
        numpy_helper.from_array(np.zeros(32, np.float32), "conv.b"),
        numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32), "mm.w"),
    ]
    nodes = [
        _conv("conv", "x", "conv.w", "conv.b", "conv"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        _matmul("mm", "relu", "mm.w", "out"),
    ]
    graph = helper.make_graph(
        nodes, "crm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 32, 32, 64])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_model_cost_is_the_sum_of_the_hand_computed_layers():
    model = _conv_relu_matmul()
    mm_macs = 1 * 32 * 32 * 64 * 32  # Y [1,32,32,64] x K 32 = 2_097_152
    # INT8 + FP16 engine: conv INT8 (output FP16), relu FP16 (not a candidate), mm FP32 at TF32
    cost = model_cost(model, PrecisionPlan({"mm": "fp32"}), candidates=["conv", "mm"])
    expected = {
        "conv": _roofline(CONV_MACS, INT8_RATE, 86_656),  # as in the INT8 Conv test
        "relu": _roofline(0, FP16_RATE, (32_768 + 32_768) * 2),
        "mm": _roofline(mm_macs, TF32_RATE, (32_768 + 2_048 + 65_536) * 4),  # memory-bound: 119.8 ns
    }
    assert [(layer.name, layer.precision) for layer in cost.layers] == [("conv", "int8"), ("relu", "fp16"),
                                                                         ("mm", "fp32")]
    assert {layer.name: layer.seconds for layer in cost.layers} == pytest.approx(expected, rel=1e-12)
    assert cost.seconds == pytest.approx(sum(expected.values()), rel=1e-12)
    assert cost.by_precision() == pytest.approx({"int8": expected["conv"], "fp16": expected["relu"],
                                                 "fp32": expected["mm"]}, rel=1e-12)

    # INT8/FP32 two-level default: a non-candidate follows default, a named one the plan; INT8 writes FP32
    two_level = model_cost(model, PrecisionPlan({"conv": "fp16", "relu": "fp16"}), candidates=["conv", "mm"],
                           default="fp32")
    expected = [
        _roofline(CONV_MACS, FP16_RATE, 2 * CONV_ELEMENTS),
        _roofline(0, FP16_RATE, (32_768 + 32_768) * 2),
        _roofline(mm_macs, INT8_RATE, 32_768 + 2_048 + 65_536 * 4),
    ]
    assert [layer.seconds for layer in two_level.layers] == pytest.approx(expected, rel=1e-12)
    assert two_level.seconds == pytest.approx(sum(expected), rel=1e-12)


def test_model_cost_refuses_names_the_model_does_not_have():
    with pytest.raises(ValueError, match="conv9"):
        model_cost(_conv_relu_matmul(), PrecisionPlan({"conv9": "fp32"}), candidates=["conv", "mm"])


@pytest.mark.parametrize("name", ["plain_cnn", "transformer_block"])
def test_sample_models_cost_int8_below_fp16_below_fp32(name):
    prepared = prepare_model(SAMPLES / f"{name}.onnx")
    candidates = list_candidates(prepared, op_types=WEIGHTED_OPS)
    layers = [c.name for c in candidates]
    all_int8 = model_cost(prepared, PrecisionPlan(), candidates=candidates)
    all_fp16 = model_cost(prepared, PrecisionPlan({layer: "fp16" for layer in layers}), candidates=candidates)
    all_fp32 = model_cost(prepared, PrecisionPlan.fp32(layers), candidates=candidates, default="fp32")
    assert 0 < all_int8.seconds < all_fp16.seconds < all_fp32.seconds
    assert relative_cost(all_int8, all_fp16) < 1 < relative_cost(all_fp32, all_fp16)
    assert relative_cost(all_fp16, all_fp16) == 1.0
