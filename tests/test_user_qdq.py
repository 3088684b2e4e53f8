"""``--qdq-model`` (issue 14): sweeping the user's own Q/DQ model with its own scales.

Three user models of ``residual_branches.onnx``: the committed ModelOpt 0.47 output, an ONNX Runtime
``quantize_static`` model (per-channel weights, int8 activations, ``ActivationSymmetric=True``) made here, and a
QAT-style export whose weights flow FP32 initializer -> Q -> DQ. For each: (a) the all-INT8 baseline equals the
user's model run in plain ONNX Runtime against the FP32 model; (b) ``plan.onnx`` differs from the user's model only
at the pinned nodes, node by node. Then the bad inputs: one line, exit code 2.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from user_qdq_models import (
    FP32,
    MODELOPT,
    node_differences,
    ort_quantize_static,
    qat_style,
    rel_l2,
    run_plain_ort,
    write_feeds,
)

from precision_lab.cli import main
from precision_lab.user_qdq import UserQdqBuilder, load_user_qdq

SMALL = ("--calib-samples", "4", "--eval-samples", "12", "--verify-samples", "8", "--criterion", "aggregate")


@pytest.fixture(autouse=True)
def _reset_logger():
    yield
    logging.getLogger("precision_lab").handlers.clear()


@pytest.fixture(scope="module")
def user_models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("user_qdq")
    return {
        "modelopt": MODELOPT,
        "ort": ort_quantize_static(folder / "residual_branches.ort.onnx"),
        "qat": qat_style(folder / "residual_branches.qat.onnx"),
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_feeds(tmp_path_factory.mktemp("feeds"))


def _sweep(model: Path, data: Path, out: Path, *extra: str) -> dict:
    code = main(["sweep", str(FP32), "--qdq-model", str(model), "--data", str(data), "--out", str(out), "--quiet", *SMALL, *extra])
    assert code == 0
    return json.loads((out / "plan.json").read_text())


@pytest.mark.parametrize("kind", ["modelopt", "ort", "qat"])
def test_all_int8_reproduces_the_user_model_and_plan_differs_only_at_pinned_nodes(kind, user_models, data, tmp_path):
    user_path = user_models[kind]
    plan = _sweep(user_path, data, tmp_path / "out")
    eval_feeds = [dict(np.load(data / name)) for name in plan["data"]["eval_feeds"]]
    assert len(eval_feeds) == 12
    expected = rel_l2(run_plain_ort(user_path, eval_feeds), run_plain_ort(FP32, eval_feeds))
    assert plan["baselines"]["all_int8"] == pytest.approx(expected, rel=1e-5)

    user = onnx.load(str(user_path))
    plan_onnx = onnx.load(str(tmp_path / "out" / "plan.onnx"))
    pinned = set(plan["fp32_layers"])
    assert "conv_a2" in pinned or kind == "ort"  # the planted layer; ORT also quantizes its output
    assert node_differences(user, plan_onnx, pinned) == []
    expected_plan = rel_l2(run_plain_ort(plan_onnx, eval_feeds), run_plain_ort(FP32, eval_feeds))
    assert plan["achieved"]["value"] == pytest.approx(expected_plan, rel=1e-5)
    assert plan["quantization"]["qdq_model_sha256"]


def test_empty_plan_is_the_user_model_byte_for_byte(user_models):
    for path in user_models.values():
        builder = UserQdqBuilder(load_user_qdq(path, FP32))
        assert builder.build(()).SerializeToString() == onnx.load(str(path)).SerializeToString()


def test_pinning_splits_a_shared_dq_per_consumer():
    """ModelOpt's one DQ of ``relu1`` feeds conv_a1, conv_b1, add_b and add_merge: pinning conv_a1 keeps it for
    the other three."""
    builder = UserQdqBuilder(load_user_qdq(MODELOPT, FP32))
    model = builder.build(["conv_a1"])
    readers = {n.name for n in model.graph.node if "relu1_DequantizeLinear_Output" in n.input}
    assert readers == {"conv_b1", "add_b", "add_merge"}
    conv_a1 = next(n for n in model.graph.node if n.name == "conv_a1")
    assert conv_a1.input[0] == "relu1" and conv_a1.input[1] == "conv_a1.weight"
    assert not any(n.name == "conv_a1.weight_QuantizeLinear" for n in model.graph.node)
    assert node_differences(onnx.load(str(MODELOPT)), model, {"conv_a1"}) == []


def test_int8_only_weights_are_restored_from_the_fp32_model(user_models):
    """quantize_static stores weights as int8 initializers and biases as int32 whose DQ output takes the bias's
    name: pinning restores both from the FP32 model under fresh names."""
    builder = UserQdqBuilder(load_user_qdq(user_models["ort"], FP32))
    model = builder.build(["conv1"])
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(FP32)).graph.initializer}
    conv1 = next(n for n in model.graph.node if n.name == "conv1")
    assert conv1.input[0] == "input"
    assert np.array_equal(inits[conv1.input[1]], fp32["conv1.weight"])
    assert np.array_equal(inits[conv1.input[2]], fp32["conv1.bias"])
    assert conv1.input[2] != "conv1.bias"  # that name is the int32 bias DQ output, kept for nobody and dropped
    onnx.checker.check_model(model)


def test_layers_lists_the_user_models_quantized_nodes(capsys):
    assert main(["layers", str(FP32), "--qdq-model", str(MODELOPT)]) == 0
    out = capsys.readouterr().out
    assert "13 candidate layers" in out and "add_b" in out and "gap" in out and " fc " not in out


def test_apply_rebuilds_plan_onnx(user_models, data, tmp_path, capsys):
    _sweep(MODELOPT, data, tmp_path / "out")
    target = tmp_path / "applied.onnx"
    plan = str(tmp_path / "out" / "plan.json")
    assert main(["apply", str(FP32), plan, "-o", str(target), "--qdq-model", str(MODELOPT)]) == 0
    assert onnx.load(str(target)).SerializeToString() == onnx.load(str(tmp_path / "out" / "plan.onnx")).SerializeToString()
    capsys.readouterr()
    assert main(["apply", str(FP32), plan, "-o", str(target)]) == 2  # the plan needs its Q/DQ model
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pass that model as --qdq-model" in err


def test_recipe_options_do_not_mix_with_qdq_model(tmp_path, capsys):
    code = main(["sweep", str(FP32), "--qdq-model", str(MODELOPT), "--exclude", "conv1", "--out", str(tmp_path / "o"), "--quiet", *SMALL])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "drop --recipe, --ops and --exclude" in err


# ---------------------------------------------------------------------------------------------------------
# Bad inputs: one line, exit code 2
# ---------------------------------------------------------------------------------------------------------


def _modelopt_with(change) -> onnx.ModelProto:
    model = onnx.load(str(MODELOPT))
    change(model)
    return model


def _init(model, name):
    return next(i for i in model.graph.initializer if i.name == name)


def _set_zero_point(model, value: np.ndarray):
    init = _init(model, "relu1_zero_point")
    init.CopyFrom(numpy_helper.from_array(value, "relu1_zero_point"))


def _fp32_weight_as_input(tmp_path: Path) -> Path:
    """The FP32 model with conv1's weight computed (Identity of a graph input): no FP32 constant to restore."""
    model = onnx.load(str(FP32))
    weight = _init(model, "conv1.weight")
    model.graph.input.append(helper.make_tensor_value_info("w_in", TensorProto.FLOAT, list(weight.dims)))
    next(n for n in model.graph.node if n.name == "conv1").input[1] = "w_in"
    path = tmp_path / "fp32_weight_input.onnx"
    onnx.save(model, str(path))
    return path


