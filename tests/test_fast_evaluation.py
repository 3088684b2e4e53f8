"""Cheaper evaluations with identical results: suffix evaluation and exact early stop, each on and off on the
sample models with real ONNX Runtime sessions; early stop's bound against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import EXPECTED, SAMPLES, write_random_feeds

import precision_lab as pl
from precision_lab.compare import Comparison, ErrorStats, get_metric
from precision_lab.criterion import Criterion, criterion_value
from precision_lab.early_stop import ReferenceTotals, StopRule, final_bound
from precision_lab.results import Evaluation


def _sweep(name: str, data, out, **options):
    expected = EXPECTED.get(f"{name}.onnx", {"recipe": "trt", "tolerance": 0.05})
    return pl.sweep(
        SAMPLES / f"{name}.onnx", data=data, out_dir=out, recipe=expected["recipe"],
        tolerance=options.pop("tolerance", expected["tolerance"]), resume=options.pop("resume", False),
        progress=False, eval_samples=24, verify_samples=8, **options,
    )


def _records(result) -> dict[str, Evaluation]:
    return {r.key: r for r in result.evaluation_records}


def _assert_same_values(a: Evaluation, b: Evaluation, *, per_feed: float = 1e-6) -> None:
    """Every metric of every part within 1e-6, and each feed's own values within ``per_feed``."""
    assert a.status == b.status == "ok"
    for part, values in a.parts.items():
        for name, value in values.items():
            other = b.parts[part][name]
            assert value == other or abs(value - other) <= 1e-6 * max(1.0, abs(other)), (part, name, value, other)
    for name in ("rel-l2", "max-abs", "cosine"):  # every feed's own value, as the criteria read them
        mine, theirs = a.sample_values(get_metric(name)), b.sample_values(get_metric(name))
        for part in mine:
            np.testing.assert_allclose(mine[part], theirs[part], rtol=per_feed, atol=per_feed)


ALL_SAMPLES = sorted(p.stem for p in SAMPLES.glob("*.onnx"))


@pytest.mark.parametrize("name", ALL_SAMPLES)
def test_suffix_evaluation_gives_the_same_plans_and_values(tmp_path, name):
    data = write_random_feeds(SAMPLES / f"{name}.onnx", tmp_path / "data", count=40)
    whole = _sweep(name, data, tmp_path / "whole", suffix=False, early_stop=False)
    suffix = _sweep(name, data, tmp_path / "suffix", early_stop=False)
    assert whole.plan.fp32_layers == suffix.plan.fp32_layers
    assert whole.plan.evidence.keys() == suffix.plan.evidence.keys()
    a, b = _records(whole), _records(suffix)
    assert a.keys() == b.keys()
    for key in a:
        _assert_same_values(a[key], b[key])
    for layer_a, layer_b in zip(whole.layer_results, suffix.layer_results):
        assert layer_a.name == layer_b.name and layer_a.rank == layer_b.rank
        assert layer_a.scores.keys() == layer_b.scores.keys()
        for kind, value in layer_a.scores.items():
            assert abs(value - layer_b.scores[kind]) <= 1e-6


def test_suffix_runs_only_the_changed_part():
    """An isolate plan of the last layer cuts the graph near its end; the all-FP32 plan runs nothing (every
    output comes from the cache); the all-INT8 plan's cut starts at the model's inputs."""
    from precision_lab.calibration import Ranges
    from precision_lab.model import list_candidates, prepare_model
    from precision_lab.qdq import QdqBuilder, tensors_to_calibrate
    from precision_lab.suffix import GraphIndex

    model = prepare_model(SAMPLES / "transformer_block.onnx")
    candidates = list_candidates(model, op_types=("MatMul", "Gemm", "Conv", "ConvTranspose"))
    names = [c.name for c in candidates]
    amax = {t: 1.0 for t in tensors_to_calibrate(model, candidates, "trt")}
    builder = QdqBuilder(model, candidates, Ranges("max", "test", amax, 1))
    index = GraphIndex(model.model)
    last = index.cut(builder.placement([n for n in names if n != names[-1]]))
    assert last is not None and 0 < len(last.nodes) < len(index.nodes) // 2
    assert set(last.inputs).isdisjoint(index.graph_inputs) or len(last.inputs) > 1
    everything = index.cut(builder.placement(names))
    assert everything.nodes == () and set(everything.cached_outputs) == set(index.outputs)


