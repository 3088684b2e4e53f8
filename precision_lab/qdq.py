"""Plan -> Q/DQ ONNX model: TensorRT explicit-quantization placement (README "Q/DQ placement").

Two steps. :func:`precision_lab.placement.place` decides where every Q/DQ goes, as a plain
:class:`~precision_lab.placement.Placement`, from the per-op rule table of :mod:`precision_lab.op_rules`;
:func:`apply_placement` rewrites the graph. :class:`QdqBuilder` does both for every plan of a sweep.

The rules, for every recipe:

* an INT8 layer gets Q/DQ on each activation input (per tensor, symmetric int8, zero point 0,
  scale = amax / 127 from calibration);
* its constant weights become a per-channel int8 initializer + ``DequantizeLinear`` on the output-channel
  axis (Conv 0, ConvTranspose 1, Gemm 0 with ``transB=1`` else 1, MatMul last axis); biases stay FP32;
* a tensor feeding several consumers gets its own Q/DQ per consumer, so pinning one consumer never changes
  another;
* an ``Add`` that is not a candidate and has an input produced directly by an INT8 ``Conv`` gets Q/DQ on
  its other input (what TensorRT needs to fuse Conv + residual Add);
* recipe ``extended``: non-weighted ops (Add, Mul, Concat, pooling, Resize) in INT8 also quantize their
  output, on every edge to a consumer that is not pinned and on graph outputs; their constant inputs are
  quantized per tensor; Concat, MaxPool and Resize share one scale across inputs and output;
* a pinned (FP32) layer has no Q/DQ on any input or weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from precision_lab.calibration import Ranges
from precision_lab.model import Candidate, PreparedModel
from precision_lab.op_rules import EXTENDED_OPS, RECIPES, WEIGHTED_OPS, resolve_op_types, rules_for
from precision_lab.precisions import PrecisionPlan
from precision_lab.placement import Placement, PlanLike, WeightDq, place_in_graph, tensors_to_calibrate

__all__ = [
    "RECIPES",
    "WEIGHTED_OPS",
    "EXTENDED_OPS",
    "QdqBuilder",
    "apply_placement",
    "tensors_to_calibrate",
    "resolve_op_types",
    "count_qdq",
]


BEFORE_QDQ = "/before_qdq"
"""Suffix of a node output that gets its own Q/DQ pair (``X/before_qdq -> Q -> DQ -> X``; the pair's nodes are
named ``<producer>/output<i>/...``)."""


def _scale_of(amax: np.ndarray | float) -> np.ndarray:
    amax = np.asarray(amax, dtype=np.float32)
    return np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0 / 127.0)).astype(np.float32)


def _quantize_constant(values: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of a constant; per channel along ``axis`` or per tensor."""
    values = np.asarray(values, dtype=np.float32)
    if axis is None:
        amax = np.max(np.abs(values)) if values.size else np.float32(0)
        scale = _scale_of(amax)
        quantized = np.asarray(np.clip(np.round(values / scale), -127, 127), dtype=np.int8)  # rank 0 stays an array
        return quantized, scale.reshape(())
    reduce_axes = tuple(i for i in range(values.ndim) if i != axis)
    amax = np.max(np.abs(values), axis=reduce_axes) if values.size else np.zeros(values.shape[axis])
    scale = _scale_of(amax)
    shape = [1] * values.ndim
    shape[axis] = -1
    quantized = np.clip(np.round(values / scale.reshape(shape)), -127, 127).astype(np.int8)
    return quantized, scale


@dataclass(frozen=True)
class _QuantizedWeight:
    values: np.ndarray
    scale: np.ndarray
    axis: int | None


WeightCache = dict[tuple[str, int], _QuantizedWeight]


