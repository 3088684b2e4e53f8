"""The per-op rule table of Q/DQ placement, and the recipes as op sets over it.

``OP_RULES`` maps an ONNX op type to an :class:`OpRule`: which inputs of an INT8 layer get Q/DQ, which input is
the weight and on which axis it is quantized per channel, what happens to constant inputs, whether the layer
shares one scale across its inputs and output, whether it quantizes its output, and which INT8 producers make a
node of this type that is not a candidate quantize its other input (the residual ``Add``). An op type missing
from the table follows ``DEFAULT_RULE`` (input 0 quantized, output quantized), which is what ``--ops`` with any
other op type gets.

``RECIPES`` maps a recipe name to its default candidate op types; ``RECIPE_RULES`` maps it to its rule table.
Both recipes of today read ``OP_RULES``. A recipe with other rules (ModelOpt's, see docs/modelopt.md section 9)
is one more op set in ``RECIPES`` and one more table in ``RECIPE_RULES``, e.g.
``{**OP_RULES, "MatMul": replace(OP_RULES["MatMul"], weight_axis=_axis_1)}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from precision_lab.errors import InputError

__all__ = [
    "OpRule",
    "OP_RULES",
    "DEFAULT_RULE",
    "RECIPES",
    "RECIPE_RULES",
    "WEIGHTED_OPS",
    "EXTENDED_OPS",
    "MODELOPT_OPS",
    "MODELOPT_RULES",
    "rules_for",
    "resolve_op_types",
]

WeightAxis = Callable[[Mapping[str, object], int], int]
"""(node attributes, weight rank >= 1) -> the output-channel axis of the weight."""

ConstantInputs = Literal["initializer", "qdq"]


def _axis_0(attrs: Mapping[str, object], rank: int) -> int:
    return 0


def _conv_transpose_axis(attrs: Mapping[str, object], rank: int) -> int:
    """ConvTranspose weights are [C_in, C_out, ...]: axis 1."""
    return 1 if rank > 1 else 0


def _gemm_axis(attrs: Mapping[str, object], rank: int) -> int:
    """Gemm's B is [K, N], or [N, K] with ``transB=1``."""
    return 0 if int(attrs.get("transB", 0)) else min(1, rank - 1)


def _last_axis(attrs: Mapping[str, object], rank: int) -> int:
    return rank - 1


@dataclass(frozen=True)
class OpRule:
    """How a layer of one op type is quantized when it is INT8 (README "Q/DQ placement").

    * ``inputs``: indices of the inputs that get Q/DQ (those beyond the node's input count are skipped);
      ``None`` means every input. Default ``(0,)``.
    * ``weight_input``, ``weight_axis``: the input that is the weight, and its per-channel axis when it is a
      constant of rank >= 1. Default none.
    * ``constant_inputs``: a float32 constant among ``inputs`` becomes an int8 ``"initializer"`` plus
      ``DequantizeLinear`` (per channel on the weight input, per tensor elsewhere), or gets a run-time ``"qdq"``
      pair like an activation. Default ``"initializer"``.
    * ``shared_scale``: the quantized inputs and the outputs use one scale, the largest amax among them
      (requires ``constant_inputs="qdq"``). Default False.
    * ``quantize_output``: an INT8 layer also quantizes its float outputs, on the edges to consumers that are
      not pinned and on graph outputs. Default True.
    * ``residual_of``: op types whose INT8 output, feeding one input of a two-input node of this type that is
      not a candidate, puts Q/DQ on the node's other (non-constant) input. Default none.
    * ``fused_from``: op types whose output, feeding an input of an INT8 node of this type, gets no Q/DQ there
      (recipe ``modelopt``: the Conv side of a residual Add, which TensorRT fuses into the Conv). Default none.
    """

    inputs: tuple[int, ...] | None = (0,)
    weight_input: int | None = None
    weight_axis: WeightAxis | None = None
    constant_inputs: ConstantInputs = "initializer"
    shared_scale: bool = False
    quantize_output: bool = True
    residual_of: frozenset[str] = frozenset()
    fused_from: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if (self.weight_input is None) != (self.weight_axis is None):
            raise ValueError("weight_input and weight_axis go together")
        if self.shared_scale and self.constant_inputs != "qdq":
            raise ValueError("a shared scale needs constant_inputs='qdq' (an int8 initializer has its own scale)")

    def quantized_inputs(self, num_inputs: int) -> list[int]:
        """The indices, below ``num_inputs``, of the inputs that get Q/DQ."""
        if self.inputs is None:
            return list(range(num_inputs))
        return [i for i in self.inputs if i < num_inputs]

    def axis_of(self, index: int, attrs: Mapping[str, object], rank: int) -> int | None:
        """Per-channel axis of constant input ``index`` of rank ``rank``; ``None`` (per tensor) for anything but a
        weight of rank >= 1."""
        if index != self.weight_input or self.weight_axis is None or rank == 0:
            return None
        return self.weight_axis(attrs, rank)