@pytest.mark.parametrize("name", ["two_planted_cnn", "fp16_overflow_cnn", "plain_cnn"])
@pytest.mark.parametrize("criterion", ["p90", "aggregate", "worst-sample"])
def test_early_stop_gives_the_same_plans(tmp_path, name, criterion):
    data = write_random_feeds(SAMPLES / f"{name}.onnx", tmp_path / "data", count=40)
    full = _sweep(name, data, tmp_path / "full", suffix=False, early_stop=False, criterion=criterion)
    cut = _sweep(name, data, tmp_path / "cut", suffix=False, criterion=criterion)
    assert full.plan.fp32_layers == cut.plan.fp32_layers
    assert abs(full.plan.value - cut.plan.value) <= 1e-9
    metric, crit, tolerance = full.metric_obj, Criterion.parse(criterion), full.metric["tolerance"]
    a, b = _records(full), _records(cut)
    assert a.keys() == b.keys()
    for key, record in b.items():
        if record.status == "stopped":
            assert record.phase == "search" and not record.complete
            bound, value = record.value(metric, crit), a[key].value(metric, crit)
            assert value >= bound and not metric.passes(value, tolerance)
            assert record.stopped["samples"] < record.stopped["of"]
        else:
            _assert_same_values(a[key], record)


def test_early_stop_stops_failing_search_evaluations(tmp_path):
    data = write_random_feeds(SAMPLES / "two_planted_cnn.onnx", tmp_path / "data", count=40)
    result = _sweep("two_planted_cnn", data, tmp_path / "out", suffix=False, criterion="aggregate")
    stopped = [r for r in result.evaluation_records if r.status == "stopped"]
    assert stopped, "a failing bisection or pruning evaluation should stop early"
    for record in stopped:
        assert len(next(iter(record.samples.values()))) == record.stopped["samples"]
    frame = result.evaluations
    assert "complete" in frame.columns and not frame[frame.key.isin([r.key for r in stopped])].complete.any()
    stopped_keys = {r.key: r for r in stopped}
    html = (tmp_path / "out" / "report.html").read_text()
    for evidence in result.plan.evidence.values():  # evidence from a stopped evaluation says it is a bound
        if evidence["key"] in stopped_keys:
            assert evidence["stopped_early"]["samples"] == stopped_keys[evidence["key"]].stopped["samples"]
            assert f"stopped after {evidence['stopped_early']['samples']} of" in html
        else:
            assert "stopped_early" not in evidence
    from precision_lab.report.plots import plot_tradeoff

    labels = [t.get_text() for t in plot_tradeoff(result).axes[0].get_legend().get_texts()]
    assert any("stopped early" in label for label in labels)


