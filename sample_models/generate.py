#!/usr/bin/env python
"""Build the small sample ONNX models used to exercise precision_lab.

Every model is built deterministically with ``onnx.helper`` + numpy (fixed
seeds), opset 17, IR version 8, static shapes, one float32 input named
``input`` with batch 1.  Some models contain *planted* INT8-sensitive layers:
the tensor feeding such a layer mixes a few channels of huge magnitude (x1000)
with ordinary channels that matter just as much for the output, so any single
per-tensor INT8 scale rounds the ordinary channels to zero.  See README.md for
the expected plan of every model.

Usage::

    python sample_models/generate.py            # writes next to this file
    python sample_models/generate.py --out DIR

Running it twice produces byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
BIG = 1000.0  # magnitude factor of the planted outlier channels

# Expected results, consumed by check_planted.py (and handy for tests).
EXPECTED = {
    "plain_cnn.onnx": {"recipe": "trt", "tolerance": 0.05, "planted": ["conv4"]},
    "two_planted_cnn.onnx": {"recipe": "trt", "tolerance": 0.05, "planted": ["conv3", "conv6"]},
    "robust_cnn.onnx": {"recipe": "trt", "tolerance": 0.05, "planted": []},
    "transformer_block.onnx": {"recipe": "trt", "tolerance": 0.05, "planted": ["mlp_fc2"]},
    "residual_branches.onnx": {"recipe": "trt", "tolerance": 0.05, "planted": ["conv_a2"]},
    "nonweighted_fatal.onnx": {"recipe": "extended", "tolerance": 0.05, "planted": ["concat1", "mul1"]},
}


class GraphBuilder:
    """Tiny helper around onnx.helper that keeps names unique and readable."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.names: set[str] = set()

    # -- constants -----------------------------------------------------
    def const(self, name: str, value) -> str:
        arr = np.asarray(value, dtype=np.float32) if not isinstance(value, np.ndarray) else value
        assert name not in self.names, name
        self.names.add(name)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def const_i64(self, name: str, value) -> str:
        return self.const(name, np.asarray(value, dtype=np.int64))

    # -- nodes ---------------------------------------------------------
    def node(self, op: str, name: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        assert name not in self.names, name
        self.names.add(name)
        outs = [name if n_out == 1 else f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, name: str, x: str, w: np.ndarray, b: np.ndarray, stride: int = 1) -> str:
        k = w.shape[-1]
        return self.node(
            "Conv", name,
            [x, self.const(f"{name}.weight", w.astype(np.float32)), self.const(f"{name}.bias", b.astype(np.float32))],
            kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride, stride],
        )

    def relu(self, name: str, x: str) -> str:
        return self.node("Relu", name, [x])

    # -- random weights ------------------------------------------------
    def conv_w(self, cout: int, cin: int, k: int = 3, gain: float = 1.0) -> np.ndarray:
        fan_in = cin * k * k
        return (self.rng.standard_normal((cout, cin, k, k)) * gain * np.sqrt(2.0 / fan_in)).astype(np.float32)

    def bias(self, n: int, scale: float = 0.05) -> np.ndarray:
        return (self.rng.standard_normal(n) * scale).astype(np.float32)

    def finish(self, name: str, in_shape, outputs: list[tuple[str, list[int]]]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_shape))],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, s) for o, s in outputs],
            initializer=self.inits,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
            producer_name="precision_lab.sample_models", producer_version="1",
        )
        onnx.checker.check_model(model, full_check=True)
        return model


# ---------------------------------------------------------------------------
# planted building blocks
# ---------------------------------------------------------------------------

def outlier_producer_w(g: GraphBuilder, cout: int, cin: int, n_big: int) -> np.ndarray:
    """Conv weights whose first ``n_big`` output channels are x1000 (positive
    weights so that, fed by non-negative ReLU features, they never die)."""
    w = g.conv_w(cout, cin)
    # |w| makes these channels mean-heavy; /4 keeps them ~BIG x an ordinary channel
    w[:n_big] = np.abs(w[:n_big]) * (BIG / 4.0)
    return w


