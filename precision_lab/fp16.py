"""FP16 in a three-level plan (``--precisions int8,fp16,fp32``): what runs FP16, its emulation, and ``plan.onnx``.

In an INT8 + FP16 TensorRT engine every node that does not run INT8 runs FP16, except the nodes the plan keeps
FP32. Here that is decided per node by :func:`node_runs_fp16`: a node runs FP16 unless the plan keeps it FP32 or
its op type is one the FP16 converter always keeps FP32 (:data:`FP32_OPS`: onnxconverter-common's default block
list, e.g. ``Resize``, ``TopK``, ``Min``/``Max``).

* :func:`float_nodes`: the nodes a plan may keep FP32 (every node that reads or writes a float tensor).
* :func:`emulate_fp16`: ONNX Runtime's CPU has no FP16 kernels for Conv, MatMul, the element-wise and reduction
  ops, so it cannot run an FP16 graph as a GPU does. The emulation keeps the arithmetic in FP32 and models FP16
  **storage**: every float tensor an FP16 node reads or writes is rounded to float16 by a
  ``Cast(FLOAT16) -> Cast(FLOAT)`` pair (past +-65504 it becomes +-inf, as on the GPU), and its float constants
  (weights, biases, Q/DQ scales) are rounded as the converter rounds them (clamped to +-65504, tiny values kept
  at 2**-24). Not modelled: accumulation order and width, kernel fusion, the kernels TensorRT picks
  (``docs/fp16.md``, section 3).
* :func:`fp16_plan_model`: the deployable ``plan.onnx``: the Q/DQ model converted to FP16 by onnxconverter-common
  with the plan's FP32 nodes blocked, at opset 19 (so Q/DQ take FP16 scales), inputs and outputs in their
  original types; it builds as one strongly typed TensorRT network.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Collection, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "FP16_MAX",
    "FP32_OPS",
    "float_tensors",
    "float_nodes",
    "node_runs_fp16",
    "round_constant",
    "emulate_fp16",
    "fp16_plan_model",
]

log = logging.getLogger("precision_lab")

FP16_MAX = 65504.0
_MIN_POSITIVE = 2.0**-24  # the smallest FP16 subnormal: constants are never flushed to 0
_FLOAT = TensorProto.FLOAT


def _converter():
    from onnxconverter_common import float16

    return float16


FP32_OPS: frozenset[str] = frozenset(
    ["ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "DictVectorizer", "FeatureVectorizer",
     "Imputer", "LabelEncoder", "LinearClassifier", "LinearRegressor", "Normalizer", "OneHotEncoder",
     "RandomUniformLike", "SVMClassifier", "SVMRegressor", "Scaler", "TreeEnsembleClassifier",
     "TreeEnsembleRegressor", "ZipMap", "NonMaxSuppression", "TopK", "RoiAlign", "Resize", "Range", "CumSum",
     "Min", "Max", "Upsample"]
)
"""Op types that stay FP32 in every plan: onnxconverter-common's ``DEFAULT_OP_BLOCK_LIST`` (1.16), which
:func:`fp16_plan_model` passes to the converter (a test checks the two agree)."""


def float_tensors(model: onnx.ModelProto) -> frozenset[str]:
    """The FP32 tensors of ``model``'s main graph whose type is known (value_info, inputs, outputs, initializers)."""
    graph = model.graph
    typed = [*graph.value_info, *graph.input, *graph.output]
    names = {vi.name for vi in typed if vi.type.tensor_type.elem_type == _FLOAT}
    names.update(init.name for init in graph.initializer if init.data_type == _FLOAT)
    return frozenset(names)


def float_nodes(model: onnx.ModelProto, floats: Collection[str] | None = None) -> list[str]:
    """The nodes of the main graph a plan may keep FP32, in graph order: every node that reads or writes a float
    tensor, except the op types that are always FP32 (:data:`FP32_OPS`) and ``Constant``."""
    floats = float_tensors(model) if floats is None else floats
    return [
        node.name
        for node in model.graph.node
        if node.op_type not in FP32_OPS
        and node.op_type != "Constant"
        and any(name in floats for name in [*node.input, *node.output] if name)
    ]


def node_runs_fp16(node: onnx.NodeProto, fp32_nodes: Collection[str]) -> bool:
    """Whether ``node`` runs FP16 in a three-level plan that keeps ``fp32_nodes`` FP32 (INT8 layers and their Q/DQ
    nodes run in the FP16 region too)."""
    return node.name not in fp32_nodes and node.op_type not in FP32_OPS


