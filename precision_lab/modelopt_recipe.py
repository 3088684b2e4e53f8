"""Recipe ``modelopt``: precision-lab's own Q/DQ placement following NVIDIA Model Optimizer 0.47's INT8 default
rules, as far as precision-lab's per-op rule table expresses them (docs/modelopt.md, sections 3 and 9, cite the
ModelOpt source of each rule; the rule numbers P1-P14 below are that document's).

What it takes from ModelOpt:

* op types (3.1): Conv, ConvTranspose, Gemm, MatMul (P1/P2/P14), Add, Mul (P4/P5/P7), the pools (P7), Resize (P6),
  BatchNormalization, LayerNormalization, HardSwish, Clip (P7/P9); never Concat (3.1);
* no Q/DQ on any node output (``OpTypesToExcludeOutputQuantization``, 3.3);
* MatMul weights per channel on axis 1 (ORT's ``operators/matmul.py`` default, 3.3);
* candidates filtered by :func:`modelopt_candidates`: graph-output writers other than Conv/Gemm/MatMul (P10), batch-1
  GEMV and small GEMM (P11, from static shapes), small-channel and non-square Conv (P12), a pointwise op with a
  constant input (P7), LayerNormalization not fed by a Conv (P9).

What it does not (listed with reasons in docs/modelopt.md section 9): CASK partitions and the residual-Add input
choice (P1/P4: an INT8 Add here quantizes both inputs), pooling quantized only next to a quantized node (P7), MHA
cores (P8), shared Q/DQ per tensor (3.4: precision-lab splits them per consumer) and concat elimination (5.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from precision_lab.model import Candidate, PreparedModel
from precision_lab.op_rules import MODELOPT_OPS, MODELOPT_RULES

__all__ = ["MODELOPT_OPS", "MODELOPT_RULES", "modelopt_candidates"]

_MIN_MATMUL_DIM = 16  # graph_utils._MIN_MATMUL_DIM
_POINTWISE = {"Add", "Mul", "Clip"}
_LINEAR = {"Conv", "ConvTranspose", "Gemm", "MatMul"}  # op_types.is_linear_op
_COPY = {  # op_types.is_copy_op
    "Flatten", "Transpose", "Concat", "Split", "Squeeze", "Unsqueeze", "Expand", "ReverseSequence", "Reshape", "Tile",
    "Gather", "Slice", "GatherElements", "GatherND", "ScatterElements", "ScatterND", "OneHot",
}
_UNARY = {"Sigmoid", "Tanh", "Erf", "Softmax", "Cast", "Sqrt", "Exp", "Abs", "Neg", "Reciprocal", "HardSigmoid"}
_BINARY = {"Add", "Mul", "Div", "Sub", "Pow", "Min", "Max"}
_KGEN_PARENTS = {"AveragePool", "BatchNormalization", "GlobalAveragePool", "MaxPool", "Mul"}  # P5


def _is_silu_mul(node: onnx.NodeProto, producers) -> bool:
    """P1 (``partitioning._is_fusible_mul``): ``X -> Sigmoid -> Mul(X, .)`` with X from a Conv, BatchNormalization
    or Add; such a Mul is a member of X's CASK partition, not a quantized node."""
    if len(node.input) != 2:
        return False
    parents = [producers.get(t) for t in node.input]
    for sigmoid, other in ((parents[0], node.input[1]), (parents[1], node.input[0])):
        if sigmoid is not None and sigmoid.op_type in ("Sigmoid", "HardSigmoid") and sigmoid.input[0] == other:
            source = producers.get(other)
            return source is not None and source.op_type in ("Conv", "BatchNormalization", "Add")
    return False


def _is_gelu_mul(node: onnx.NodeProto, producers) -> bool:
    """P3 (``partitioning.find_hardcoded_patterns``): the ``Div -> Erf -> Add -> Mul`` of a GELU."""
    for tensor in node.input:
        add = producers.get(tensor)
        if add is not None and add.op_type == "Add":
            erf = [producers.get(t) for t in add.input]
            if any(p is not None and p.op_type == "Erf" for p in erf):
                return True
    return False


def _static(shape) -> list[int] | None:
    if shape is None or any(not isinstance(d, int) for d in shape):
        return None
    return list(shape)