def outlier_consumer_w(g: GraphBuilder, cout: int, cin: int, n_big: int, n_out_big: int) -> np.ndarray:
    """Block-structured conv weights for the planted layer.

    Output channels [0, n_out_big) read only the ``n_big`` huge input channels
    with weights scaled down by 1/1000 (so they are ordinary again); the other
    output channels read only the ordinary input channels.  Each output channel
    therefore has homogeneous weights (per-channel weight quantisation is
    harmless), while the *activation* mixes x1000 and x1 channels: any single
    per-tensor int8 scale rounds the ordinary channels to zero.
    """
    w = np.zeros((cout, cin, 3, 3), np.float32)
    w_big = g.conv_w(n_out_big, n_big) / BIG
    w_ord = g.conv_w(cout - n_out_big, cin - n_big)
    # a positive mean makes the ordinary path carry the image-level (DC) signal,
    # so losing it changes the pooled features, not just spatial detail
    w_ord += 0.5 * np.sqrt(2.0 / ((cin - n_big) * 9))
    w[:n_out_big, :n_big] = w_big
    w[n_out_big:, n_big:] = w_ord
    return w


def head(g: GraphBuilder, x: str, c: int, n_cls: int = 10, offset: float = 0.3) -> str:
    gap = g.node("GlobalAveragePool", "gap", [x])
    flat = g.node("Flatten", "flatten", [gap], axis=1)
    # a common positive offset makes every logit a coherent read-out of all
    # features (keeps the head's own INT8 rounding noise small)
    w = ((g.rng.standard_normal((n_cls, c)) + offset) * np.sqrt(1.0 / c)).astype(np.float32)
    return g.node("Gemm", "fc", [flat, g.const("fc.weight", w), g.const("fc.bias", g.bias(n_cls))], transB=1)


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------

def plain_cnn() -> onnx.ModelProto:
    g = GraphBuilder(seed=101)
    C, NB = 16, 2
    x = g.relu("relu1", g.conv("conv1", "input", g.conv_w(C, 3), g.bias(C), stride=2))   # 16x16x16
    x = g.relu("relu2", g.conv("conv2", x, g.conv_w(C, C), g.bias(C)))
    x = g.relu("relu3", g.conv("conv3", x, outlier_producer_w(g, C, C, NB), g.bias(C)))   # 2 channels x1000
    x = g.relu("relu4", g.conv("conv4", x, outlier_consumer_w(g, C, C, NB, 2), g.bias(C)))  # planted
    x = g.relu("relu5", g.conv("conv5", x, g.conv_w(24, C), g.bias(24), stride=2))       # 24x8x8
    x = g.relu("relu6", g.conv("conv6", x, g.conv_w(24, 24), g.bias(24)))
    y = head(g, x, 24)
    return g.finish("plain_cnn", [1, 3, 32, 32], [(y, [1, 10])])


def two_planted_cnn() -> onnx.ModelProto:
    g = GraphBuilder(seed=202)
    C, NB = 16, 2
    x = g.relu("relu1", g.conv("conv1", "input", g.conv_w(C, 3), g.bias(C), stride=2))
    x = g.relu("relu2", g.conv("conv2", x, outlier_producer_w(g, C, C, NB), g.bias(C)))
    x = g.relu("relu3", g.conv("conv3", x, outlier_consumer_w(g, C, C, NB, 2), g.bias(C)))  # planted A
    s = g.relu("relu4", g.conv("conv4", x, g.conv_w(C, C), g.bias(C)))
    x = g.relu("relu5", g.conv("conv5", s, outlier_producer_w(g, C, C, NB), g.bias(C)))
    x = g.conv("conv6", x, outlier_consumer_w(g, C, C, NB, 2), g.bias(C))                 # planted B
    x = g.relu("relu6", g.node("Add", "add1", [x, s]))                                   # residual
    x = g.relu("relu7", g.conv("conv7", x, g.conv_w(24, C), g.bias(24), stride=2))
    y = head(g, x, 24)
    return g.finish("two_planted_cnn", [1, 3, 32, 32], [(y, [1, 10])])