def round_constant(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to float16 as the converter stores FP16 constants (clamped to +-65504, non-zero values
    kept at least 2**-24 in magnitude), as float32."""
    values = np.asarray(values, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns for every clamped value
        rounded = _converter().convert_np_to_float16(  # 1-d: numpy 2 refuses nonzero() on a 0-d array
            values.reshape(-1), min_positive_val=_MIN_POSITIVE, max_finite_val=FP16_MAX
        )
    return np.asarray(rounded, dtype=np.float32).reshape(values.shape)


def _cast_pair(source: str, target: str, prefix: str) -> list[onnx.NodeProto]:
    half = f"{prefix}/fp16"
    return [
        helper.make_node("Cast", [source], [half], name=f"{prefix}/CastToFp16", to=TensorProto.FLOAT16),
        helper.make_node("Cast", [half], [target], name=f"{prefix}/CastToFp32", to=_FLOAT),
    ]


def emulate_fp16(model: onnx.ModelProto, fp32_nodes: Collection[str], floats: Collection[str]) -> onnx.ModelProto:
    """``model`` (a Q/DQ model of a three-level plan, changed in place and returned) with FP16 storage emulated on
    every node that runs FP16 (:func:`node_runs_fp16`); ``floats`` are the float tensors of the prepared model
    (:func:`float_tensors`). Each float tensor is rounded once where it is made by an FP16 node; a float tensor
    made by an FP32 node or a graph input gets one rounded copy for its FP16 readers. Subgraphs stay FP32."""
    graph = model.graph
    floats = set(floats)
    all_nodes = list(graph.node)  # one Python object per node: protobuf may wrap a message anew on every access
    for node in all_nodes:  # the Q/DQ the placement added: Q reads a float, DQ writes one
        if node.op_type == "QuantizeLinear":
            floats.add(node.input[0])
        elif node.op_type == "DequantizeLinear":
            floats.add(node.output[0])
    initializers = {init.name: init for init in graph.initializer}
    fp16 = {id(node): node_runs_fp16(node, fp32_nodes) for node in all_nodes}
    producer_fp16 = {out: fp16[id(node)] for node in all_nodes for out in node.output if out}
    constant_readers = Counter(
        (name, fp16[id(node)]) for node in all_nodes for name in node.input if name in initializers
    )

    rounded_inits: dict[str, str] = {}

    def rounded_initializer(name: str) -> str:
        if name not in rounded_inits:
            init = initializers[name]
            values = round_constant(numpy_helper.to_array(init))
            if constant_readers[(name, False)]:  # FP32 readers keep the original: round a copy
                copy = numpy_helper.from_array(values, f"{name}/fp16_rounded")
                graph.initializer.append(copy)
                rounded_inits[name] = copy.name
            else:
                init.CopyFrom(numpy_helper.from_array(values, name))
                rounded_inits[name] = name
        return rounded_inits[name]

    nodes: list[onnx.NodeProto] = []
    rounded_copies: dict[str, str] = {}
    for node in all_nodes:
        if fp16[id(node)]:
            for index, name in enumerate(node.input):
                if not name or name not in floats:
                    continue
                if name in initializers:
                    node.input[index] = rounded_initializer(name)
                elif not producer_fp16.get(name, False):  # a graph input, or made by an FP32 node
                    if name not in rounded_copies:
                        rounded_copies[name] = f"{name}/fp16_rounded"
                        nodes.extend(_cast_pair(name, rounded_copies[name], f"{name}/round_in"))
                    node.input[index] = rounded_copies[name]
        nodes.append(node)
        if fp16[id(node)]:
            for index, name in enumerate(node.output):
                if name and name in floats:
                    raw = f"{name}/fp16_raw"
                    node.output[index] = raw
                    nodes.extend(_cast_pair(raw, name, f"{name}/round_out"))
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def fp16_plan_model(qdq_model: onnx.ModelProto, fp32_nodes: Iterable[str]) -> onnx.ModelProto:
    """The strongly typed ``plan.onnx`` of a three-level plan from its FP32 Q/DQ model (not changed): FP16
    everywhere except ``fp32_nodes`` and :data:`FP32_OPS` (kept FP32 with Casts around them), Q/DQ with FP16
    scales (opset 19), inputs and outputs in their original types. Built by onnxconverter-common's
    ``convert_float_to_float16`` (``keep_io_types=True``, constants clamped to +-65504), with two repairs:
    initializers shared by FP32 and FP16 nodes get a copy per side, and a ``Cast(FLOAT16) -> Cast(FLOAT)`` pair
    between two FP32 nodes (the converter leaves it when a tensor has several FP32 readers) becomes an
    ``Identity``, and a model's own ``Cast(to=FLOAT)`` of a non-float tensor (e.g. a one-hot's bool) in the FP16
    region casts to FLOAT16, and FP16 nodes that read a graph output read its FP16 value (the converter points them
    at the FP32 output). ``onnx.checker`` (with type inference) accepts the result."""
    from onnx import version_converter

    float16 = _converter()
    fp32_nodes = set(fp32_nodes)
    model = onnx.ModelProto()
    model.CopyFrom(qdq_model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    _clear_negative_dims(model)
    if opset < 19:
        model = version_converter.convert_version(model, 19)  # QuantizeLinear/DequantizeLinear take FP16 scales
    _split_shared_initializers(model, fp32_nodes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            node_block_list=sorted(fp32_nodes),
            op_block_list=sorted(FP32_OPS),
            max_finite_val=FP16_MAX,
            min_positive_val=_MIN_POSITIVE,
        )
    _remove_rounding_pairs(converted)
    _fix_cast_targets(converted)
    _fix_output_readers(converted, fp32_nodes)
    onnx.checker.check_model(converted, full_check=True)  # with type inference: mixed FP16/FP32 inputs fail
    return converted


def _clear_negative_dims(model: onnx.ModelProto) -> None:
    """Make a declared dimension of -1 (some exporters write it for "unknown") unknown, as ONNX spells it, so the
    checker's shape inference does not reject the declaration."""
    graph = model.graph
    for value_info in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value_info.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.Clear()


