"""One-pass signals: how much error each layer's INT8 version adds itself, from a single run of one model.

The *shadow model* is the FP32 model plus, for every candidate, a shadow copy of it that reads the FP32 model's
own activations through the all-INT8 model's Q/DQ nodes (and its quantized weights). One run of it on a few
evaluation feeds gives each layer's own INT8 error: the rel-l2 of its shadow output against its FP32 output.
Inherited error cannot mask it. (The first signal, measured in the all-INT8 model as a layer's output error minus
its inputs', was exactly 0 for 39 of PP-OCRv4 det's 64 layers and 51 of a YOLOX detector's 83; this one ranks
them with a Spearman correlation to the measured ``isolate`` sensitivity of 0.67 and 0.52 instead of 0.31 and
0.26.) Candidates are main-graph nodes, so no tensor of an ``If``/``Loop``/``Scan`` subgraph is exposed. A model
output judged through ``--output-slice`` is measured on those slices only (the worst one), as the sweep judges
it: a Concat that zeroes YOLOv8's class scores adds little error to the whole output, dominated by pixel boxes,
but all of it to the score slice. Signals only order the search; every plan the tool reports is still evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from precision_lab.compare import OutputSlice
from precision_lab.data import Feed
from precision_lab.model import Candidate, PreparedModel
from precision_lab.qdq import BEFORE_QDQ, QdqBuilder

__all__ = ["layer_signals", "shadow_model"]

SHADOW = "#int8"
"""Suffix of the shadow copies' node and tensor names."""

def shadow_model(
    fp32: onnx.ModelProto, quantized: onnx.ModelProto, layers: Sequence[str]
) -> tuple[onnx.ModelProto, dict[str, list[tuple[str, str]]]]:
    """``fp32`` with a shadow copy of each of ``layers`` as it runs in ``quantized`` (its Q/DQ input chains and
    quantized weights), reading ``fp32``'s tensors. Returns the model, with every compared tensor as an output,
    and for each layer the (shadow output, FP32 output) pairs to compare."""
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    graph = model.graph
    known = {t for node in graph.node for t in node.output} | {i.name for i in graph.initializer}
    known |= {i.name for i in graph.input}
    added_initializers: set[str] = set()
    q_initializers = {init.name: init for init in quantized.graph.initializer}
    q_nodes = {node.name: node for node in quantized.graph.node}
    q_producer = {t: node for node in quantized.graph.node for t in node.output}
    q_order = {node.name: i for i, node in enumerate(quantized.graph.node)}
    q_consumers: dict[str, list[onnx.NodeProto]] = {}
    for q_node in quantized.graph.node:
        for tensor in q_node.input:
            q_consumers.setdefault(tensor, []).append(q_node)
    pairs: dict[str, list[tuple[str, str]]] = {}
    for layer in layers:
        node = q_nodes.get(layer)
        if node is None:
            continue
        chain: dict[str, onnx.NodeProto] = {}  # what the layer reads that the FP32 model does not have
        pending = [t for t in node.input if t]
        while pending:
            tensor = pending.pop()
            if tensor in known or tensor in q_initializers or tensor in chain:
                continue
            producer = q_producer[tensor]
            for output in producer.output:
                chain[output] = producer
            pending.extend(t for t in producer.input if t)
        tail = _output_qdq(node, q_consumers)  # a layer output the builder quantizes itself
        shadowed = set(chain) | {t for n in [node, *tail] for t in n.output}
        upstream = sorted({id(n): n for n in chain.values()}.values(), key=lambda n: q_order[n.name])
        for original in [*upstream, node, *tail]:
            copy = onnx.NodeProto()
            copy.CopyFrom(original)
            copy.name = original.name + SHADOW
            del copy.input[:]
            copy.input.extend(t + SHADOW if t in shadowed else t for t in original.input)
            del copy.output[:]
            copy.output.extend(t + SHADOW if t else "" for t in original.output)
            graph.node.append(copy)
            for tensor in original.input:
                if tensor in q_initializers and tensor not in known and tensor not in added_initializers:
                    graph.initializer.append(q_initializers[tensor])
                    added_initializers.add(tensor)
        compared = []
        for tensor in node.output:
            reference = tensor.removesuffix(BEFORE_QDQ)
            if tensor and reference in known:
                compared.append(((reference if reference in shadowed else tensor) + SHADOW, reference))
        pairs[layer] = compared
    types = {v.name: v.type.tensor_type.elem_type for v in [*quantized.graph.value_info, *fp32.graph.value_info]}
    present = {out.name for out in graph.output}
    for tensor in sorted({t for compared in pairs.values() for pair in compared for t in pair} - present):
        elem_type = types.get(tensor.removesuffix(SHADOW)) or TensorProto.FLOAT
        graph.output.append(helper.make_tensor_value_info(tensor, elem_type, None))
    return model, pairs


