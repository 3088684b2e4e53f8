"""Load and prepare an FP32 ONNX model, and list its candidate layers.

Preparation (docs/design.md, "Definitions") makes every later step simple and deterministic:

1. stable, unique node names (unnamed or duplicate nodes get ``<OpType>_<position>``; recorded);
2. opset raised to at least 13 (per-channel Q/DQ needs the ``axis`` attribute);
3. dynamic input dimensions fixed from ``input_shapes``;
4. ``Constant`` nodes (and constant subgraphs feeding weights) folded into initializers;
5. BatchNormalization folded into the Conv before it (TensorRT folds it too, so weights are quantized
   as TensorRT sees them);
6. ``If`` nodes whose condition is fixed once the input shapes are fixed (or given ``constant_inputs``, the
   inputs whose value is the same in every feed) folded, the taken branch flattened into the main graph
   (see :mod:`precision_lab.control_flow`);
7. shapes inferred, so every activation has a type for calibration: ONNX shape inference first; where it
   leaves a node's input or output without a type or a static shape (e.g. a ``Reshape`` whose shape is
   computed by ``Shape -> Gather -> Div -> Concat`` from a tensor that is itself not inferred yet), ONNX
   Runtime's symbolic shape inference (needs ``sympy``), then one run of the model in ONNX Runtime on zeros
   and on random inputs that reads the missing shapes (a dimension that differs between the two runs is data
   dependent and stays symbolic).

Old exports are normalized too: the IR version is raised to the one the (raised) opset needs, and
initializers listed as graph inputs (IR 3, or ``keep_initializers_as_inputs``) become plain constants, so
shape inference and constant folding see their values. Models with external data load from beside the
model file; models past the 2 GB protobuf limit are checked and shape-inferred through files.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference, version_converter

from precision_lab.control_flow import (
    SUBGRAPH_OPS,
    condition_inputs,
    constant_inputs,
    fixed_conditions,
    flatten_ifs,
    has_if,
    subgraph_layers,
)
from precision_lab.errors import InputError
from precision_lab.onnx_io import PROTOBUF_LIMIT, model_digest, save_model
from precision_lab.ort_session import create_session

__all__ = [
    "MIN_OPSET",
    "InputSpec",
    "PreparedModel",
    "Candidate",
    "load_model",
    "input_specs",
    "prepare_model",
    "list_candidates",
    "parse_input_shape",
    "check_input_shape_names",
    "constant_inputs",
    "constant_inputs_to_json",
    "constant_inputs_from_json",
]

MIN_OPSET = 13
log = logging.getLogger("precision_lab")
_INLINE_LIMIT = PROTOBUF_LIMIT  # models larger than this go through files for checking and shape inference
_MAX_FOLD_ROUNDS = 8  # an If nested in a taken branch is folded in the next round
_SHOWN_LAYERS = 8  # subgraph layers named in the warning


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype and shape (``None`` for a dynamic dimension)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    @property
    def is_static(self) -> bool:
        return all(d is not None for d in self.shape)


@dataclass(frozen=True)
class Candidate:
    """A layer whose precision the plan decides. ``index`` is its position in the prepared graph."""

    name: str
    op_type: str
    index: int
    input_shapes: tuple[tuple[int | str | None, ...] | None, ...] = ()
    output_shapes: tuple[tuple[int | str | None, ...] | None, ...] = ()


@dataclass
class PreparedModel:
    """The prepared model and what was done to it.

    ``sha256`` is the hash of the original file, ``prepared_sha256`` of the prepared model's bytes.
    ``folded_ifs`` maps each folded ``If`` node to the branch flattened in its place; ``constant_inputs`` holds
    the constant-valued inputs that decided a folded condition (the prepared model holds only for feeds with
    those values).
    """

    model: onnx.ModelProto
    path: Path
    sha256: str
    prepared_sha256: str
    inputs: tuple[InputSpec, ...]
    output_names: tuple[str, ...]
    renamed_nodes: dict[str, str] = field(default_factory=dict)
    folded_batchnorms: tuple[str, ...] = ()
    original_opset: int = 0
    folded_ifs: dict[str, str] = field(default_factory=dict)
    constant_inputs: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem

    def serialized(self) -> bytes:
        return self.model.SerializeToString()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(path: str | os.PathLike) -> tuple[onnx.ModelProto, str]:
    """Load an ONNX file (external data included) and return it with the file's sha256.

    Raises :class:`InputError` with the fix for a missing, unreadable, non-ONNX or truncated file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"model file not found: {path}; check the path")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an ONNX model file; pass the path of the .onnx file")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty; re-export or re-download the model")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError, onnx raises on external data problems
        missing = _missing_external_data(path)
        if missing:
            raise InputError(
                f"{path} keeps its weights in external data file(s) {', '.join(missing)}, not found in "
                f"{path.parent}; copy them beside the model file (external data is found relative to it)"
            ) from exc
        raise InputError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:160]}); "
            "check that it is an .onnx file and was not truncated by a download"
        ) from exc
    if not model.graph.node:
        raise InputError(
            f"{path} holds no ONNX graph (no nodes): it is not an ONNX model or it was truncated; "
            "re-export or re-download it"
        )
    try:
        # past the protobuf limit the checker cannot take the model in memory; it reads the file instead
        onnx.checker.check_model(str(path) if model.ByteSize() > _INLINE_LIMIT else model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise InputError(
            f"{path} is not a valid ONNX model ({first[:200]}); it may be truncated or corrupt, "
            "re-export or re-download it"
        ) from exc
    return model, _sha256_file(path)


def _missing_external_data(path: Path) -> list[str]:
    """External data files that the model at ``path`` refers to and that do not exist beside it."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable: the caller reports it
        return []
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors.extend(a.t for a in node.attribute if a.HasField("t"))
    missing = []
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        if location and location not in missing and not (path.parent / location).exists():
            missing.append(location)
    return missing


def _value_info_shape(value_info: onnx.ValueInfoProto) -> tuple[int | str | None, ...] | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def input_specs(model: onnx.ModelProto) -> tuple[InputSpec, ...]:
    """The model's real inputs (graph inputs that are not initializers)."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value_info in model.graph.input:
        if value_info.name in initializers:
            continue
        elem_type = value_info.type.tensor_type.elem_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
        shape = _value_info_shape(value_info) or ()
        specs.append(
            InputSpec(value_info.name, dtype, tuple(d if isinstance(d, int) else None for d in shape))
        )
    return tuple(specs)


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME:1x3x224x224`` (the last ``:`` separates name and shape)."""
    name, sep, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x")) if dims else ()
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise InputError(f"bad --input-shape '{text}'; write it as NAME:1x3x224x224 (positive integers)")
    return name, shape


def _default_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    return 0


def _name_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Give unnamed and duplicate nodes a deterministic name; return {new name: description}."""
    renamed: dict[str, str] = {}
    seen = {node.name for node in model.graph.node if node.name}
    used: set[str] = set()
    for position, node in enumerate(model.graph.node):
        if node.name and node.name not in used:
            used.add(node.name)
            continue
        base = f"{node.op_type}_{position}"
        new_name = base
        suffix = 1
        while new_name in used or new_name in seen:
            new_name = f"{base}_{suffix}"
            suffix += 1
        renamed[new_name] = f"was {node.name!r}" if node.name else "unnamed"
        node.name = new_name
        used.add(new_name)
    return renamed


def check_input_shape_names(specs: Sequence[InputSpec], input_shapes: Mapping[str, Sequence[int]]) -> None:
    """Every name in ``input_shapes`` is an input of the model."""
    known = [spec.name for spec in specs]
    for name in input_shapes:
        if name not in known:
            raise InputError(f"--input-shape names input '{name}', but the model's inputs are {known}")


def _fix_input_shapes(
    model: onnx.ModelProto, specs: Sequence[InputSpec], input_shapes: Mapping[str, Sequence[int]]
) -> None:
    check_input_shape_names(specs, input_shapes)
    initializers = {init.name for init in model.graph.initializer}
    for value_info in model.graph.input:
        if value_info.name in initializers:
            continue
        spec = next(s for s in specs if s.name == value_info.name)
        wanted = input_shapes.get(spec.name)
        if wanted is None:
            if not spec.is_static:
                shown = "x".join("?" if d is None else str(d) for d in spec.shape)
                raise InputError(
                    f"input '{spec.name}' has dynamic dimensions ({shown}) that cannot be resolved; "
                    f"pass --input-shape {spec.name}:"
                    + "x".join("1" if d is None else str(d) for d in spec.shape)
                    + " (with your sizes) or give --data"
                )
            continue
        if len(wanted) != len(spec.shape) or any(
            d is not None and d != w for d, w in zip(spec.shape, wanted)
        ):
            shown = "x".join("?" if d is None else str(d) for d in spec.shape)
            raise InputError(
                f"shape {'x'.join(map(str, wanted))} for input '{spec.name}' does not fit the model's "
                f"{shown}; give a shape with the same rank and the fixed dimensions unchanged"
            )
        dims = value_info.type.tensor_type.shape.dim
        for dim, size in zip(dims, wanted):
            dim.Clear()
            dim.dim_value = int(size)


def _normalize_old_export(model: onnx.ModelProto) -> None:
    """Raise the IR version to what the model's opsets need, and make initializers listed as graph inputs
    (IR 3 exports, PyTorch's ``keep_initializers_as_inputs``) plain constants: as inputs they could be
    overridden at run time, so shape inference and constant folding would not use their values."""
    initializers = {init.name for init in model.graph.initializer}
    if any(vi.name in initializers for vi in model.graph.input):
        keep = [vi for vi in model.graph.input if vi.name not in initializers]
        del model.graph.input[:]
        model.graph.input.extend(keep)
    try:
        needed = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    except Exception:  # noqa: BLE001 - old onnx: the IR 4 floor below still applies
        needed = 4
    model.ir_version = max(model.ir_version, needed, 4)  # IR 4: initializers need not be graph inputs


def _fold_batchnorms(model: onnx.ModelProto) -> list[str]:
    """Fold ``Conv -> BatchNormalization`` pairs into the Conv. Returns the names of folded BN nodes."""
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    graph_outputs = {out.name for out in graph.output}
    producer = {out: node for node in graph.node for out in node.output}
    folded: list[str] = []
    keep: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "BatchNormalization" or len(node.output) != 1:
            keep.append(node)
            continue
        conv = producer.get(node.input[0])
        params = node.input[1:5]
        if (
            conv is None
            or conv.op_type != "Conv"
            or consumers.get(node.input[0], 0) != 1
            or node.input[0] in graph_outputs
            or len(conv.input) < 2
            or conv.input[1] not in inits
            or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits)
            or any(p not in inits for p in params)
        ):
            keep.append(node)
            continue
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale, bias, mean, var = (numpy_helper.to_array(inits[p]).astype(np.float64) for p in params)
        weight = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        conv_bias = (
            numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
            if len(conv.input) > 2 and conv.input[2]
            else np.zeros(weight.shape[0])
        )
        factor = scale / np.sqrt(var + epsilon)
        new_weight = (weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32)
        new_bias = ((conv_bias - mean) * factor + bias).astype(np.float32)
        weight_name = f"{conv.name}/folded_weight"
        bias_name = f"{conv.name}/folded_bias"
        graph.initializer.append(numpy_helper.from_array(new_weight, weight_name))
        graph.initializer.append(numpy_helper.from_array(new_bias, bias_name))
        inits[weight_name] = graph.initializer[-1]
        inits[bias_name] = graph.initializer[-1]
        del conv.input[1:]
        conv.input.extend([weight_name, bias_name])
        conv.output[0] = node.output[0]
        folded.append(node.name)
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        _drop_unused_initializers(model)
    return folded