def test_stopped_records_are_not_reused_where_a_full_value_is_needed(tmp_path):
    """A stopped record answers a pass/fail question at its own or a stricter tolerance only: resuming at a
    looser tolerance evaluates those plans again, and gives what a run without early stop gives."""
    data = write_random_feeds(SAMPLES / "two_planted_cnn.onnx", tmp_path / "data", count=40)
    out = tmp_path / "out"
    first = _sweep("two_planted_cnn", data, out, suffix=False, criterion="aggregate", tolerance=0.02)
    stopped = {r.key: r for r in first.evaluation_records if r.status == "stopped"}
    assert stopped
    looser = _sweep("two_planted_cnn", data, out, suffix=False, criterion="aggregate", tolerance=0.6, resume=True)
    fresh = _sweep("two_planted_cnn", data, tmp_path / "fresh", suffix=False, early_stop=False,
                   criterion="aggregate", tolerance=0.6)
    assert looser.plan.fp32_layers == fresh.plan.fp32_layers
    metric, crit = fresh.metric_obj, Criterion.parse("aggregate")
    mine = _records(looser)
    assert any(key in stopped and mine[key].complete for key in mine), "a stopped plan was evaluated again"
    for key, record in _records(fresh).items():  # every plan the search asked for, as the looser run holds it
        held = mine[key]
        assert held.complete or (record.phase == "search" and held.fails_for_sure(metric, crit, 0.6))
        if held.complete:
            _assert_same_values(held, record)
    for layer in looser.layer_results:  # sensitivity scores come from complete records only
        assert abs(layer.scores["isolate"] - next(x for x in fresh.layer_results if x.name == layer.name).scores["isolate"]) <= 1e-9


def test_a_stopped_value_is_shown_as_a_bound():
    from precision_lab.evaluator import Evaluator
    from precision_lab.progress import Progress

    record = Evaluation(
        key="k", fp32_layers=(), phase="search", status="stopped", parts={},
        stopped={"metric": "rel-l2", "criterion": "p90", "tolerance": 0.05, "bound": 0.31, "samples": 5, "of": 32},
    )
    evaluator = Evaluator(None, get_metric("rel-l2"), 0.05, None, "", {}, Progress(False), Criterion.parse("p90"))
    assert evaluator.shown_value(record) == ">=0.31 (failed after 5/32 feeds)"
    assert evaluator.shown_metric(record) == "rel-l2>=0.31 (failed after 5/32 feeds)"  # never "rel-l2=>=0.31"
    assert math.isnan(record.value(get_metric("max-abs"), Criterion.parse("p90")))
    assert math.isnan(record.value(get_metric("rel-l2"), Criterion.parse("aggregate")))
    assert record.interval(get_metric("rel-l2"), Criterion.parse("p90")) is None


# --- the bound against brute force ---------------------------------------------------------------------------


def _random_rows(rng, count: int) -> list[ErrorStats]:
    rows = []
    for _ in range(count):
        r = rng.normal(size=(1, 6, 4))
        y = r + rng.normal(scale=rng.choice([0.001, 0.05, 0.5]), size=r.shape)
        rows.append(ErrorStats.of(y, r))
    return rows


@pytest.mark.parametrize("metric_name", ["rel-l2", "max-abs", "mean-abs", "cosine", "sqnr", "top1"])
@pytest.mark.parametrize("criterion_name", ["aggregate", "worst-sample", "p90", "p50"])
def test_bound_never_passes_a_value_the_full_evaluation_could_reach(metric_name, criterion_name):
    rng = np.random.default_rng(0)
    metric, criterion = get_metric(metric_name), Criterion.parse(criterion_name)
    count = 12
    for trial in range(40):
        rows = _random_rows(rng, count)
        reference = ReferenceTotals({"out": [ErrorStats.of(np.zeros(1), np.zeros(1)) for _ in rows]})
        reference.per_feed["out"] = [ErrorStats(sum_sq_ref=s.sum_sq_ref, count=s.count, samples=s.samples,
                                                top1_rows=s.top1_rows) for s in rows]
        final = criterion_value({"out": [s.to_row() for s in rows]}, metric, criterion)
        if not criterion.per_sample:
            merged = rows[0]
            for s in rows[1:]:
                merged = merged.merge(s)
            final = merged.values()[metric_name]
        for seen in range(1, count):
            merged = rows[0]
            for s in rows[1:seen]:
                merged = merged.merge(s)
            total = Comparison({"out": merged}, {}, {}, {"out": rows[:seen]})
            bound = final_bound(total, seen, reference, StopRule(metric, criterion, 0.0))
            if metric.higher_is_better:
                assert bound >= final - 1e-12, (trial, seen, bound, final)
            else:
                assert bound <= final + 1e-12, (trial, seen, bound, final)