def _weighted(axis: WeightAxis) -> OpRule:
    return OpRule(inputs=(0, 1), weight_input=1, weight_axis=axis, quantize_output=False)


_SHARED = OpRule(constant_inputs="qdq", shared_scale=True)

DEFAULT_RULE = OpRule()

OP_RULES: dict[str, OpRule] = {
    "Conv": _weighted(_axis_0),
    "ConvTranspose": _weighted(_conv_transpose_axis),
    "Gemm": _weighted(_gemm_axis),
    "MatMul": _weighted(_last_axis),
    "Add": OpRule(inputs=(0, 1), residual_of=frozenset({"Conv"})),
    "Mul": OpRule(inputs=(0, 1)),
    "Concat": OpRule(inputs=None, constant_inputs="qdq", shared_scale=True),
    "MaxPool": _SHARED,
    "AveragePool": DEFAULT_RULE,
    "GlobalAveragePool": DEFAULT_RULE,
    "Resize": _SHARED,  # input 0 only: roi, scales and sizes stay as they are
}

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
EXTENDED_OPS = ("Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Resize")
RECIPES: dict[str, tuple[str, ...]] = {"trt": WEIGHTED_OPS, "extended": WEIGHTED_OPS + EXTENDED_OPS}
RECIPE_RULES: dict[str, Mapping[str, OpRule]] = {"trt": OP_RULES, "extended": OP_RULES}

# --- recipe "modelopt" (issue 14): ModelOpt 0.47's INT8 op types and rules (docs/modelopt.md 3.1, 3.3); its
# candidate filter (P7, P9-P12) is precision_lab.modelopt_recipe.modelopt_candidates.


def _axis_1(attrs: Mapping[str, object], rank: int) -> int:
    """ONNX Runtime's (so ModelOpt's) MatMul weight axis: 1, the output channel of a 2-D ``[K, N]`` weight."""
    return min(1, rank - 1)


_NO_OUTPUT = replace(DEFAULT_RULE, quantize_output=False)  # ModelOpt never quantizes node outputs (3.3)
MODELOPT_OPS = (
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "MaxPool", "AveragePool", "GlobalAveragePool",
    "Resize", "BatchNormalization", "LayerNormalization", "HardSwish", "Clip",
)  # 3.1 minus Concat (not quantizable), CumSum, TopK and LRN (rare)
MODELOPT_RULES: dict[str, OpRule] = {
    **{op: _NO_OUTPUT for op in MODELOPT_OPS},
    "Conv": OP_RULES["Conv"],
    "ConvTranspose": OP_RULES["ConvTranspose"],
    "Gemm": OP_RULES["Gemm"],
    "MatMul": replace(OP_RULES["MatMul"], weight_axis=_axis_1),
    # P4, simplified: the input an Add reads straight from a Conv is the one fused into it, the other is the skip
    "Add": replace(OP_RULES["Add"], quantize_output=False, residual_of=frozenset(), fused_from=frozenset({"Conv", "ConvTranspose"})),
    "Mul": replace(OP_RULES["Mul"], quantize_output=False),
}
RECIPES["modelopt"] = MODELOPT_OPS
RECIPE_RULES["modelopt"] = MODELOPT_RULES


def _check_recipe(recipe: str) -> None:
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe '{recipe}'; choose one of {', '.join(RECIPES)}")


def rules_for(recipe: str) -> Mapping[str, OpRule]:
    """The rule table of ``recipe``; an unknown recipe is an :class:`InputError`."""
    _check_recipe(recipe)
    return RECIPE_RULES[recipe]


def resolve_op_types(recipe: str, ops: Sequence[str] | None = None) -> list[str]:
    """The candidate op types: ``ops`` when given (ONNX op type names), else the recipe's."""
    _check_recipe(recipe)
    if not ops:
        return list(RECIPES[recipe])
    bad = [op for op in ops if not op or not op[0].isupper() or not op.isalnum()]
    if bad:
        raise InputError(f"--ops takes ONNX op types such as Conv,MatMul (case matters); got {bad}")
    return list(dict.fromkeys(ops))