def _used_names(graph: onnx.GraphProto) -> set[str]:
    used = {out.name for out in graph.output}
    for node in graph.node:
        used.update(node.input)
        for attribute in node.attribute:
            for subgraph in list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else []):
                used |= _used_names(subgraph)
    return used


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = _used_names(model.graph)
    keep = [init for init in model.graph.initializer if init.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)


def _fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn ``Constant`` nodes and constant subgraphs into initializers (onnx-graphsurgeon).

    ``If`` nodes are never flattened here (graphsurgeon's flattening breaks multi-output ``If`` nodes, see
    :func:`~precision_lab.control_flow.flatten_ifs`); :func:`_fold_control_flow` folds them.
    """
    import onnx_graphsurgeon as gs
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # graphsurgeon folds with ONNX Runtime; keep its warnings quiet
    from precision_lab.console import quiet_polygraphy

    with quiet_polygraphy():  # graphsurgeon's "[W] ... foldable nodes that produce large outputs" is not the user's
        graph = gs.import_onnx(model)
        graph.fold_constants(fold_shapes=True, error_ok=True, flatten_subgraphs=False).cleanup(
            remove_unused_graph_inputs=False
        )
        folded = gs.export_onnx(graph, do_type_check=False)
    folded.ir_version = model.ir_version
    return folded


def _onnx_infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.ByteSize() <= _INLINE_LIMIT:
        return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    # past the protobuf limit: infer through files, then copy the inferred types into the model
    with tempfile.TemporaryDirectory(prefix="precision-lab-shapes-") as tmp:
        source, target = Path(tmp) / "model.onnx", Path(tmp) / "inferred.onnx"
        save_model(model, source, external_threshold_bytes=0)
        shape_inference.infer_shapes_path(str(source), str(target), strict_mode=False, data_prop=True)
        inferred = onnx.load(str(target), load_external_data=False)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    for output, typed in zip(model.graph.output, inferred.graph.output):
        output.type.CopyFrom(typed.type)
    return model


def _is_complete(value_info: onnx.ValueInfoProto | None) -> bool:
    """A tensor with an element type and a static shape (non-tensor values count as complete)."""
    if value_info is None:
        return False
    kind = value_info.type.WhichOneof("value")
    if kind is None:
        return False
    if kind != "tensor_type":
        return True
    tensor_type = value_info.type.tensor_type
    return (
        tensor_type.elem_type != 0
        and tensor_type.HasField("shape")
        and all(dim.HasField("dim_value") for dim in tensor_type.shape.dim)
    )


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    graph = model.graph
    return {vi.name: vi for vi in list(graph.value_info) + list(graph.input) + list(graph.output)}


def _shape_gaps(model: onnx.ModelProto) -> list[str]:
    """Inputs and outputs of main-graph nodes that have no element type or no static shape."""
    known = _value_infos(model)
    initializers = {init.name for init in model.graph.initializer}
    gaps: list[str] = []
    seen: set[str] = set()
    for node in model.graph.node:
        for name in list(node.input) + list(node.output):
            if not name or name in seen or name in initializers:
                continue
            seen.add(name)
            if not _is_complete(known.get(name)):
                gaps.append(name)
    return gaps


def _merge_value_infos(model: onnx.ModelProto, found: Mapping[str, onnx.TypeProto]) -> None:
    """Set the types in ``found`` on the graph's outputs and value_info (added where missing)."""
    graph = model.graph
    targets = {vi.name: vi for vi in list(graph.output) + list(graph.value_info)}
    inputs = {vi.name for vi in graph.input}
    for name, type_proto in found.items():
        if name in inputs:
            continue
        if name in targets:
            targets[name].type.CopyFrom(type_proto)
        else:
            graph.value_info.append(onnx.ValueInfoProto(name=name, type=type_proto))


