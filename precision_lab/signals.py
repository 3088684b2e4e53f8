"""One-pass signals: how much error each layer adds, from a single run of the all-INT8 model.

The all-INT8 Q/DQ model and the FP32 model are run once on the evaluation feeds with every candidate's input
and output tensors exposed. Candidates are main-graph nodes, so only main-graph tensors are exposed: a tensor
produced inside an ``If``/``Loop``/``Scan`` subgraph is never made a graph output. A layer's signal is the rel-l2 of its output minus the largest rel-l2 of its
inputs: the error it adds itself, not the error it inherits. Signals only order the search; every plan the
tool reports is still evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

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
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _tensor_errors(reference: bytes, quantized: bytes, feeds: Sequence[Feed], tensors: Sequence[str]) -> dict[str, float]:
    """rel-l2 of every tensor in ``quantized`` against ``reference`` over ``feeds``, one feed at a time (only
    per-tensor sums are kept, so memory does not grow with the number of feeds)."""
    ref_session, q_session = _session(reference), _session(quantized)
    err = dict.fromkeys(tensors, 0.0)
    ref = dict.fromkeys(tensors, 0.0)
    for feed in feeds:
        expected = ref_session.run(list(tensors), dict(feed))
        actual = q_session.run(list(tensors), dict(feed))
        for name, r, q in zip(tensors, expected, actual):
            r64, q64 = np.asarray(r, dtype=np.float64), np.asarray(q, dtype=np.float64)
            err[name] += float(np.sum((q64 - r64) ** 2))
            ref[name] += float(np.sum(r64 * r64))
    return {
        name: float(np.sqrt(err[name] / ref[name])) if ref[name] > 0 else (0.0 if err[name] == 0 else float("inf"))
        for name in tensors
    }


SIGNAL_FEEDS = 8  # an ordering signal needs a few feeds, not the whole evaluation set


def layer_signals(
    prepared: PreparedModel, builder: QdqBuilder, candidates: Sequence[Candidate], feeds: Sequence[Feed]
) -> dict[str, float]:
    """Error each candidate adds in the all-INT8 model (larger = more suspicious), from one run of each model
    on the first :data:`SIGNAL_FEEDS` feeds."""
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
    measured = _tensor_errors(_expose(prepared.model, tensors), _expose(builder.build(()), tensors), feeds, tensors)
    error: Mapping[str, float] = {t: 0.0 if t in graph_inputs else measured[t] for t in tensors}
    signals = {}
    for name, (inputs, outputs) in io.items():
        inherited = max((error[t] for t in inputs), default=0.0)
        added = max((error[t] for t in outputs), default=0.0)
        signals[name] = max(0.0, added - inherited)
    return signals
