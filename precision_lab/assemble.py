"""From a finished search to a :class:`~precision_lab.results.SweepResult`: the layer table, the verified plan,
confidence intervals, the verdict on the verification feeds and the one warning when the plan may not hold.

Pure: it reads the session's journal through its evaluators and runs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from precision_lab.evaluator import Evaluator
from precision_lab.model import constant_inputs_to_json
from precision_lab.precisions import INT8
from precision_lab.results import Evaluation, LayerSensitivity, SweepResult, VerifiedPlan
from precision_lab.search import MinimalPlan, Outcome
from precision_lab.session import Session
from precision_lab.settings import SweepOptions
from precision_lab.verification import VerificationRound, generalization_notice

__all__ = ["SearchRun", "assemble_result", "layer_table", "verified_plan"]

log = logging.getLogger("precision_lab")


@dataclass(frozen=True)
class SearchRun:
    """What the search found: the result, the user's ``tolerance`` (set from the FP32 score with a
    ``max_drop``), the stricter ``search_tolerance`` of the last round, and the verification rounds with the
    last round's verification outcomes (plan, all-INT8, all-FP32) and tolerance."""

    found: MinimalPlan
    tolerance: float
    search_tolerance: float
    rounds: tuple[VerificationRound, ...] = ()
    verify_outcomes: tuple[Outcome, Outcome, Outcome] | None = None
    verify_tolerance: float | None = None


def _worst_inputs(evaluator: Evaluator, plans: Mapping[str, object], labels: Sequence[str]) -> dict[str, str]:
    """Per layer, the evaluation sample on which its ``isolate`` plan errs most."""
    worst = {}
    pick = min if evaluator.metric.higher_is_better else max
    for name, plan in plans.items():
        record = evaluator.record(plan)
        values = [value for _, value in record.worst_per_sample(evaluator.metric)] if record.status == "ok" else []
        if values:
            worst[name] = labels[pick(range(len(values)), key=values.__getitem__)]
    return worst


def layer_table(session: Session, found: MinimalPlan) -> tuple[LayerSensitivity, ...]:
    """One row per candidate, most sensitive first: rank (from 1), every score the strategy published, the
    plan's precision and, with ``isolate`` scores, the input on which the layer alone does most harm."""
    from precision_lab.search import sensitivity_plans

    ranking = list(found.ranking) or session.names
    rank_of = {name: i for i, name in enumerate(ranking)}
    isolate_plans = (
        {layer: plan for kind, layer, plan in sensitivity_plans(session.names, "isolate")}
        if "isolate" in found.scores
        else {}
    )
    worst = _worst_inputs(session.evaluator, isolate_plans, session.dataset.eval_labels)
    plan = found.plan
    return tuple(
        LayerSensitivity(
            name=c.name,
            op_type=c.op_type,
            index=c.index,
            rank=rank_of.get(c.name, len(ranking)) + 1,
            scores={kind: values[c.name] for kind, values in found.scores.items() if c.name in values},
            worst_input=worst.get(c.name),
            precision=plan.precision(c.name),
        )
        for c in sorted(session.candidates, key=lambda c: rank_of.get(c.name, len(ranking)))
    )


def _evidence(session: Session, outcome: Outcome) -> dict:
    """One layer's evidence: the failing evaluation without it; ``stopped_early`` (feeds run of all) marks a value
    that is only a bound, from an evaluation stopped once it certainly failed."""
    evidence = {"key": outcome.key, "value": outcome.value, "passed": outcome.passed,
                "fp32_layers": sorted(outcome.fp32_layers)}
    record = session.evaluator.record(outcome.plan)
    if record.status == "stopped" and record.stopped:
        evidence["stopped_early"] = {"samples": record.stopped["samples"], "of": record.stopped["of"]}
    return evidence


def verified_plan(session: Session, found: MinimalPlan) -> VerifiedPlan:
    """The plan as results and ``plan.json`` carry it, with the evidence for each raised layer."""
    rank_of = {name: i for i, name in enumerate(found.ranking or session.names)}
    plan = found.plan
    return VerifiedPlan(
        fp32_layers=tuple(sorted(plan.fp32_layers, key=lambda n: rank_of.get(n, 0))),
        int8_layers=tuple(n for n in session.names if plan.precision(n) == INT8),
        value=found.outcome.value,
        passed=found.outcome.passed,
        key=found.outcome.key,
        evidence={name: _evidence(session, o) for name, o in found.evidence.items()},
        precisions={} if plan.is_binary else plan.to_json(),
    )


def _interval(records: Mapping[str, Evaluation], key: str, session: Session) -> list[float] | None:
    found = records[key].interval(session.evaluator.metric, session.evaluator.criterion)
    return None if found is None else list(found)


