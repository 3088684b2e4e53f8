"""Suffix evaluation: run only the part of the graph that a plan changes.

A binary (INT8/FP32) plan's Q/DQ nodes sit on the inputs of its INT8 layers (and, recipe ``extended``, on some
outputs). Every node that is not downstream of one of them computes exactly what it computes in the FP32 model.
So the FP32 activations at the *cut* (the unchanged tensors that changed nodes read) are computed once per
evaluation feed from the prepared FP32 model, kept on disk, and each plan builds its Q/DQ model and ONNX
Runtime session for the changed part only, fed from that cache. Model outputs that the plan does not change come
from the cache too, so the outputs are those of the whole Q/DQ model.

Only exact cases use it: binary plans (no FP16 emulation), cut tensors of the main graph whose type is known,
and a backend that runs the FP32 prefix with the same kernels as the Q/DQ model (``Backend.runs_suffixes``).
Anything else runs the whole model as before.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import onnx

from precision_lab.placement import Placement
from precision_lab.precisions import PrecisionPlan
from precision_lab.qdq import QdqBuilder, apply_placement

__all__ = ["ActivationCache", "Cut", "GraphIndex", "SuffixEvaluator"]

#: the fields of :class:`Placement` whose consumers and producers this module knows how to cut around
_KNOWN_PLACEMENT = frozenset({"activations", "weights", "outputs"})


def _subgraph_refs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope tensors that ``node``'s subgraphs (``If``/``Loop``/``Scan`` bodies) read."""
    refs: set[str] = set()
    for attribute in node.attribute:
        graphs = ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
        for graph in graphs:
            defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
            for inner in graph.node:
                defined.update(inner.output)
            for inner in graph.node:
                refs.update(t for t in inner.input if t and t not in defined)
                refs.update(r for r in _subgraph_refs(inner) if r not in defined)
    return refs


