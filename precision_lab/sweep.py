"""The sweep: from an FP32 model to a verified, minimal high-precision plan, and its outputs.

:func:`sweep` checks the options, locks the output folder, sets everything up once
(:func:`~precision_lab.session.open_session`: data, model, candidates, backend, ranges, references, journal),
runs the search strategy through the evaluator (rounds at stricter tolerances with ``until_verified``), then
assembles the result (:mod:`precision_lab.assemble`) and writes the outputs (:mod:`precision_lab.outputs`).
Every evaluation goes through the journal, so an interrupted sweep resumes without redoing finished work.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from precision_lab.assemble import SearchRun, assemble_result
from precision_lab.calibration import DEFAULT_PERCENTILE
from precision_lab.compare import OutputSlice
from precision_lab.criterion import Criterion
from precision_lab.data import DEFAULT_CALIB_SAMPLES, DEFAULT_EVAL_SAMPLES, DEFAULT_VERIFY_SAMPLES
from precision_lab.errors import UnattainableToleranceError
from precision_lab.lock import OutputLock
from precision_lab.modelopt_export import write_calibration_data
from precision_lab.noise_floor import warn_noise_floor
from precision_lab.outdir import prepare_out_dir
from precision_lab.outputs import write_outputs
from precision_lab.precisions import PrecisionPlan
from precision_lab.qdq import resolve_op_types
from precision_lab.results import SweepResult
from precision_lab.search import SEARCHES, MinimalPlan, SearchContext, Strategy
from precision_lab.session import Session, open_session
from precision_lab.settings import (
    DEFAULT_CRITERION,
    DEFAULT_MAX_DROPS,
    DEFAULT_UNTIL_VERIFIED,
    DEFAULT_TOLERANCES,
    MetricSetting,
    SweepOptions,
    check_options,
    check_precisions,
    check_target_gpu,
    resolve_metric,
)
from precision_lab.verification import (
    VerificationRound, VerificationVerdict, failure_reason, tighten_tolerance, verification_verdict,
)

__all__ = ["sweep", "DEFAULT_TOLERANCES", "DEFAULT_MAX_DROPS", "default_out_dir", "MAX_VERIFY_ROUNDS"]

log = logging.getLogger("precision_lab")

MAX_VERIFY_ROUNDS = 4


def default_out_dir(model: str | os.PathLike) -> Path:
    """``reports/<model name>/`` below the working directory."""
    return Path("reports") / Path(model).stem


def sweep(
    model: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    data_loader_script: str | None = None,
    labels: str | os.PathLike | None = None,
    metric: str = "rel-l2",
    metric_direction: str | None = None,
    tolerance: float | None = None,
    max_drop: float | None = None,
    criterion: str | Criterion = DEFAULT_CRITERION,
    out_dir: str | os.PathLike | None = None,
    recipe: str = "trt",
    ops: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    calibration: str = "max",
    percentile: float = DEFAULT_PERCENTILE,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    eval_samples: int = DEFAULT_EVAL_SAMPLES,
    verify_samples: int = DEFAULT_VERIFY_SAMPLES,
    until_verified: bool = DEFAULT_UNTIL_VERIFIED,
    seed: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    output_slices: Sequence[str | OutputSlice] = (),
    judge_outputs: Sequence[str] = (),
    sensitivity: str = "isolate",
    backend: object = "auto",
    backend_options: Mapping[str, object] | None = None,
    resume: bool = True,
    progress: bool = True,
    search: str = "full",
    jobs: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    precisions: Sequence[str] = ("int8", "fp32"),
    target_gpu: str = "H100 SXM",
    qdq_model: str | os.PathLike | None = None,
    suffix: bool = True,
    early_stop: bool = True,
    batch: int = 1,
) -> SweepResult:
    """Find the smallest set of layers to keep FP32 so the model meets ``tolerance``; write the outputs.

    Defaults: metric ``rel-l2`` with tolerance 0.05 (``cosine`` 0.999, ``sqnr`` 20 dB, ``top1`` 0.99;
    ``accuracy`` a ``max_drop`` of 0.01 from the FP32 model's own score; other metrics need ``tolerance`` or
    ``max_drop``), criterion ``p90`` (90 % of the evaluation samples must meet the tolerance on their own;
    ``aggregate`` applies it to the metric over the whole set, ``worst-sample`` to every sample), recipe ``trt``,
    ``max`` calibration; 16 calibration, 32 evaluation and 16 verification samples (in proportion with fewer
    feeds); the final plan is judged on the verification feeds and, with ``until_verified`` (default on), the
    search runs again at a stricter tolerance until the plan holds there too;
    search ``full`` with ``isolate`` sensitivity (``fast``: one-pass signals); backend ``auto`` (TensorRT when a
    working builder and a GPU exist, else ONNX Runtime; a name from ``precision_lab.backends.BACKENDS`` or a
    :class:`~precision_lab.backends.Backend` object; ``backend_options`` maps backend names to their options
    objects); synthetic data when neither ``data`` nor ``data_loader_script`` is given; labels (for ``accuracy``
    and custom metrics that take them) from ``labels`` or the loader script; every output judged
    (``judge_outputs`` names the ones that decide; an output named by an ``output_slices`` entry is judged too);
    output in ``reports/<model name>/``, resuming a journal found there. ``precisions``: ``("int8", "fp32")``
    (default: a layer is INT8 or FP32, every other node FP32) or ``("int8", "fp16", "fp32")`` (an INT8 + FP16
    engine: every node not INT8 runs FP16, emulated, except the nodes the plan keeps FP32; the plan is 1-minimal
    at both levels). ``target_gpu`` (default ``"H100 SXM"``, a name of ``precision_lab.cost.GPUS``) is the GPU
    whose roofline estimates each plan's cost. ``qdq_model`` (default none): the user's own Q/DQ model of
    ``model`` (ModelOpt, ``quantize_static``, QAT export), whose quantized nodes are the candidates, with its
    scales and no calibration (:mod:`precision_lab.user_qdq`); two-level plans only.
    Two exact speed-ups are on by default
    (``False`` turns each off; results agree to 1e-6 either way): ``suffix`` runs only the part of the graph a
    binary plan changes, from cached FP32 activations; ``early_stop`` stops a pass/fail search evaluation once it
    certainly fails (its recorded value is then a bound, marked as such). ``batch`` (default 1: off) runs that
    many feeds per inference when a probe shows the model computes them as it does one at a time (to 1e-6).
    """
    started = time.perf_counter()
    options = SweepOptions(
        data=data, data_loader_script=data_loader_script, labels=labels, metric=metric,
        metric_direction=metric_direction, tolerance=tolerance, max_drop=max_drop, criterion=str(criterion),
        recipe=recipe, ops=ops, exclude=tuple(exclude), calibration=calibration, percentile=percentile,
        calib_samples=calib_samples, eval_samples=eval_samples, verify_samples=verify_samples,
        until_verified=until_verified, seed=seed, input_shapes=input_shapes, output_slices=tuple(output_slices),
        judge_outputs=tuple(judge_outputs), sensitivity=sensitivity, backend=backend,
        backend_options=backend_options, resume=resume, progress=progress, search=search, jobs=jobs,
        executor=executor, ray_address=ray_address, precisions=check_precisions(precisions),
        target_gpu=check_target_gpu(target_gpu), qdq_model=qdq_model, suffix=suffix, early_stop=early_stop,
        batch=batch,
    )
    check_options(
        recipe=recipe, sensitivity=sensitivity, calibration=calibration, percentile=percentile, seed=seed, search=search,
        executor=executor, ray_address=ray_address, batch=batch, qdq_model=qdq_model, precisions=options.precisions,
    )
    setting = resolve_metric(metric, metric_direction, tolerance, max_drop)
    criterion_obj = Criterion.parse(criterion)
    slices = [s if isinstance(s, OutputSlice) else OutputSlice.parse(s) for s in output_slices]
    op_types = resolve_op_types(recipe, ops)
    out = prepare_out_dir(Path(out_dir) if out_dir is not None else default_out_dir(model))
    with OutputLock(out):  # a second sweep on the same folder is refused
        session = open_session(
            model, out, options, setting=setting, criterion=criterion_obj, slices=slices, op_types=op_types
        )
        try:
            run = _search_until_verified(session, options, setting)
        except UnattainableToleranceError:
            _warn_noise_floor(session, session.evaluator.tolerance)
            raise
        finally:
            session.close()
        _warn_noise_floor(session, run.tolerance)
        write_calibration_data(session.dataset.calib, out)  # for the ModelOpt command in plan.json, once per sweep
        result = assemble_result(session, run, options, op_types=op_types, wall_seconds=time.perf_counter() - started)
        write_outputs(result, session.builder, out, evaluations_run=session.evaluations_run)
        return result


def _warn_noise_floor(session: Session, tolerance: float) -> None:
    everything = session.everything_fp32
    if session.evaluator.key(everything) in session.evaluator.journal:
        record = session.evaluator.record(everything)
        warn_noise_floor(session.evaluator.metric, tolerance, record, session.reference, session.slices)


def _raise_costs(session: Session, options: SweepOptions) -> dict[str, list[str]]:
    """Tie-break orders, cheapest first by the estimated cost on the target GPU: ``"int8"``, the candidates by
    what raising them out of INT8 costs; ``"fp32"`` (three levels), the float nodes by what keeping them FP32
    instead of FP16 costs. Empty when the model cannot be estimated (ties then keep graph order)."""
    from precision_lab.cost import PlanCoster, gpu_named

    three = session.three_level
    try:
        coster = PlanCoster(
            session.prepared, candidates=session.names, gpu=gpu_named(options.target_gpu),
            default="fp16" if three else "fp32", fp32_mode="fp32",
        )
        raised = "fp16" if three else "fp32"
        orders = {"int8": _by_cost(session.names, lambda n: coster.raise_cost(n, raised, "int8"))}
        if three:
            orders["fp32"] = _by_cost(session.builder.fp32_candidates, lambda n: coster.raise_cost(n, "fp32", "fp16"))
        return orders
    except (ValueError, ArithmeticError, LookupError, TypeError):
        return {}


def _by_cost(names, cost) -> list[str]:
    position = {name: i for i, name in enumerate(names)}
    return sorted(names, key=lambda n: (cost(n), position[n]))


def _strategy_maker(session: Session, options: SweepOptions) -> Callable[[], Strategy[MinimalPlan]]:
    """A maker of fresh runs of the chosen strategy. What does not depend on the tolerance is computed once for
    every verification round: the cost tie-break orders, the one-pass signals (when first asked for) and, with
    three levels, each node's closeness to the FP16 range."""
    from precision_lab.signals import layer_signals

    costs = _raise_costs(session, options)
    context = SearchContext(
        tie_order=costs.get("int8"),
        names=session.names,
        higher_is_better=session.evaluator.metric.higher_is_better,
        sensitivity=options.sensitivity,
        signals=functools.cache(
            lambda: layer_signals(
                session.prepared, session.builder, session.candidates, session.dataset.eval, slices=session.slices,
                judged=session.judged,
            )
        ),
    )
    if not session.three_level:
        return lambda: SEARCHES[options.search](context)
    from precision_lab.search.levels import three_level_search

    closeness = session.fp16_closeness()
    return lambda: three_level_search(
        context, SEARCHES[options.search], session.builder.fp32_candidates, closeness, costs.get("fp32")
    )