def test_p90_stops_exactly_when_enough_feeds_failed():
    """p90 over 32 feeds: numpy's quantile is then certain to exceed the tolerance once 5 feeds exceed it (4
    failing feeds could still leave it passing)."""
    metric, criterion = get_metric("max-abs"), Criterion.parse("p90")
    rule = StopRule(metric, criterion, 0.1)
    bad = ErrorStats(max_abs_err=1.0, count=1)
    reference = ReferenceTotals({"out": [ErrorStats(count=1) for _ in range(32)]})
    for failing, expected in ((4, False), (5, True)):
        seen = [bad] * failing
        total = Comparison({"out": bad}, {}, {}, {"out": seen})
        assert rule.certainly_fails(final_bound(total, failing, reference, rule)) is expected
        values = [1.0] * failing + [0.0] * (32 - failing)
        assert not expected or criterion.reduce(np.asarray(values), metric) > 0.1


# --- batching ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["two_planted_cnn", "residual_branches", "transformer_block"])
def test_batching_gives_the_same_plans_and_values(tmp_path, name):
    """Whole-model runs batched by 8 feeds (suffix off, so every evaluation batches) against one feed at a
    time; early stop on in both, so a stop inside a batch must also match. transformer_block reshapes to a
    literal batch of 1: its probe fails and it runs one feed at a time."""
    from precision_lab.batching import probe
    from precision_lab.model import prepare_model

    data = write_random_feeds(SAMPLES / f"{name}.onnx", tmp_path / "data", count=40)
    single = _sweep(name, data, tmp_path / "single", suffix=False, criterion="aggregate")
    batched = _sweep(name, data, tmp_path / "batched", suffix=False, criterion="aggregate", batch=8)
    assert single.plan.fp32_layers == batched.plan.fp32_layers
    a, b = _records(single), _records(batched)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].status == b[key].status
        if a[key].status == "stopped":
            assert a[key].stopped["samples"] == b[key].stopped["samples"]
            assert abs(a[key].stopped["bound"] - b[key].stopped["bound"]) <= 1e-6
        else:  # batched kernels are not bit-identical: a last-bit difference can flip one int8 rounding
            _assert_same_values(a[key], b[key], per_feed=1e-5)
    from precision_lab.backends import PlanBuild
    from precision_lab.backends.onnxrt import OnnxRuntimeBackend

    prepared = prepare_model(SAMPLES / f"{name}.onnx")
    backend = OnnxRuntimeBackend().quiet()
    feeds = [{s.name: np.full(s.shape, i / 4, dtype=np.float32) for s in prepared.inputs} for i in range(4)]
    allowed = probe(lambda model, f, on: backend.run(PlanBuild(model), f, on), prepared.model, feeds, 4)
    assert allowed is (name != "transformer_block")


def test_batch_must_be_positive(tmp_path):
    with pytest.raises(pl.InputError, match="--batch"):
        _sweep("plain_cnn", None, tmp_path / "out", batch=0)


def test_activations_beyond_the_cache_budget_run_the_whole_model(tmp_path, monkeypatch):
    """With no room for activations nothing is cached and every plan runs the whole model, with the same results."""
    data = write_random_feeds(SAMPLES / "plain_cnn.onnx", tmp_path / "data", count=40)
    roomy = _sweep("plain_cnn", data, tmp_path / "roomy", early_stop=False)
    assert any((tmp_path / "roomy" / "cache").glob("activations-*/*.npy"))
    monkeypatch.setenv("PRECISION_LAB_ACTIVATION_CACHE_GB", "0")
    none = _sweep("plain_cnn", data, tmp_path / "none", early_stop=False)
    assert not any((tmp_path / "none" / "cache").glob("activations-*/*.npy"))
    assert roomy.plan.fp32_layers == none.plan.fp32_layers
    a, b = _records(roomy), _records(none)
    for key in a:
        _assert_same_values(a[key], b[key])