def apply_placement(
    model: onnx.ModelProto, placement: Placement, *, weights: WeightCache | None = None
) -> onnx.ModelProto:
    """A copy of ``model`` with the Q/DQ nodes of ``placement``; ``model`` is not changed.

    ``weights`` caches quantized weights by (consumer, input index) across calls (default: no cache).
    """
    import onnx_graphsurgeon as gs

    weights = {} if weights is None else weights
    graph = gs.import_onnx(model)
    nodes = {node.name: node for node in graph.nodes}

    for out in placement.outputs:
        node = nodes[out.producer]
        output = node.outputs[out.output_index]
        before = gs.Variable(f"{output.name}{BEFORE_QDQ}", dtype=output.dtype, shape=output.shape)
        for consumer in list(output.outputs):
            for index, tensor in enumerate(consumer.inputs):
                if tensor is output:
                    consumer.inputs[index] = before
        node.outputs[out.output_index] = before
        _add_qdq(gs, graph, before, out.amax, f"{out.producer}/output{out.output_index}", output=output, after=node)

    for qdq in placement.activations:  # after the outputs: a consumer of a quantized output reads before_qdq
        consumer = nodes[qdq.consumer]
        prefix = f"{qdq.consumer}/input{qdq.input_index}"
        consumer.inputs[qdq.input_index] = _add_qdq(
            gs, graph, consumer.inputs[qdq.input_index], qdq.amax, prefix, before=consumer
        )

    for dq in placement.weights:
        consumer = nodes[dq.consumer]
        key = (dq.consumer, dq.input_index)
        if key not in weights:
            weights[key] = _quantize_weight(consumer.inputs[dq.input_index], dq)
        consumer.inputs[dq.input_index] = _add_weight_dq(
            gs, graph, weights[key], f"{dq.consumer}/input{dq.input_index}", before=consumer
        )

    # Q/DQ nodes were inserted next to their consumer (or producer), so the node order stays topological
    # and no toposort is needed; replaced FP32 weights are referenced by no node, so they are not exported.
    result = gs.export_onnx(graph, do_type_check=False)
    result.ir_version = model.ir_version
    return result


def _quantize_weight(constant, dq: WeightDq) -> _QuantizedWeight:
    return _QuantizedWeight(*_quantize_constant(np.asarray(constant.values), dq.axis), dq.axis)


def _insert(graph, nodes, *, before=None, after=None) -> None:
    """Insert ``nodes`` just before ``before`` or just after ``after`` (keeps the order topological)."""
    anchor = before if before is not None else after
    index = next(i for i, node in enumerate(graph.nodes) if node is anchor)  # by identity: Node.__eq__ is deep
    index += 0 if before is not None else 1
    graph.nodes[index:index] = nodes


def _add_qdq(gs, graph, tensor, amax: float, prefix: str, *, output=None, before=None, after=None):
    scale = gs.Constant(f"{prefix}/scale", _scale_of(amax).reshape(()))
    zero_point = gs.Constant(f"{prefix}/zero_point", np.zeros((), dtype=np.int8))
    quantized = gs.Variable(f"{prefix}/quantized", dtype=np.int8, shape=tensor.shape)
    if output is None:
        output = gs.Variable(f"{prefix}/dequantized", dtype=np.float32, shape=tensor.shape)
    nodes = [
        gs.Node("QuantizeLinear", f"{prefix}/QuantizeLinear", inputs=[tensor, scale, zero_point], outputs=[quantized]),
        gs.Node("DequantizeLinear", f"{prefix}/DequantizeLinear", inputs=[quantized, scale, zero_point], outputs=[output]),
    ]
    _insert(graph, nodes, before=before, after=after)
    return output


