"""The user's own Q/DQ model (``--qdq-model``): ModelOpt, ONNX Runtime ``quantize_static`` or a QAT export.

The user's Q/DQ model defines the candidates (every node that reads a ``DequantizeLinear`` output) and the scales;
the FP32 model stays the reference. :func:`load_user_qdq` matches the two models by node and tensor names and
raises a one-line :class:`~precision_lab.errors.InputError` when they differ beyond Q/DQ, when a weight is stored
only as INT8 with no FP32 source, or when a Q/DQ is not symmetric int8 (nonzero zero point, uint8, FP8, 4-bit or
block-quantized). :class:`UserQdqBuilder` has the interface of :class:`~precision_lab.qdq.QdqBuilder`: the empty
plan builds the user's model unchanged; a pinned node (any precision but INT8) reads the FP32 tensors instead of
its dequantized inputs, per consumer (a shared DQ keeps its other consumers), with its weights restored from the
FP32 model. Q/DQ nodes and initializers that nothing reads any more are dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from precision_lab.calibration import Ranges
from precision_lab.errors import InputError
from precision_lab.model import (  # one naming rule: prepared model, plan, user model
    Candidate,
    _name_nodes,
)
from precision_lab.precisions import PrecisionPlan

__all__ = ["SUPPORTED", "QuantizedInput", "UserQdqBuilder", "UserQdqModel", "load_user_qdq", "user_qdq_ranges"]

log = logging.getLogger("precision_lab")

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QDQ_DOMAINS = ("", "ai.onnx", "com.microsoft")
SUPPORTED = "symmetric int8 Q/DQ (zero point 0; per tensor or per channel; int32 biases)"
_FP8 = {
    onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ,
    onnx.TensorProto.FLOAT8E5M2, onnx.TensorProto.FLOAT8E5M2FNUZ,
}
_FOUR_BIT = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4} | (
    {onnx.TensorProto.FLOAT4E2M1} if hasattr(onnx.TensorProto, "FLOAT4E2M1") else set()
)


@dataclass(frozen=True)
class QuantizedInput:
    """Input ``index`` of a candidate node reads the DequantizeLinear output ``tensor``. Pinning the node makes it
    read ``restore`` (a tensor of the user's model) or, for a weight, the FP32 model's constant ``weight``."""

    index: int
    tensor: str
    restore: str | None = None
    weight: str | None = None  # the FP32 model's constant (initializer or Constant output) for this input


@dataclass
class UserQdqModel:
    """The user's Q/DQ model, checked against the FP32 model: ``quantized`` maps each candidate to its quantized
    inputs; ``fp32_constants`` holds the FP32 weights a pinned node is given back. Candidates are named as
    precision-lab names the FP32 model's nodes (the same names unless nodes are unnamed, then
    ``<OpType>_<position>``); ``node_names`` maps each to its node's name in the user's model (``<OpType>_<position>``
    there too for an unnamed node); a candidate's ``index`` is its node's position in the user's model."""

    model: onnx.ModelProto
    path: Path
    sha256: str
    quantized: dict[str, tuple[QuantizedInput, ...]]
    fp32_constants: dict[str, np.ndarray] = field(repr=False)
    candidates: list[Candidate] = field(default_factory=list)
    node_names: dict[str, str] = field(default_factory=dict)

    @property
    def candidates_by_name(self) -> dict[str, Candidate]:
        return {c.name: c for c in self.candidates}


def _fail(path: Path, message: str) -> InputError:
    return InputError(f"--qdq-model {path.name}: {message}")


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _attr(node: onnx.NodeProto, name: str):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return None