def _small_conv(node: onnx.NodeProto, weight: np.ndarray | None, reads_graph_input: bool) -> bool:
    """P12 (``graph_utils.find_nodes_from_convs_to_exclude``): whether ModelOpt leaves this Conv out of INT8."""
    if weight is None:
        return True  # a non-constant weight is always excluded
    oc, ic = int(weight.shape[0]), int(weight.shape[1])
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    group = int(attrs.get("group", 1))
    kernel = list(attrs.get("kernel_shape", weight.shape[2:]) or [1])
    if oc >= 16 and ic >= 16:
        return False
    if group == 1:
        square = len(set(kernel)) <= 1
        return not ((oc % 8 == 0 or ic % 8 == 0) and (reads_graph_input or oc >= 16 or ic >= 16) and square)
    return not (oc % 8 == 0 and all(k >= 3 for k in kernel))


def _small_gemm(candidate: Candidate, has_constant: bool) -> bool:
    """P11 (``graph_utils.find_nodes_from_matmul_to_exclude``, by shapes): GEMV or N/K below 16."""
    out = _static(candidate.output_shapes[0]) if candidate.output_shapes else None
    a = _static(candidate.input_shapes[0]) if candidate.input_shapes else None
    if out is None or a is None or len(out) < 2:
        return False
    k, n = a[-1], out[-1]
    if has_constant:
        gemv = len(out) <= 2 and 1 in out
    else:
        gemv = 1 in out[-2:]
    return gemv or n < _MIN_MATMUL_DIM or k < _MIN_MATMUL_DIM


def modelopt_candidates(prepared: PreparedModel, candidates: Sequence[Candidate]) -> list[Candidate]:
    """``candidates`` minus the nodes ModelOpt's default INT8 placement never quantizes (P7, P9-P12)."""
    graph = prepared.model.graph
    constants = {init.name: init for init in graph.initializer}
    graph_inputs = {i.name for i in graph.input}
    graph_outputs = {o.name for o in graph.output}
    nodes = {node.name: node for node in graph.node}
    producers = {out: node for node in graph.node for out in node.output}
    kept: list[Candidate] = []
    kept_names: set[str] = set()
    for candidate in candidates:
        node = nodes[candidate.name]
        op = node.op_type
        has_constant = any(t in constants for t in node.input[:2] if t)
        if any(t in graph_outputs for t in node.output) and op not in {"Conv", "Gemm", "MatMul"}:
            continue  # P10
        if op in ("Gemm", "MatMul") and _small_gemm(candidate, has_constant):
            continue  # P11
        if op == "Conv":
            weight = numpy_helper.to_array(constants[node.input[1]]) if node.input[1] in constants else None
            if _small_conv(node, weight, node.input[0] in graph_inputs):
                continue  # P12
        if op in _POINTWISE and has_constant:
            continue  # P7: a pointwise op with a constant input
        if op == "Mul" and (_is_silu_mul(node, producers) or _is_gelu_mul(node, producers)):
            continue  # P1 (inside a Conv partition) or P3 (GELU)
        if op in ("Add", "Mul") and not _after_partition(node, producers, kept_names, constants):
            continue  # P5: a pointwise head is quantized only after a partition or a pooling/BN/Mul
        if op == "LayerNormalization":
            producer = producers.get(node.input[0])
            if producer is None or producer.op_type != "Conv":
                continue  # P9 (ModelOpt also follows copy ops; not here)
        kept.append(candidate)
        kept_names.add(candidate.name)
    return kept


def _partition_member(node: onnx.NodeProto, constants) -> bool:
    """P1: a copy op, or a unary/binary pointwise op with one non-constant input, joins its producer's partition."""
    if node.op_type in _COPY:
        return bool(node.input)
    if node.op_type in _UNARY:
        return True
    return node.op_type in _BINARY and len([t for t in node.input if t and t not in constants]) == 1


def _after_partition(node: onnx.NodeProto, producers, kept: set[str], constants) -> bool:
    """P5 (``graph_utils.filter_quantizable_kgen_heads``), simplified: a parent, looked up through copy ops and
    pointwise partition members (a bias Add, a Sigmoid), is a linear op, a pooling/BatchNormalization/Mul, or a
    quantized Add."""
    for tensor in node.input:
        parent = producers.get(tensor)
        while parent is not None and parent.op_type not in _KGEN_PARENTS and _partition_member(parent, constants):
            parent = producers.get(next((t for t in parent.input if t and t not in constants), ""))
        if parent is None:
            continue
        if parent.op_type in _LINEAR or parent.op_type in _KGEN_PARENTS or parent.name in kept:
            return True
    return False
