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
from precision_lab.precisions import FP16, FP32, INT8, PrecisionPlan
from precision_lab.results import Evaluation, LayerSensitivity, SweepResult, VerifiedPlan
from precision_lab.search import MinimalPlan, Outcome
from precision_lab.session import Session
from precision_lab.settings import SweepOptions
from precision_lab.verification import VerificationRound, generalization_notice
from precision_lab.modelopt_export import CALIBRATION_FILE, modelopt_command

__all__ = ["COST_NOTE", "SearchRun", "assemble_result", "layer_table", "plan_costs", "verified_plan"]

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
        if evaluator.key(plan) not in evaluator.journal:
            continue  # e.g. a three-level sweep measured this layer's sensitivity from another start
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
    rows = tuple(
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
    # a three-level plan may keep non-candidate nodes FP32 (e.g. a LayerNorm's Pow): they are rows too
    position = {node.name: (i, node.op_type) for i, node in enumerate(session.prepared.model.graph.node)}
    islands = [n for n in plan.fp32_layers if n not in rank_of and n not in {c.name for c in session.candidates}]
    return rows + tuple(
        LayerSensitivity(
            name=name, op_type=position[name][1], index=position[name][0], rank=len(rows) + 1 + i, scores={},
            worst_input=None, precision=plan.precision(name),
        )
        for i, name in enumerate(sorted(islands, key=lambda n: position[n][0]))
    )


def _evidence(session: Session, outcome: Outcome) -> dict:
    """One layer's evidence: the failing evaluation without it; ``stopped_early`` (feeds run of all) marks a value
    that is only a bound, from an evaluation stopped once it certainly failed."""
    evidence = {"key": outcome.key, "value": outcome.value, "passed": outcome.passed,
                "fp32_layers": sorted(outcome.fp32_layers)}
    if not outcome.plan.is_binary:  # a three-level plan's evidence names every precision
        evidence["precisions"] = outcome.plan.to_json()
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


COST_NOTE = (
    "roofline estimate from dense peak rates and memory bandwidth: no kernel fusion, launch overhead or tactic "
    "choice, so the seconds are a lower bound; compare plans by their relative cost"
)


def _measured(records: Mapping[str, Evaluation], roles: Mapping[str, str | None], plan_key: str) -> dict:
    """Median latencies (ms) the backend measured for the plan and the baselines, and the plan's relative to
    them ({} when the backend measures none)."""
    latency = {role: records[key].seconds.get("latency_ms") for role, key in
               {"plan": plan_key, **roles}.items() if key in records}
    latency = {role: ms for role, ms in latency.items() if ms}
    if "plan" not in latency:
        return {}
    measured = {f"{role}_ms": ms for role, ms in latency.items()}
    for role in ("all_fp16", "all_int8"):
        if role in latency:
            measured[f"relative_to_{role}"] = latency["plan"] / latency[role]
    return measured


def plan_costs(session: Session, found: MinimalPlan, records: Sequence[Evaluation], options: SweepOptions) -> dict:
    """The ``cost`` of a result: every evaluated plan's estimated time relative to all-FP16 on the target GPU,
    the plan's against all-FP16 and all-INT8, and the latency the backend measured when it measures one. When
    the model cannot be estimated (a tensor without a static shape), ``{"error": why}`` and one warning."""
    from precision_lab.cost import PlanCoster, gpu_named, relative_cost

    plan = found.plan
    default = FP16 if FP16 in options.precisions else FP32
    gpu = gpu_named(options.target_gpu)
    try:
        coster = PlanCoster(session.prepared, candidates=session.names, gpu=gpu, default=default, fp32_mode=FP32)
        reference = coster.cost(coster.everything(FP16))
        plans = {"all_int8": PrecisionPlan(), "all_fp16": coster.everything(FP16), "all_fp32": coster.everything(FP32)}
        costs = {role: coster.cost(p) for role, p in plans.items()} | {"plan": coster.cost(plan)}
        evaluations = {r.key: relative_cost(coster.cost(r.plan), reference) for r in records}
    except (ValueError, ArithmeticError, LookupError, TypeError) as exc:  # an estimate never costs the sweep
        log.warning("no cost estimate: %s", exc)
        return {"error": str(exc)}

    def all_fp16(record: Evaluation) -> bool:  # every candidate FP16, nothing FP32 (however many nodes it names)
        return set(record.plan.values()) == {FP16} and set(session.names) <= set(record.plan)

    roles = {"all_int8": found.all_int8.key, "all_fp16": next((r.key for r in records if all_fp16(r)), None),
             "all_fp32": found.all_fp32.key}
    plan_cost = costs["plan"]
    return {
        "gpu": gpu.name,
        "fp32_mode": FP32,
        "default": default,
        "reference": "all_fp16",
        "note": COST_NOTE,
        "plan": {
            "relative_to_all_fp16": relative_cost(plan_cost, reference),
            "relative_to_all_int8": relative_cost(plan_cost, costs["all_int8"]),
            "seconds": plan_cost.seconds,
            "seconds_by_precision": plan_cost.by_precision(),
        },
        "baselines": {role: relative_cost(costs[role], reference) for role in plans},
        "seconds": {role: cost.seconds for role, cost in costs.items()},
        "layers": {
            layer.name: {"op_type": layer.op_type, "precision": layer.precision, "seconds": layer.seconds}
            for layer in plan_cost.layers if layer.name in plan
        },
        "roles": roles,
        "evaluations": evaluations,
        "measured": _measured({r.key: r for r in records}, roles, found.outcome.key),
    }


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
        last = run.rounds[-1].to_json()
        verify_plan, verify_int8, verify_fp32 = run.verify_outcomes
        verification |= {
            "value": last["verify_value"],
            "resampled_median": last["verify_resampled_median"],
            "passed": last["verify_passed"],
            "held_back_passed": last["held_back_passed"],
            "with_calibration": last["with_calibration"],
            "tolerance": run.verify_tolerance,
            "all_int8": verify_int8.value,
            "all_fp32": verify_fp32.value,
            "key": verify_plan.key,
            "search_tolerance": last["search_tolerance"],
            "until_verified": options.until_verified,
            "rounds": [r.to_json() for r in run.rounds],
        }
    notice = generalization_notice(
        metric=metric,
        tolerance=run.tolerance,
        eval_samples=len(dataset.eval),
        verify_samples=len(dataset.verify),
        interval=confidence["plan"],
        verification=verification,
        rounds=run.rounds,
        until_verified=options.until_verified,
        criterion=criterion.name,
    )
    if notice:
        log.warning(notice)
    notices = (notice,) if notice else ()
    baselines = {"all_int8": found.all_int8.value, "all_fp32": found.all_fp32.value}
    if found.all_fp16 is not None:
        baselines["all_fp16"] = found.all_fp16.value
        if found.fp32_first:
            fp32_nodes = sorted(found.plan.fp32_layers)
            first = (
                f"all-FP16 already fails ({metric.name} = {found.all_fp16.value:.6g}): the FP32 set that repairs it "
                f"was found first ({len(fp32_nodes)} nodes: {', '.join(fp32_nodes[:8])}"
                + (", ..." if len(fp32_nodes) > 8 else "") + "), then the INT8 layers"
            )
            log.info(first)
            notices = (first, *notices)
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
        recipe=options.recipe if options.qdq_model is None else "qdq-model",  # --qdq-model: the user's placement
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
        baselines=baselines,
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
            **_user_qdq_json(options),
        },
        exports=_exports(session, found) | {"modelopt": _modelopt(session, options, plan.plan)},
        backend_info=session.backend.info() | {"reason": session.backend_reason},
        verification=verification,
        verification_records=verification_records,
        with_calibration_records=(
            session.unjudged_verifier.records() if session.unjudged_verifier is not None else ()
        ),
        confidence=confidence,
        notices=notices,
        precision_levels=tuple(options.precisions),
        cost=plan_costs(session, found, records, options),
    )