def robust_cnn() -> onnx.ModelProto:
    g = GraphBuilder(seed=303)
    C = 16
    x = g.relu("relu1", g.conv("conv1", "input", g.conv_w(C, 3), g.bias(C), stride=2))
    x = g.relu("relu2", g.conv("conv2", x, g.conv_w(C, C), g.bias(C)))
    x = g.node("MaxPool", "maxpool1", [x], kernel_shape=[2, 2], strides=[2, 2])  # 16x8x8
    y = g.relu("relu3", g.conv("conv3", x, g.conv_w(C, C), g.bias(C)))
    y = g.conv("conv4", y, g.conv_w(C, C, gain=0.5), g.bias(C))
    x = g.relu("relu4", g.node("Add", "add1", [y, x]))
    x = g.relu("relu5", g.conv("conv5", x, g.conv_w(32, C), g.bias(32), stride=2))  # 32x4x4
    x = g.relu("relu6", g.conv("conv6", x, g.conv_w(32, 32), g.bias(32)))
    y = head(g, x, 32, offset=1.0)
    return g.finish("robust_cnn", [1, 3, 32, 32], [(y, [1, 10])])


def transformer_block() -> onnx.ModelProto:
    g = GraphBuilder(seed=404)
    T, D, H, F, NB, NOB = 16, 32, 2, 64, 4, 8
    dh = D // H
    rng = g.rng

    def lin_w(din, dout, gain=1.0):
        return (rng.standard_normal((din, dout)) * gain / np.sqrt(din)).astype(np.float32)

    def linear(name, x, w, b):
        mm = g.node("MatMul", name, [x, g.const(f"{name}.weight", w)])
        return g.node("Add", f"{name}_bias", [mm, g.const(f"{name}.bias", b)])

    def layernorm(name, x):
        return g.node(
            "LayerNormalization", name,
            [x, g.const(f"{name}.weight", 1.0 + 0.1 * rng.standard_normal(D).astype(np.float32)),
             g.const(f"{name}.bias", 0.05 * rng.standard_normal(D).astype(np.float32))],
            axis=-1, epsilon=1e-5,
        )

    # --- attention ---
    h = layernorm("ln1", "input")
    q = linear("q_proj", h, lin_w(D, D), g.bias(D))
    k = linear("k_proj", h, lin_w(D, D), g.bias(D))
    v = linear("v_proj", h, lin_w(D, D), g.bias(D))
    shp = g.const_i64("heads_shape", [1, T, H, dh])
    q = g.node("Transpose", "q_transpose", [g.node("Reshape", "q_reshape", [q, shp])], perm=[0, 2, 1, 3])  # 1,H,T,dh
    k = g.node("Transpose", "k_transpose", [g.node("Reshape", "k_reshape", [k, shp])], perm=[0, 2, 3, 1])  # 1,H,dh,T
    v = g.node("Transpose", "v_transpose", [g.node("Reshape", "v_reshape", [v, shp])], perm=[0, 2, 1, 3])  # 1,H,T,dh
    s = g.node("MatMul", "attn_scores", [q, k])
    s = g.node("Mul", "attn_scale", [s, g.const("attn_scale.value", np.array(1.0 / np.sqrt(dh), np.float32))])
    p = g.node("Softmax", "attn_softmax", [s], axis=-1)
    ctx = g.node("MatMul", "attn_context", [p, v])
    ctx = g.node("Transpose", "ctx_transpose", [ctx], perm=[0, 2, 1, 3])
    ctx = g.node("Reshape", "ctx_reshape", [ctx, g.const_i64("merge_shape", [1, T, D])])
    o = linear("out_proj", ctx, lin_w(D, D), g.bias(D))
    x1 = g.node("Add", "residual1", ["input", o])

    # --- MLP with planted outlier hidden units ---
    h2 = layernorm("ln2", x1)
    w1 = lin_w(D, F)
    b1 = g.bias(F)
    w1[:, :NB] *= BIG                 # hidden units 0..3 become x1000 ...
    b1[:NB] = 2.0 * BIG               # ... and mostly positive (GELU keeps them)
    u = linear("mlp_fc1", h2, w1, b1)
    # GELU(u) = 0.5 * u * (1 + erf(u / sqrt(2)))  (opset 17 has no Gelu op)
    e = g.node("Erf", "gelu_erf", [g.node("Div", "gelu_div", [u, g.const("gelu.sqrt2", np.array(np.sqrt(2.0), np.float32))])])
    e = g.node("Add", "gelu_add", [e, g.const("gelu.one", np.array(1.0, np.float32))])
    a = g.node("Mul", "gelu_mul", [u, e])
    a = g.node("Mul", "gelu_half", [a, g.const("gelu.half", np.array(0.5, np.float32))])
    # planted down-projection: block structure (outlier rows -> first NOB
    # output columns, scaled back down; ordinary rows -> the other columns)
    w2 = np.zeros((F, D), np.float32)
    w2[:NB, :NOB] = lin_w(NB, NOB, gain=1.5) / (2.0 * BIG)
    w2[NB:, NOB:] = lin_w(F - NB, D - NOB, gain=1.5)
    m = linear("mlp_fc2", a, w2, g.bias(D))
    y = g.node("Add", "residual2", [x1, m])
    return g.finish("transformer_block", [1, T, D], [(y, [1, T, D])])