def assemble_result(
    session: Session, run: SearchRun, options: SweepOptions, *, op_types: Sequence[str], wall_seconds: float
) -> SweepResult:
    """The :class:`SweepResult` of a finished search; logs the one generalization warning when there is one."""
    found, dataset, prepared = run.found, session.dataset, session.prepared
    metric, criterion = session.evaluator.metric, session.evaluator.criterion
    records = session.evaluator.records()
    verification_records = session.verifier.records() if session.verifier is not None else ()
    by_key = {r.key: r for r in records}
    plan = verified_plan(session, found)
    confidence = {
        "level": 0.95,
        "plan": _interval(by_key, plan.key, session),
        "all_int8": _interval(by_key, found.all_int8.key, session),
        "all_fp32": _interval(by_key, found.all_fp32.key, session),
    }
    verification: dict = {"samples": len(dataset.verify)}
    if run.rounds and run.verify_outcomes is not None:
        last = run.rounds[-1]
        verify_plan, verify_int8, verify_fp32 = run.verify_outcomes
        verification |= {
            "value": last.verify_value,
            "passed": last.verify_passed,
            "tolerance": run.verify_tolerance,
            "all_int8": verify_int8.value,
            "all_fp32": verify_fp32.value,
            "key": verify_plan.key,
            "search_tolerance": last.search_tolerance,
            "until_verified": options.until_verified,
            "rounds": [r.to_json() for r in run.rounds],
        }
    notice = generalization_notice(
        metric=metric,
        tolerance=run.tolerance,
        eval_samples=len(dataset.eval),
        verify_samples=len(dataset.verify),
        interval=confidence["plan"],
        verify_value=verification.get("value"),
        verify_passed=verification.get("passed"),
        rounds=run.rounds,
        until_verified=options.until_verified,
        criterion=criterion.name,
    )
    if notice:
        log.warning(notice)
    slices, judged = session.slices, session.judged
    out = session.out
    return SweepResult(
        model={
            "path": str(prepared.path),
            "name": prepared.name,
            "sha256": prepared.sha256,
            "prepared_sha256": prepared.prepared_sha256,
            "original_opset": prepared.original_opset,
            "renamed_nodes": prepared.renamed_nodes,
            "folded_batchnorms": list(prepared.folded_batchnorms),
            "folded_ifs": dict(prepared.folded_ifs),
            "constant_inputs": constant_inputs_to_json(prepared.constant_inputs),
            "input_shapes": {s.name: list(s.shape) for s in prepared.inputs},
            "outputs": list(prepared.output_names),
            "candidates": len(session.candidates),
        },
        backend=session.backend.name,
        recipe=options.recipe,
        calibration={"method": options.calibration, "samples": len(dataset.calib), "percentile": options.percentile},
        data={
            "source": dataset.source,
            "synthetic": dataset.synthetic,
            "calib_samples": len(dataset.calib),
            "eval_samples": len(dataset.eval),
            "verify_samples": len(dataset.verify),
            "seed": options.seed,
            "labels": str(options.labels) if options.labels is not None else ("loader script" if dataset.eval_targets else None),
            "calib_feeds": list(dataset.calib_labels),
            "eval_feeds": list(dataset.eval_labels),
            "verify_feeds": list(dataset.verify_labels),
        },
        metric={
            "name": metric.name,
            "direction": metric.direction,
            "tolerance": run.tolerance,
            "criterion": criterion.name,
            "max_drop": session.setting.max_drop,
            "search_tolerance": run.search_tolerance,
        },
        output_slices=tuple(s.label for s in slices)
        + tuple(name for name in (judged or ()) if name not in {s.output for s in slices}),
        sensitivity=options.sensitivity if options.search == "full" else "signals",
        search=options.search,
        status=found.status,
        plan=plan,
        baselines={"all_int8": found.all_int8.value, "all_fp32": found.all_fp32.value},
        layer_results=layer_table(session, found),
        evaluation_records=records,
        wall_seconds=wall_seconds,
        out_dir=str(out),
        quantization={
            "recipe": options.recipe,
            "op_types": list(op_types),
            "exclude": list(options.exclude),
            "candidates": session.names,
            "ranges": session.ranges.amax,
            "ranges_key": session.ranges.key,
        },
        exports=session.backend.build_commands(Path(out) / "plan.onnx", out=Path(out), prepared=prepared, plan=found.plan),
        backend_info=session.backend.info() | {"reason": session.backend_reason},
        verification=verification,
        verification_records=verification_records,
        confidence=confidence,
        notices=(notice,) if notice else (),
    )