def _check_qdq(path: Path, node: onnx.NodeProto, constants: Mapping[str, np.ndarray], elem_types: Mapping[str, int]) -> None:
    """Raise unless ``node`` is a symmetric int8 Q/DQ (int32 allowed for a DequantizeLinear of a constant)."""
    where = f"{node.op_type} '{node.name}'"
    if _attr(node, "block_size"):
        raise _fail(path, f"{where} is block-quantized (block_size); only {SUPPORTED} is supported")
    zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zero_point is not None and zero_point not in constants:
        raise _fail(path, f"{where} has a computed zero point; only {SUPPORTED} is supported")
    if zero_point is not None:
        elem = elem_types.get(zero_point)
    elif node.op_type == "QuantizeLinear":
        elem = _attr(node, "output_dtype") or onnx.TensorProto.UINT8
    else:
        elem = elem_types.get(node.input[0], onnx.TensorProto.INT8)
    quantized_dtype = onnx.helper.tensor_dtype_to_string(elem).removeprefix("TensorProto.")
    if elem in _FP8:
        raise _fail(path, f"{where} uses FP8 ({quantized_dtype}); only {SUPPORTED} is supported")
    if elem in _FOUR_BIT:
        raise _fail(path, f"{where} is 4-bit ({quantized_dtype}); only {SUPPORTED} is supported")
    int32_bias = elem == onnx.TensorProto.INT32 and node.op_type == "DequantizeLinear" and node.input[0] in constants
    if elem != onnx.TensorProto.INT8 and not int32_bias:
        raise _fail(path, f"{where} quantizes to {quantized_dtype}; only {SUPPORTED} is supported")
    if zero_point is not None and np.any(constants[zero_point] != 0):
        raise _fail(path, f"{where} has a nonzero zero point (asymmetric); only {SUPPORTED} is supported")
    scale = node.input[1]
    if scale not in constants:
        raise _fail(path, f"{where} has a computed scale; only {SUPPORTED} is supported")
    if constants[scale].dtype != np.float32:
        raise _fail(
            path, f"{where} has a {constants[scale].dtype} scale (an FP16 model: ModelOpt's default "
            "--high_precision_dtype fp16?); only float32 scales are supported: re-export with --high_precision_dtype fp32"
        )


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {init.name: init.data_type for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            value = _attr(node, "value")
            if value is not None:
                types[node.output[0]] = value.data_type
    return types


def load_user_qdq(qdq_path: str | os.PathLike, fp32_path: str | os.PathLike) -> UserQdqModel:
    """Load the user's Q/DQ model ``qdq_path`` and check it against the FP32 model ``fp32_path`` (see the module
    docstring for what is refused). The returned model is the user's, unchanged (unnamed nodes are named
    ``<OpType>_<position>`` only in messages and ``node_names``)."""
    path = Path(qdq_path)
    if not path.is_file():
        raise InputError(f"--qdq-model not found: {path}")
    try:
        data = path.read_bytes()
        user = onnx.load_from_string(data)
        if any(init.data_location == onnx.TensorProto.EXTERNAL for init in user.graph.initializer):
            user = onnx.load(str(path))
        fp32 = onnx.load(str(fp32_path))
    except Exception as exc:
        raise InputError(f"--qdq-model {path.name} is not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    named = onnx.ModelProto()
    named.CopyFrom(user)
    _name_nodes(named)  # names for matching and messages; the user's model itself stays as it is
    matched = _match(named, fp32, path, hashlib.sha256(data).hexdigest())
    matched.model = user
    return matched


def _match(user: onnx.ModelProto, fp32: onnx.ModelProto, path: Path, sha256: str) -> UserQdqModel:
    constants = _constants(user)
    fp32_constants = _constants(fp32)
    elem_types = _elem_types(user)
    producers = {out: node for node in user.graph.node for out in node.output if out}
    if not any(node.op_type in QDQ_OPS for node in user.graph.node):
        raise _fail(path, "has no QuantizeLinear/DequantizeLinear nodes; pass the quantized model")
    for node in user.graph.node:
        if node.op_type in QDQ_OPS:
            if node.domain not in QDQ_DOMAINS:
                raise _fail(path, f"{node.op_type} '{node.name}' is in domain '{node.domain}'; only ONNX Q/DQ is supported")
            _check_qdq(path, node, constants, elem_types)

    def source(tensor: str) -> tuple[str, str]:
        """What a tensor is once Q/DQ are removed: ("tensor", name), ("const", name) or ("int8", name)."""
        seen = 0
        while tensor in producers and producers[tensor].op_type in QDQ_OPS and seen < 16:
            node = producers[tensor]
            if node.op_type == "DequantizeLinear" and node.input[0] in constants:
                return "int8", node.input[0]
            tensor, seen = node.input[0], seen + 1
        return ("const" if tensor in constants else "tensor"), tensor

    fp32_nodes = [n for n in fp32.graph.node if n.op_type != "Constant"]
    user_nodes = [n for n in user.graph.node if n.op_type not in QDQ_OPS and n.op_type != "Constant"]
    pairs, tensor_map = _pair_nodes(path, user_nodes, fp32_nodes, source, fp32_constants)
    layer_names = _layer_names(fp32)
    user_nodes_by_name = {node.name: node for node in user_nodes}
    tensor_map.update({i.name: i.name for i in user.graph.input})

    quantized: dict[str, tuple[QuantizedInput, ...]] = {}
    for node, match in pairs:
        where = f"node '{node.name}'"
        if len(node.input) != len(match.input):
            raise _fail(path, f"{where} has {len(node.input)} inputs, {len(match.input)} in the FP32 model; the models differ beyond Q/DQ")
        for attr in node.attribute:
            other = _attr(match, attr.name)
            if other is not None and attr.type != onnx.AttributeProto.GRAPH and onnx.helper.get_attribute_value(attr) != other:
                raise _fail(path, f"{where} attribute {attr.name} differs from the FP32 model; the models differ beyond Q/DQ")
        edges = []
        for index, (tensor, fp32_tensor) in enumerate(zip(node.input, match.input)):
            kind, name = source(tensor) if tensor else ("tensor", "")
            fp32_const = fp32_tensor in fp32_constants
            if kind == "int8":
                if not fp32_const:
                    raise _fail(
                        path, f"{where} input {index} is stored only as INT8 ('{name}') and the FP32 model has no "
                        f"FP32 weight for it ('{fp32_tensor}' is not a constant); pass the FP32 model it was made from"
                    )
            elif kind == "const":
                ours, theirs = constants[name], fp32_constants.get(fp32_tensor)
                if theirs is None or ours.shape != theirs.shape or not np.array_equal(ours, theirs):
                    raise _fail(path, f"{where} input {index} ('{name}') differs from the FP32 model's '{fp32_tensor}'; the models differ beyond Q/DQ")
            elif tensor_map.get(name, name) != fp32_tensor:
                raise _fail(path, f"{where} input {index} reads '{name}', the FP32 model '{fp32_tensor}'; the models differ beyond Q/DQ")
            producer = producers.get(tensor)
            if producer is not None and producer.op_type == "DequantizeLinear":
                weight = fp32_tensor if kind in ("int8", "const") else None
                edges.append(QuantizedInput(index, tensor, restore=None if weight else name, weight=weight))
        if edges:
            quantized[layer_names[id(match)]] = tuple(edges)
    fp32_inputs = [i.name for i in fp32.graph.input if i.name not in fp32_constants]
    if [i.name for i in user.graph.input if i.name not in constants] != fp32_inputs:
        raise _fail(path, f"graph inputs differ from the FP32 model's {fp32_inputs}")
    if [o.name for o in user.graph.output] != [o.name for o in fp32.graph.output]:
        raise _fail(path, f"graph outputs differ from the FP32 model's {[o.name for o in fp32.graph.output]}")
    positions = {node.name: i for i, node in enumerate(user.graph.node)}
    node_names = {layer_names[id(match)]: node.name for node, match in pairs if layer_names[id(match)] in quantized}
    candidates = [
        Candidate(layer, user_nodes_by_name[name].op_type, positions[name]) for layer, name in node_names.items()
    ]
    return UserQdqModel(user, path, sha256, quantized, fp32_constants, candidates, node_names)


def user_qdq_ranges(user: UserQdqModel) -> Ranges:
    """The stand-in for calibrated ranges with ``--qdq-model``: no ranges (the user's scales are used), keyed by
    the Q/DQ model's sha256 so journals of different Q/DQ models never mix."""
    log.info("--qdq-model %s: its own scales are used, no calibration", user.path.name)
    return Ranges("user-qdq", f"user-qdq-{user.sha256}", {}, 0)


def _layer_names(fp32: onnx.ModelProto) -> dict[int, str]:
    """id(node) -> the name precision-lab's model preparation gives each FP32 node (``model._name_nodes``)."""
    named = onnx.GraphProto()
    named.node.extend(fp32.graph.node)
    holder = onnx.ModelProto(graph=named)
    _name_nodes(holder)
    return {id(node): copy.name for node, copy in zip(fp32.graph.node, holder.graph.node)}


def _pair_nodes(path: Path, user_nodes, fp32_nodes, source, fp32_constants) -> tuple[list, dict[str, str]]:
    """Pair every non-Q/DQ node of the user's model with its FP32 node: by name, else by first output name, else
    (unnamed nodes whose outputs Q/DQ renamed) by op type and inputs once Q/DQ are seen through. Returns the pairs
    in the user's graph order and the user -> FP32 tensor names of their outputs."""
    by_name = {n.name: n for n in fp32_nodes if n.name}
    by_output = {n.output[0]: n for n in fp32_nodes if n.output}
    matched: dict[int, onnx.NodeProto] = {}
    used: set[int] = set()
    for index, node in enumerate(user_nodes):
        match = by_name.get(node.name) or (by_output.get(node.output[0]) if node.output else None)
        if match is not None and id(match) not in used:
            matched[index] = match
            used.add(id(match))
    tensor_map = {out: fp32_out for i, m in matched.items() for out, fp32_out in zip(user_nodes[i].output, m.output)}

    def signature(inputs, resolve) -> tuple:
        return tuple(resolve(t) for t in inputs)

    def user_input(tensor: str) -> str:
        kind, name = source(tensor) if tensor else ("tensor", "")
        return "#constant" if kind != "tensor" else tensor_map.get(name, name)

    for index, node in enumerate(user_nodes):  # graph order: producers are paired before their consumers
        if index in matched:
            continue
        wanted = signature(node.input, user_input)
        found = [
            n for n in fp32_nodes
            if id(n) not in used and n.op_type == node.op_type
            and signature(n.input, lambda t: "#constant" if t in fp32_constants else t) == wanted
        ]
        if len(found) != 1:
            raise _fail(path, f"node '{node.name}' ({node.op_type}) is not in the FP32 model; the models differ beyond Q/DQ")
        matched[index] = found[0]
        used.add(id(found[0]))
        tensor_map.update(zip(node.output, found[0].output))
    pairs = [(node, matched[i]) for i, node in enumerate(user_nodes)]
    for node, match in pairs:
        if match.op_type != node.op_type:
            raise _fail(path, f"node '{node.name}' is {node.op_type} but {match.op_type} in the FP32 model; the models differ beyond Q/DQ")
    missing = [n.name or n.op_type for n in fp32_nodes if id(n) not in used]
    if missing:
        raise _fail(path, f"lacks FP32 nodes {missing[:5]}; the models differ beyond Q/DQ")
    return pairs, tensor_map


class UserQdqBuilder:
    """Builds the user's Q/DQ model with a plan applied (the interface of :class:`~precision_lab.qdq.QdqBuilder`).

    A plan is a :class:`~precision_lab.precisions.PrecisionPlan` or the FP32 layers; every layer at a precision
    other than INT8 loses the Q/DQ on its inputs and weights. Two-level plans only (``--precisions int8,fp32``).
    """

    with_fp16 = False  # three-level plans are not built on a user's Q/DQ model
    fp32_candidates: tuple[str, ...] = ()

    def __init__(self, user: UserQdqModel) -> None:
        self.user = user
        self.candidates = {c.name: c for c in user.candidates}

    def build_qdq(self, plan: PrecisionPlan | Mapping[str, str] | Iterable[str]) -> onnx.ModelProto:
        """:meth:`build` (the user's model is FP32 with Q/DQ)."""
        return self.build(plan)

    def build_deployable(self, plan: PrecisionPlan | Mapping[str, str] | Iterable[str]) -> onnx.ModelProto:
        """``plan.onnx``: :meth:`build`."""
        return self.build(plan)

    def pinned(self, plan: PrecisionPlan | Mapping[str, str] | Iterable[str]) -> list[str]:
        """The candidates ``plan`` takes out of INT8, in graph order."""
        high = PrecisionPlan.of(plan).high_precision
        return [name for name in self.candidates if name in high]

    def build(self, plan: PrecisionPlan | Mapping[str, str] | Iterable[str]) -> onnx.ModelProto:
        """The user's Q/DQ model with ``plan`` applied; the empty plan gives the user's model unchanged."""
        model = onnx.ModelProto()
        model.CopyFrom(self.user.model)
        pinned = self.pinned(plan)
        if not pinned:
            return model
        graph = model.graph
        initializers = {init.name: init for init in graph.initializer}
        taken = {t for node in graph.node for t in (*node.input, *node.output)} | set(initializers)
        restored: dict[str, str] = {}
        for name in pinned:
            node = graph.node[self.user.candidates_by_name[name].index]
            for edge in self.user.quantized[name]:
                if edge.weight is None:
                    node.input[edge.index] = edge.restore
                    continue
                if edge.weight not in restored:
                    restored[edge.weight] = self._restore_weight(graph, edge.weight, initializers, taken)
                node.input[edge.index] = restored[edge.weight]
        _drop_dead(graph)
        return model

    def _restore_weight(self, graph, weight: str, initializers, taken: set[str]) -> str:
        values = self.user.fp32_constants[weight]
        existing = initializers.get(weight)
        if existing is not None and np.array_equal(numpy_helper.to_array(existing), values):
            return weight
        name = weight if weight not in taken else f"{weight}/fp32"
        while name in taken:
            name += "_"
        graph.initializer.append(numpy_helper.from_array(values, name))
        taken.add(name)
        return name

    def placement(self, plan: PrecisionPlan | Mapping[str, str] | Iterable[str]) -> dict[str, tuple[QuantizedInput, ...]]:
        """The quantized inputs each INT8 candidate keeps under ``plan``."""
        pinned = set(self.pinned(plan))
        return {name: edges for name, edges in self.user.quantized.items() if name not in pinned}


def _drop_dead(graph: onnx.GraphProto) -> None:
    """Remove Q/DQ nodes whose outputs nothing reads, then initializers nothing reads."""
    outputs = {o.name for o in graph.output}
    freed: set[str] = set()
    while True:
        read = {t for node in graph.node for t in node.input} | outputs
        dead = [n for n in graph.node if n.op_type in QDQ_OPS and not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            freed.update(node.input)
            graph.node.remove(node)
    read = {t for node in graph.node for t in node.input} | outputs
    for init in [i for i in graph.initializer if i.name in freed and i.name not in read]:
        graph.initializer.remove(init)


def apply_user_plan(
    model: str | os.PathLike, qdq_model: str | os.PathLike, document: Mapping, output: str | os.PathLike
) -> list[str]:
    """Write ``qdq_model`` with the plan of a ``plan.json`` ``document`` applied to ``output``; returns warnings."""
    from precision_lab.onnx_io import save_model

    user = load_user_qdq(qdq_model, model)
    builder = UserQdqBuilder(user)
    plan = PrecisionPlan(document.get("precisions") or {n: "fp32" for n in document["fp32_layers"]})
    missing = sorted(set(plan.high_precision) - set(builder.candidates))
    if missing:
        raise InputError(
            f"the plan's layers {missing[:5]} are not quantized in {user.path.name}; apply the plan to the Q/DQ model "
            "it was made for"
        )
    warnings = []
    saved = document.get("quantization", {}).get("qdq_model_sha256")
    if saved not in (None, user.sha256):
        warnings.append(f"{user.path.name} differs from the Q/DQ model the plan was made for (sha256 mismatch)")
    save_model(builder.build(plan), output)
    return warnings


def print_user_layers(model: str | os.PathLike, qdq_model: str | os.PathLike) -> int:
    """Print the candidates of a user Q/DQ model with their quantized inputs (``layers --qdq-model``)."""
    user = load_user_qdq(qdq_model, model)
    width = max([len(c.name) for c in user.candidates] + [5])
    print(f"{'index':>5}  {'layer':<{width}}  {'op':<18} quantized inputs")
    for c in user.candidates:
        shown = c.name if user.node_names[c.name] == c.name else f"{c.name} ({user.node_names[c.name]})"
        edges = ", ".join(
            f"{e.index}:{'weight ' + e.weight if e.weight else e.restore}" for e in user.quantized[c.name]
        )
        print(f"{c.index:>5}  {shown:<{width}}  {c.op_type:<18} {edges}")
    print(f"{len(user.candidates)} candidate layers (nodes with quantized inputs in {user.path.name})")
    return 0
