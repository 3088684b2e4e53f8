"""What plans cost, wired into a sweep (issue 13, items 5 and 6): ``--target-gpu``, every evaluated plan's cost
relative to all-FP16, the ``cost`` section of ``plan.json``, the terminal line, the per-layer precision in
``result.layers`` and ``sensitivity.csv``, the measured latency of a backend that measures one, and a model that
cannot be estimated. The hand-computed layer estimates are in ``test_cost.py``; the report's Pareto chart in a
browser is in ``test_report_cost.py``."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
from types import SimpleNamespace

import pytest
from conftest import SAMPLES, run_in_process, write_random_feeds
from onnx import TensorProto, helper

from precision_lab.assemble import layer_table, plan_costs
from precision_lab.cost import GPUS, PlanCoster, gpu_named, model_cost, relative_cost
from precision_lab.model import list_candidates, prepare_model
from precision_lab.plan import cost_document
from precision_lab.precisions import PrecisionPlan
from precision_lab.report.html import render_report
from precision_lab.report.plots import pareto_front
from precision_lab.results import Evaluation, load
from precision_lab.settings import SweepOptions

MODEL = SAMPLES / "two_planted_cnn.onnx"
PLANTED = ("conv3", "conv6")


@pytest.fixture(scope="module")
def prepared():
    model = prepare_model(MODEL)
    return model, [c.name for c in list_candidates(model, op_types=("Conv", "ConvTranspose", "Gemm", "MatMul"))]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """two_planted_cnn swept on the A100 (named loosely, as a user types it)."""
    root = tmp_path_factory.mktemp("cost_sweep")
    data = write_random_feeds(MODEL, root / "data", count=24)
    out = root / "out"
    proc = run_in_process("sweep", str(MODEL), "--data", str(data), "--out", str(out), "--target-gpu", "a100-sxm-80gb")
    assert proc.returncode == 0, proc.stderr
    return SimpleNamespace(out=out, stdout=proc.stdout, plan=json.loads((out / "plan.json").read_text()), result=load(out))


# ------------------------------------------------------------------------------------------ relative costs


def test_three_level_all_int8_is_cheaper_than_all_fp16_and_all_fp32_dearer(prepared):
    model, names = prepared
    coster = PlanCoster(model, candidates=names, default="fp16", fp32_mode="fp32")
    fp16 = coster.cost(coster.everything("fp16"))
    relative = {
        "all_int8": relative_cost(coster.cost(PrecisionPlan()), fp16),
        "fp16_plan": relative_cost(coster.cost(PrecisionPlan({"conv3": "fp16", "conv6": "fp16"})), fp16),
        "mixed_plan": relative_cost(coster.cost(PrecisionPlan({"conv3": "fp16", "conv6": "fp32"})), fp16),
        "all_fp32": relative_cost(coster.cost(coster.everything("fp32")), fp16),
    }
    assert relative["all_int8"] < relative["fp16_plan"] < 1 < relative["all_fp32"], relative
    assert relative["fp16_plan"] < relative["mixed_plan"] < relative["all_fp32"], relative
    assert relative["all_int8"] == pytest.approx(0.841, abs=0.001)  # README figure
    assert relative["all_fp32"] == pytest.approx(2.312, abs=0.001)


def test_two_level_plans_sit_between_all_int8_and_all_fp32(prepared):
    """With FP32 around the INT8 layers (today's two-level plans), even all-INT8 is dearer than all-FP16: the
    reason three-level plans exist."""
    model, names = prepared
    coster = PlanCoster(model, candidates=names, default="fp32", fp32_mode="fp32")
    fp16 = coster.cost(coster.everything("fp16"))
    int8, plan = coster.cost(PrecisionPlan()), coster.cost(PrecisionPlan.fp32(PLANTED))
    fp32 = coster.cost(coster.everything("fp32"))
    assert int8.seconds < plan.seconds < fp32.seconds
    assert 1 < relative_cost(int8, fp16) < relative_cost(plan, fp16) < relative_cost(fp32, fp16)


def test_the_coster_equals_model_cost_and_computes_each_plan_once(prepared):
    model, names = prepared
    coster = PlanCoster(model, candidates=names, gpu=GPUS["L4"], default="fp16", fp32_mode="fp32")
    plan = PrecisionPlan({"conv3": "fp16"})
    assert coster.cost(plan) is coster.cost(PrecisionPlan({"conv3": "fp16"}))
    direct = model_cost(model, plan, candidates=names, gpu=GPUS["L4"], default="fp16", fp32_mode="fp32")
    assert coster.cost(plan).seconds == pytest.approx(direct.seconds, rel=1e-12)


def test_gpu_names_are_forgiving_and_unknown_ones_list_the_choices():
    assert gpu_named("h100-sxm").name == gpu_named("H100_SXM").name == "H100 SXM"
    assert gpu_named("jetson agx orin").name == "Jetson AGX Orin"
    with pytest.raises(ValueError, match="choose one of: H100 SXM, A100 SXM 80GB"):
        gpu_named("B200")


def test_the_pareto_front_keeps_only_plans_nothing_beats():
    costs, values = [1.0, 1.0, 1.2, 1.5, 2.0, 1.7], [0.9, 0.5, 0.5, 0.1, 0.0, 0.2]
    assert pareto_front(costs, values, higher_is_better=False) == [1, 3, 4]
    assert pareto_front(costs, [1 - v for v in values], higher_is_better=True) == [1, 3, 4]


# ------------------------------------------------------------------------------------------- the CLI, a sweep


def test_an_unknown_target_gpu_is_one_line_and_exit_code_2(tmp_path):
    proc = run_in_process("sweep", str(MODEL), "--out", str(tmp_path / "out"), "--target-gpu", "B200")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--target-gpu" in lines[0] and "'B200'" in lines[0]
    for name in GPUS:
        assert name in lines[0]
    assert not (tmp_path / "out" / "journal.jsonl").exists()  # refused before any work


def test_plan_json_has_the_cost_section(swept):
    cost = swept.plan["cost"]
    assert cost["gpu"] == "A100 SXM 80GB" and cost["fp32_mode"] == "fp32" and cost["default_precision"] == "fp32"
    assert sorted(swept.plan["fp32_layers"]) == sorted(PLANTED)
    baselines = cost["baselines"]
    assert baselines["all_fp16"] == 1.0
    assert baselines["all_int8"] < cost["relative_to_all_fp16"] < baselines["all_fp32"]
    assert cost["relative_to_all_int8"] == pytest.approx(cost["relative_to_all_fp16"] / baselines["all_int8"])
    assert 0 < cost["seconds"] < 1e-5 and "lower bound" in cost["seconds_note"]
    assert "measured" not in cost  # ONNX Runtime measures no latency


def test_every_evaluated_plan_has_an_estimated_cost(swept):
    result = swept.result
    frame = result.evaluations
    assert frame["estimated_cost"].notna().all() and frame["latency_ms"].isna().all()
    by_key = dict(zip(frame["key"], frame["estimated_cost"]))
    assert by_key[result.plan.key] == pytest.approx(swept.plan["cost"]["relative_to_all_fp16"])
    everything = frame[frame["num_fp32"] == len(result.layer_results)]
    assert everything["estimated_cost"].iloc[0] == pytest.approx(swept.plan["cost"]["baselines"]["all_fp32"])
    assert result.cost["roles"]["all_int8"] in by_key and result.cost["roles"]["all_fp16"] is None


def test_the_terminal_prints_one_cost_line(swept):
    lines = [line for line in swept.stdout.splitlines() if "cost on" in line]
    cost = swept.plan["cost"]
    expected = (
        f"  cost on A100 SXM 80GB (roofline estimate): {cost['relative_to_all_fp16']:#.3g}x all-FP16, "
        f"{cost['relative_to_all_int8']:#.3g}x all-INT8 (lower bound {cost['seconds'] * 1e6:.3g} us)"
    )
    assert lines == [expected]


def test_sensitivity_csv_has_the_precision_of_each_layer(swept):
    rows = list(csv.DictReader((swept.out / "sensitivity.csv").open()))
    assert {row["name"]: row["precision"] for row in rows} == {
        name: "fp32" if name in PLANTED else "int8" for name in swept.plan["quantization"]["candidates"]
    }


def test_the_plot_pareto_api_draws_every_plan(swept):
    from matplotlib.figure import Figure

    figure = swept.result.plot_pareto()
    assert isinstance(figure, Figure)
    (ax,) = figure.axes
    drawn = sum(len(c.get_offsets()) for c in ax.collections if c.get_gid() in ("pareto-pass", "pareto-fail"))
    assert drawn == len(swept.result.evaluation_records)
    from matplotlib.figure import Figure as New

    mine = New().add_subplot()
    assert swept.result.plot_pareto(ax=mine) is mine.figure  # or onto the reader's own Axes


# -------------------------------------------------------------------------------------- three-level plans


def _fake_session(names, prepared=None):
    candidates = [SimpleNamespace(name=n, op_type="Conv", index=i) for i, n in enumerate(names)]
    evaluator = SimpleNamespace(metric=SimpleNamespace(higher_is_better=False))
    return SimpleNamespace(names=names, candidates=candidates, prepared=prepared, evaluator=evaluator,
                           dataset=SimpleNamespace(eval_labels=[]))


def test_layers_and_the_report_show_three_level_precisions(swept, prepared):
    """A three-level plan (an FP16 candidate, an FP32 candidate and an FP32 node that is not a candidate): the
    precision column of ``result.layers`` and ``sensitivity.csv``, and the report's plan table."""
    model, names = prepared
    island = next(node.name for node in model.model.graph.node if node.op_type == "Relu")
    plan = PrecisionPlan({"conv3": "fp16", "conv6": "fp32", island: "fp32"})
    found = SimpleNamespace(ranking=names, scores={}, plan=plan)
    layers = layer_table(_fake_session(names, model), found)
    assert {layer.name: layer.precision for layer in layers} == {
        n: {"conv3": "fp16", "conv6": "fp32"}.get(n, "int8") for n in names
    } | {island: "fp32"}  # the FP32 node that is not a candidate is a row too, after the candidates
    assert layers[-1].name == island and layers[-1].op_type == "Relu" and layers[-1].rank == len(names) + 1
    result = swept.result
    three = dataclasses.replace(
        result,
        precision_levels=("int8", "fp16", "fp32"),
        layer_results=layers,
        plan=dataclasses.replace(result.plan, precisions=plan.to_json(), fp32_layers=("conv6", island)),
        cost=result.cost | {"layers": {island: {"op_type": "Relu", "precision": "fp32", "seconds": 1e-9}}},
    )
    assert dict(zip(three.layers["name"], three.layers["precision"]))["conv3"] == "fp16"
    html = render_report(three)
    assert "<p>Run <b>1</b> layer in FP16 and <b>2</b> nodes in FP32" in html
    table = html[html.index("<table id=plan>"):]
    table = table[: table.index("</table>")]
    for name, precision, op in (("conv6", "FP32", "Conv"), (island, "FP32", "Relu"), ("conv3", "FP16", "Conv")):
        assert f"<tr><td><code>{name}</code></td><td><b>{precision}</b></td><td>{op}</td>" in table


# ------------------------------------------------------------------------------ measured and unknown costs


def test_measured_latency_replaces_the_estimate_when_the_backend_measures_it(swept, prepared):
    model, names = prepared
    result = swept.result
    records = tuple(
        dataclasses.replace(r, seconds=r.seconds | {"latency_ms": 1.0 + 0.1 * len(r.fp32_layers)})
        for r in result.evaluation_records
    )
    all_fp16 = dataclasses.replace(records[0], key="fp16", fp32_layers=(), precisions={n: "fp16" for n in names},
                                   seconds={"latency_ms": 2.0})
    records += (all_fp16,)
    by_key = {r.key: r for r in records}
    found = SimpleNamespace(
        plan=result.plan.plan,
        all_int8=SimpleNamespace(key=result.cost["roles"]["all_int8"]),
        all_fp32=SimpleNamespace(key=result.cost["roles"]["all_fp32"]),
        outcome=SimpleNamespace(key=result.plan.key),
    )
    cost = plan_costs(_fake_session(names, model), found, records, SweepOptions())
    measured = cost["measured"]
    assert measured["plan_ms"] == pytest.approx(1.2) and measured["all_int8_ms"] == pytest.approx(1.0)
    assert measured["relative_to_all_int8"] == pytest.approx(1.2)
    assert measured["relative_to_all_fp16"] == pytest.approx(0.6) and cost["roles"]["all_fp16"] == "fp16"
    assert cost_document(cost)["measured"] == measured
    assert cost["gpu"] == "H100 SXM" and cost["evaluations"].keys() == by_key.keys()
    assert cost["evaluations"]["fp16"] > 1  # two levels: the nodes around the FP16 candidates run FP32
    three_level = plan_costs(_fake_session(names, model), found, records, SweepOptions(precisions=("int8", "fp16", "fp32")))
    assert three_level["default"] == "fp16" and three_level["evaluations"]["fp16"] == pytest.approx(1.0)
    three = dataclasses.replace(result, evaluation_records=records, cost=cost)
    assert three.evaluations["latency_ms"].notna().all()
    assert "<b>Measured</b> by the onnxrt backend" in render_report(three)


def test_a_model_without_static_shapes_gets_no_cost_and_one_warning(swept, caplog):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.0] * 16)
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                                                [x], [y], [w]))
    found = SimpleNamespace(plan=PrecisionPlan(), all_int8=SimpleNamespace(key="a"),
                            all_fp32=SimpleNamespace(key="b"), outcome=SimpleNamespace(key="a"))
    logger = logging.getLogger("precision_lab")  # the CLI's logging set-up stops it propagating to caplog
    logger.addHandler(caplog.handler)
    try:
        cost = plan_costs(_fake_session(["mm"], model), found, (), SweepOptions())
    finally:
        logger.removeHandler(caplog.handler)
    assert set(cost) == {"error"} and "static" in cost["error"]
    assert [r.getMessage() for r in caplog.records] == [f"no cost estimate: {cost['error']}"]
    assert cost_document(cost) == {"error": cost["error"]}
    result = dataclasses.replace(swept.result, cost=cost)
    assert result.evaluations["estimated_cost"].isna().all()
    html = render_report(result)
    assert "No cost estimate: " in html and "estimated cost</div>" not in html
    assert result.plot_pareto().axes[0].texts[0].get_text().startswith("no cost estimate")


def test_results_saved_before_costs_load_and_render(swept):
    data = json.loads((swept.out / "result.json").read_text())
    data.pop("cost")
    old = type(swept.result).from_json(data)
    assert old.cost == {} and math.isnan(old.evaluations["estimated_cost"].iloc[0])
    assert "saved before costs were estimated" in render_report(old)
    assert Evaluation.from_json(data["evaluation_records"][0]).key == old.evaluation_records[0].key