def _split_shared_initializers(model: onnx.ModelProto, fp32_nodes: Collection[str]) -> None:
    """Give the FP16 readers of an initializer that FP32 nodes read too their own copy (the converter would keep
    the shared one FP32 and feed an FP32 constant to an FP16 node)."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer if init.data_type == _FLOAT}
    sides: dict[str, set[bool]] = {}
    for node in graph.node:
        for name in node.input:
            if name in initializers:
                sides.setdefault(name, set()).add(node_runs_fp16(node, fp32_nodes))
    shared = {name for name, kinds in sides.items() if len(kinds) == 2}
    for name in sorted(shared):
        copy = onnx.TensorProto()
        copy.CopyFrom(initializers[name])
        copy.name = f"{name}/fp16_copy"
        graph.initializer.append(copy)
    for node in graph.node:
        if node_runs_fp16(node, fp32_nodes):
            for index, name in enumerate(node.input):
                if name in shared:
                    node.input[index] = f"{name}/fp16_copy"


def _fix_cast_targets(model: onnx.ModelProto) -> None:
    """A ``Cast(to=FLOAT)`` whose output the converter typed FLOAT16 (it retypes the tensor but, for a Cast from a
    non-float type, not the Cast) casts to FLOAT16."""
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.value_info}
    for node in model.graph.node:
        if node.op_type == "Cast" and types.get(node.output[0]) == TensorProto.FLOAT16:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == _FLOAT:
                    attribute.i = TensorProto.FLOAT16


def _fix_output_readers(model: onnx.ModelProto, fp32_nodes: Collection[str]) -> None:
    """An FP16 node that reads a graph output reads the FP16 tensor the output's ``Cast(FLOAT)`` casts (with
    ``keep_io_types`` the converter renames the producer's output and leaves its other readers on the FP32
    output)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    producer = {out: node for node in graph.node for out in node.output}
    fp16_source = {}
    for name in outputs:
        cast = producer.get(name)
        if cast is not None and cast.op_type == "Cast" and any(a.name == "to" and a.i == _FLOAT for a in cast.attribute):
            fp16_source[name] = cast.input[0]
    for node in graph.node:
        if node.op_type == "Cast" or not node_runs_fp16(node, fp32_nodes):
            continue
        for index, name in enumerate(node.input):
            if name in fp16_source:
                node.input[index] = fp16_source[name]


def _remove_rounding_pairs(model: onnx.ModelProto) -> None:
    """Turn every ``Cast(FLOAT)`` that reads a ``Cast(FLOAT16)`` of an FP32 tensor into an ``Identity`` of that
    tensor, and drop Casts nobody reads any more (onnxconverter-common 1.16 misses pairs with several readers)."""
    graph = model.graph

    def cast_to(node: onnx.NodeProto) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        source = producer.get(node.input[0]) if node.input else None
        if cast_to(node) == _FLOAT and source is not None and cast_to(source) == TensorProto.FLOAT16:
            node.op_type = "Identity"
            del node.attribute[:]
            node.input[0] = source.input[0]
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in read for o in n.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)
