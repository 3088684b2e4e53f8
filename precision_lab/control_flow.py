"""Control flow (``If``, ``Loop``, ``Scan``) in a model being prepared: what can be folded, what stays FP32.

* An ``If`` whose condition is fixed for the data is folded: onnx-graphsurgeon's constant folding finds the
  condition (:func:`fixed_conditions`), and the taken branch's nodes replace the ``If``
  (:func:`flatten_ifs`). A condition is fixed when it follows from the fixed input shapes, or from inputs
  whose value is the same in every feed (:func:`constant_inputs`). Those values decide conditions only: every
  other use of such an input still reads the graph input, which the prepared model keeps, so the feeds are
  never reduced.
* Everything else is left alone: an ``If`` whose condition depends on the data, and every ``Loop`` and
  ``Scan`` (no maintained library unrolls them). Candidate ops inside them stay FP32
  (:func:`subgraph_layers`); the sweep quantizes the main graph only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["SUBGRAPH_OPS", "SubgraphLayer", "constant_inputs", "condition_inputs", "fixed_conditions",
           "flatten_ifs", "has_if", "subgraph_layers"]

SUBGRAPH_OPS = ("If", "Loop", "Scan")
_SHAPE_READERS = ("Shape", "Size")
MIN_FEEDS = 2  # with one feed every input is "constant": nothing can be concluded


@dataclass(frozen=True)
class SubgraphLayer:
    """A node of a candidate op type inside a control-flow subgraph; ``subgraph`` is ``<node>.<attribute>``
    of the outermost control-flow node of the main graph that holds it, ``owner_op`` that node's op type."""

    name: str
    op_type: str
    subgraph: str
    owner_op: str