@dataclass(frozen=True)
class Cut:
    """Where a plan's changed part begins: ``nodes`` (indices, graph order) run; ``inputs`` are the unchanged
    tensors they read (graph inputs come from the feed, the others from the cache); ``outputs`` are the model
    outputs they produce; ``cached_outputs`` are the model outputs the plan does not change."""

    nodes: tuple[int, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    cached_outputs: tuple[str, ...]

    def cached(self, graph_inputs: Iterable[str]) -> tuple[str, ...]:
        """The tensors this cut reads from the activation cache."""
        feeds = set(graph_inputs)
        return tuple(t for t in (*self.inputs, *self.cached_outputs) if t not in feeds)


class GraphIndex:
    """Producers, consumers and tensor types of the prepared model's main graph, built once."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.model = model
        self.nodes = list(graph.node)
        self.index = {node.name: i for i, node in enumerate(self.nodes)}
        self.initializers = {t.name: t for t in graph.initializer}
        self.graph_inputs = tuple(i.name for i in graph.input if i.name not in self.initializers)
        self.outputs = tuple(o.name for o in graph.output)
        self.reads: list[tuple[str, ...]] = []
        self.consumers: dict[str, list[int]] = {}
        self.producer: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            reads = tuple(dict.fromkeys([t for t in node.input if t] + sorted(_subgraph_refs(node))))
            self.reads.append(reads)
            for tensor in reads:
                self.consumers.setdefault(tensor, []).append(i)
            for tensor in node.output:
                if tensor:
                    self.producer[tensor] = i
        self.types: dict[str, onnx.TypeProto] = {}
        for value in (*graph.input, *graph.value_info, *graph.output):
            if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
                self.types[value.name] = value.type
        self.sparse = bool(len(graph.sparse_initializer))

    def changed_nodes(self, seeds: Iterable[int]) -> set[int]:
        """``seeds`` and every node downstream of them."""
        changed: set[int] = set()
        todo = list(seeds)
        while todo:
            i = todo.pop()
            if i in changed:
                continue
            changed.add(i)
            for tensor in self.nodes[i].output:
                todo.extend(self.consumers.get(tensor, ()))
        return changed

    def cut(self, placement: Placement) -> Cut | None:
        """The cut of ``placement``, or ``None`` where a suffix would not be exact or saves nothing (an unknown
        kind of placement, a node out of the main graph, a cut tensor of unknown type, an output that no node
        produces, or a plan that changes every node)."""
        if self.sparse or any(getattr(placement, f.name) for f in fields(placement) if f.name not in _KNOWN_PLACEMENT):
            return None
        seeds = [a.consumer for a in placement.activations] + [w.consumer for w in placement.weights]
        seeds += [o.producer for o in placement.outputs]
        if any(name not in self.index for name in seeds):
            return None
        changed = self.changed_nodes(self.index[name] for name in seeds)
        if len(changed) == len(self.nodes):
            return None
        outputs = tuple(t for t in self.outputs if self.producer.get(t) in changed)
        cached_outputs = tuple(t for t in self.outputs if t not in outputs)
        if any(t not in self.producer and t not in self.graph_inputs for t in cached_outputs):
            return None
        needed = self._ancestors_within(changed, outputs)
        inputs = tuple(
            dict.fromkeys(
                t for i in sorted(needed) for t in self.reads[i]
                if t not in self.initializers and self.producer.get(t) not in needed
            )
        )
        if any(t not in self.types for t in (*inputs, *cached_outputs)):
            return None
        return Cut(tuple(sorted(needed)), inputs, outputs, cached_outputs)

    def _ancestors_within(self, changed: set[int], outputs: Sequence[str]) -> set[int]:
        """The changed nodes that the changed outputs depend on (a changed node feeding no output is dropped)."""
        needed: set[int] = set()
        todo = [self.producer[t] for t in outputs]
        while todo:
            i = todo.pop()
            if i in needed or i not in changed:
                continue
            needed.add(i)
            todo.extend(self.producer[t] for t in self.reads[i] if t in self.producer)
        return needed

    def part(self, cut: Cut) -> onnx.ModelProto:
        """The FP32 model of ``cut``'s nodes: its inputs are the cut tensors, its outputs the changed outputs."""
        nodes = [self.nodes[i] for i in cut.nodes]
        used = {t for i in cut.nodes for t in self.reads[i]}
        graph = onnx.helper.make_graph(
            nodes,
            self.model.graph.name or "suffix",
            [onnx.helper.make_value_info(t, self.types[t]) for t in cut.inputs],
            [value for value in self.model.graph.output if value.name in set(cut.outputs)],
            initializer=[t for name, t in self.initializers.items() if name in used],
            value_info=[v for v in self.model.graph.value_info if v.name in used],
        )
        part = onnx.helper.make_model(graph, opset_imports=self.model.opset_import)
        part.ir_version = self.model.ir_version
        return part

    def nbytes(self, tensor: str) -> int | None:
        """Bytes of one feed's ``tensor`` from its static shape (``None``: unknown shape or element type)."""
        tensor_type = self.types[tensor].tensor_type
        if not tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in tensor_type.shape.dim):
            return None
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).itemsize
        except (KeyError, TypeError, ValueError):
            return None
        return int(np.prod([d.dim_value for d in tensor_type.shape.dim], dtype=np.int64)) * itemsize

    def exposing(self, tensors: Sequence[str]) -> onnx.ModelProto:
        """The prepared model with ``tensors`` as extra outputs (after its own)."""
        exposed = onnx.ModelProto()
        exposed.CopyFrom(self.model)
        present = set(self.outputs)
        for name in tensors:
            if name not in present:
                exposed.graph.output.append(onnx.helper.make_value_info(name, self.types[name]))
        return exposed


#: default size limit of one activation cache folder (``PRECISION_LAB_ACTIVATION_CACHE_GB`` changes it)
DEFAULT_CACHE_GB = 4.0


