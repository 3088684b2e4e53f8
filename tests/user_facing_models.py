"""Small generated models for the user-facing tests (tests/test_user_facing*.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(nodes, inputs, outputs, initializers, path: Path) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def mixed_scale_concat(path: Path) -> Path:
    """YOLO-like output: ``out`` [1, 3, 8, 8] = Concat(box conv x3000, mid conv x100, score conv x0.001).

    ::

        x -> conv_box   (1 channel, weights x3000) -+
        x -> conv_mid   (1 channel, weights x100)  -+-> concat -> out
        x -> conv_score (1 channel, weights x0.001)-+

    In INT8 (recipe extended) the Concat's single scale, set by channel 0, zeroes channel 2 and keeps channel 1:
    the slice ``out:1:1:3`` passes while channel 2 collapses, hidden by channel 1."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []
    for name, scale in (("box", 3000.0), ("mid", 100.0), ("score", 0.001)):
        weight = (rng.standard_normal((1, 3, 3, 3)) * scale).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w_{name}"))
        nodes.append(helper.make_node("Conv", ["x", f"w_{name}"], [f"y_{name}"], name=f"conv_{name}", pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Concat", ["y_box", "y_mid", "y_score"], ["out"], name="concat", axis=1))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])
    return _save(nodes, [x], [out], inits, path)


def damped_and_amplified(path: Path) -> Path:
    """Two convolutions whose own INT8 errors and effects on the output rank in opposite orders::

        x -> x[0.001, 1, 1] -> conv_loud (one weight 40x the others per channel) -> x0.001 -+
        x ------------------> conv_quiet (weights of one magnitude)          -> x30    -+-> add -> out

    ``conv_loud``'s large weights (on the nearly silent input channel 0) set coarse INT8 steps for the small
    weights that make its output, but that output is damped a thousandfold; ``conv_quiet`` rounds well, but
    whatever error it has is amplified thirtyfold into ``out``."""
    rng = np.random.default_rng(0)
    loud = (rng.standard_normal((4, 3, 3, 3)) * 0.05).astype(np.float32)
    loud[:, 0, 1, 1] = 2.0  # one large weight per output channel sets that channel's INT8 step
    quiet = (rng.choice([-1.0, 1.0], (4, 3, 3, 3)) * rng.uniform(0.18, 0.22, (4, 3, 3, 3))).astype(np.float32)
    inits = [
        numpy_helper.from_array(loud, "w_loud"),
        numpy_helper.from_array(quiet, "w_quiet"),
        numpy_helper.from_array(np.array([1e-3, 1.0, 1.0], np.float32).reshape(1, 3, 1, 1), "silence"),
        numpy_helper.from_array(np.array(1e-3, np.float32), "damp"),
        numpy_helper.from_array(np.array(30.0, np.float32), "gain"),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "silence"], ["x_loud"], name="silence_mul"),
        helper.make_node("Conv", ["x_loud", "w_loud"], ["y_loud"], name="conv_loud", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w_quiet"], ["y_quiet"], name="conv_quiet", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["y_loud", "damp"], ["z_loud"], name="damp_mul"),
        helper.make_node("Mul", ["y_quiet", "gain"], ["z_quiet"], name="gain_mul"),
        helper.make_node("Add", ["z_loud", "z_quiet"], ["out"], name="add"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])
    return _save(nodes, [x], [out], inits, path)


def bias_free_cnn(path: Path) -> Path:
    """``x`` (1x3x16x16) -> conv1 -> Relu -> conv2 -> Relu -> conv3 -> ``out``, no biases: every output is made
    of its input alone, so an input a few INT8 steps tall (a quiet feed under ranges set by loud ones) keeps its
    quantization error all the way out, where a bias would have drowned it."""
    rng = np.random.default_rng(0)
    shapes = {"w1": (8, 3, 3, 3), "w2": (8, 8, 3, 3), "w3": (4, 8, 3, 3)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in shapes.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["out"], name="conv3", pads=[1, 1, 1, 1]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 16, 16])
    return _save(nodes, [x], [out], inits, path)


def symbolic_output(path: Path) -> Path:
    """``y`` = x @ W (judged) and ``idx`` = Cast(NonZero(x)): ``idx``'s last dimension is known only at run time,
    so an ``--output-slice`` on it can be checked only while comparing."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32), "W")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"),
        helper.make_node("NonZero", ["x"], ["nz"], name="nonzero"),
        helper.make_node("Cast", ["nz"], ["idx"], name="cast", to=TensorProto.FLOAT),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6]),
        helper.make_tensor_value_info("idx", TensorProto.FLOAT, [2, None]),
    ]
    return _save(nodes, [x], outputs, [weight], path)


def cancelling_batchnorm(path: Path) -> Path:
    """``out`` = BatchNorm(Conv(x) + 1e4, mean 1e4): the original model computes a small signal (about 0.01) as
    the difference of two numbers near 1e4, so float32 rounding alone costs it several percent; the prepared
    model folds the BatchNorm into the Conv and computes it exactly. The all-FP32 plan therefore already uses
    a sizeable share of a rel-l2 tolerance: a noise floor."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((2, 3, 3, 3)) * 0.001).astype(np.float32), "w"),
        numpy_helper.from_array(np.full(2, 1e4, np.float32), "b"),
        numpy_helper.from_array(np.ones(2, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(2, np.float32), "beta"),
        numpy_helper.from_array(np.full(2, 1e4, np.float32), "mean"),
        numpy_helper.from_array(np.ones(2, np.float32), "var"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["y", "gamma", "beta", "mean", "var"], ["out"], name="bn"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 8, 8])
    return _save(nodes, [x], [out], inits, path)


def heavy_cnn(path: Path, layers: int = 16, size: int = 512) -> Path:
    """``layers`` 3x3 Conv + Relu layers of 64 channels on a ``size`` x ``size`` image, then a global average
    pool: small on disk (weights 0.5 MB) but one inference costs ``layers`` x 4.8 GFLOP at 512x512, seconds on
    one core. ONNX Runtime runs it in C++ without returning to Python, so a worker evaluating it cannot react to
    a signal before the inference ends: what an interrupted sweep of a big model waits for."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []
    previous, channels = "x", 3
    for index in range(layers):
        weight = (rng.standard_normal((64, channels, 3, 3)) / np.sqrt(channels * 9)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{index}"))
        nodes.append(helper.make_node("Conv", [previous, f"w{index}"], [f"c{index}"], name=f"conv{index}", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"r{index}"], name=f"relu{index}"))
        previous, channels = f"r{index}", 64
    nodes.append(helper.make_node("GlobalAveragePool", [previous], ["y"], name="pool"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 1, 1])
    return _save(nodes, [x], [y], inits, path)
