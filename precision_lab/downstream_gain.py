"""How much of an error at each tensor reaches the judged outputs: the downstream gain, from one run of the
all-INT8 model next to the FP32 one.

A layer's own INT8 error (:mod:`precision_lab.signals`) is measured at its output; the sweep judges the model's
outputs. Between the two, the rest of the network amplifies or damps the error: a deep layer's error before a
saturated sigmoid barely shows, an early layer's grows. Errors from independent sources add in power (on the
tier's detectors, the sum of the layers' squared ``isolate`` errors predicts hundreds of other plans' values with a
log-correlation of 0.97), so one number per node describes how it passes error on:

* Run the FP32 model and the all-INT8 model on the same feeds, every float tensor of the main graph exposed, and
  sum each tensor's squared error ``E[t]`` (one feed at a time, in chunks of tensors: memory stays bounded).
* A node's *power gain* is what its outputs carry beyond its own error, over what its inputs bring:
  ``a2 = (E[out] - own) / E[in]``, with ``own`` the node's own error energy from the shadow model.
* Backwards from each judged part (a model output, or an ``--output-slice`` of one), the gain ``G[t]`` of a
  tensor is the sum over its consumers of ``a2 * G[consumer output]``. A slice takes the share of the whole
  output's error that lands in it, except where the path from a ``Concat`` to the output only moves data
  (``Reshape``, ``Transpose``, ``Concat``, ``Slice``...): there the slice's elements are traced to the
  ``Concat`` inputs they come from (:func:`concat_fractions`, one run with label values), so a box-regression
  branch gets no weight on a score slice and the score branch gets it all.

Every node's error is assumed spread evenly over its inputs' and outputs' elements, and errors of different
sources uncorrelated. This is an estimate for ordering a search, never a reported value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from precision_lab.compare import OutputSlice
from precision_lab.data import Feed
from precision_lab.fp16 import float_tensors

__all__ = ["DATA_MOVEMENT", "Part", "concat_fractions", "error_energies", "tensor_gains"]

DATA_MOVEMENT = frozenset({"Reshape", "Transpose", "Concat", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Identity",
                           "Split"})
"""Op types that only move elements: a label value passes through them unchanged."""

CHUNK_BYTES = 512 * 2**20
"""At most this many bytes of exposed tensors per run (estimated from the value_info shapes)."""

LABEL = 1.0e6
"""Label of a ``Concat`` input i: ``LABEL * (i + 1)``, far from any activation value."""

Part = tuple[str, OutputSlice | None]
"""A judged part: an output name, and its slice (``None``: the whole output)."""


def _float_tensors(model: onnx.ModelProto) -> list[str]:
    """The FP32 tensors main-graph nodes write, in graph order (:func:`precision_lab.fp16.float_tensors`)."""
    floats = float_tensors(model)
    return [t for node in model.graph.node for t in node.output if t in floats]


def _size(model: onnx.ModelProto) -> dict[str, int]:
    sizes = {}
    for vi in [*model.graph.value_info, *model.graph.output]:
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
        sizes[vi.name] = int(np.prod(dims)) * 4
    return sizes


def _chunks(names: Sequence[str], sizes: Mapping[str, int]) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    total = 0
    for name in names:
        size = sizes.get(name, 4)
        if chunks[-1] and total + size > CHUNK_BYTES:
            chunks.append([])
            total = 0
        chunks[-1].append(name)
        total += size
    return chunks


def _exposing(model: onnx.ModelProto, names: Sequence[str]) -> bytes:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {out.name for out in exposed.graph.output}
    for name in names:
        if name not in present:
            exposed.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return exposed.SerializeToString()


def error_energies(
    fp32: onnx.ModelProto, quantized: onnx.ModelProto, feeds: Sequence[Feed], parts: Sequence[Part]
) -> tuple[dict[str, float], dict[Part, float], dict[Part, float]]:
    """Summed over ``feeds``: each float tensor's squared error in ``quantized`` against ``fp32`` (tensors both
    models have), and each judged part's squared error and squared reference."""
    from precision_lab.ort_session import create_session

    produced = {t for node in quantized.graph.node for t in node.output}
    names = [t for t in _float_tensors(fp32) if t in produced]
    for output, _ in parts:
        if output not in names and output in produced:
            names.append(output)
    energy: dict[str, float] = defaultdict(float)
    part_error: dict[Part, float] = defaultdict(float)
    part_reference: dict[Part, float] = defaultdict(float)
    for chunk in _chunks(names, _size(fp32)):
        sessions = [create_session(_exposing(model, chunk)) for model in (fp32, quantized)]
        for feed in feeds:
            reference, value = (dict(zip(chunk, s.run(chunk, dict(feed)))) for s in sessions)
            for name in chunk:
                r, q = np.asarray(reference[name], np.float64), np.asarray(value[name], np.float64)
                if r.shape != q.shape:
                    continue
                energy[name] += float(np.sum((q - r) ** 2))
                for part in parts:
                    if part[0] == name:
                        pr, pq = (r, q) if part[1] is None else (part[1].take(r), part[1].take(q))
                        part_error[part] += float(np.sum((pq - pr) ** 2))
                        part_reference[part] += float(np.sum(pr * pr))
    return dict(energy), dict(part_error), dict(part_reference)


