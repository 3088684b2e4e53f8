"""User Q/DQ models of ``residual_branches.onnx`` for the ``--qdq-model`` tests (issue 14), made by the tools
users run (ModelOpt: the committed sample; ONNX Runtime ``quantize_static``: generated here) or built by hand
(a QAT-style export), plus helpers that run a model in plain ONNX Runtime and compare it node by node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import SAMPLES
from onnx import helper, numpy_helper

FP32 = SAMPLES / "residual_branches.onnx"
MODELOPT = SAMPLES / "modelopt" / "residual_branches.modelopt.onnx"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(count)]


def write_feeds(folder: Path, count: int = 24, seed: int = 3) -> Path:
    """``count`` uniform 0..1 feeds as ``sample_XX.npz`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, feed in enumerate(feeds(count, seed)):
        np.savez(folder / f"sample_{i:02d}.npz", **feed)
    return folder


def ort_quantize_static(
    out: Path, *, activation_symmetric: bool = True, activation_type: str = "QInt8", source: Path = FP32
) -> Path:
    """``quantize_static`` QDQ model of ``source``: per-channel int8 weights, ``activation_type`` activations."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter(feeds(16, 0))

        def get_next(self):
            return next(self._feeds, None)

    quantize_static(
        onnx.load(str(source)),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=getattr(QuantType, activation_type),
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": activation_symmetric, "WeightSymmetric": True},
    )
    return out


def qat_style(out: Path, source: Path = FP32) -> Path:
    """A QAT-style export: every Conv's activation input gets its own Q/DQ (fixed "learned" scales) and its
    weight flows FP32 initializer -> QuantizeLinear -> DequantizeLinear per output channel; nothing is shared."""
    model = onnx.load(str(source))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            x, w = node.input[0], node.input[1]
            prefix = f"{node.name}_qat"
            scale = np.float32(0.02 + 0.001 * len(nodes))
            weight_scale = (np.abs(inits[w]).reshape(inits[w].shape[0], -1).max(axis=1) / 127).astype(np.float32)
            model.graph.initializer.extend([
                numpy_helper.from_array(np.array(scale), f"{prefix}_x_scale"),
                numpy_helper.from_array(np.array(0, np.int8), f"{prefix}_x_zp"),
                numpy_helper.from_array(weight_scale, f"{prefix}_w_scale"),
                numpy_helper.from_array(np.zeros(weight_scale.shape, np.int8), f"{prefix}_w_zp"),
            ])
            nodes += [
                helper.make_node("QuantizeLinear", [x, f"{prefix}_x_scale", f"{prefix}_x_zp"], [f"{prefix}_xq"], name=f"{prefix}_xQ"),
                helper.make_node("DequantizeLinear", [f"{prefix}_xq", f"{prefix}_x_scale", f"{prefix}_x_zp"], [f"{prefix}_xdq"], name=f"{prefix}_xDQ"),
                helper.make_node("QuantizeLinear", [w, f"{prefix}_w_scale", f"{prefix}_w_zp"], [f"{prefix}_wq"], name=f"{prefix}_wQ", axis=0),
                helper.make_node("DequantizeLinear", [f"{prefix}_wq", f"{prefix}_w_scale", f"{prefix}_w_zp"], [f"{prefix}_wdq"], name=f"{prefix}_wDQ", axis=0),
            ]
            node.input[0], node.input[1] = f"{prefix}_xdq", f"{prefix}_wdq"
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def run_plain_ort(model: onnx.ModelProto | Path, data: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The first output of ``model`` on each feed, ONNX Runtime CPU with graph optimizations off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return [session.run(None, feed)[0] for feed in data]


def rel_l2(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """rel-l2 over the whole set: sqrt(sum of squared errors / sum of squared references), in float64."""
    err = sum(float(np.sum((o.astype(np.float64) - r.astype(np.float64)) ** 2)) for o, r in zip(outputs, reference))
    ref = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in reference)
    return (err / ref) ** 0.5


def node_differences(user: onnx.ModelProto, plan: onnx.ModelProto, pinned: set[str]) -> list[str]:
    """Every difference between the user's Q/DQ model and ``plan`` that pinning ``pinned`` does not explain.

    Allowed: a pinned node's inputs that read a DequantizeLinear now read that Q/DQ's FP32 source (an activation
    tensor, or an FP32 weight initializer with the FP32 model's values); Q/DQ nodes every one of whose consumers is
    pinned are gone. Everything else must be byte-identical, node by node."""
    problems = []
    user_nodes = {n.name: n for n in user.graph.node}
    plan_nodes = {n.name: n for n in plan.graph.node}
    producers = {o: n for n in user.graph.node for o in n.output}
    consumers: dict[str, set[str]] = {}
    for n in user.graph.node:
        for t in n.input:
            consumers.setdefault(t, set()).add(n.name)
    fp32_inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(FP32)).graph.initializer}
    plan_inits = {i.name: numpy_helper.to_array(i) for i in plan.graph.initializer}

    def feeds_only_pinned(node) -> bool:
        readers = set().union(*(consumers.get(o, set()) for o in node.output))
        return bool(readers) and all(r in pinned or (r in user_nodes and user_nodes[r].op_type in QDQ_OPS and feeds_only_pinned(user_nodes[r])) for r in readers)

    for name, node in user_nodes.items():
        if node.op_type in QDQ_OPS and name not in plan_nodes:
            if not feeds_only_pinned(node):
                problems.append(f"{name} removed but feeds an INT8 node")
            continue
        other = plan_nodes.get(name)
        if other is None:
            problems.append(f"{name} missing")
        elif name not in pinned:
            if other.SerializeToString() != node.SerializeToString():
                problems.append(f"{name} changed")
        else:
            for i, (a, b) in enumerate(zip(node.input, other.input)):
                dq = producers.get(a)
                if dq is None or dq.op_type != "DequantizeLinear":
                    if a != b:
                        problems.append(f"{name} input {i} changed without a DQ")
                    continue
                if b in plan_inits:
                    fp32_name = onnx.load(str(FP32)).graph.node[[n.name for n in onnx.load(str(FP32)).graph.node].index(name)].input[i]
                    if not np.array_equal(plan_inits[b], fp32_inits[fp32_name]):
                        problems.append(f"{name} input {i} weight not the FP32 model's")
                elif b in producers and producers[b].op_type in QDQ_OPS:
                    problems.append(f"{name} input {i} still reads a Q/DQ")
            if [a for a in other.attribute] != [a for a in node.attribute] or other.op_type != node.op_type:
                problems.append(f"{name} attributes changed")
    extra = set(plan_nodes) - set(user_nodes)
    if extra:
        problems.append(f"nodes added: {sorted(extra)}")
    return problems


def placement_edges(model_path: Path, recipe: str = "modelopt") -> tuple[set[tuple[str, int]], object]:
    """(consumer, input index) of every Q/DQ the all-INT8 plan of ``recipe`` places on ``model_path`` (ModelOpt's
    candidate filter applied for ``modelopt``), and the prepared model. Placement only: every range is 1."""
    from precision_lab.calibration import Ranges
    from precision_lab.model import list_candidates, prepare_model
    from precision_lab.modelopt_recipe import modelopt_candidates
    from precision_lab.op_rules import RECIPES
    from precision_lab.placement import place

    class AnyRange(Ranges):
        def get(self, tensor: str) -> float:
            return 1.0

    prepared = prepare_model(model_path)
    candidates = list_candidates(prepared, op_types=RECIPES[recipe])
    if recipe == "modelopt":
        candidates = modelopt_candidates(prepared, candidates)
    placement = place(prepared, candidates, AnyRange("any", "", {}, 0), (), recipe=recipe)
    edges = {(a.consumer, a.input_index) for a in placement.activations} | {(w.consumer, w.input_index) for w in placement.weights}
    return edges, placement, prepared


def dq_edges(model: onnx.ModelProto) -> set[tuple[str, int]]:
    """(consumer, input index) of every non-Q/DQ node input that reads a DequantizeLinear output."""
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {
        (n.name, i)
        for n in model.graph.node
        if n.op_type not in QDQ_OPS
        for i, t in enumerate(n.input)
        if t in dq_outputs
    }