def _symbolic_shapes(model: onnx.ModelProto, gaps: Sequence[str]) -> dict[str, onnx.TypeProto]:
    """Types of ``gaps`` from ONNX Runtime's symbolic shape inference ({} when it is unavailable or fails)."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:  # needs sympy
        return {}
    if model.ByteSize() > _INLINE_LIMIT:
        return {}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        inferred = SymbolicShapeInference.infer_shapes(copy, auto_merge=True, guess_output_rank=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: try the next way
        log.debug("symbolic shape inference failed: %s", exc)
        return {}
    if inferred is None:
        return {}
    known = _value_infos(inferred)
    found = {}
    for name in gaps:
        value_info = known.get(name)
        if value_info is not None and value_info.type.WhichOneof("value") == "tensor_type" and (
            value_info.type.tensor_type.elem_type and value_info.type.tensor_type.HasField("shape")
        ):
            found[name] = value_info.type
    return found


def _probe_feeds(specs: Sequence[InputSpec]) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    zeros = {s.name: np.zeros(s.shape, dtype=s.dtype) for s in specs}
    other = {}
    for s in specs:
        if np.issubdtype(s.dtype, np.floating):
            other[s.name] = rng.random(s.shape).astype(s.dtype)
        else:
            other[s.name] = np.ones(s.shape, dtype=s.dtype)
    return [zeros, other]


def _run_shapes(model: onnx.ModelProto, gaps: Sequence[str]) -> dict[str, onnx.TypeProto]:
    """Types of ``gaps`` read from running the model in ONNX Runtime on zeros and on random inputs.

    A dimension that differs between the two runs is data dependent: it gets a symbolic name instead of a
    size. Returns {} when the model cannot be run (dynamic inputs, too large, or ONNX Runtime fails)."""
    import onnxruntime

    specs = input_specs(model)
    if not all(spec.is_static for spec in specs):
        return {}
    graph_outputs = len(model.graph.output)
    existing = {out.name for out in model.graph.output}
    # the gaps become extra graph outputs for the run (on the model itself: no copy of a large model)
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in gaps if name not in existing)
    quiet = onnxruntime.RunOptions()
    quiet.log_severity_level = 4  # a failing probe is expected for some models: its kernel errors are not news
    runs: list[list] = []
    try:
        with tempfile.TemporaryDirectory(prefix="precision-lab-probe-") as tmp:
            if model.ByteSize() > _INLINE_LIMIT:
                source: bytes | str = str(Path(tmp) / "probe.onnx")
                save_model(model, source, external_threshold_bytes=0)
            else:
                source = model.SerializeToString()
            session = create_session(source, log_severity=4)
            for feed in _probe_feeds(specs):
                try:
                    runs.append(session.run(list(gaps), feed, quiet))
                except Exception as exc:  # noqa: BLE001 - a feed the model rejects: use the other run
                    log.debug("shape probe run failed: %s", exc)
    except Exception as exc:  # noqa: BLE001
        log.debug("shape probe session failed: %s", exc)
    finally:
        del model.graph.output[graph_outputs:]
    if not runs:
        return {}
    found = {}
    for position, name in enumerate(gaps):
        values = [run[position] for run in runs]
        if not all(isinstance(value, np.ndarray) for value in values):
            continue
        shapes = [value.shape for value in values]
        if len({len(shape) for shape in shapes}) != 1:
            continue
        dims: list[int | str] = [
            sizes[0] if len(set(sizes)) == 1 else f"{name}_dim{axis}" for axis, sizes in enumerate(zip(*shapes))
        ]
        elem_type = helper.np_dtype_to_tensor_dtype(values[0].dtype)
        found[name] = helper.make_tensor_type_proto(elem_type, dims)
    return found


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference, completed by symbolic inference and then by a probe run where it leaves gaps."""
    del model.graph.value_info[:]
    try:
        model = _onnx_infer_shapes(model)
    except Exception as exc:
        raise InputError(
            f"ONNX shape inference failed on the model ({(str(exc).splitlines() or [type(exc).__name__])[0][:200]}); "
            "fix the shapes with --input-shape or re-export the model"
        ) from exc
    gaps = _shape_gaps(model)
    for way, fill in (("symbolic shape inference", _symbolic_shapes), ("a probe run", _run_shapes)):
        if not gaps:
            break
        found = fill(model, gaps)
        if found:
            _merge_value_infos(model, found)
            log.debug("ONNX shape inference left %d tensors without a static shape; %s typed %d",
                      len(gaps), way, len(found))
        gaps = _shape_gaps(model)
    if gaps:
        log.debug("tensors without a static shape after preparation: %s", gaps[:10])
    return model