def constant_inputs(feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Inputs whose value (dtype, shape and bytes) is the same in every feed, as {name: value}.

    Pass every feed the sweep reads (calibration and evaluation). Fewer than two feeds give ``{}``: one feed
    says nothing about which inputs are constant.
    """
    if len(feeds) < MIN_FEEDS:
        return {}
    first = feeds[0]
    found = {}
    for name, value in first.items():
        value = np.asarray(value)
        if all(name in feed and _same(value, np.asarray(feed[name])) for feed in feeds[1:]):
            found[name] = value.copy()
    return found


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _subgraphs(node: onnx.NodeProto) -> Iterable[tuple[str, onnx.GraphProto]]:
    for attribute in node.attribute:
        for graph in list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else []):
            yield attribute.name, graph


def _nodes_within(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for _, subgraph in _subgraphs(node):
            yield from _nodes_within(subgraph)


def has_if(model: onnx.ModelProto) -> bool:
    """Whether the model has an ``If`` node, in the main graph or in any subgraph."""
    return any(node.op_type == "If" for node in _nodes_within(model.graph))


def subgraph_layers(model: onnx.ModelProto, op_types: Iterable[str]) -> list[SubgraphLayer]:
    """Nodes of ``op_types`` inside the subgraphs of the main graph's ``If``/``Loop``/``Scan`` nodes (at any
    depth), in graph order."""
    wanted = set(op_types)
    found = []
    for node in model.graph.node:
        for attribute, subgraph in _subgraphs(node):
            for inner in _nodes_within(subgraph):
                if inner.op_type in wanted:
                    found.append(SubgraphLayer(inner.name or inner.op_type, inner.op_type,
                                               f"{node.name}.{attribute}", node.op_type))
    return found


def condition_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs whose values the conditions of the main graph's ``If`` nodes are computed from (an input
    read only by ``Shape``/``Size`` does not count: its shape is fixed already)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    inputs = {vi.name for vi in model.graph.input}
    todo = [node.input[0] for node in model.graph.node if node.op_type == "If" and node.input]
    seen: set[str] = set()
    found = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inputs:
            found.add(name)
        node = producer.get(name)
        if node is not None and node.op_type not in _SHAPE_READERS:
            todo.extend(n for n in node.input if n)
            for _, subgraph in _subgraphs(node):  # outer-scope names a producing subgraph reads
                todo.extend(n for inner in _nodes_within(subgraph) for n in inner.input if n in inputs)
    return found


def _gs_nodes_within(graph) -> Iterable:
    for node in graph.nodes:
        yield node
        for subgraph in node.subgraphs():
            yield from _gs_nodes_within(subgraph)


def fixed_conditions(model: onnx.ModelProto, constants: Mapping[str, np.ndarray]) -> dict[str, bool]:
    """{If node name: condition} for the ``If`` nodes (at any depth) whose condition constant folding fixes,
    given the fixed input shapes and ``constants`` (graph input name -> value). ``model`` is not changed."""
    import onnx_graphsurgeon as gs

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    if constants:  # on the copy only: the constant-valued inputs become initializers of the same name
        keep = [vi for vi in copy.graph.input if vi.name not in constants]
        del copy.graph.input[:]
        copy.graph.input.extend(keep)
        copy.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name) for name, v in constants.items())
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # graphsurgeon folds with ONNX Runtime: branches that cannot run
    from precision_lab.console import quiet_polygraphy

    with quiet_polygraphy():  # for these feeds (e.g. another sample rate) log errors we must not show
        graph = gs.import_onnx(copy)
        graph.fold_constants(fold_shapes=True, error_ok=True, flatten_subgraphs=False)
    fixed = {}
    for node in _gs_nodes_within(graph):
        if node.op == "If" and isinstance(node.inputs[0], gs.Constant):
            values = np.asarray(node.inputs[0].values)
            if values.size == 1:
                fixed[node.name] = bool(values.reshape(()))
    return fixed


def flatten_ifs(model: onnx.ModelProto, conditions: Mapping[str, bool]) -> None:
    """Replace each named ``If`` (in the main graph or any subgraph) by the nodes of the branch its condition
    takes.

    The branch's own tensors and initializers get the prefix ``<If name>/<branch>/``; the node producing a
    branch output produces the ``If`` output instead (an output with no producer in the branch, i.e. an
    outer-scope tensor or an initializer, goes through an ``Identity``). Node names are kept. This is not
    onnx-graphsurgeon's ``flatten_subgraphs``: it unbinds the ``If`` outputs while iterating over them, so it
    leaves every second output of a multi-output ``If`` without a producer (an invalid model).
    """
    _flatten_in(model.graph, conditions)


def _flatten_in(graph: onnx.GraphProto, conditions: Mapping[str, bool]) -> None:
    nodes: list[onnx.NodeProto] = []
    todo = list(graph.node)
    while todo:
        node = todo.pop(0)
        if node.op_type == "If" and node.name in conditions:
            attribute = "then_branch" if conditions[node.name] else "else_branch"
            branch = next(a.g for a in node.attribute if a.name == attribute)
            todo[:0] = _inline_branch(graph, branch, node, f"{node.name}/{attribute}/")  # nested Ifs next
            continue
        for _, subgraph in _subgraphs(node):
            _flatten_in(subgraph, conditions)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _inline_branch(
    graph: onnx.GraphProto, branch: onnx.GraphProto, owner: onnx.NodeProto, prefix: str
) -> list[onnx.NodeProto]:
    """The nodes of ``branch`` renamed for the main graph (its initializers move to ``graph``)."""
    local = {out for node in branch.node for out in node.output if out} | {init.name for init in branch.initializer}
    rename = {name: prefix + name for name in local}
    produced = {out for node in branch.node for out in node.output if out}
    passthrough = []  # (branch output, If output) pairs that need an Identity
    for branch_output, if_output in zip(branch.output, owner.output):
        name = branch_output.name
        if name in produced and rename[name] == prefix + name:
            rename[name] = if_output  # its producer now produces the If output
        else:  # outer-scope tensor, initializer, or a tensor that is already another If output
            passthrough.append((name, if_output))
    for init in branch.initializer:
        moved = onnx.TensorProto()
        moved.CopyFrom(init)
        moved.name = rename[init.name]
        graph.initializer.append(moved)
    inlined = []
    for node in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        _rename_references(copy, rename)
        copy.output[:] = [rename.get(name, name) for name in node.output]
        inlined.append(copy)
    for source, if_output in passthrough:
        inlined.append(onnx.helper.make_node(
            "Identity", [rename.get(source, source)], [if_output], name=f"{prefix}{if_output}/Identity"
        ))
    return inlined


def _rename_references(node: onnx.NodeProto, rename: Mapping[str, str]) -> None:
    """Rename the inputs of ``node`` and the outer-scope references of its subgraphs (ONNX names are unique
    across a graph and its subgraphs, so nothing is shadowed)."""
    node.input[:] = [rename.get(name, name) for name in node.input]
    for _, subgraph in _subgraphs(node):
        for inner in subgraph.node:
            _rename_references(inner, rename)
        for output in subgraph.output:
            output.name = rename.get(output.name, output.name)
