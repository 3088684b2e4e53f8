"""Plan -> Q/DQ ONNX model: TensorRT explicit-quantization placement (DESIGN section 2).

Rules, for every recipe:

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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from precision_lab.calibration import Ranges
from precision_lab.errors import InputError
from precision_lab.model import Candidate, PreparedModel

__all__ = [
    "RECIPES",
    "WEIGHTED_OPS",
    "EXTENDED_OPS",
    "QdqBuilder",
    "tensors_to_calibrate",
    "resolve_op_types",
    "count_qdq",
]

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
EXTENDED_OPS = ("Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Resize")
RECIPES: dict[str, tuple[str, ...]] = {"trt": WEIGHTED_OPS, "extended": WEIGHTED_OPS + EXTENDED_OPS}
SCALE_SHARING_OPS = frozenset({"Concat", "MaxPool", "Resize"})
_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
_DATA_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Conv": (0, 1),
    "ConvTranspose": (0, 1),
    "Gemm": (0, 1),
    "MatMul": (0, 1),
    "Add": (0, 1),
    "Mul": (0, 1),
    "Concat": None,  # every input
    "MaxPool": (0,),
    "AveragePool": (0,),
    "GlobalAveragePool": (0,),
    "Resize": (0,),
}


def resolve_op_types(recipe: str, ops: Sequence[str] | None = None) -> list[str]:
    """The candidate op types: ``ops`` when given (ONNX op type names), else the recipe's."""
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe '{recipe}'; choose one of {', '.join(RECIPES)}")
    if not ops:
        return list(RECIPES[recipe])
    bad = [op for op in ops if not op or not op[0].isupper() or not op.isalnum()]
    if bad:
        raise InputError(f"--ops takes ONNX op types such as Conv,MatMul (case matters); got {bad}")
    return list(dict.fromkeys(ops))


def _data_input_indices(op_type: str, num_inputs: int) -> list[int]:
    indices = _DATA_INPUTS.get(op_type, (0,))
    return list(range(num_inputs)) if indices is None else [i for i in indices if i < num_inputs]


def _weight_axis(node: onnx.NodeProto | object, op_type: str, rank: int) -> int | None:
    """Output-channel axis of a weight, or ``None`` for per-tensor."""
    if rank == 0:
        return None
    if op_type == "Conv":
        return 0
    if op_type == "ConvTranspose":
        return 1 if rank > 1 else 0
    if op_type == "Gemm":
        trans_b = int(getattr(node, "attrs", {}).get("transB", 0))
        return 0 if trans_b else min(1, rank - 1)
    if op_type == "MatMul":
        return rank - 1
    return None


def _is_float(tensor) -> bool:
    """Whether a graphsurgeon tensor holds float32, the only type that gets Q/DQ (an unknown dtype counts as
    float32; integer, boolean, float16 and double tensors never get Q/DQ)."""
    dtype = getattr(tensor, "dtype", None)
    try:
        return dtype is None or np.dtype(dtype) == np.float32
    except TypeError:
        return True


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


def tensors_to_calibrate(prepared: PreparedModel, candidates: Sequence[Candidate], recipe: str) -> list[str]:
    """Every activation tensor a plan of this candidate set may quantize: the inputs and outputs of
    candidates, and both inputs of residual ``Add`` nodes."""
    graph = prepared.model.graph
    initializers = {init.name for init in graph.initializer}
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    elem_type = {vi.name: vi.type.tensor_type.elem_type for vi in [*graph.value_info, *graph.input, *graph.output]}
    names = {c.name for c in candidates}
    wanted: set[str] = set()
    for node in prepared.model.graph.node:
        if node.name in names or node.op_type == "Add":
            for index in _data_input_indices(node.op_type, len(node.input)):
                wanted.add(node.input[index])
            if node.name in names:
                wanted.update(node.output)
    return sorted(
        name
        for name in wanted
        if name and name not in initializers and elem_type.get(name, onnx.TensorProto.FLOAT) in float_types
    )


@dataclass(frozen=True)
class _QuantizedWeight:
    values: np.ndarray
    scale: np.ndarray
    axis: int | None