def _add_weight_dq(gs, graph, weight: _QuantizedWeight, prefix: str, *, before):
    values = gs.Constant(f"{prefix}/weight_int8", weight.values)
    scale = gs.Constant(f"{prefix}/weight_scale", weight.scale)
    zero_point = gs.Constant(f"{prefix}/weight_zero_point", np.zeros(weight.scale.shape, dtype=np.int8))
    output = gs.Variable(f"{prefix}/weight_dequantized", dtype=np.float32, shape=list(weight.values.shape))
    attrs = {"axis": int(weight.axis)} if weight.axis is not None else {}
    node = gs.Node(
        "DequantizeLinear",
        f"{prefix}/weight_DequantizeLinear",
        attrs=attrs,
        inputs=[values, scale, zero_point],
        outputs=[output],
    )
    _insert(graph, [node], before=before)
    return output


class QdqBuilder:
    """Builds the Q/DQ model of any plan of a sweep from one set of cached ranges.

    ``recipe`` (default ``"trt"``) picks the rule table. Weights are quantized once, at their first build.
    A plan is the FP32 layers or a mapping layer -> precision (:data:`precision_lab.placement.PlanLike`).
    ``precisions`` (default ``("int8", "fp32")``): with ``"fp16"`` among them, every node the plan does not keep
    FP32 or INT8 runs FP16, emulated on ONNX Runtime (:mod:`precision_lab.fp16`), and a plan may name any float
    node (:attr:`fp32_candidates`) FP32.
    """

    def __init__(
        self,
        prepared: PreparedModel,
        candidates: Sequence[Candidate],
        ranges: Ranges,
        *,
        recipe: str = "trt",
        precisions: Sequence[str] = ("int8", "fp32"),
    ) -> None:
        import onnx_graphsurgeon as gs

        from precision_lab.fp16 import float_nodes, float_tensors

        self._rules = rules_for(recipe)
        self._prepared = prepared
        self._ranges = ranges
        self.candidates = {c.name: c for c in candidates}
        self.precisions = tuple(precisions)
        self.with_fp16 = "fp16" in self.precisions
        self._floats = float_tensors(prepared.model) if self.with_fp16 else frozenset()
        self.fp32_candidates: tuple[str, ...] = tuple(float_nodes(prepared.model, self._floats)) if self.with_fp16 else ()
        self._graph = gs.import_onnx(prepared.model)  # read by place_in_graph, never changed
        self._weights: WeightCache = {}

    def placement(self, plan: PlanLike) -> Placement:
        """Where the Q/DQ nodes of ``plan`` go (every candidate the plan does not pin is INT8)."""
        return place_in_graph(
            self._graph, self.candidates.values(), self._ranges, plan, rules=self._rules,
            other_nodes=self.fp32_candidates,
        )

    def build_qdq(self, plan: PlanLike) -> onnx.ModelProto:
        """The prepared model with every candidate not pinned by ``plan`` quantized to INT8, all in FP32 (what the
        TensorRT 10 implicit-precision export reads)."""
        return apply_placement(self._prepared.model, self.placement(plan), weights=self._weights)

    def build(self, plan: PlanLike) -> onnx.ModelProto:
        """The model every backend runs for ``plan``: :meth:`build_qdq`, with FP16 emulated where the plan runs
        FP16 (three-level plans)."""
        model = self.build_qdq(plan)
        if not self.with_fp16:
            return model
        from precision_lab.fp16 import emulate_fp16

        return emulate_fp16(model, PrecisionPlan.of(plan).fp32_layers, self._floats)

    def build_deployable(self, plan: PlanLike) -> onnx.ModelProto:
        """``plan.onnx``: :meth:`build_qdq` for two-level plans; for three-level plans the strongly typed FP16
        model with FP32 islands (:func:`precision_lab.fp16.fp16_plan_model`)."""
        model = self.build_qdq(plan)
        if not self.with_fp16:
            return model
        from precision_lab.fp16 import fp16_plan_model

        return fp16_plan_model(model, PrecisionPlan.of(plan).fp32_layers)


def count_qdq(model: onnx.ModelProto) -> dict[str, int]:
    """Number of QuantizeLinear and DequantizeLinear nodes in ``model``."""
    ops = [node.op_type for node in model.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}
