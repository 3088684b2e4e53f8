"""Placement as data (README "Q/DQ placement"): the rule table, and the :class:`Placement` of plans on tiny models
compared field by field, without building a Q/DQ graph.

The models are drawn in the docstrings (some come from test_qdq.py, which checks the built graphs and their
numbers). Hand-made ranges make every amax exact. The last tests check, on every sample model, that
:func:`apply_placement` builds exactly what the placement says, and nothing else.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import helper

from conftest import SAMPLE_NAMES, SAMPLES
from precision_lab.errors import InputError
from precision_lab.model import list_candidates, prepare_model
from precision_lab.op_rules import (
    DEFAULT_RULE,
    EXTENDED_OPS,
    MODELOPT_OPS,
    OP_RULES,
    RECIPE_RULES,
    RECIPES,
    WEIGHTED_OPS,
    OpRule,
    rules_for,
)
from precision_lab.placement import (
    ActivationQdq as A,
    OutputQdq as O,
    Placement,
    WeightDq as W,
    place,
    tensors_to_calibrate,
)
from precision_lab.qdq import QdqBuilder, count_qdq
from test_qdq import (
    _add_constant_model,
    _attrs,
    _concat_constant_model,
    _concat_model,
    _f32,
    _fanout_model,
    _hand_ranges,
    _init,
    _inits,
    _maxpool_model,
    _mixed_model,
    _model,
    _prepare,
    _producers,
    _residual_model,
    _rng,
    _scale,
    _single_conv,
    _two_activation_matmul_model,
    _two_conv_add_model,
    _vi,
)


def _placement(prepared, plan=(), *, recipe: str = "trt", ops=None, exclude=(), **amax: float) -> Placement:
    candidates = list_candidates(prepared, op_types=ops or RECIPES[recipe], exclude=exclude)
    return place(prepared, candidates, _hand_ranges(**amax), plan, recipe=recipe)


# ---------------------------------------------------------------------------------------------------------
# The rule table
# ---------------------------------------------------------------------------------------------------------


def test_every_recipe_op_has_a_rule_and_the_recipes_keep_their_order():
    assert RECIPES == {"trt": WEIGHTED_OPS, "extended": WEIGHTED_OPS + EXTENDED_OPS, "modelopt": MODELOPT_OPS}
    assert RECIPES["trt"] == ("Conv", "ConvTranspose", "Gemm", "MatMul")
    for recipe, ops in RECIPES.items():
        assert set(ops) <= set(RECIPE_RULES[recipe]), recipe
    assert {op for op, rule in OP_RULES.items() if rule.weight_input is not None} == set(WEIGHTED_OPS)
    assert {op for op, rule in OP_RULES.items() if not rule.quantize_output} == set(WEIGHTED_OPS)
    assert {op for op, rule in OP_RULES.items() if rule.shared_scale} == {"Concat", "MaxPool", "Resize"}
    assert {op for op, rule in OP_RULES.items() if rule.residual_of} == {"Add"}


@pytest.mark.parametrize(
    "op, attrs, rank, axis",
    [
        ("Conv", {}, 4, 0),
        ("ConvTranspose", {}, 4, 1),
        ("ConvTranspose", {}, 1, 0),
        ("Gemm", {}, 2, 1),
        ("Gemm", {"transB": 1}, 2, 0),
        ("MatMul", {}, 2, 1),
        ("MatMul", {}, 3, 2),
        ("Conv", {}, 0, None),  # a scalar weight is per tensor
    ],
)
def test_weight_axis_rules(op, attrs, rank, axis):
    assert OP_RULES[op].axis_of(1, attrs, rank) == axis
    assert OP_RULES[op].axis_of(0, attrs, rank) is None, "only the weight input is per channel"


def test_quantized_inputs_and_the_default_rule():
    assert OP_RULES["Concat"].quantized_inputs(3) == [0, 1, 2]
    assert OP_RULES["Conv"].quantized_inputs(3) == [0, 1], "the bias stays FP32"
    assert OP_RULES["Resize"].quantized_inputs(4) == [0]
    assert DEFAULT_RULE == OpRule(inputs=(0,), quantize_output=True, shared_scale=False)
    assert rules_for("trt") is OP_RULES and rules_for("extended") is OP_RULES
    with pytest.raises(InputError, match="recipe"):
        rules_for("tensorrt")


def test_inconsistent_rules_are_refused():
    with pytest.raises(ValueError, match="shared scale"):
        OpRule(shared_scale=True)
    with pytest.raises(ValueError, match="together"):
        OpRule(weight_input=1)
    assert replace(OP_RULES["MatMul"], weight_axis=lambda attrs, rank: 1).axis_of(1, {}, 3) == 1


# ---------------------------------------------------------------------------------------------------------
# Recipe trt
# ---------------------------------------------------------------------------------------------------------


def test_single_conv(tmp_path):
    """``x [1,3,6,6] --Conv "conv" (W, B)--> y``: activation x, weight W on axis 0, bias and output none."""
    prepared, _, _ = _single_conv(tmp_path, _rng(1))
    assert _placement(prepared, x=2.0, y=5.0) == Placement(
        activations=(A("conv", 0, "x", 2.0),), weights=(W("conv", 1, "W", 0),)
    )
    assert _placement(prepared, ["conv"], x=2.0, y=5.0) == Placement()
    assert not _placement(prepared, ["conv"], x=2.0, y=5.0)


def test_tensor_feeding_two_convs_gets_one_entry_per_consumer(tmp_path):
    """::

        x --Relu "relu"--> r --Conv "conv_a" (WA)--> a
                            `--Conv "conv_b" (WB)--> b
    """
    prepared, _ = _fanout_model(tmp_path, _rng(4))
    full = _placement(prepared, r=2.5, a=9.0, b=9.0)
    assert full == Placement(
        activations=(A("conv_a", 0, "r", 2.5), A("conv_b", 0, "r", 2.5)),
        weights=(W("conv_a", 1, "WA", 0), W("conv_b", 1, "WB", 0)),
    )
    assert _placement(prepared, ["conv_a"], r=2.5, a=9.0, b=9.0) == full.of("conv_b")


RESIDUAL_RANGES = dict(r=2.0, c=8.0, y=9.0)


def test_residual_add_follows_the_conv(tmp_path):
    """::

        x --Relu "relu"--> r --Conv "conv" (W, B)--> c --+
                            `------------------------------Add "add"--> y

    trt: the Add is no candidate; an INT8 conv puts Q/DQ on the Add's other input (the skip ``r``), a pinned
    conv removes it."""
    prepared, _ = _residual_model(tmp_path, _rng(5))
    assert _placement(prepared, **RESIDUAL_RANGES) == Placement(
        activations=(A("add", 1, "r", 2.0), A("conv", 0, "r", 2.0)), weights=(W("conv", 1, "W", 0),)
    )
    assert _placement(prepared, ["conv"], **RESIDUAL_RANGES) == Placement()


def test_residual_rule_is_for_adds_that_are_not_candidates(tmp_path):
    """extended: the Add is a candidate and decides for itself (both inputs, its output); excluded, it follows
    the residual rule again."""
    prepared, _ = _residual_model(tmp_path, _rng(5))
    assert _placement(prepared, recipe="extended", **RESIDUAL_RANGES) == Placement(
        activations=(A("add", 0, "c", 8.0), A("add", 1, "r", 2.0), A("conv", 0, "r", 2.0)),
        weights=(W("conv", 1, "W", 0),),
        outputs=(O("add", 0, "y", 9.0),),
    )
    assert _placement(prepared, ["add"], recipe="extended", **RESIDUAL_RANGES) == Placement(
        activations=(A("conv", 0, "r", 2.0),), weights=(W("conv", 1, "W", 0),)
    )
    excluded = _placement(prepared, recipe="extended", exclude=["add"], **RESIDUAL_RANGES)
    assert excluded == _placement(prepared, **RESIDUAL_RANGES)


def test_add_of_two_convs(tmp_path):
    """::

        x --Conv "conv1" (W1)--> a --+
          `--Conv "conv2" (W2)--> b --Add "add"--> y

    Each INT8 conv quantizes the Add's other input; pinning conv1 removes the Q/DQ on ``b`` only.
    """
    prepared, _ = _two_conv_add_model(tmp_path, _rng(6))
    ranges = dict(x=3.0, a=1.5, b=2.5, y=4.0)
    assert _placement(prepared, **ranges).of("add") == Placement(
        activations=(A("add", 0, "a", 1.5), A("add", 1, "b", 2.5))
    )
    assert _placement(prepared, ["conv1"], **ranges) == Placement(
        activations=(A("add", 0, "a", 1.5), A("conv2", 0, "x", 3.0)), weights=(W("conv2", 1, "W2", 0),)
    )


def test_add_with_a_constant_input_gets_nothing_in_trt(tmp_path):
    """``x --Conv "conv" (W)--> a --Add "add"(a, K)--> y``: the residual rule skips a constant other input."""
    prepared, _ = _add_constant_model(tmp_path, _rng(7))
    assert _placement(prepared, x=2.0, a=3.0).of("add") == Placement()


@pytest.mark.parametrize(
    "op, weight_shape, attrs, axis",
    [
        ("Gemm", (6, 5), {}, 1),
        ("Gemm", (5, 6), {"transB": 1}, 0),
        ("MatMul", (6, 5), {}, 1),
        ("MatMul", (2, 6, 5), {}, 2),
        ("ConvTranspose", (6, 5, 1, 1), {}, 1),
    ],
)
def test_weight_axis_in_the_placement(tmp_path, op, weight_shape, attrs, axis):
    """``x --<op> "layer" (B weight_shape)--> y``; the weight's axis is its output channel."""
    x_shape = {"Gemm": [2, 6], "MatMul": [2, 3, 6], "ConvTranspose": [1, 6, 2, 2]}[op]
    y_shape = {"Gemm": [2, 5], "MatMul": [2, 3, 5], "ConvTranspose": [1, 5, 2, 2]}[op]
    model = _model(
        [helper.make_node(op, ["x", "B"], ["y"], name="layer", **attrs)],
        [_vi("x", x_shape)],
        [_vi("y", y_shape)],
        [_init(_f32(_rng(8), *weight_shape), "B")],
    )
    prepared = _prepare(model, tmp_path / "weighted.onnx")
    assert _placement(prepared, x=1.75) == Placement(
        activations=(A("layer", 0, "x", 1.75),), weights=(W("layer", 1, "B", axis),)
    )


def test_matmul_of_two_activations(tmp_path):
    """``a, b --MatMul "mm"--> y``: two activation entries, no weight."""
    prepared = _two_activation_matmul_model(tmp_path)
    assert _placement(prepared, a=1.5, b=2.5, y=9.0) == Placement(
        activations=(A("mm", 0, "a", 1.5), A("mm", 1, "b", 2.5))
    )


def test_op_types_outside_the_table_follow_the_default_rule(tmp_path):
    """``x --Relu "relu"--> r --Conv "conv" (W)--> y`` with ``--ops Relu,Conv``: the Relu quantizes input 0 and its
    output edge to an INT8 conv, not to a pinned one."""
    model = _model(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Conv", ["r", "W"], ["y"], name="conv")],
        [_vi("x", [1, 2, 3, 3])],
        [_vi("y", [1, 3, 3, 3])],
        [_init(_f32(_rng(9), 3, 2, 1, 1), "W")],
    )
    prepared = _prepare(model, tmp_path / "relu.onnx")
    ranges = dict(x=2.0, r=1.5, y=4.0)
    assert _placement(prepared, ops=["Relu", "Conv"], **ranges) == Placement(
        activations=(A("conv", 0, "r", 1.5), A("relu", 0, "x", 2.0)), weights=(W("conv", 1, "W", 0),)
    )
    assert _placement(prepared, ["conv"], ops=["Relu", "Conv"], **ranges) == Placement(
        activations=(A("relu", 0, "x", 2.0),)
    )


# ---------------------------------------------------------------------------------------------------------
# Recipe extended
# ---------------------------------------------------------------------------------------------------------

CONCAT = dict(x=2.0, a=1.0, b=4.0, c=3.0, y=9.0, r=3.0)


def test_extended_concat_shares_one_scale_and_quantizes_its_output(tmp_path):
    """The Concat model of test_qdq.py::

        x --Conv "conv1" (W1)--> a --+
          `--Conv "conv2" (W2)--> b --Concat "cat"--> c (graph output) --Conv "conv3" (W3)--> y
                                                     c --Relu "relu"--> r

    INT8 cat: its inputs, its graph output and its output edges (to conv3 and the non-candidate relu) use
    max(1, 4, 3) = 4.
    """
    prepared, _ = _concat_model(tmp_path, _rng(50))
    full = _placement(prepared, recipe="extended", **CONCAT)
    assert full == Placement(
        activations=(
            A("cat", 0, "a", 4.0),
            A("cat", 1, "b", 4.0),
            A("conv1", 0, "x", 2.0),
            A("conv2", 0, "x", 2.0),
            A("conv3", 0, "c", 4.0),
            A("relu", 0, "c", 4.0),
        ),
        weights=(W("conv1", 1, "W1", 0), W("conv2", 1, "W2", 0), W("conv3", 1, "W3", 0)),
        outputs=(O("cat", 0, "c", 4.0),),
    )
    pinned_conv3 = _placement(prepared, ["conv3"], recipe="extended", **CONCAT)
    assert pinned_conv3 == replace(
        full,
        activations=tuple(a for a in full.activations if a.consumer != "conv3"),
        weights=full.weights[:2],
    )
    pinned_cat = _placement(prepared, ["cat"], recipe="extended", **CONCAT)
    assert pinned_cat.of("conv3").activations == (A("conv3", 0, "c", 3.0),), "c's own amax without the group"
    assert not pinned_cat.of("cat") and not pinned_cat.of("relu") and not pinned_cat.outputs


def test_extended_concat_constant_input_takes_the_shared_scale(tmp_path):
    """::

        x --Relu "relu"--> a --+
        K [1,1,3,3] (max |K| 1) -Concat "cat"--> c --Conv "conv" (W)--> y

    The constant gets a run-time Q/DQ in the group, whose amax max(0.5, 1, 0.75) is the constant's.
    """
    prepared = _concat_constant_model(tmp_path, _rng(52))
    assert _placement(prepared, recipe="extended", a=0.5, c=0.75, y=9.0) == Placement(
        activations=(A("cat", 0, "a", 1.0), A("cat", 1, "K", 1.0), A("conv", 0, "c", 1.0)),
        weights=(W("conv", 1, "W", 0),),
    )


def test_extended_add_with_a_constant_input(tmp_path):
    """``x --Conv "conv" (W)--> a --Add "add" (a, K)--> y (graph output)``: K is a per-tensor int8 weight, the
    output y gets a Q/DQ with amax(y); pinned, the Add has none."""
    prepared, _ = _add_constant_model(tmp_path, _rng(53))
    ranges = dict(x=2.0, a=2.5, y=3.5)
    conv = Placement(activations=(A("conv", 0, "x", 2.0),), weights=(W("conv", 1, "W", 0),))
    assert _placement(prepared, recipe="extended", **ranges) == Placement(
        activations=(A("add", 0, "a", 2.5), *conv.activations),
        weights=(*conv.weights, W("add", 1, "K", None)),
        outputs=(O("add", 0, "y", 3.5),),
    )
    assert _placement(prepared, ["add"], recipe="extended", **ranges) == conv


@pytest.mark.parametrize("amax_x, amax_p", [(2.0, 3.0), (4.0, 3.0)])
def test_extended_maxpool_shares_its_scale_and_skips_the_indices(tmp_path, amax_x, amax_p):
    """::

        x --MaxPool "pool" (2x2)--> p --Conv "conv" (W)--> y
                                `--> idx (int64 graph output)
    """
    prepared, _ = _maxpool_model(tmp_path, _rng(55), indices=True)
    shared = max(amax_x, amax_p)
    assert _placement(prepared, recipe="extended", x=amax_x, p=amax_p, y=9.0) == Placement(
        activations=(A("conv", 0, "p", shared), A("pool", 0, "x", shared)), weights=(W("conv", 1, "W", 0),)
    )


# ---------------------------------------------------------------------------------------------------------
# Plans as mappings layer -> precision
# ---------------------------------------------------------------------------------------------------------


def test_a_mapping_plan_pins_every_layer_that_is_not_int8(tmp_path):
    """On the mixed model of test_qdq.py: ``{c2: fp16, mm: fp32, gemm: int8}`` places and builds exactly like
    the FP32 list ``[c2, mm]``; unnamed layers are INT8."""
    prepared, _ = _mixed_model(tmp_path, _rng(60))
    candidates = list_candidates(prepared, op_types=RECIPES["extended"])
    tensors = tensors_to_calibrate(prepared, candidates, "extended")
    ranges = _hand_ranges(**{t: 1.0 + i for i, t in enumerate(tensors)})
    builder = QdqBuilder(prepared, candidates, ranges, recipe="extended")
    mapping = {"c2": "fp16", "mm": "fp32", "gemm": "int8"}
    assert builder.placement(mapping) == builder.placement(["mm", "c2"])
    assert builder.build(mapping).SerializeToString() == builder.build(["c2", "mm"]).SerializeToString()
    assert builder.placement({}) == builder.placement([])
    assert builder.placement({name: "fp32" for name in builder.candidates}) == Placement()
    with pytest.raises(InputError, match="bf16"):
        builder.placement({"c2": "bf16"})
    with pytest.raises(InputError, match="relu"):
        builder.placement({"relu": "fp32"})


# ---------------------------------------------------------------------------------------------------------
# Sample models: the built graph is exactly the placement
# ---------------------------------------------------------------------------------------------------------


def _amax(name: str) -> float:
    """A fixed amax per tensor, from its name."""
    return 0.25 + int(hashlib.sha256(name.encode()).hexdigest()[:6], 16) % 1000 / 97.0


def _dq_fed_inputs(model: onnx.ModelProto, names: set[str]) -> dict[tuple[str, int], onnx.NodeProto]:
    producers = _producers(model)
    fed = {}
    for node in model.graph.node:
        if node.name in names:
            for index, tensor in enumerate(node.input):
                producer = producers.get(tensor)
                if producer is not None and producer.op_type == "DequantizeLinear":
                    fed[(node.name, index)] = producer
    return fed


def _assert_built_as_placed(model: onnx.ModelProto, placement: Placement, original: onnx.ModelProto) -> None:
    """Every entry of ``placement`` is in ``model`` as described, and ``model`` has no other Q/DQ."""
    producers, inits = _producers(model), _inits(model)
    fed = _dq_fed_inputs(model, {node.name for node in original.graph.node})
    assert set(fed) == {(a.consumer, a.input_index) for a in placement.activations} | {
        (w.consumer, w.input_index) for w in placement.weights
    }, "node inputs fed by DequantizeLinear"
    renamed = {o.tensor for o in placement.outputs}
    for a in placement.activations:
        dq = fed[(a.consumer, a.input_index)]
        q = producers[dq.input[0]]
        source = f"{a.tensor}/before_qdq" if a.tensor in renamed else a.tensor
        assert q.op_type == "QuantizeLinear" and q.input[0] == source, a
        assert inits[q.input[1]] == _scale(a.amax) and inits[dq.input[1]] == _scale(a.amax), a
    weights = {init.name: init for init in original.graph.initializer}
    for w in placement.weights:
        dq = fed[(w.consumer, w.input_index)]
        values = inits[dq.input[0]]
        assert values.dtype == np.int8 and values.shape == tuple(weights[w.tensor].dims), w
        assert _attrs(dq).get("axis") == w.axis, w
    for o in placement.outputs:
        dq = producers[o.tensor]
        q = producers[dq.input[0]]
        assert dq.op_type == "DequantizeLinear" and q.input[0] == f"{o.tensor}/before_qdq", o
        assert producers[q.input[0]].name == o.producer and inits[q.input[1]] == _scale(o.amax), o
    pairs = len(placement.activations) + len(placement.outputs)
    assert count_qdq(model) == {"QuantizeLinear": pairs, "DequantizeLinear": pairs + len(placement.weights)}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_models_are_built_exactly_as_placed(name, recipe):
    """For the empty plan, every single-layer plan, a mixed one and the all-FP32 plan: the built Q/DQ model is the
    placement, pinned layers have no entry, INT8 layers with a constant weight have its DQ, and a mapping plan with
    FP16 layers builds the same bytes as the list of those layers."""
    prepared = prepare_model(SAMPLES / f"{name}.onnx")
    candidates = list_candidates(prepared, op_types=RECIPES[recipe])
    tensors = tensors_to_calibrate(prepared, candidates, recipe)
    builder = QdqBuilder(prepared, candidates, _hand_ranges(**{t: _amax(t) for t in tensors}), recipe=recipe)
    names = [c.name for c in candidates]
    initializers = {init.name for init in prepared.model.graph.initializer}
    weighted = {n.name for n in prepared.model.graph.node if n.op_type in WEIGHTED_OPS and n.input[1] in initializers}
    mixed = names[::2]
    for plan in [[], *([n] for n in names), mixed, names]:
        placement = builder.placement(plan)
        _assert_built_as_placed(builder.build(plan), placement, prepared.model)
        for layer in plan:
            assert not placement.of(layer), f"pinned {layer} has Q/DQ"
        for layer in (weighted & set(names)) - set(plan):
            assert [w.input_index for w in placement.of(layer).weights] == [1], f"INT8 {layer} weight"
    as_mapping = {layer: "fp16" for layer in mixed}
    assert builder.build(as_mapping).SerializeToString() == builder.build(mixed).SerializeToString()