def residual_branches() -> onnx.ModelProto:
    g = GraphBuilder(seed=505)
    C, NB = 16, 2
    s1 = g.relu("relu1", g.conv("conv1", "input", g.conv_w(C, 3), g.bias(C), stride=2))   # 16x16x16
    # branch A (planted conv_a2)
    a = g.relu("relu_a1", g.conv("conv_a1", s1, outlier_producer_w(g, C, C, NB), g.bias(C)))
    a = g.relu("relu_a2", g.conv("conv_a2", a, outlier_consumer_w(g, C, C, NB, 2), g.bias(C)))
    # branch B (residual block)
    b = g.relu("relu_b1", g.conv("conv_b1", s1, g.conv_w(C, C), g.bias(C)))
    b = g.conv("conv_b2", b, g.conv_w(C, C, gain=0.5), g.bias(C))
    b = g.relu("relu_b2", g.node("Add", "add_b", [b, s1]))
    # join
    x = g.node("Concat", "concat1", [a, b], axis=1)                                      # 32 channels
    wm = g.conv_w(C, 2 * C, gain=0.7)
    wm[:, :C] *= 1.6   # branch A (the planted one) carries most of the signal
    wm[:, C:] *= 0.5
    x = g.conv("conv_merge", x, wm, g.bias(C))
    x = g.relu("relu_merge", g.node("Add", "add_merge", [x, s1]))
    y = g.conv("conv5", g.relu("relu5", g.conv("conv4", x, g.conv_w(C, C), g.bias(C))), g.conv_w(C, C, gain=0.5), g.bias(C))
    x = g.relu("relu6", g.node("Add", "add2", [y, x]))
    x = g.relu("relu7", g.conv("conv6", x, g.conv_w(24, C), g.bias(24), stride=2))
    y = head(g, x, 24)
    return g.finish("residual_branches", [1, 3, 32, 32], [(y, [1, 10])])