def _case_model(case: str, tmp_path: Path) -> tuple[Path, Path]:
    fp32 = FP32
    if case == "beyond_qdq":
        model = _modelopt_with(lambda m: next(n for n in m.graph.node if n.name == "relu5").__setattr__("op_type", "Sigmoid"))
    elif case == "attribute":
        def change(m):
            conv = next(n for n in m.graph.node if n.name == "conv4")
            next(a for a in conv.attribute if a.name == "pads").ints[:] = [0, 0, 0, 0]
        model = _modelopt_with(change)
    elif case == "weight_values":
        model = _modelopt_with(lambda m: _init(m, "conv4.weight").CopyFrom(
            numpy_helper.from_array(numpy_helper.to_array(_init(m, "conv4.weight")) * 2, "conv4.weight")))
    elif case == "nonzero_zero_point":
        model = _modelopt_with(lambda m: _set_zero_point(m, np.array(3, np.int8)))
    elif case == "uint8":
        model = _modelopt_with(lambda m: _set_zero_point(m, np.array(0, np.uint8)))
    elif case in ("fp8", "int4"):
        dtype = TensorProto.FLOAT8E4M3FN if case == "fp8" else TensorProto.INT4
        model = _modelopt_with(lambda m: _init(m, "relu1_zero_point").CopyFrom(helper.make_tensor("relu1_zero_point", dtype, [], [0])))
    elif case == "block":
        model = _modelopt_with(lambda m: next(n for n in m.graph.node if n.name == "conv4.weight_DequantizeLinear").attribute.append(
            helper.make_attribute("block_size", 4)))
    elif case == "no_fp32_weight":
        model = onnx.load(str(ort_quantize_static(tmp_path / "ort.onnx")))
        fp32 = _fp32_weight_as_input(tmp_path)
    else:
        raise AssertionError(case)
    path = tmp_path / f"{case}.onnx"
    onnx.save(model, str(path))
    return path, fp32


