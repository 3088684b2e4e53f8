"""Every quirk fixture is proven by failing without its handling.

Each case builds a fixture model of the quirk tests, switches the handling off (monkeypatching the one function
that does it), and shows that preparing or sweeping the fixture then goes wrong in the way the handling exists
to prevent. The quirk tests themselves show that, with the handling on, it goes right.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import test_control_flow as cf
import test_input_kinds as kinds
import test_model_quirks as quirks
from precision_lab.errors import PrecisionLabError
from precision_lab.model import list_candidates, prepare_model

TRT = ["Conv", "ConvTranspose", "Gemm", "MatMul"]


def _no_folds(model, constants):
    return {}


def test_if_fixed_by_the_input_shape_needs_the_fold(tmp_path, monkeypatch):
    path = cf._save(cf._shape_if_model(), tmp_path / "shape_if.onnx")
    monkeypatch.setattr("precision_lab.model.fixed_conditions", _no_folds)
    prepared = prepare_model(path, input_shapes={"x": (1, 3, 8, 8)})
    assert prepared.folded_ifs == {}
    # the taken branch's Conv is inside the If: not a candidate, so it can never run INT8
    assert [c.name for c in list_candidates(prepared, op_types=TRT)] == ["conv_in"]


def test_if_fixed_by_a_constant_input_needs_the_constant_values(tmp_path, monkeypatch):
    path = cf._save(cf._sample_rate_if_model(), tmp_path / "sr_if.onnx")
    feeds = cf._feeds(8, sr=np.array(16000, np.int64), state=np.zeros((1, 4, 8, 8), np.float32))
    monkeypatch.setattr("precision_lab.session.constant_inputs", lambda feeds: {})
    data = cf._write_feeds(tmp_path / "data", feeds)
    result = cf._sweep(path, data, tmp_path / "out")
    assert result.model["folded_ifs"] == {}
    assert list(result.layers["name"]) == ["conv_in"]  # conv_a stayed inside the If: it can never run INT8


def test_integer_and_boolean_tensors_need_the_float_only_rule(tmp_path, monkeypatch):
    path = tmp_path / "classifier.onnx"
    onnx.save(kinds._byte_classifier(), str(path))
    data = cf._write_feeds(tmp_path / "data", kinds._feeds(8))
    monkeypatch.setattr("precision_lab.placement._is_float", lambda tensor: True)
    monkeypatch.setattr("precision_lab.model._has_float_activation", lambda node, types, inits: True)
    with pytest.raises(PrecisionLabError):
        cf._sweep(path, data, tmp_path / "out", recipe="extended")


def test_shape_gaps_need_symbolic_inference_or_the_probe(tmp_path, monkeypatch):
    path = tmp_path / "shuffle.onnx"
    onnx.save(quirks._shuffle_model(), str(path))
    monkeypatch.setattr("precision_lab.model._symbolic_shapes", lambda model, gaps: {})
    monkeypatch.setattr("precision_lab.model._run_shapes", lambda model, gaps: {})
    prepared = prepare_model(path, input_shapes={"x": (2, 8, 4, 4)})
    with pytest.raises(AssertionError):
        quirks._check_shuffle(prepared, path)


def test_old_exports_need_the_opset_upgrade(tmp_path, monkeypatch):
    path = tmp_path / "opset7.onnx"
    onnx.save(quirks._opset7_model(), str(path))
    monkeypatch.setattr("onnx.version_converter.convert_version", lambda model, version: model)
    result = quirks._small_sweep(path, tmp_path / "out")
    # Q/DQ do not exist in opset 7: no plan with an INT8 layer can be built, so every layer ends up FP32
    assert np.isnan(result.baselines["all_int8"])
    assert result.plan.int8_layers == ()


def _no_fp16_emulation(model, fp32_nodes, floats):
    return model


@pytest.mark.parametrize("name", ["fp16_overflow_cnn", "layernorm_overflow_block"])
def test_fp16_sample_models_need_the_fp16_emulation(tmp_path, monkeypatch, name):
    """Without the emulation, FP16 overflow is never seen: all-FP16 passes and no node is kept FP32."""
    from conftest import SAMPLES, write_random_feeds
    from precision_lab import sweep

    model = SAMPLES / f"{name}.onnx"
    data = write_random_feeds(model, tmp_path / "data")
    monkeypatch.setattr("precision_lab.fp16.emulate_fp16", _no_fp16_emulation)
    result = sweep(model, data=data, out_dir=tmp_path / "out", precisions=("int8", "fp16", "fp32"), progress=False)
    assert result.baselines["all_fp16"] < 0.05
    assert not result.plan.plan.fp32_layers


def test_fp16_island_with_two_readers_needs_the_cast_pair_repair(monkeypatch):
    import onnxruntime as ort

    import test_three_level as three

    monkeypatch.setattr("precision_lab.fp16._remove_rounding_pairs", lambda model: None)
    from precision_lab.fp16 import fp16_plan_model

    plan = fp16_plan_model(three._islands_model(), {"up", "down1", "down2"})
    session = ort.InferenceSession(plan.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.array([100.0, 200.0, -300.0, 1.0], np.float32)})
    assert not np.isfinite(y).all()  # the island's tensor went through FP16 and overflowed


def test_fp16_shared_initializer_needs_the_copy(monkeypatch):
    import test_three_level as three

    monkeypatch.setattr("precision_lab.fp16._split_shared_initializers", lambda model, fp32_nodes: None)
    from precision_lab.fp16 import fp16_plan_model

    with pytest.raises(Exception, match="inconsistent type"):
        fp16_plan_model(three._islands_model(), {"up", "down1", "down2"})


@pytest.mark.parametrize(
    "handling, message",
    [
        ("_clear_negative_dims", "differ in dimension"),
        ("_fix_cast_targets", "Inferred elem type differs"),
        ("_fix_output_readers", "inconsistent type"),
    ],
)
def test_fp16_plan_of_exporter_quirks_needs_its_repairs(monkeypatch, handling, message):
    import test_three_level as three

    monkeypatch.setattr(f"precision_lab.fp16.{handling}", lambda model, *rest: None)
    from precision_lab.fp16 import fp16_plan_model

    with pytest.raises(Exception, match=message):
        fp16_plan_model(three._quirks_model(), set())