def _search(session: Session, make_strategy: Callable[[], Strategy[MinimalPlan]]) -> MinimalPlan:
    """One run of the chosen strategy at the evaluator's current tolerance; unattainable tolerances raise."""
    evaluator = session.evaluator
    strategy = make_strategy()
    found = evaluator.drive(strategy)
    if found.status == "unattainable":
        metric = evaluator.metric
        raise UnattainableToleranceError(
            f"even the all-FP32 model fails the tolerance: {metric.name} = {found.all_fp32.value:.6g} vs "
            f"tolerance {evaluator.tolerance:g}; no plan can meet it. Loosen --tolerance or check the metric"
        )
    return found


def _verify_with_calibration(
    session: Session, found: MinimalPlan, setting: MetricSetting, tolerance: float
) -> tuple[VerificationVerdict | None, float]:
    """The plan's verdict on the verification and calibration feeds together, and the tolerance it was judged by
    (``None`` without verification feeds)."""
    verifier = session.unjudged_verifier
    if verifier is None:
        return None, tolerance
    if setting.max_drop is None:
        (plan,) = verifier.evaluate([found.plan], "verification")
        judged_by = tolerance
    else:  # judged by the drop from the FP32 model's own score on these feeds
        plan, fp32 = verifier.evaluate([found.plan, session.everything_fp32], "verification")
        judged_by = fp32.value - setting.max_drop
    verdict = verification_verdict(verifier.record(found.plan), setting.metric, verifier.criterion, judged_by, plan.value)
    return verdict, judged_by


