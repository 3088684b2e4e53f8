"""What a plan costs: a roofline estimate of each layer's time on a target GPU (issue 13, item 5).

A layer's time is ``max(2 * MACs / rate, bytes / bandwidth)``: the larger of its tensor-core time at the peak rate
of its precision and the time to move its inputs, weights and outputs through memory once. ``Conv``,
``ConvTranspose``, ``Gemm`` and ``MatMul`` have MACs; every other op (``Add``, ``Mul``, ``Relu``, ``Softmax``, the
parts of a hand-built LayerNorm, ``Concat``, pooling, ...) is taken as memory-bound (its arithmetic is
negligible next to its traffic). ``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze`` and ``Identity`` cost
nothing: they only relabel a tensor.

Bytes per element of the float tensors a layer reads and writes:

* ``fp16``: 2; ``fp32``: 4 (TF32 is a compute mode of FP32 tensors: 4 bytes too);
* ``int8``: 1 for its float inputs (activations and weights: they have Q/DQ), 4 for a bias (Conv/ConvTranspose
  input 2, Gemm input C: Q/DQ leaves biases FP32), and its **output at the surrounding precision**
  (``int8_output``; :func:`model_cost` passes its ``default``). precision-lab quantizes the inputs of an INT8
  layer, not its output, so the INT8 kernel dequantizes into the engine's float type; when TensorRT can fuse
  the next layer's Q into it the real output is INT8, so this errs on the side of a dearer INT8 layer.

Tensors that are not float (indices, shapes, masks) are not counted.

The model's limits: no kernel fusion (each ONNX node reads and writes its tensors, where TensorRT fuses
Conv + bias + ReLU, Q/DQ and element-wise chains), no launch overhead, no cache reuse, no tactic choice, and the
GPUs' **dense tensor-core peak rates** at boost clock, which real engines reach only a fraction of. The
absolute seconds are a lower bound; what the estimate is for is the *relative* cost of two plans on one GPU
(:func:`relative_cost`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx
from onnx import TensorProto

from precision_lab.precisions import FP16, FP32, INT8, PRECISIONS, PrecisionPlan

if TYPE_CHECKING:
    from precision_lab.model import Candidate, PreparedModel

__all__ = [
    "DEFAULT_GPU",
    "FP32_MODES",
    "GPU",
    "GPUS",
    "LayerCost",
    "PlanCost",
    "PlanCoster",
    "Shape",
    "float_shapes",
    "gpu_named",
    "layer_cost",
    "macs",
    "model_cost",
    "relative_cost",
]

Shape = tuple[int | str | None, ...]

FP32_MODES = ("tf32", "fp32")  # TensorRT's default on Ampere and newer; true FP32 (trtexec --noTF32)
BYTES = {INT8: 1, FP16: 2, FP32: 4}
MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
_BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}
_FLOAT_TYPES = frozenset({0, TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE})
_TERA = 1e12


@dataclass(frozen=True)
class GPU:
    """A target GPU: dense (no 2:4 sparsity) tensor-core peak rates in TOPS / TFLOPS, the FP32 CUDA-core rate,
    memory bandwidth in TB/s, and where the numbers come from (docs/fp16.md, section 5)."""

    name: str
    int8_tops: float
    fp16_tflops: float  # FP16 with FP32 accumulate
    tf32_tflops: float
    fp32_tflops: float  # CUDA cores, no tensor cores
    bandwidth_tbs: float
    source: str

    def rate(self, precision: str, fp32_mode: str = "tf32") -> float:
        """Peak operations per second (a MAC is 2) of ``precision``; FP32 runs at the TF32 rate unless
        ``fp32_mode`` is ``"fp32"``."""
        _check(precision, PRECISIONS, "precision")
        _check(fp32_mode, FP32_MODES, "fp32_mode")
        if precision == INT8:
            return self.int8_tops * _TERA
        if precision == FP16:
            return self.fp16_tflops * _TERA
        return (self.tf32_tflops if fp32_mode == "tf32" else self.fp32_tflops) * _TERA

    @property
    def bandwidth(self) -> float:
        """Memory bandwidth in bytes per second."""
        return self.bandwidth_tbs * _TERA


DEFAULT_GPU = "H100 SXM"

_GPU_LIST = (
    GPU("H100 SXM", 1979, 989, 494, 67, 3.35,
        "issue 13's dense figures (TF32 494.7 and FP32 66.9 rounded); "
        "https://glennklockwood.com/garden/processors/h100; NVIDIA datasheet "
        "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet (starred = sparse, 2x)"),
    GPU("A100 SXM 80GB", 624, 312, 156, 19.5, 2.039,
        "https://glennklockwood.com/garden/processors/A100 (NVIDIA A100 datasheet "
        "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf); dense/sparse split: "
        "https://upb-pc2.atlassian.net/wiki/spaces/PC2DOK/pages/1900609/NVIDIA+A100+40GB+with+NVLINK; "
        "2,039 GB/s: https://www.thundercompute.com/blog/nvidia-a100-specs-full-guide"),
    GPU("L4", 242.5, 121, 60, 30.3, 0.300,
        "derived: half the datasheet's sparse INT8 485, FP16 242, TF32 120 "
        "(https://store.sourcecode.com/en-us/bg-bucket-compare/125/9820, also 300 GB/s); dense cross-check "
        "https://hmc-tech.com/gpu/nvidia-l4-vs-nvidia-a100-40gb"),
    GPU("L40S", 733, 362, 183, 91.6, 0.864,
        "datasheet table dense | sparse, FP32 91.6, 864 GB/s: https://www.mullet.se/product.html?product_id=355414; "
        "dense INT8 732.86: https://hmc-tech.com/gpu/nvidia-l40s-vs-nvidia-t40"),
    GPU("RTX 4090", 660.6, 165.2, 82.6, 82.6, 1.008,
        "FP16 with FP32 accumulate (330.3 with FP16 accumulate); https://waredb.com/processor/nvidia-geforce-rtx-4090; "
        "https://gigagpu.com/rtx-4090-24gb-tflops-ai-benchmark-class/; 1008 GB/s and FP32 82.6: "
        "https://www.mobylak.com/nvidia-reveals-ada-lovelace-gpu-secrets-extreme-transistor-counts-at-high-clocks/"),
    GPU("Jetson AGX Orin", 85, 42.5, 21.25, 5.3, 0.2048,
        "64 GB, GPU only, MAXN; INT8 derived: half of 170 sparse TOPS (http://mzph.cn/web/30785.shtml, a summary of "
        "NVIDIA's technical brief; https://blog.us.fixstars.com/?p=1855&preview=true); FP16 and TF32 derived from "
        "the Ampere ratio INT8:FP16:TF32 = 4:2:1; FP32 5.3 from the brief; 204.8 GB/s is NVIDIA's module figure, "
        "not verified against a stored source"),
)
GPUS: dict[str, GPU] = {gpu.name: gpu for gpu in _GPU_LIST}


def _gpu_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def gpu_named(name: str | GPU) -> GPU:
    """The GPU of :data:`GPUS` called ``name``, ignoring case, spaces, dashes and underscores (``h100-sxm`` is
    ``"H100 SXM"``); a :class:`GPU` is returned as it is. ``ValueError`` naming the choices otherwise."""
    if isinstance(name, GPU):
        return name
    found = next((gpu for key, gpu in GPUS.items() if _gpu_key(key) == _gpu_key(str(name))), None)
    if found is None:
        raise ValueError(f"unknown target GPU {name!r}; choose one of: {', '.join(GPUS)}")
    return found


@dataclass(frozen=True)
class LayerCost:
    """The estimate of one node: MACs, bytes moved, the compute and memory times (seconds) and the roofline time,
    their maximum."""

    name: str
    op_type: str
    precision: str
    macs: int
    bytes: int
    compute_seconds: float
    memory_seconds: float

    @property
    def seconds(self) -> float:
        return max(self.compute_seconds, self.memory_seconds)

    @property
    def bound(self) -> str:
        """``"compute"`` or ``"memory"``: which roof limits the layer."""
        return "compute" if self.compute_seconds > self.memory_seconds else "memory"


@dataclass(frozen=True)
class PlanCost:
    """The estimate of a whole model under a plan: the sum of its layers' times (seconds), per layer in graph
    order, and the settings it was computed with."""

    layers: tuple[LayerCost, ...]
    gpu: str
    default: str
    fp32_mode: str

    @property
    def seconds(self) -> float:
        return math.fsum(layer.seconds for layer in self.layers)

    def by_precision(self) -> dict[str, float]:
        """Seconds spent at each precision."""
        totals: dict[str, float] = {}
        for layer in self.layers:
            totals[layer.precision] = totals.get(layer.precision, 0.0) + layer.seconds
        return totals


def _check(value: str, allowed: Iterable[str], what: str) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose from {allowed}")


def _static(node: onnx.NodeProto, tensor: str, shapes: Mapping[str, Shape | None]) -> tuple[int, ...]:
    """The static shape of ``tensor`` (a ``ValueError`` naming it and ``node`` if it has none)."""
    shape = shapes.get(tensor)
    if shape is None or not all(isinstance(dim, int) for dim in shape):
        raise ValueError(f"tensor {tensor!r} of {node.op_type} node {node.name!r} has no static float shape "
                         f"({shape}); prepare the model with fixed input shapes")
    return shape  # type: ignore[return-value]


def _elements(node: onnx.NodeProto, tensor: str, shapes: Mapping[str, Shape | None]) -> int:
    return math.prod(_static(node, tensor, shapes))


def _attr(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((int(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default)


def macs(node: onnx.NodeProto, shapes: Mapping[str, Shape | None]) -> int:
    """Multiply-accumulates of a ``Conv``, ``ConvTranspose``, ``Gemm`` or ``MatMul`` node (0 for any other op).

    Conv: N·Cout·Hout·Wout·(Cin/groups)·kH·kW = |Y|·|W|/Cout (any spatial rank). ConvTranspose: every input
    element meets Cout/groups·kH·kW weights: |X|·|W|/Cin. MatMul: |Y|·K with K the last axis of A (batch axes
    and broadcasting included). Gemm: M·N·K = |Y|·K, K from A and ``transA``.
    """
    op = node.op_type
    if op not in MAC_OPS:
        return 0
    a, b = _static(node, node.input[0], shapes), _static(node, node.input[1], shapes)
    if op == "ConvTranspose":
        return math.prod(a) * math.prod(b) // b[0]
    y = _elements(node, node.output[0], shapes)
    if op == "Conv":
        return y * math.prod(b[1:])
    if op == "Gemm":
        return y * a[0 if _attr(node, "transA") else 1]
    return y * a[-1]


def _bytes(node: onnx.NodeProto, shapes: Mapping[str, Shape | None], precision: str, int8_output: str) -> int:
    """Bytes of the float tensors ``node`` reads and writes at ``precision`` (see the module docstring)."""
    if node.op_type in VIEW_OPS:
        return 0
    bias = _BIAS_INPUT.get(node.op_type)
    total = 0
    for position, tensor in enumerate(node.input):
        if tensor and tensor in shapes:
            size = BYTES[FP32] if precision == INT8 and position == bias else BYTES[precision]
            total += _elements(node, tensor, shapes) * size
    out_size = BYTES[int8_output if precision == INT8 else precision]
    total += sum(_elements(node, tensor, shapes) * out_size for tensor in node.output if tensor in shapes)
    return total


def layer_cost(
    node: onnx.NodeProto,
    shapes: Mapping[str, Shape | None],
    precision: str,
    gpu: GPU = GPUS[DEFAULT_GPU],
    *,
    fp32_mode: str = "tf32",
    int8_output: str = FP16,
) -> LayerCost:
    """The roofline estimate of ``node`` running at ``precision`` (``"int8"``, ``"fp16"`` or ``"fp32"``) on
    ``gpu`` (default H100 SXM).

    ``shapes`` maps every float tensor to its shape (static); tensors it does not name are not float and are not
    counted, and a weighted op whose activation, weight or output is not in it raises ``ValueError``.
    ``fp32_mode`` (default ``"tf32"``, TensorRT's default on Ampere and newer) sets FP32's compute rate: ``"fp32"``
    is true FP32 on CUDA cores (trtexec ``--noTF32``). ``int8_output`` (default ``"fp16"``) is the precision an
    INT8 layer writes its output in: the surrounding precision of the engine.
    """
    _check(precision, PRECISIONS, "precision")
    _check(int8_output, (FP16, FP32), "int8_output")
    count = macs(node, shapes)
    moved = _bytes(node, shapes, precision, int8_output)
    return LayerCost(
        name=node.name,
        op_type=node.op_type,
        precision=precision,
        macs=count,
        bytes=moved,
        compute_seconds=2 * count / gpu.rate(precision, fp32_mode),
        memory_seconds=moved / gpu.bandwidth,
    )


def _elem_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*graph.value_info, *graph.input, *graph.output]}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


def _has_shape_gaps(model: onnx.ModelProto) -> bool:
    graph = model.graph
    known = {vi.name for vi in [*graph.value_info, *graph.input, *graph.output]}
    known.update(init.name for init in graph.initializer)
    return any(name and name not in known for node in graph.node for name in [*node.input, *node.output])


def float_shapes(model: onnx.ModelProto) -> dict[str, Shape | None]:
    """Each float tensor of the main graph (float32, float16, bfloat16, double or untyped) -> its shape (``None``
    when unknown), from the value_info, inputs, outputs and initializers. A model with tensors that have no
    value_info (not a prepared model) is shape-inferred first with ``onnx.shape_inference``."""
    if _has_shape_gaps(model):
        model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    types = _elem_types(graph)
    table: dict[str, Shape | None] = {}
    for vi in [*graph.value_info, *graph.input, *graph.output]:
        shape = vi.type.tensor_type.shape if vi.type.tensor_type.HasField("shape") else None
        table[vi.name] = None if shape is None else tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None) for d in shape.dim
        )
    table.update({init.name: tuple(int(d) for d in init.dims) for init in graph.initializer})
    names = {name for node in graph.node for name in [*node.input, *node.output] if name}
    return {name: table.get(name) for name in names if types.get(name, 0) in _FLOAT_TYPES}


def _node_precision(name: str, plan: PrecisionPlan, candidates: set[str], default: str) -> str:
    if name in plan:
        return plan[name]
    return INT8 if name in candidates else default


def model_cost(
    model: onnx.ModelProto | PreparedModel,
    plan: PrecisionPlan,
    *,
    candidates: Iterable[Candidate | str],
    gpu: GPU = GPUS[DEFAULT_GPU],
    default: str = FP16,
    fp32_mode: str = "tf32",
) -> PlanCost:
    """The roofline estimate of ``model`` (a :class:`PreparedModel` or a ``ModelProto``) under ``plan`` on ``gpu``
    (default H100 SXM).

    A candidate runs at the plan's precision (INT8 unless named). Every other node whose tensors are float runs at
    ``default`` (``"fp16"``, the default, for an INT8 + FP16 engine; ``"fp32"`` for the INT8/FP32 two-level plans)
    unless the plan names it; nodes without float tensors cost nothing. An INT8 layer writes its output at
    ``default``. ``fp32_mode``: ``"tf32"`` (default) or ``"fp32"``, see :func:`layer_cost`. The plan and the
    candidates must name nodes of the main graph (``ValueError`` otherwise).
    """
    return PlanCoster(model, candidates=candidates, gpu=gpu, default=default, fp32_mode=fp32_mode).cost(plan)


class PlanCoster:
    """:func:`model_cost` for many plans of one model: the float shapes are read once, each node's estimate at
    each precision is computed once, and each distinct plan's total once. Same arguments as :func:`model_cost`
    (``ValueError`` for a candidate the model does not have)."""

    def __init__(
        self,
        model: onnx.ModelProto | PreparedModel,
        *,
        candidates: Iterable[Candidate | str],
        gpu: GPU = GPUS[DEFAULT_GPU],
        default: str = FP16,
        fp32_mode: str = "tf32",
    ) -> None:
        _check(default, (FP16, FP32), "default")
        _check(fp32_mode, FP32_MODES, "fp32_mode")
        self.proto = getattr(model, "model", model)
        self.gpu, self.default, self.fp32_mode = gpu, default, fp32_mode
        self.nodes = tuple(self.proto.graph.node)
        self.names = frozenset(node.name for node in self.nodes)
        self._index = {node.name: i for i, node in enumerate(self.nodes)}
        self.candidates = frozenset(c if isinstance(c, str) else c.name for c in candidates)
        self._check_names(self.candidates)
        self.shapes = float_shapes(self.proto)
        self._layers: dict[tuple[int, str], LayerCost] = {}
        self._plans: dict[PrecisionPlan, PlanCost] = {}

    def _check_names(self, names: Iterable[str]) -> None:
        unknown = sorted(set(names) - self.names)
        if unknown:
            raise ValueError(f"the plan or candidates name nodes the model does not have: {', '.join(unknown)}")

    def everything(self, precision: str) -> PrecisionPlan:
        """The plan that runs every node at ``precision`` (all-FP16, all-FP32)."""
        return PrecisionPlan((node.name, precision) for node in self.nodes)

    def _layer(self, index: int, precision: str) -> LayerCost:
        key = (index, precision)
        if key not in self._layers:
            self._layers[key] = layer_cost(self.nodes[index], self.shapes, precision, self.gpu,
                                           fp32_mode=self.fp32_mode, int8_output=self.default)
        return self._layers[key]

    def raise_cost(self, name: str, raised: str, base: str) -> float:
        """Seconds node ``name`` adds when it runs at ``raised`` instead of ``base`` precision."""
        index = self._index[name]
        return self._layer(index, raised).seconds - self._layer(index, base).seconds

    def cost(self, plan: PrecisionPlan) -> PlanCost:
        """The estimate of the model under ``plan``."""
        if plan not in self._plans:
            self._check_names(plan)
            layers = tuple(
                self._layer(i, _node_precision(node.name, plan, self.candidates, self.default))
                for i, node in enumerate(self.nodes)
            )
            self._plans[plan] = PlanCost(layers=layers, gpu=self.gpu.name, default=self.default,
                                         fp32_mode=self.fp32_mode)
        return self._plans[plan]


def relative_cost(plan_cost: PlanCost, reference_cost: PlanCost) -> float:
    """``plan_cost``'s total time over ``reference_cost``'s (e.g. against all-FP16: below 1 is cheaper)."""
    if reference_cost.seconds <= 0:
        raise ValueError("the reference costs nothing: no relative cost")
    return plan_cost.seconds / reference_cost.seconds
