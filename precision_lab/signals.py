"""One-pass signals: the error each layer's INT8 version causes at the judged outputs, estimated from single runs.

Two runs, each of one model on a few evaluation feeds:

1. The *shadow model* is the FP32 model plus, for every candidate, a shadow copy of it that reads the FP32
   model's own activations through the all-INT8 model's Q/DQ nodes (and its quantized weights). It gives each
   layer's own INT8 error at its output; inherited error cannot mask it. (The first signal, measured in the
   all-INT8 model as a layer's output error minus its inputs', was exactly 0 for 39 of PP-OCRv4 det's 64 layers.)
2. The *downstream gain* (:mod:`precision_lab.downstream_gain`, from the all-INT8 and FP32 models with every
   float tensor exposed) carries that error to the judged parts: a deep layer's error before a damping head counts
   for little, an early layer's for more, and a branch that never reaches a judged ``--output-slice`` for nothing.

The signal is the estimated rel-l2 of the worst judged part with only that layer in INT8: an estimate of its
``isolate`` value. Spearman correlation with the measured ``isolate`` values, same feeds: PP-OCRv4 det 0.918
(own error alone: 0.667), a YOLOX detector judged on its score slice 0.852 (0.518), openWakeWord's embedding
model 0.866 (0.866). A model output judged through ``--output-slice`` that a layer writes itself is measured on
those slices only (the worst one): a Concat that zeroes YOLOv8's class scores adds little error to the whole
output, dominated by pixel boxes, but all of it to the score slice. Candidates are main-graph nodes, so no
tensor of an ``If``/``Loop``/``Scan`` subgraph is exposed (an outer-scope tensor a subgraph reads counts as an
input of its node). Signals only order the search; every plan the tool reports is still evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from precision_lab.compare import OutputSlice
from precision_lab.data import Feed
from precision_lab.downstream_gain import Part, concat_fractions, error_energies, tensor_gains
from precision_lab.model import Candidate, PreparedModel
from precision_lab.qdq import BEFORE_QDQ, QdqBuilder

__all__ = ["judged_parts", "layer_signals", "shadow_model"]

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


def _own_energies(
    model: onnx.ModelProto,
    pairs: Mapping[str, Sequence[tuple[str, str]]],
    feeds: Sequence[Feed],
    parts: Sequence[Part],
) -> tuple[dict[str, float], dict[tuple[str, Part], float]]:
    """Summed over ``feeds``, one feed at a time: each layer's own squared INT8 error on every FP32 tensor it
    writes (tensor -> energy), and on each judged part it writes itself ((layer, part) -> energy). Integer and
    boolean tensors are not compared."""
    from precision_lab.ort_session import create_session

    session = create_session(model.SerializeToString())
    names = sorted({t for compared in pairs.values() for pair in compared for t in pair})
    own: dict[str, float] = {}
    own_parts: dict[tuple[str, Part], float] = {}
    for feed in feeds:
        values = dict(zip(names, session.run(names, dict(feed))))
        for layer, compared in pairs.items():
            for shadow, fp32 in compared:
                if not np.issubdtype(np.asarray(values[fp32]).dtype, np.floating):
                    continue
                q, r = np.asarray(values[shadow], np.float64), np.asarray(values[fp32], np.float64)
                own[fp32] = own.get(fp32, 0.0) + float(np.sum((q - r) ** 2))
                for part in parts:
                    if part[0] == fp32:
                        pq, pr = (q, r) if part[1] is None else (part[1].take(q), part[1].take(r))
                        own_parts[layer, part] = own_parts.get((layer, part), 0.0) + float(np.sum((pq - pr) ** 2))
    return own, own_parts


def judged_parts(
    model: onnx.ModelProto, slices: Sequence[OutputSlice] = (), judged: Sequence[str] | None = None
) -> list[Part]:
    """The parts the sweep judges: each judged output (``judged``, default all), as its slices when it has any."""
    parts: list[Part] = []
    for output in model.graph.output:
        if judged is not None and output.name not in judged:
            continue
        own = [s for s in slices if s.output == output.name]
        parts.extend((output.name, s) for s in own) if own else parts.append((output.name, None))
    return parts


SIGNAL_FEEDS = 8  # an ordering signal needs a few feeds, not the whole evaluation set


def layer_signals(
    prepared: PreparedModel,
    builder: QdqBuilder,
    candidates: Sequence[Candidate],
    feeds: Sequence[Feed],
    *,
    slices: Sequence[OutputSlice] = (),
    judged: Sequence[str] | None = None,
) -> dict[str, float]:
    """Each candidate's estimated ``isolate`` error (larger = more suspicious): its own INT8 error, read on FP32
    activations through the all-INT8 model's Q/DQ (:func:`shadow_model`), carried to the judged parts by the
    downstream gain (:mod:`precision_lab.downstream_gain`), as the rel-l2 of the worst part. From the first
    :data:`SIGNAL_FEEDS` feeds; ``slices`` and ``judged`` (default every output) are the sweep's judged parts."""
    feeds = list(feeds)[:SIGNAL_FEEDS]
    quantized = builder.build_qdq(())
    model, pairs = shadow_model(prepared.model, quantized, [c.name for c in candidates])
    parts = judged_parts(prepared.model, slices, judged)
    own, own_parts = _own_energies(model, pairs, feeds, parts)
    energy, part_error, part_reference = error_energies(prepared.model, quantized, feeds, parts)
    fractions = concat_fractions(prepared.model, feeds[0], [p for _, p in parts if p is not None]) if feeds else {}
    signals = {c.name: 0.0 for c in candidates}
    for part in parts:
        output, piece = part
        if part_reference.get(part, 0.0) <= 0:
            continue
        whole = energy.get(output, 0.0)
        share = 1.0 if piece is None else (part_error.get(part, 0.0) / whole if whole > 0 else 0.0)
        gains = tensor_gains(prepared.model.graph, energy, own, part, share, fractions)
        for layer, compared in pairs.items():
            reached = sum(
                own_parts.get((layer, part), 0.0) if tensor == output else own.get(tensor, 0.0) * gains.get(tensor, 0.0)
                for _, tensor in compared
            )
            signals[layer] = max(signals[layer], float(np.sqrt(reached / part_reference[part])))
    return signals