def nonweighted_fatal() -> onnx.ModelProto:
    g = GraphBuilder(seed=606)
    C = 16
    t1 = g.relu("relu1", g.conv("conv1", "input", g.conv_w(C, 3), g.bias(C), stride=2))   # 16x16x16
    # a raw, large-magnitude branch (x1000) and a 0..1 gated branch
    big = g.relu("relu2", g.conv("conv2", t1, np.abs(g.conv_w(4, C)) * (BIG / 4.0), g.bias(4)))
    gate = g.node("Sigmoid", "sigmoid3", [g.conv("conv3", t1, g.conv_w(12, C), g.bias(12))])
    x = g.node("Concat", "concat1", [big, gate], axis=1)                                  # fatal #1 (extended)
    # fixed per-channel normalisation (Div is not a candidate in any recipe)
    d1 = np.ones((1, C, 1, 1), np.float32)
    d1[0, :4] = BIG
    x = g.node("Div", "norm1", [x, g.const("norm1.divisor", d1)])
    x = g.relu("relu4", g.conv("conv4", x, g.conv_w(C, C), g.bias(C)))
    x = g.node("MaxPool", "maxpool1", [x], kernel_shape=[2, 2], strides=[2, 2])          # 16x8x8
    x = g.relu("relu5", g.conv("conv5", x, g.conv_w(C, C), g.bias(C)))
    c = np.ones((1, C, 1, 1), np.float32)
    c[0, :2] = BIG
    x = g.node("Mul", "mul1", [x, g.const("mul1.scale", c)])                             # fatal #2 (extended)
    d2 = (c * g.rng.uniform(0.5, 2.0, size=c.shape)).astype(np.float32)
    x = g.node("Div", "norm2", [x, g.const("norm2.divisor", d2)])
    x = g.relu("relu6", g.conv("conv6", x, g.conv_w(24, C), g.bias(24), stride=2))      # 24x4x4
    y = head(g, x, 24, offset=1.0)
    return g.finish("nonweighted_fatal", [1, 3, 32, 32], [(y, [1, 10])])


# ---------------------------------------------------------------------------
# three-level (INT8 / FP16 / FP32) models: FP16 overflow planted as well
# ---------------------------------------------------------------------------

FP16_MAX = 65504.0
# Expected three-level plans (recipe trt, precisions int8,fp16,fp32), written to expected_plans_fp16.json.
# "precisions" names the planted non-INT8 nodes; every other INT8 candidate runs INT8 and every other node
# (non-candidates: Relu, Reshape, Softmax, ...) runs FP16, as in an INT8 + FP16 TensorRT engine.
EXPECTED_FP16: dict = {}


def fp16_overflow_cnn() -> onnx.ModelProto:
    """CNN with one INT8-fragile but FP16-safe layer (conv3) and one layer whose activations overflow FP16
    (conv5, whose output is brought back to ordinary magnitude by the per-channel rescale scale5)."""
    g = GraphBuilder(seed=707)
    C, NB = 16, 2
    S = 8192.0  # magnitude of conv5: about half its outputs are past the FP16 maximum 65504
    x = g.relu("relu1", g.conv("conv1", "input", g.conv_w(C, 3), g.bias(C), stride=2))   # 16x16x16
    x = g.relu("relu2", g.conv("conv2", x, outlier_producer_w(g, C, C, NB), g.bias(C)))   # 2 channels x1000
    x = g.relu("relu3", g.conv("conv3", x, outlier_consumer_w(g, C, C, NB, 2), g.bias(C)))  # INT8-fragile, FP16-safe
    x = g.relu("relu4", g.conv("conv4", x, outlier_producer_w(g, C, C, NB), g.bias(C)))   # 2 channels x1000 again
    w5 = outlier_consumer_w(g, C, C, NB, 2) * S
    b5 = (g.bias(C) + 0.5) * S
    x = g.conv("conv5", x, w5, b5)                                                          # INT8-fragile, overflows FP16
    k = (g.rng.uniform(0.15, 0.45, size=(1, C, 1, 1)) / S).astype(np.float32)
    x = g.node("Mul", "scale5", [x, g.const("scale5.scale", k)])                            # back to ordinary
    x = g.node("Clip", "relu6_5", [x, g.const("relu6_5.min", np.array(0.0, np.float32)),
                                    g.const("relu6_5.max", np.array(6.0, np.float32))])       # ReLU6
    x = g.relu("relu6", g.conv("conv6", x, g.conv_w(24, C), g.bias(24), stride=2))       # 24x8x8
    y = head(g, x, 24)
    return g.finish("fp16_overflow_cnn", [1, 3, 32, 32], [(y, [1, 10])])