def _output_qdq(node: onnx.NodeProto, consumers: Mapping[str, list[onnx.NodeProto]]) -> list[onnx.NodeProto]:
    """The Q/DQ pair the builder puts on ``node``'s own output (``X/before_qdq -> Q -> DQ -> X``), in order."""
    found: list[onnx.NodeProto] = []
    pending = [t for t in node.output if t.endswith(BEFORE_QDQ)]
    while pending:
        for consumer in consumers.get(pending.pop(0), []):
            if consumer.name.startswith(f"{node.name}/output") and consumer not in found:
                found.append(consumer)
                pending.extend(consumer.output)
    return found


def _rel_l2(err: float, ref: float) -> float:
    return float(np.sqrt(err / ref)) if ref > 0 else (0.0 if err == 0 else float("inf"))


def _pair_errors(
    model: onnx.ModelProto,
    pairs: Mapping[str, Sequence[tuple[str, str]]],
    feeds: Sequence[Feed],
    slices: Sequence[OutputSlice] = (),
) -> dict[str, float]:
    """Each layer's worst rel-l2 over its (shadow, FP32) pairs, summed over ``feeds`` one feed at a time (only
    sums are kept, so memory does not grow with the feeds). A FP32 tensor named by ``slices`` gets the worst of
    its slices; integer and boolean outputs are not compared."""
    from precision_lab.ort_session import create_session

    session = create_session(model.SerializeToString())
    names = sorted({t for compared in pairs.values() for pair in compared for t in pair})
    parts = {r: [s for s in slices if s.output == r] or [None] for compared in pairs.values() for _, r in compared}
    err: dict[tuple[str, OutputSlice | None], float] = {}
    ref: dict[tuple[str, OutputSlice | None], float] = {}
    for feed in feeds:
        values = dict(zip(names, session.run(names, dict(feed))))
        for compared in pairs.values():
            for shadow, fp32 in compared:
                if not np.issubdtype(np.asarray(values[fp32]).dtype, np.floating):
                    continue
                whole_q, whole_r = np.asarray(values[shadow], np.float64), np.asarray(values[fp32], np.float64)
                for part in parts[fp32]:
                    q64, r64 = (whole_q, whole_r) if part is None else (part.take(whole_q), part.take(whole_r))
                    key = (shadow, part)
                    err[key] = err.get(key, 0.0) + float(np.sum((q64 - r64) ** 2))
                    ref[key] = ref.get(key, 0.0) + float(np.sum(r64 * r64))
    return {
        layer: max((_rel_l2(err[shadow, part], ref[shadow, part]) for shadow, fp32 in compared
                    for part in parts[fp32] if (shadow, part) in err), default=0.0)
        for layer, compared in pairs.items()
    }


SIGNAL_FEEDS = 8  # an ordering signal needs a few feeds, not the whole evaluation set


def layer_signals(
    prepared: PreparedModel,
    builder: QdqBuilder,
    candidates: Sequence[Candidate],
    feeds: Sequence[Feed],
    *,
    slices: Sequence[OutputSlice] = (),
) -> dict[str, float]:
    """The INT8 error each candidate adds itself (larger = more suspicious): its output's rel-l2 when it reads
    FP32 activations through the all-INT8 model's Q/DQ, from one run of the :func:`shadow_model` on the first
    :data:`SIGNAL_FEEDS` feeds; model outputs named by ``slices`` are measured on those slices."""
    feeds = list(feeds)[:SIGNAL_FEEDS]
    model, pairs = shadow_model(prepared.model, builder.build_qdq(()), [c.name for c in candidates])
    outputs = {out.name for out in prepared.model.graph.output}
    errors = _pair_errors(model, pairs, feeds, [s for s in slices if s.output in outputs])
    return {c.name: errors.get(c.name, 0.0) for c in candidates}