def concat_fractions(fp32: onnx.ModelProto, feed: Feed, slices: Sequence[OutputSlice]) -> dict[tuple[str, OutputSlice], list[float]]:
    """For each ``Concat`` whose every path to a sliced output only moves data, and each slice of that output: the
    share of each ``Concat`` input's elements that land in the slice. One run of the FP32 model per such
    ``Concat``, its output replaced by label values."""
    from precision_lab.ort_session import create_session

    graph = fp32.graph
    producer = {t: node for node in graph.node for t in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for t in node.input:
            consumers[t].append(node)
    fractions: dict[tuple[str, OutputSlice], list[float]] = {}
    shapes: dict[str, tuple[int, ...]] | None = None
    floats = set(_float_tensors(fp32))
    constants = {init.name: tuple(int(d) for d in init.dims) for init in graph.initializer}
    for output in dict.fromkeys(s.output for s in slices):
        ancestors: set[str] = set()
        pending = [output]
        while pending:
            node = producer.get(pending.pop())
            if node is not None and node.name not in ancestors:
                ancestors.add(node.name)
                pending.extend(node.input)
        for concat in graph.node:
            if concat.op_type != "Concat" or concat.name not in ancestors or concat.output[0] not in floats:
                continue
            below, pending = set(), list(concat.output)
            while pending:
                for node in consumers[pending.pop()]:
                    if node.name not in below:
                        below.add(node.name)
                        pending.extend(node.output)
            if any(node.op_type not in DATA_MOVEMENT for node in graph.node if node.name in below & ancestors):
                continue
            if shapes is None:  # the float Concats' inputs, from one run (constants from their dims)
                names = list(dict.fromkeys(
                    t for node in graph.node if node.op_type == "Concat" and node.output[0] in floats
                    for t in node.input if t and t not in constants
                ))
                values = create_session(_exposing(fp32, names)).run(names, dict(feed))
                shapes = {**constants, **{name: np.shape(value) for name, value in zip(names, values)}}
            axis = next(a.i for a in concat.attribute if a.name == "axis")
            labels = np.concatenate(
                [np.full(shapes[t], LABEL * (i + 1), np.float32) for i, t in enumerate(concat.input)], axis=axis
            )
            labelled = onnx.ModelProto()
            labelled.CopyFrom(fp32)
            nodes = labelled.graph.node
            index = next(i for i, node in enumerate(nodes) if node.name == concat.name)
            nodes.remove(nodes[index])
            nodes.insert(index, helper.make_node("Constant", [], [concat.output[0]], name=concat.name + "#label",
                                                 value=numpy_helper.from_array(labels)))
            (result,) = create_session(labelled.SerializeToString()).run([output], dict(feed))
            for part in (s for s in slices if s.output == output):
                taken = part.take(np.asarray(result, np.float64))
                fractions[concat.name, part] = [
                    float(np.sum(np.abs(taken - LABEL * (i + 1)) < 0.5)) / max(float(np.prod(shapes[t])), 1.0)
                    for i, t in enumerate(concat.input)
                ]
    return fractions


def tensor_gains(
    graph: onnx.GraphProto,
    energy: Mapping[str, float],
    own: Mapping[str, float],
    part: Part,
    share: float,
    fractions: Mapping[tuple[str, OutputSlice], Sequence[float]],
) -> dict[str, float]:
    """``G[t]``: the error energy reaching ``part`` per unit of error energy at tensor ``t`` (see the module).
    ``energy``: each tensor's all-INT8 error energy; ``own``: each tensor's own error energy added by the node
    that writes it (its shadow); ``share``: the part's share of its output's error energy (1 for a whole
    output); ``fractions``: :func:`concat_fractions`."""
    output, piece = part
    known = set(energy)
    gains: dict[str, float] = defaultdict(float)
    gains[output] = share
    for node in reversed(graph.node):
        split = fractions.get((node.name, piece)) if piece is not None else None
        if split is not None:
            for tensor, fraction in zip(node.input, split):
                gains[tensor] += fraction
            continue
        inputs = [t for t in [*node.input, *_captured(node, known)] if t in energy]
        arriving = sum(energy[t] for t in inputs)
        passed = 0.0
        for tensor in node.output:
            if gains.get(tensor, 0.0) == 0.0 or tensor not in energy:
                continue
            power = max(energy[tensor] - own.get(tensor, 0.0), 0.0) / arriving if arriving > 0 else 1.0
            passed += power * gains[tensor]
        if passed > 0:
            for tensor in inputs:
                gains[tensor] += passed
    return dict(gains)


def _captured(node: onnx.NodeProto, known: set[str]) -> list[str]:
    """Main-graph tensors an ``If``/``Loop``/``Scan`` node's subgraphs read from the outer scope."""
    found: list[str] = []
    pending = [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    pending += [g for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for g in a.graphs]
    while pending:
        sub = pending.pop()
        for inner in sub.node:
            found.extend(t for t in inner.input if t in known)
            pending += [a.g for a in inner.attribute if a.type == onnx.AttributeProto.GRAPH]
            pending += [g for a in inner.attribute if a.type == onnx.AttributeProto.GRAPHS for g in a.graphs]
    return list(dict.fromkeys(found))
