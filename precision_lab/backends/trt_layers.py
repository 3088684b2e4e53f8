"""Match TensorRT network layers to the ONNX nodes they came from.

Pure data-structure code (no TensorRT import): a "layer" is anything with a ``name`` attribute and,
optionally, a ``metadata`` attribute, which is what ``tensorrt.ILayer`` offers.

How TensorRT names and tags layers (TensorRT 10's ONNX parser, ``ImporterContext::registerLayer``):

- ``layer.metadata`` is ``"[ONNX Layer: NODE]"`` for every layer the parser adds for an ONNX node (not for
  constant layers). Engine-inspector output of fused layers joins several entries, separated by the control
  characters ``\\x1f`` / ``\\x1e`` or simply concatenated: ``"[ONNX Layer: a]\\x1f[ONNX Layer: b]"``.
- ``layer.name`` is the node name, made unique with a suffix when one node becomes several layers
  (``"NODE_1"``, ``"NODE_2"``, ...); fused engine layers read ``"NODE + other"``; layers that belong to no
  node read like ``"(Unnamed Layer* 12) [Constant]"``.

The metadata is authoritative. The name is the fallback, for layers without metadata (older parsers, layers
renamed by hand): a layer name (or each ``" + "`` part of it) maps to the longest ONNX node name that equals
it or prefixes it at a separator (``_``, space, ``.``, ``/``, ``:``, ``(``, ``[``, ``-``), so ``conv1_1``
maps to node ``conv1_1`` when that node exists and to ``conv1`` otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from precision_lab.errors import InputError

__all__ = [
    "UnmatchedNodeError",
    "onnx_nodes_from_metadata",
    "nodes_from_layer_name",
    "nodes_of_layer",
    "match_layers",
    "layers_for_nodes",
]

_ENTRY = re.compile(r"\[ONNX Layer: (.*?)\](?=\s*\[ONNX Layer: |\s*$)", re.DOTALL)
_SEPARATORS = re.compile(r"[\x1e\x1f\n]")
_NAME_BOUNDARY = set("_ ./:([-")
_UNNAMED = "(Unnamed Layer"


class UnmatchedNodeError(InputError):
    """Pinned ONNX nodes that no TensorRT layer maps to (``names`` lists them)."""

    def __init__(self, names: Sequence[str], layer_count: int):
        self.names = tuple(names)
        shown = ", ".join(repr(n) for n in self.names[:10]) + (" ..." if len(self.names) > 10 else "")
        super().__init__(
            f"TensorRT network has no layer for pinned ONNX node(s) {shown} "
            f"(checked {layer_count} layers by '[ONNX Layer: NAME]' metadata and by name); "
            "the node may have been folded away by the parser: pin another node or use the explicit mode"
        )


def onnx_nodes_from_metadata(metadata: str | None) -> list[str]:
    """ONNX node names in a layer's metadata string (``[]`` when there are none)."""
    if not metadata:
        return []
    names: list[str] = []
    for chunk in _SEPARATORS.split(metadata):
        chunk = chunk.strip()
        if chunk:
            names.extend(match.group(1) for match in _ENTRY.finditer(chunk))
    return names


def nodes_from_layer_name(layer_name: str, node_names: Iterable[str]) -> list[str]:
    """ONNX nodes a layer name points to (name fallback), longest matching node name per ``" + "`` part."""
    if not layer_name or layer_name.startswith(_UNNAMED):
        return []
    known = node_names if isinstance(node_names, (set, frozenset, dict)) else set(node_names)
    parts = [layer_name] if layer_name in known else [p.strip() for p in layer_name.split(" + ")]
    found: list[str] = []
    for part in parts:
        node = _longest_prefix_node(part, known)
        if node is not None and node not in found:
            found.append(node)
    return found


def _longest_prefix_node(part: str, known) -> str | None:
    if part in known:
        return part
    # candidate prefixes end just before a separator character, longest first
    for end in range(len(part) - 1, 0, -1):
        if part[end] in _NAME_BOUNDARY and part[:end] in known:
            return part[:end]
    return None


def nodes_of_layer(layer: Any, node_names: Iterable[str]) -> list[str]:
    """ONNX nodes of one layer: from its metadata when that names known nodes, else from its name."""
    known = node_names if isinstance(node_names, (set, frozenset, dict)) else set(node_names)
    from_metadata = [n for n in onnx_nodes_from_metadata(getattr(layer, "metadata", None)) if n in known]
    if from_metadata:
        return list(dict.fromkeys(from_metadata))
    if onnx_nodes_from_metadata(getattr(layer, "metadata", None)):
        return []  # metadata names nodes of another graph: trust it over a look-alike name
    return nodes_from_layer_name(str(getattr(layer, "name", "") or ""), known)


def match_layers(layers: Iterable[Any], node_names: Iterable[str]) -> dict[str, list[Any]]:
    """Every known ONNX node name mapped to the layers that implement it (nodes without layers map to ``[]``).

    ``node_names`` should list all nodes of the model, not only the pinned ones, so that the name fallback
    picks the right node among look-alikes (``conv1`` vs ``conv1_1``).
    """
    known = dict.fromkeys(node_names)
    result: dict[str, list[Any]] = {name: [] for name in known}
    for layer in layers:
        for node in nodes_of_layer(layer, known):
            result[node].append(layer)
    return result


def layers_for_nodes(
    layers: Iterable[Any], pinned: Sequence[str], node_names: Iterable[str] | None = None
) -> dict[str, list[Any]]:
    """The layers of each pinned node; raises :class:`UnmatchedNodeError` naming pinned nodes with none.

    ``node_names`` (all ONNX node names) defaults to ``pinned``.
    """
    layers = list(layers)
    names = list(dict.fromkeys([*(node_names or ()), *pinned]))
    matched = match_layers(layers, names)
    missing = [name for name in pinned if not matched.get(name)]
    if missing:
        raise UnmatchedNodeError(missing, len(layers))
    return {name: matched[name] for name in pinned}