def _check_constant_inputs(specs: Sequence[InputSpec], constants: Mapping[str, np.ndarray]) -> None:
    known = [spec.name for spec in specs]
    unknown = [name for name in constants if name not in known]
    if unknown:
        raise InputError(f"constant inputs {unknown} are not inputs of the model; its inputs are {known}")


def _fold_control_flow(
    model: onnx.ModelProto, constants: Mapping[str, np.ndarray]
) -> tuple[onnx.ModelProto, dict[str, str], dict[str, np.ndarray]]:
    """Fold every ``If`` (at any depth) whose condition is fixed by the input shapes or by ``constants``.

    Rounds repeat (at most :data:`_MAX_FOLD_ROUNDS`) while conditions get fixed, so an ``If`` nested in a
    taken branch is folded too. Returns the model, {If name: branch taken} and the constants that were used.
    """
    folded: dict[str, str] = {}
    used: dict[str, np.ndarray] = {}
    for _ in range(_MAX_FOLD_ROUNDS):
        if not has_if(model):
            break
        deciding = {name: value for name, value in constants.items() if name in condition_inputs(model)}
        conditions = fixed_conditions(model, deciding)
        if not conditions:
            break
        flatten_ifs(model, conditions)
        model = _fold_constants(model)
        del model.graph.value_info[:]
        model = _onnx_infer_shapes(model)  # the flattened branch's shapes, for the next round's shape folding
        folded.update({name: "then_branch" if taken else "else_branch" for name, taken in conditions.items()})
        used.update(deciding)
    if folded:
        log.info("folded %d If node(s) with a fixed condition: %s", len(folded),
                 ", ".join(f"{name} -> {branch}" for name, branch in folded.items()))
    if used:
        log.warning("If conditions were folded with the value every feed gives input(s) %s; the prepared model "
                    "and plan.onnx hold for feeds with those values only", ", ".join(sorted(used)))
    return model, folded, used