def cache_budget() -> int:
    """Bytes an activation cache may hold: ``PRECISION_LAB_ACTIVATION_CACHE_GB`` (default
    :data:`DEFAULT_CACHE_GB`); plans whose activations do not fit run the whole model."""
    try:
        gigabytes = float(os.environ.get("PRECISION_LAB_ACTIVATION_CACHE_GB", DEFAULT_CACHE_GB))
    except ValueError:
        gigabytes = DEFAULT_CACHE_GB
    return int(gigabytes * 1e9)


def _file_name(tensor: str) -> str:
    return hashlib.sha256(tensor.encode()).hexdigest()[:24] + ".npy"


class ActivationCache:
    """FP32 activations of the evaluation feeds, one ``.npy`` file per tensor (``[feed, ...]``) in ``folder``,
    written atomically and memory-mapped on read. Each tensor is computed once per folder."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._open: dict[str, np.ndarray] = {}

    def has(self, tensor: str) -> bool:
        return tensor in self._open or (self.folder / _file_name(tensor)).exists()

    def get(self, tensor: str, index: int) -> np.ndarray:
        """The activation ``tensor`` of feed ``index``."""
        array = self._open.get(tensor)
        if array is None:
            array = self._open[tensor] = np.load(self.folder / _file_name(tensor), mmap_mode="r")
        return array[index]

    def fill(self, tensors: Sequence[str], count: int, run: Callable) -> None:
        """Compute the missing ``tensors`` for ``count`` feeds with one pass of ``run(names, on_output)``, which
        must call ``on_output(i, outputs)`` for each feed (see :meth:`Backend.run`)."""
        missing = [t for t in dict.fromkeys(tensors) if not self.has(t)]
        if not missing:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fill.", dir=self.folder))
        arrays: dict[str, np.ndarray] = {}

        def keep(i: int, outputs: Mapping[str, np.ndarray]) -> None:
            for name in missing:
                value = np.asarray(outputs[name])
                if name not in arrays:
                    arrays[name] = np.lib.format.open_memmap(
                        tmp / _file_name(name), mode="w+", dtype=value.dtype, shape=(count, *value.shape)
                    )
                arrays[name][i] = value

        try:
            run(missing, keep)
            for name, array in arrays.items():
                array.flush()
                os.replace(tmp / _file_name(name), self.folder / _file_name(name))
            arrays.clear()
        finally:
            for leftover in tmp.glob("*"):
                leftover.unlink()
            tmp.rmdir()


class _Feeds(Sequence):
    """The feeds of a suffix: cut tensors from the cache, graph inputs from the evaluation feed (lazily)."""

    def __init__(self, cut: Cut, feeds: Sequence[Mapping[str, np.ndarray]], cache: ActivationCache) -> None:
        self.cut, self.feeds, self.cache = cut, feeds, cache

    def __len__(self) -> int:
        return len(self.feeds)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        feed = self.feeds[i]
        return {t: feed[t] if t in feed else np.asarray(self.cache.get(t, i)) for t in self.cut.inputs}


@dataclass
class SuffixRun:
    """One plan's suffix: its Q/DQ model (serialized), its feeds, and :meth:`complete`, which adds the cached
    outputs to each feed's outputs (in the model's output order)."""

    qdq_model: bytes
    feeds: Sequence[dict[str, np.ndarray]]
    cut: Cut
    order: tuple[str, ...]
    cache: ActivationCache

    def complete(self, index: int, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        everything = dict(outputs)
        for name in self.cut.cached_outputs:
            everything[name] = np.array(self.cache.get(name, index))
        return {name: everything[name] for name in self.order}


class SuffixEvaluator:
    """Suffix evaluation of binary plans of one prepared model on one feed set, with the activation cache in
    ``folder``. :meth:`prefetch` fills the cache for a batch (one FP32 pass); :meth:`prepare` gives a plan's
    :class:`SuffixRun`, or ``None`` when the whole model must run (not exact, or its activations are not cached)."""

    def __init__(self, builder: QdqBuilder, model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]],
                 folder: str | os.PathLike) -> None:
        self.builder = builder
        self.index = GraphIndex(model)
        self.feeds = feeds
        self.cache = ActivationCache(folder)
        self._weights: dict = {}
        self._cuts: dict[PrecisionPlan, tuple[Placement, Cut] | None] = {}

    def _placed(self, plan: PrecisionPlan) -> tuple[Placement, Cut] | None:
        if plan not in self._cuts:
            found = None
            if plan.is_binary:
                placement = self.builder.placement(plan.fp32_layers)
                cut = self.index.cut(placement)
                found = None if cut is None else (placement, cut)
            self._cuts[plan] = found
        return self._cuts[plan]

    def cut(self, plan: PrecisionPlan) -> Cut | None:
        """The cut of ``plan`` (``None`` for plans that are not binary or cannot be cut exactly)."""
        placed = self._placed(plan)
        return None if placed is None else placed[1]

    def prefetch(self, plans: Sequence[PrecisionPlan], run: Callable) -> None:
        """Fill the cache with every tensor the cuts of ``plans`` read, in one pass of ``run(model_bytes,
        on_output)`` over the feeds; only for batches of two plans or more (a single plan would pay a whole
        FP32 run to save part of one)."""
        cuts = [c for c in (self.cut(p) for p in plans) if c is not None]
        if len(plans) < 2 or not cuts:
            return
        tensors = self._within_budget(cuts)
        if not tensors:
            return

        def fill(names: Sequence[str], on_output: Callable) -> None:
            run(self.index.exposing(names).SerializeToString(), on_output)

        self.cache.fill(tensors, len(self.feeds), fill)

    def _within_budget(self, cuts: Sequence[Cut]) -> list[str]:
        """The tensors to cache for ``cuts``: the cuts that skip the most nodes per new byte first, while the
        cache stays within :func:`cache_budget` bytes (a cut whose tensors have no static size is left out)."""
        graph_inputs, count = self.index.graph_inputs, len(self.feeds)
        used = sum(f.stat().st_size for f in self.cache.folder.glob("*.npy")) if self.cache.folder.exists() else 0
        chosen: dict[str, int] = {}

        def new_bytes(cut: Cut) -> int | None:
            sizes = [self.index.nbytes(t) for t in cut.cached(graph_inputs) if t not in chosen and not self.cache.has(t)]
            return None if any(size is None for size in sizes) else sum(sizes) * count

        def worth(cut: Cut) -> float:
            size = new_bytes(cut)
            return -1.0 if size is None else (len(self.index.nodes) - len(cut.nodes)) / (1 + size)

        budget = cache_budget()
        for cut in sorted(cuts, key=worth, reverse=True):
            size = new_bytes(cut)
            if size is None or used + size > budget:
                continue
            used += size
            chosen.update((t, 1) for t in cut.cached(graph_inputs) if not self.cache.has(t))
        return list(chosen)

    def _within(self, plan: PrecisionPlan, cut: Cut) -> Placement:
        """``plan``'s placement restricted to the nodes of ``cut`` (a changed node that feeds no output is
        not part of it)."""
        names = {self.index.nodes[i].name for i in cut.nodes}
        placement = self._placed(plan)[0]
        return Placement(
            tuple(a for a in placement.activations if a.consumer in names),
            tuple(w for w in placement.weights if w.consumer in names),
            tuple(o for o in placement.outputs if o.producer in names),
        )

    def prepare(self, plan: PrecisionPlan) -> SuffixRun | None:
        """``plan``'s suffix, built only when every tensor it reads is cached."""
        cut = self.cut(plan)
        if cut is None or not all(self.cache.has(t) for t in cut.cached(self.index.graph_inputs)):
            return None
        part = self.index.part(cut)
        model = apply_placement(part, self._within(plan, cut), weights=self._weights) if cut.nodes else part
        return SuffixRun(model.SerializeToString(), _Feeds(cut, self.feeds, self.cache), cut, self.index.outputs,
                         self.cache)