EXPECTED_FP16["fp16_overflow_cnn.onnx"] = {
    "recipe": "trt", "precision_levels": ["int8", "fp16", "fp32"], "metric": "rel-l2", "tolerance": 0.05,
    "precisions": {"conv3": "fp16", "conv5": "fp32", "scale5": "fp32"},
    "two_level_planted": ["conv3", "conv5"],
}


def layernorm_overflow_block() -> onnx.ModelProto:
    """Post-LN (BERT-style) transformer block with hand-built LayerNorms, as exporters emitted them before
    LayerNormalization existed. Its hidden states are in the hundreds, so ln1's squares and variance pass the
    FP16 maximum; ln2 sees ordinary values. mlp_fc2 is INT8-fragile but FP16-safe (outlier hidden units)."""
    g = GraphBuilder(seed=808)
    T, D, H, F, NB, NOB = 16, 32, 2, 64, 4, 8
    dh = D // H
    rng = g.rng
    G = 512.0  # magnitude of the hidden states: std about 300..500 per token, so var(x) > 65504

    def lin_w(din, dout, gain=1.0):
        return (rng.standard_normal((din, dout)) * gain / np.sqrt(din)).astype(np.float32)

    def linear(name, x, w, b):
        mm = g.node("MatMul", name, [x, g.const(f"{name}.weight", w)])
        return g.node("Add", f"{name}_bias", [mm, g.const(f"{name}.bias", b)])

    def layernorm(name, x):
        """x -> (x - mean) / sqrt(mean((x - mean)^2) + eps) * gamma + beta, over the last axis."""
        mean = g.node("ReduceMean", f"{name}_mean", [x], axes=[-1], keepdims=1)
        d = g.node("Sub", f"{name}_sub", [x, mean])
        sq = g.node("Pow", f"{name}_pow", [d, g.const(f"{name}.two", np.array(2.0, np.float32))])
        var = g.node("ReduceMean", f"{name}_var", [sq], axes=[-1], keepdims=1)
        var = g.node("Add", f"{name}_add_eps", [var, g.const(f"{name}.eps", np.array(1e-5, np.float32))])
        std = g.node("Sqrt", f"{name}_sqrt", [var])
        y = g.node("Div", f"{name}_div", [d, std])
        y = g.node("Mul", f"{name}_gamma", [y, g.const(f"{name}.weight", 1.0 + 0.1 * rng.standard_normal(D).astype(np.float32))])
        return g.node("Add", f"{name}_beta", [y, g.const(f"{name}.bias", 0.05 * rng.standard_normal(D).astype(np.float32))])

    # --- hidden states in the hundreds (stands for the network before this block) ---
    x0 = linear("embed", "input", lin_w(D, D, gain=2.0 * G), g.bias(D, scale=0.2 * G))
    # --- self-attention on x0 (projections scaled down so q, k, v are ordinary) ---
    q = linear("q_proj", x0, lin_w(D, D, gain=1.0 / G), g.bias(D))
    k = linear("k_proj", x0, lin_w(D, D, gain=1.0 / G), g.bias(D))
    v = linear("v_proj", x0, lin_w(D, D, gain=1.0 / G), g.bias(D))
    shp = g.const_i64("heads_shape", [1, T, H, dh])
    q = g.node("Transpose", "q_transpose", [g.node("Reshape", "q_reshape", [q, shp])], perm=[0, 2, 1, 3])  # 1,H,T,dh
    k = g.node("Transpose", "k_transpose", [g.node("Reshape", "k_reshape", [k, shp])], perm=[0, 2, 3, 1])  # 1,H,dh,T
    v = g.node("Transpose", "v_transpose", [g.node("Reshape", "v_reshape", [v, shp])], perm=[0, 2, 1, 3])  # 1,H,T,dh
    s = g.node("MatMul", "attn_scores", [q, k])
    s = g.node("Mul", "attn_scale", [s, g.const("attn_scale.value", np.array(1.0 / np.sqrt(dh), np.float32))])
    p = g.node("Softmax", "attn_softmax", [s], axis=-1)
    ctx = g.node("MatMul", "attn_context", [p, v])
    ctx = g.node("Transpose", "ctx_transpose", [ctx], perm=[0, 2, 1, 3])
    ctx = g.node("Reshape", "ctx_reshape", [ctx, g.const_i64("merge_shape", [1, T, D])])
    o = linear("out_proj", ctx, lin_w(D, D, gain=0.5 * G), g.bias(D))      # back to the hundreds
    z = g.node("Add", "residual1", [x0, o])
    x1 = layernorm("ln1", z)                                                 # overflows in FP16
    # --- MLP with planted outlier hidden units (as transformer_block.onnx) ---
    w1 = lin_w(D, F)
    b1 = g.bias(F)
    w1[:, :NB] *= BIG
    b1[:NB] = 2.0 * BIG
    u = linear("mlp_fc1", x1, w1, b1)
    e = g.node("Erf", "gelu_erf", [g.node("Div", "gelu_div", [u, g.const("gelu.sqrt2", np.array(np.sqrt(2.0), np.float32))])])
    e = g.node("Add", "gelu_add", [e, g.const("gelu.one", np.array(1.0, np.float32))])
    a = g.node("Mul", "gelu_mul", [u, e])
    a = g.node("Mul", "gelu_half", [a, g.const("gelu.half", np.array(0.5, np.float32))])
    w2 = np.zeros((F, D), np.float32)
    w2[:NB, :NOB] = lin_w(NB, NOB, gain=1.5) / (2.0 * BIG)
    w2[NB:, NOB:] = lin_w(F - NB, D - NOB, gain=1.5)
    m = linear("mlp_fc2", a, w2, g.bias(D))                                  # INT8-fragile, FP16-safe
    z2 = g.node("Add", "residual2", [x1, m])
    y = layernorm("ln2", z2)                                                 # ordinary values: FP16-safe
    return g.finish("layernorm_overflow_block", [1, T, D], [(y, [1, T, D])])