def _check_control_flow(model: onnx.ModelProto) -> None:
    """A model that keeps ``If``/``Loop``/``Scan`` nodes must type-check with its fixed shapes: a branch kept
    because its condition depends on the data may not fit them, and ONNX Runtime would refuse the model."""
    has_control_flow = any(node.op_type in SUBGRAPH_OPS for node in model.graph.node)
    if not has_control_flow or model.ByteSize() > _INLINE_LIMIT:
        return
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, shape_inference.InferenceError) as exc:
        first = (str(exc).strip().splitlines() or ["invalid model"])[0]
        raise InputError(
            f"with its input shapes fixed, a control-flow branch of the model does not type-check ({first[:240]}); "
            "it is kept because its If condition depends on the data: feed the inputs that decide it the same "
            "value in every feed (e.g. a sample rate) or export the model for these input shapes"
        ) from exc


def constant_inputs_to_json(constants: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """``constants`` as JSON-able {name: {"dtype", "shape", "values"}} (for plan.json)."""
    return {
        name: {"dtype": np.asarray(v).dtype.str, "shape": list(np.shape(v)), "values": np.ravel(v).tolist()}
        for name, v in constants.items()
    }


def constant_inputs_from_json(data: Mapping[str, Mapping]) -> dict[str, np.ndarray]:
    """The inverse of :func:`constant_inputs_to_json`."""
    return {
        name: np.asarray(entry["values"], dtype=np.dtype(entry["dtype"])).reshape(entry["shape"])
        for name, entry in data.items()
    }


def prepare_model(
    path: str | os.PathLike,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    constant_inputs: Mapping[str, np.ndarray] | None = None,
) -> PreparedModel:
    """Load the model at ``path`` and prepare it (see module docstring).

    ``input_shapes`` fixes dynamic input dimensions (default: none; a dynamic input then raises
    :class:`InputError` naming the ``--input-shape`` to pass). ``constant_inputs`` (default: none) holds inputs
    whose value is the same in every feed (:func:`precision_lab.control_flow.constant_inputs`); they only
    decide ``If`` conditions. Those inputs stay graph inputs, so the same feeds run the prepared model.
    """
    path = Path(path)
    model, sha256 = load_model(path)
    specs = input_specs(model)
    renamed = _name_nodes(model)
    original_opset = _default_opset(model)
    if original_opset and original_opset < MIN_OPSET:
        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise InputError(
                f"cannot raise the model's opset {original_opset} to {MIN_OPSET} for per-channel Q/DQ "
                f"({(str(exc).splitlines() or [type(exc).__name__])[0][:160]}); re-export the model with opset >= {MIN_OPSET}"
            ) from exc
    _normalize_old_export(model)
    _fix_input_shapes(model, specs, dict(input_shapes or {}))
    _check_constant_inputs(specs, constant_inputs or {})
    model = _infer_shapes(model)
    model, folded_ifs, used_constants = _fold_control_flow(model, constant_inputs or {})
    if folded_ifs:
        renamed.update(_name_nodes(model))  # flattened branches may repeat names of the main graph
    model = _fold_constants(model)
    folded = _fold_batchnorms(model)
    model = _infer_shapes(model)
    _check_control_flow(model)
    fixed_specs = input_specs(model)
    output_names = tuple(out.name for out in model.graph.output)
    return PreparedModel(
        model=model,
        path=path,
        sha256=sha256,
        prepared_sha256=model_digest(model),
        inputs=fixed_specs,
        output_names=output_names,
        renamed_nodes=renamed,
        folded_batchnorms=tuple(folded),
        original_opset=original_opset,
        folded_ifs=folded_ifs,
        constant_inputs=used_constants,
    )


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == pattern or fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _shape_table(model: onnx.ModelProto) -> dict[str, tuple[int | str | None, ...] | None]:
    table = {}
    for value_info in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        table[value_info.name] = _value_info_shape(value_info)
    for init in model.graph.initializer:
        table[init.name] = tuple(int(d) for d in init.dims)
    return table


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*graph.value_info, *graph.input, *graph.output]}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


