"""One-pass signals: how much error each layer adds, from a single run of the all-INT8 model.

The all-INT8 Q/DQ model and the FP32 model are run once on the evaluation feeds with every candidate's input
and output tensors exposed. Candidates are main-graph nodes, so only main-graph tensors are exposed: a tensor
produced inside an ``If``/``Loop``/``Scan`` subgraph is never made a graph output. A layer's signal is the rel-l2 of its output minus the largest rel-l2 of its
inputs: the error it adds itself, not the error it inherits. A model output judged through ``--output-slice``
is measured on those slices only (the worst one), as the sweep judges it: a Concat that zeroes YOLOv8's class
scores adds little error to the whole output, dominated by pixel boxes, but all of it to the score slice.
Signals only order the search; every plan the tool reports is still evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from precision_lab.compare import OutputSlice
from precision_lab.data import Feed
from precision_lab.model import Candidate, PreparedModel
from precision_lab.qdq import QdqBuilder

__all__ = ["layer_signals"]


def _expose(model: onnx.ModelProto, tensors: Sequence[str]) -> bytes:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {out.name for out in exposed.graph.output}
    for name in tensors:
        if name not in present:
            exposed.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return exposed.SerializeToString()


def _session(model: bytes):
    from precision_lab.ort_session import create_session

    return create_session(model)


def _rel_l2(err: float, ref: float) -> float:
    return float(np.sqrt(err / ref)) if ref > 0 else (0.0 if err == 0 else float("inf"))


def _tensor_errors(
    reference: bytes,
    quantized: bytes,
    feeds: Sequence[Feed],
    tensors: Sequence[str],
    slices: Sequence[OutputSlice] = (),
) -> dict[str, float]:
    """rel-l2 of every tensor in ``quantized`` against ``reference`` over ``feeds``, one feed at a time (only
    per-tensor sums are kept, so memory does not grow with the number of feeds). A tensor named by ``slices``
    gets the worst rel-l2 of its slices."""
    ref_session, q_session = _session(reference), _session(quantized)
    parts = {name: [s for s in slices if s.output == name] or [None] for name in tensors}
    err = {(name, part): 0.0 for name in tensors for part in parts[name]}
    ref = dict.fromkeys(err, 0.0)
    for feed in feeds:
        expected = ref_session.run(list(tensors), dict(feed))
        actual = q_session.run(list(tensors), dict(feed))
        for name, r, q in zip(tensors, expected, actual):
            for part in parts[name]:
                r64, q64 = np.asarray(r, dtype=np.float64), np.asarray(q, dtype=np.float64)
                if part is not None:
                    r64, q64 = part.take(r64), part.take(q64)
                err[name, part] += float(np.sum((q64 - r64) ** 2))
                ref[name, part] += float(np.sum(r64 * r64))
    return {name: max(_rel_l2(err[name, part], ref[name, part]) for part in parts[name]) for name in tensors}


SIGNAL_FEEDS = 8  # an ordering signal needs a few feeds, not the whole evaluation set


def layer_signals(
    prepared: PreparedModel,
    builder: QdqBuilder,
    candidates: Sequence[Candidate],
    feeds: Sequence[Feed],
    *,
    slices: Sequence[OutputSlice] = (),
) -> dict[str, float]:
    """Error each candidate adds in the all-INT8 model (larger = more suspicious), from one run of each model
    on the first :data:`SIGNAL_FEEDS` feeds; model outputs named by ``slices`` are measured on those slices."""
    feeds = list(feeds)[:SIGNAL_FEEDS]
    initializers = {init.name for init in prepared.model.graph.initializer}
    graph_inputs = {value.name for value in prepared.model.graph.input}
    nodes = {node.name: node for node in prepared.model.graph.node}
    io: dict[str, tuple[list[str], list[str]]] = {}
    for candidate in candidates:
        node = nodes[candidate.name]
        inputs = [t for t in node.input if t and t not in initializers]
        io[candidate.name] = (inputs, [t for t in node.output if t])
    tensors = sorted({t for ins, outs in io.values() for t in ins + outs})
    outputs = {out.name for out in prepared.model.graph.output}
    judged = [s for s in slices if s.output in outputs]
    measured = _tensor_errors(
        _expose(prepared.model, tensors), _expose(builder.build(()), tensors), feeds, tensors, judged
    )
    error: Mapping[str, float] = {t: 0.0 if t in graph_inputs else measured[t] for t in tensors}
    signals = {}
    for name, (inputs, outputs) in io.items():
        inherited = max((error[t] for t in inputs), default=0.0)
        added = max((error[t] for t in outputs), default=0.0)
        signals[name] = max(0.0, added - inherited)
    return signals