@pytest.mark.parametrize(
    "case, message",
    [
        ("beyond_qdq", "differ beyond Q/DQ"),
        ("attribute", "attribute pads differs"),
        ("weight_values", "differs from the FP32 model's 'conv4.weight'"),
        ("nonzero_zero_point", "nonzero zero point"),
        ("uint8", "quantizes to UINT8; only symmetric int8"),
        ("fp8", "uses FP8 (FLOAT8E4M3FN)"),
        ("int4", "is 4-bit (INT4)"),
        ("block", "block-quantized"),
        ("no_fp32_weight", "stored only as INT8"),
    ],
)
def test_bad_user_models_give_one_line_and_exit_2(case, message, tmp_path, capsys):
    path, fp32 = _case_model(case, tmp_path)
    code = main(["sweep", str(fp32), "--qdq-model", str(path), "--out", str(tmp_path / "out"), "--quiet", *SMALL])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert message in err and "--qdq-model" in err


def test_asymmetric_quantize_static_model_is_refused(tmp_path, capsys):
    """quantize_static's defaults (uint8 activations, asymmetric): refused with what is supported."""
    path = ort_quantize_static(tmp_path / "asym.onnx", activation_symmetric=False, activation_type="QUInt8")
    code = main(["layers", str(FP32), "--qdq-model", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "only symmetric int8" in err


def test_unnamed_nodes_are_matched_through_their_inputs(tmp_path):
    """An FP32 model without node names, quantized by quantize_static (which leaves them unnamed and renames the
    graph output's producer output): nodes are paired by op type and inputs, and candidates take the names
    precision-lab gives the FP32 model (``<OpType>_<position>``), so plan.json, the ModelOpt command and the fast
    search's signals all name the same nodes."""
    model = onnx.load(str(FP32))
    positions = {n.name: i for i, n in enumerate(model.graph.node)}
    for node in model.graph.node:
        node.name = ""
    fp32 = tmp_path / "unnamed.onnx"
    onnx.save(model, str(fp32))
    user_path = ort_quantize_static(tmp_path / "unnamed.ort.onnx", source=fp32)
    user = load_user_qdq(user_path, fp32)
    assert f"Gemm_{positions['fc']}" in user.node_names and f"Conv_{positions['conv_a2']}" in user.node_names
    builder = UserQdqBuilder(user)
    assert builder.build(()).SerializeToString() == onnx.load(str(user_path)).SerializeToString()
    every = builder.build(list(builder.candidates))
    feeds = [{"input": np.random.default_rng(5).random((1, 3, 32, 32), dtype=np.float32)}]
    # only the graph output's own Q/DQ stays (it is nobody's input): within int8 rounding of FP32
    assert rel_l2(run_plain_ort(every, feeds), run_plain_ort(fp32, feeds)) < 0.01