def _has_float_activation(node: onnx.NodeProto, elem_types: Mapping[str, int], initializers: set[str]) -> bool:
    """Whether ``node`` reads a float32 activation (an untyped one counts): Q/DQ is placed on float32 tensors
    only, never on integer, boolean or shape tensors, nor on float16/double ones (opset-13 Q/DQ is float32)."""
    return any(
        name and name not in initializers and elem_types.get(name, 0) in (0, onnx.TensorProto.FLOAT)
        for name in node.input
    )


def _warn_subgraph_layers(model: onnx.ModelProto, op_types: Iterable[str], exclude: Sequence[str]) -> None:
    """One warning naming the candidate-type layers inside ``If``/``Loop``/``Scan`` subgraphs, which stay FP32."""
    inner = [layer for layer in subgraph_layers(model, op_types) if not _matches(layer.name, exclude)]
    if not inner:
        return
    shown = ", ".join(f"{layer.name} ({layer.op_type}, in {layer.subgraph})" for layer in inner[:_SHOWN_LAYERS])
    more = f" and {len(inner) - _SHOWN_LAYERS} more" if len(inner) > _SHOWN_LAYERS else ""
    reasons = sorted({
        "an If whose condition depends on the input data cannot be folded" if layer.owner_op == "If"
        else f"{layer.owner_op} bodies are not unrolled"
        for layer in inner
    })
    log.warning(
        "%d layer(s) inside control-flow subgraphs stay FP32: %s%s (%s; only the main graph is quantized)",
        len(inner), shown, more, "; ".join(reasons),
    )


def list_candidates(
    prepared: PreparedModel, *, op_types: Iterable[str], exclude: Sequence[str] = ()
) -> list[Candidate]:
    """Nodes of the prepared graph whose op type is in ``op_types``, in graph order, minus ``exclude``.

    ``exclude`` holds node names or shell-style patterns (``backbone/*``). Only main-graph nodes that read a
    float32 activation are candidates. Nodes of those op types inside ``If``/``Loop``/``Scan`` subgraphs stay
    FP32, named in one warning.
    """
    op_types = set(op_types)
    model = prepared.model
    _warn_subgraph_layers(model, op_types, exclude)
    shapes = _shape_table(model)
    elem_types = _elem_types(model)
    initializers = {init.name for init in model.graph.initializer}
    candidates = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in op_types or _matches(node.name, exclude):
            continue
        if not _has_float_activation(node, elem_types, initializers):
            continue  # no float activation input: nothing to quantize
        candidates.append(
            Candidate(
                name=node.name,
                op_type=node.op_type,
                index=index,
                input_shapes=tuple(shapes.get(name) for name in node.input if name),
                output_shapes=tuple(shapes.get(name) for name in node.output if name),
            )
        )
    return candidates