def _search_until_verified(session: Session, options: SweepOptions, setting: MetricSetting) -> SearchRun:
    """The search, then the plan on the verification feeds; with ``until_verified``, more searches at stricter
    tolerances while the plan fails there (at most :data:`MAX_VERIFY_ROUNDS`)."""
    evaluator, verifier, metric = session.evaluator, session.verifier, setting.metric
    everything = session.everything_fp32
    tolerance = setting.tolerance
    if setting.max_drop is not None:  # judged by the drop from the FP32 model's own score
        (fp32_score,) = evaluator.evaluate([everything], "baseline")
        tolerance = fp32_score.value - setting.max_drop
    search_tolerance = tolerance
    rounds: list[VerificationRound] = []
    verify_outcomes, verify_tolerance = None, None
    make_strategy = _strategy_maker(session, options)
    while True:
        evaluator.tolerance = search_tolerance
        found = _search(session, make_strategy)
        if verifier is None:
            break
        verify_outcomes = tuple(verifier.evaluate([found.plan, PrecisionPlan(), everything], "verification"))
        verify_plan, _, verify_fp32 = verify_outcomes
        verify_tolerance = tolerance if setting.max_drop is None else verify_fp32.value - setting.max_drop
        verdict = verification_verdict(
            verifier.record(found.plan), metric, evaluator.criterion, verify_tolerance, verify_plan.value
        )
        wide, wide_tolerance = _verify_with_calibration(session, found, setting, tolerance)
        round_ = VerificationRound(
            search_tolerance, tuple(found.pinned), found.outcome.value, verdict, wide, len(session.dataset.unjudged)
        )
        rounds.append(round_)
        if round_.passed or not options.until_verified or len(rounds) >= MAX_VERIFY_ROUNDS:
            break
        if set(found.pinned) == set(session.names):
            break
        failed = [(v, t) for v, t in ((verdict, verify_tolerance), (wide, wide_tolerance)) if v and not v.passed]
        stricter = min(
            (tighten_tolerance(metric, search_tolerance, t, v.deciding_value) for v, t in failed),
            key=lambda value: -value if metric.higher_is_better else value,
        )
        if not metric.passes(found.all_fp32.value, stricter):
            break  # even all-FP32 would fail a stricter search: keep this plan
        reason = failure_reason(metric, round_.to_json(), verify_tolerance)
        log.info(
            "the plan fails verification (%s %.4g%s; tolerance %.4g): searching again at tolerance %.4g",
            metric.name, verify_plan.value, f", {reason[1]:.4g} {reason[0]}" if reason else "", verify_tolerance,
            stricter,
        )
        search_tolerance = stricter
    evaluator.progress.finish(metric.name, found.outcome.value, tolerance)
    return SearchRun(found, tolerance, search_tolerance, tuple(rounds), verify_outcomes, verify_tolerance)


class _CallableModule(type(logging)):
    """This module, callable as :func:`sweep`: importing ``precision_lab.sweep`` (the CLI does) makes the package
    attribute ``precision_lab.sweep`` this module, and ``precision_lab.sweep(...)`` must still run a sweep."""

    def __call__(self, *args, **kwargs) -> SweepResult:
        return sweep(*args, **kwargs)


import sys  # noqa: E402

sys.modules[__name__].__class__ = _CallableModule