def _exports(session: Session, found: MinimalPlan) -> dict[str, str]:
    """The command lines that build the plan: the backend's, or for a three-level plan the strongly typed FP16
    ``plan.onnx`` and TensorRT 10's implicit flags."""
    plan_onnx = Path(session.out) / "plan.onnx"
    if not session.three_level:
        return session.backend.build_commands(plan_onnx, out=Path(session.out), prepared=session.prepared, plan=found.plan)
    from precision_lab.backends.exports import three_level_commands
    from precision_lab.plan import qdq_fp32_path

    plan = found.plan
    return three_level_commands(
        plan_onnx, qdq_fp32_path(plan_onnx), fp16_layers=sorted(plan.fp16_layers), fp32_layers=sorted(plan.fp32_layers)
    )


def _modelopt(session: Session, options: SweepOptions, plan) -> str:
    """The ModelOpt command that rebuilds ``plan`` from the FP32 model (issue 14; docs/modelopt.md)."""
    calibration = Path(session.out) / CALIBRATION_FILE
    calibration = calibration if calibration.exists() else None  # written by the sweep when ModelOpt can read it
    return modelopt_command(
        session.prepared.path,
        sorted(plan.high_precision, key=lambda n: next((c.index for c in session.candidates if c.name == n), 0)),
        calibration_method=options.calibration,
        calibration_data=calibration,
        output=Path(session.out) / "plan.modelopt.onnx",
    )


def _user_qdq_json(options: SweepOptions) -> dict:
    """With ``--qdq-model``: its path and sha256 in ``quantization`` (``apply --qdq-model`` checks them)."""
    if options.qdq_model is None:
        return {}
    import hashlib

    digest = hashlib.sha256(Path(options.qdq_model).read_bytes()).hexdigest()
    return {"qdq_model": str(options.qdq_model), "qdq_model_sha256": digest}