EXPECTED_FP16["layernorm_overflow_block.onnx"] = {
    "recipe": "trt", "precision_levels": ["int8", "fp16", "fp32"], "metric": "rel-l2", "tolerance": 0.05,
    "precisions": {"ln1_pow": "fp32", "ln1_var": "fp32", "ln1_add_eps": "fp32", "ln1_sqrt": "fp32",
                   "mlp_fc2": "fp16"},
    "two_level_planted": ["mlp_fc2"],
}


MODELS = {
    "plain_cnn.onnx": plain_cnn,
    "two_planted_cnn.onnx": two_planted_cnn,
    "robust_cnn.onnx": robust_cnn,
    "transformer_block.onnx": transformer_block,
    "residual_branches.onnx": residual_branches,
    "nonweighted_fatal.onnx": nonweighted_fatal,
}
# three-level models; their plans go to expected_plans_fp16.json (expected_plans.json lists two-level plans)
MODELS_FP16 = {
    "fp16_overflow_cnn.onnx": fp16_overflow_cnn,
    "layernorm_overflow_block.onnx": layernorm_overflow_block,
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)), help="output directory")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for fname, build in {**MODELS, **MODELS_FP16}.items():
        model = build()
        data = model.SerializeToString(deterministic=True)
        (out / fname).write_bytes(data)
        print(f"wrote {out / fname} ({len(data)} bytes)")
    (out / "expected_plans.json").write_text(json.dumps(EXPECTED, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out / 'expected_plans.json'}")
    (out / "expected_plans_fp16.json").write_text(json.dumps(EXPECTED_FP16, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out / 'expected_plans_fp16.json'}")


if __name__ == "__main__":
    main()
