"""Plan -> :class:`Placement`: where the Q/DQ nodes of a plan go, as a plain value.

:func:`place` decides, from the prepared graph, the candidates, the calibrated ranges and a plan, which node
inputs get an activation Q/DQ (with which amax), which constant inputs become int8 weights (on which axis) and
which graph outputs get a Q/DQ. The rules come from one table per recipe (:mod:`precision_lab.op_rules`);
:func:`precision_lab.qdq.apply_placement` then rewrites the graph. Nothing here builds a graph, so tests compare
placements field by field.

A plan is either an iterable of the layers kept FP32 (every other candidate is INT8) or a mapping
layer -> precision (``"int8"``, ``"fp16"`` or ``"fp32"``); a layer that is not ``"int8"`` gets no Q/DQ, a
candidate the mapping does not name is INT8. FP16 casts, when they come, are one more decision of
:func:`place` and one more field of :class:`Placement`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
import onnx

from precision_lab.calibration import Ranges
from precision_lab.errors import InputError
from precision_lab.model import Candidate, PreparedModel
from precision_lab.op_rules import DEFAULT_RULE, OP_RULES, OpRule, rules_for
from precision_lab.precisions import PrecisionPlan

__all__ = [
    "Precision",
    "PRECISIONS",
    "PlanLike",
    "ActivationQdq",
    "WeightDq",
    "OutputQdq",
    "Placement",
    "place",
    "place_in_graph",
    "layer_precisions",
    "tensors_to_calibrate",
]

Precision = Literal["int8", "fp16", "fp32"]
PRECISIONS: tuple[Precision, ...] = ("int8", "fp16", "fp32")
PlanLike = Union[Iterable[str], Mapping[str, Precision]]
"""The FP32 layers, or layer -> precision (unnamed candidates are INT8)."""


@dataclass(frozen=True)
class ActivationQdq:
    """A per-tensor int8 Q/DQ pair (scale ``amax / 127``, zero point 0) on ``consumer.input[input_index]``,
    which reads ``tensor`` of the prepared graph."""

    consumer: str
    input_index: int
    tensor: str
    amax: float


@dataclass(frozen=True)
class WeightDq:
    """The constant ``tensor`` at ``consumer.input[input_index]`` stored as int8 plus ``DequantizeLinear``,
    per channel along ``axis`` (``None``: per tensor)."""

    consumer: str
    input_index: int
    tensor: str
    axis: int | None


@dataclass(frozen=True)
class OutputQdq:
    """A Q/DQ pair on the graph output ``tensor`` = ``producer.output[output_index]``; the graph output keeps its
    name (the producer's side is renamed)."""

    producer: str
    output_index: int
    tensor: str
    amax: float


@dataclass(frozen=True)
class Placement:
    """Every Q/DQ of one plan: activations sorted by (consumer, input index), weights and outputs in graph
    order. Empty for a plan with every layer pinned."""

    activations: tuple[ActivationQdq, ...] = ()
    weights: tuple[WeightDq, ...] = ()
    outputs: tuple[OutputQdq, ...] = ()

    def of(self, node: str) -> Placement:
        """The part of this placement on ``node``'s inputs and outputs."""
        return Placement(
            tuple(a for a in self.activations if a.consumer == node),
            tuple(w for w in self.weights if w.consumer == node),
            tuple(o for o in self.outputs if o.producer == node),
        )

    def __bool__(self) -> bool:
        return bool(self.activations or self.weights or self.outputs)


def layer_precisions(plan: PlanLike, candidates: Iterable[str], other_nodes: Iterable[str] = ()) -> dict[str, Precision]:
    """Candidate -> precision of ``plan`` (see the module docstring); names that are neither candidates nor
    ``other_nodes`` (the non-candidate nodes a three-level plan may keep FP32), or unknown precisions, are an
    :class:`InputError`."""
    candidates = list(candidates)
    if isinstance(plan, Mapping):
        named = dict(plan)
        bad = {layer: value for layer, value in named.items() if value not in PRECISIONS}
        if bad:
            raise InputError(f"plan gives unknown precisions {bad}; use one of {', '.join(PRECISIONS)}")
    else:
        named = {layer: "fp32" for layer in plan}
    unknown = set(named) - set(candidates) - set(other_nodes)
    if unknown:
        raise InputError(
            f"plan names layers that are not candidates of this model/recipe: {sorted(unknown)[:5]}; "
            "check the layer names (precision-lab layers MODEL) and --recipe/--ops/--exclude"
        )
    return {name: named.get(name, "int8") for name in candidates}


def _dtype_is(tensor, dtype: type, *, unknown: bool) -> bool:
    """Whether a graphsurgeon tensor holds ``dtype``; ``unknown`` when its dtype is missing or not numpy's."""
    value = getattr(tensor, "dtype", None)
    if value is None:
        return unknown
    try:
        return np.dtype(value) == dtype
    except TypeError:
        return unknown


def _is_float(tensor) -> bool:
    """Whether a tensor gets Q/DQ: float32, or of unknown type (integer, boolean, float16 and double tensors
    never do)."""
    return _dtype_is(tensor, np.float32, unknown=True)


def place(
    prepared: PreparedModel,
    candidates: Sequence[Candidate],
    ranges: Ranges,
    plan: PlanLike,
    *,
    recipe: str = "trt",
) -> Placement:
    """The placement of ``plan`` on the prepared model under ``recipe``'s rules (default ``"trt"``)."""
    import onnx_graphsurgeon as gs

    rules = rules_for(recipe)
    return place_in_graph(gs.import_onnx(prepared.model), candidates, ranges, plan, rules=rules)


def place_in_graph(
    graph,
    candidates: Iterable[Candidate],
    ranges: Ranges,
    plan: PlanLike,
    *,
    rules: Mapping[str, OpRule] = OP_RULES,
    other_nodes: Iterable[str] = (),
) -> Placement:
    """:func:`place` on an imported ``onnx_graphsurgeon`` graph, which it only reads (default rules: ``OP_RULES``).
    ``other_nodes``: the non-candidate nodes a three-level plan may keep high-precision; one it names gets no
    Q/DQ on its inputs."""
    import onnx_graphsurgeon as gs

    order = {c.name: c.index for c in candidates}
    precisions = layer_precisions(plan, order, other_nodes)
    int8 = {name for name, precision in precisions.items() if precision == "int8"}
    pinned_others = PrecisionPlan.of(plan).high_precision - set(order)
    nodes = {node.name: node for node in graph.nodes}
    graph_outputs = {id(t) for t in graph.outputs}

    def rule(node) -> OpRule:
        return rules.get(node.op, DEFAULT_RULE)

    def producer_of(tensor):
        return tensor.inputs[0] if tensor.inputs else None

    def amax_of(tensor) -> float:
        if isinstance(tensor, gs.Constant):
            values = np.asarray(tensor.values)
            return float(np.max(np.abs(values))) if values.size else 0.0
        return float(ranges.get(tensor.name))

    def group_amax(node) -> float:
        members = [node.inputs[i] for i in rule(node).quantized_inputs(len(node.inputs))] + list(node.outputs)
        return max(amax_of(t) for t in members if _is_float(t))

    def edge_amax(consumer, index: int) -> float:
        if rule(consumer).shared_scale and consumer.name in int8:
            return group_amax(consumer)
        producer = producer_of(consumer.inputs[index])
        if producer is not None and rule(producer).shared_scale and producer.name in int8:
            return group_amax(producer)
        return amax_of(consumer.inputs[index])

    edges: dict[tuple[str, int], float] = {}
    weights: list[WeightDq] = []
    outputs: list[OutputQdq] = []
    for name in sorted(int8, key=order.__getitem__):
        node = nodes[name]
        node_rule = rule(node)
        for index in node_rule.quantized_inputs(len(node.inputs)):
            tensor = node.inputs[index]
            if node_rule.fused_from and getattr(producer_of(tensor), "op", None) in node_rule.fused_from:
                continue  # fused into its producer (recipe modelopt's residual Add)
            if isinstance(tensor, gs.Constant) and node_rule.constant_inputs == "initializer":
                if _dtype_is(tensor, np.float32, unknown=False):
                    axis = node_rule.axis_of(index, node.attrs, len(tensor.shape))
                    weights.append(WeightDq(name, index, tensor.name, axis))
            elif _is_float(tensor):
                edges[(name, index)] = edge_amax(node, index)
        if not node_rule.quantize_output:
            continue
        for out_index, output in enumerate(node.outputs):
            if not _is_float(output):
                continue  # e.g. MaxPool's int64 Indices
            for consumer in output.outputs:
                if (
                    (consumer.name in order and consumer.name not in int8)
                    or consumer.name in pinned_others
                    or nodes.get(consumer.name) is not consumer
                ):
                    continue  # pinned, or inside a subgraph (reads the FP32 tensor from the outer scope)
                for index, tensor in enumerate(consumer.inputs):
                    if tensor is output:
                        edges[(consumer.name, index)] = edge_amax(consumer, index)
            if id(output) in graph_outputs:
                amax = group_amax(node) if node_rule.shared_scale else amax_of(output)
                outputs.append(OutputQdq(name, out_index, output.name, amax))

    for node in graph.nodes:  # residual rule (a node that is a candidate decides for itself)
        producers = rule(node).residual_of
        if not producers or node.name in order or node.name in pinned_others or len(node.inputs) != 2:
            continue
        for index in (0, 1):
            producer = producer_of(node.inputs[index])
            other = node.inputs[1 - index]
            if (
                producer is not None
                and producer.op in producers
                and producer.name in int8
                and not isinstance(other, gs.Constant)
            ):
                # own amax, even over the shared amax an output edge of a shared-scale producer set on this input
                edges[(node.name, 1 - index)] = amax_of(other)

    activations = tuple(
        ActivationQdq(consumer, index, nodes[consumer].inputs[index].name, amax)
        for (consumer, index), amax in sorted(edges.items())
    )
    return Placement(activations, tuple(weights), tuple(outputs))


def tensors_to_calibrate(prepared: PreparedModel, candidates: Sequence[Candidate], recipe: str) -> list[str]:
    """Every activation tensor a plan of this candidate set may quantize: the quantized inputs and the outputs of
    candidates, and the inputs of nodes with a residual rule (both inputs of an ``Add``)."""
    rules = rules_for(recipe)
    graph = prepared.model.graph
    initializers = {init.name for init in graph.initializer}
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    elem_type = {vi.name: vi.type.tensor_type.elem_type for vi in [*graph.value_info, *graph.input, *graph.output]}
    names = {c.name for c in candidates}
    wanted: set[str] = set()
    for node in graph.node:
        node_rule = rules.get(node.op_type, DEFAULT_RULE)
        if node.name in names or node_rule.residual_of:
            for index in node_rule.quantized_inputs(len(node.input)):
                wanted.add(node.input[index])
            if node.name in names:
                wanted.update(node.output)
    return sorted(
        name
        for name in wanted
        if name and name not in initializers and elem_type.get(name, onnx.TensorProto.FLOAT) in float_types
    )