class QdqBuilder:
    """Builds the Q/DQ model of any plan of a sweep from one set of cached ranges.

    Weights are quantized once, here; :meth:`build` only rewires the graph.
    """

    def __init__(
        self, prepared: PreparedModel, candidates: Sequence[Candidate], ranges: Ranges, *, recipe: str = "trt"
    ) -> None:
        import onnx_graphsurgeon as gs

        if recipe not in RECIPES:
            raise InputError(f"unknown recipe '{recipe}'; choose one of {', '.join(RECIPES)}")
        self._gs = gs
        self._prepared = prepared
        self._recipe = recipe
        self._ranges = ranges
        self.candidates = {c.name: c for c in candidates}
        graph = gs.import_onnx(prepared.model)
        self._weights: dict[tuple[str, int], _QuantizedWeight] = {}
        for node in graph.nodes:
            if node.name not in self.candidates:
                continue
            if node.op in SCALE_SHARING_OPS:
                continue  # constant inputs take the shared scale, set per build
            for index in _data_input_indices(node.op, len(node.inputs)):
                tensor = node.inputs[index]
                if isinstance(tensor, gs.Constant):
                    is_weight = _WEIGHT_INPUT.get(node.op) == index
                    values = np.asarray(tensor.values)
                    axis = _weight_axis(node, node.op, values.ndim) if is_weight else None
                    if values.dtype == np.float32:
                        self._weights[(node.name, index)] = _QuantizedWeight(*_quantize_constant(values, axis), axis)

    @property
    def recipe(self) -> str:
        return self._recipe

    def build(self, fp32_layers: Iterable[str]) -> onnx.ModelProto:
        """The prepared model with every candidate not in ``fp32_layers`` quantized to INT8."""
        gs = self._gs
        pinned = set(fp32_layers)
        unknown = pinned - set(self.candidates)
        if unknown:
            raise InputError(
                f"plan names layers that are not candidates of this model/recipe: {sorted(unknown)[:5]}; "
                "check the layer names (precision-lab layers MODEL) and --recipe/--ops/--exclude"
            )
        int8 = set(self.candidates) - pinned
        graph = gs.import_onnx(self._prepared.model)
        nodes = {node.name: node for node in graph.nodes}

        edges: dict[tuple[str, int], float] = {}
        weights: list[tuple[str, int]] = []
        output_qdq: list[tuple[str, int, float]] = []
        graph_outputs = {id(t) for t in graph.outputs}

        def producer_of(tensor):
            return tensor.inputs[0] if tensor.inputs else None

        def amax_of(tensor) -> float:
            if isinstance(tensor, gs.Constant):
                values = np.asarray(tensor.values)
                return float(np.max(np.abs(values))) if values.size else 0.0
            return self._ranges.get(tensor.name)

        def group_amax(node) -> float:
            members = [node.inputs[i] for i in _data_input_indices(node.op, len(node.inputs))] + list(node.outputs)
            return max(amax_of(t) for t in members if _is_float(t))

        def edge_amax(consumer, index: int) -> float:
            tensor = consumer.inputs[index]
            if consumer.op in SCALE_SHARING_OPS and consumer.name in int8:
                return group_amax(consumer)
            producer = producer_of(tensor)
            if producer is not None and producer.op in SCALE_SHARING_OPS and producer.name in int8:
                return group_amax(producer)
            return amax_of(tensor)

        for name in sorted(int8, key=lambda n: self.candidates[n].index):
            node = nodes[name]
            for index in _data_input_indices(node.op, len(node.inputs)):
                if (name, index) in self._weights:
                    weights.append((name, index))
                elif _is_float(node.inputs[index]) and (
                    not isinstance(node.inputs[index], gs.Constant) or node.op in SCALE_SHARING_OPS
                ):
                    edges[(name, index)] = edge_amax(node, index)
            if node.op in WEIGHTED_OPS:
                continue
            for out_index, output in enumerate(node.outputs):
                if not _is_float(output):
                    continue  # e.g. MaxPool's int64 Indices
                for consumer in output.outputs:
                    if consumer.name in pinned or nodes.get(consumer.name) is not consumer:
                        continue  # pinned, or inside a subgraph (reads the FP32 tensor from the outer scope)
                    for index, tensor in enumerate(consumer.inputs):
                        if tensor is output:
                            edges[(consumer.name, index)] = edge_amax(consumer, index)
                if id(output) in graph_outputs:
                    amax = group_amax(node) if node.op in SCALE_SHARING_OPS else amax_of(output)
                    output_qdq.append((name, out_index, amax))

        for node in graph.nodes:  # residual Add rule (an Add that is a candidate decides for itself)
            if node.op != "Add" or node.name in self.candidates or len(node.inputs) != 2:
                continue
            for index in (0, 1):
                producer = producer_of(node.inputs[index])
                other = node.inputs[1 - index]
                if (
                    producer is not None
                    and producer.op == "Conv"
                    and producer.name in int8
                    and not isinstance(other, gs.Constant)
                ):
                    edges[(node.name, 1 - index)] = amax_of(other)

        for name, out_index, amax in output_qdq:
            node = nodes[name]
            output = node.outputs[out_index]
            before = gs.Variable(f"{output.name}/before_qdq", dtype=output.dtype, shape=output.shape)
            for consumer in list(output.outputs):
                for index, tensor in enumerate(consumer.inputs):
                    if tensor is output:
                        consumer.inputs[index] = before
            node.outputs[out_index] = before
            self._add_qdq(graph, before, amax, f"{name}/output{out_index}", output=output, after=node)

        for (name, index), amax in sorted(edges.items()):
            consumer = nodes[name]
            consumer.inputs[index] = self._add_qdq(
                graph, consumer.inputs[index], amax, f"{name}/input{index}", before=consumer
            )

        for name, index in weights:
            consumer = nodes[name]
            weight = self._weights[(name, index)]
            consumer.inputs[index] = self._add_weight_dq(graph, weight, f"{name}/input{index}", before=consumer)

        # Q/DQ nodes were inserted next to their consumer (or producer), so the node order stays topological
        # and no toposort is needed; replaced FP32 weights are referenced by no node, so they are not exported.
        model = gs.export_onnx(graph, do_type_check=False)
        model.ir_version = self._prepared.model.ir_version
        return model

    @staticmethod
    def _insert(graph, nodes, *, before=None, after=None) -> None:
        """Insert ``nodes`` just before ``before`` or just after ``after`` (keeps the order topological)."""
        anchor = before if before is not None else after
        index = next(i for i, node in enumerate(graph.nodes) if node is anchor)  # by identity: Node.__eq__ is deep
        index += 0 if before is not None else 1
        graph.nodes[index:index] = nodes

    def _add_qdq(self, graph, tensor, amax: float, prefix: str, *, output=None, before=None, after=None):
        gs = self._gs
        scale = gs.Constant(f"{prefix}/scale", _scale_of(amax).reshape(()))
        zero_point = gs.Constant(f"{prefix}/zero_point", np.zeros((), dtype=np.int8))
        quantized = gs.Variable(f"{prefix}/quantized", dtype=np.int8, shape=tensor.shape)
        if output is None:
            output = gs.Variable(f"{prefix}/dequantized", dtype=np.float32, shape=tensor.shape)
        nodes = [
            gs.Node("QuantizeLinear", f"{prefix}/QuantizeLinear", inputs=[tensor, scale, zero_point], outputs=[quantized]),
            gs.Node("DequantizeLinear", f"{prefix}/DequantizeLinear", inputs=[quantized, scale, zero_point], outputs=[output]),
        ]
        self._insert(graph, nodes, before=before, after=after)
        return output

    def _add_weight_dq(self, graph, weight: _QuantizedWeight, prefix: str, *, before):
        gs = self._gs
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
        self._insert(graph, [node], before=before)
        return output


def count_qdq(model: onnx.ModelProto) -> dict[str, int]:
    """Number of QuantizeLinear and DequantizeLinear nodes in ``model``."""
    ops = [node.op_type for node in model.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}
