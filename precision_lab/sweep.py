"""The sweep: from an FP32 model to a verified minimal FP32 plan.

The evaluation loop lives here and is the only code that touches a backend. Strategies (``search``) propose
plans; every evaluation is looked up in the journal first and appended to it when it finishes, so a sweep
interrupted at any point resumes without redoing finished work. Calibration ranges and FP32 reference
outputs are computed once and cached in ``OUT/cache``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path


from precision_lab.backends import Backend, resolve_backend
from precision_lab.calibration import CALIBRATION_METHODS, DEFAULT_PERCENTILE, calibrate
from precision_lab.console import fmt_value
from precision_lab.compare import METRICS, TASK_METRICS, Metric, OutputSlice, TaskMetric, get_metric
from precision_lab.criterion import Criterion
from precision_lab.data import (
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_EVAL_SAMPLES,
    DEFAULT_VERIFY_SAMPLES,
    Feed,
    make_dataset,
    shapes_from_feeds,
)
from precision_lab.verification import VerificationRound, generalization_notice, tighten_tolerance
from precision_lab.errors import EvaluationError, InputError, UnattainableToleranceError
from precision_lab.evaluation import PlanRunner, WorkerSpec
from precision_lab.executors import Executor, SerialExecutor, make_executor
from precision_lab.io import write_text_atomic
from precision_lab.journal import JOURNAL_FORMAT, JOURNAL_NAME, Journal
from precision_lab.lock import OutputLock
from precision_lab.onnx_io import save_model
from precision_lab.model import (
    PreparedModel,
    check_input_shape_names,
    constant_inputs,
    constant_inputs_to_json,
    input_specs,
    list_candidates,
    load_model,
    prepare_model,
)
from precision_lab.plan import plan_document
from precision_lab.progress import Progress
from precision_lab.outdir import claim_out_dir
from precision_lab.noise_floor import warn_noise_floor
from precision_lab.reference import ReferenceStore, build_reference
from precision_lab.qdq import RECIPES, QdqBuilder, resolve_op_types, tensors_to_calibrate
from precision_lab.report import write_report
from precision_lab.results import RESULT_NAME, Evaluation, LayerSensitivity, Plan, SweepResult
from precision_lab.search import (
    MinimalPlan,
    Outcome,
    drive,
    fast_plan_search,
    minimal_plan_search,
    rank_layers,
    sensitivity_plans,
)
from precision_lab.signals import layer_signals
from precision_lab.search.sensitivity import SENSITIVITY_MODES

__all__ = ["sweep", "DEFAULT_TOLERANCES", "default_out_dir"]

log = logging.getLogger("precision_lab")

DEFAULT_TOLERANCES: dict[str, float] = {"rel-l2": 0.05, "cosine": 0.999, "sqnr": 20.0, "top1": 0.99}
DEFAULT_MAX_DROPS: dict[str, float] = {"accuracy": 0.01}  # metrics judged by their drop from the FP32 score
DEFAULT_CRITERION = "aggregate"
MAX_VERIFY_ROUNDS = 4


def default_out_dir(model: str | os.PathLike) -> Path:
    """``reports/<model name>/`` below the working directory."""
    return Path("reports") / Path(model).stem


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _reference_outputs(
    prepared: PreparedModel, feeds: Sequence[Feed], cache_dir: Path, fingerprint: str
) -> ReferenceStore:
    """FP32 outputs of the original model on the evaluation feeds (ONNX Runtime CPU), computed once, kept on
    disk in ``cache_dir`` and read lazily."""
    from precision_lab.backends.onnxrt import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend()
    key = _hash(prepared.sha256, fingerprint, backend.identity(), sorted(s.name for s in prepared.inputs))[:32]

    def run(feeds, on_output):
        try:
            backend.run(prepared.path.read_bytes(), feeds, on_output)
        except EvaluationError as exc:  # e.g. external data: the prepared copy is loaded
            log.warning("the original model does not run in ONNX Runtime (%s); the FP32 reference is the prepared model instead", exc)
            backend.run(prepared.model, feeds, on_output)

    return build_reference(run, feeds, cache_dir / f"reference-{key}")


@dataclass
class _Evaluator:
    """Looks plans up in the journal, runs the missing ones (serially or in ``jobs`` worker processes) and
    appends each result to the journal as it finishes."""

    executor: Executor
    metric: Metric
    tolerance: float
    journal: Journal
    context_key: str
    order: Mapping[str, int]
    progress: Progress
    criterion: Criterion = Criterion("aggregate")
    ran: int = 0

    def key(self, plan: Iterable[str]) -> str:
        return _hash(self.context_key, sorted(plan))[:40]

    def outcome(self, record: Evaluation) -> Outcome:
        value = record.value(self.metric, self.criterion)
        return Outcome(frozenset(record.fp32_layers), value, self.metric.passes(value, self.tolerance), record.key)

    def record(self, plan: Iterable[str]) -> Evaluation:
        data = self.journal.get(self.key(plan))
        if data is None:
            raise KeyError(f"plan {sorted(plan)} was not evaluated")
        return Evaluation.from_json(data)

    def evaluate(self, plans: Sequence[frozenset[str]], phase: str) -> list[Outcome]:
        """Outcomes of ``plans``, evaluating those the journal does not hold (progress under ``phase``)."""
        todo = [self._ordered(plan) for plan in dict.fromkeys(plans) if self.key(plan) not in self.journal]
        if todo:
            bar = self.progress.bar(phase, len(todo))
            for fp32, fields in self.executor.run(todo):
                record = self._append(fp32, phase, fields)
                bar.update(1)
                bar.set_postfix_str(f"{self.metric.name}={fmt_value(record.value(self.metric, self.criterion), self.tolerance)}", refresh=False)
        return [self.outcome(self.record(plan)) for plan in plans]

    def close(self) -> None:
        self.progress.close()
        self.executor.close()

    def _ordered(self, plan: frozenset[str]) -> tuple[str, ...]:
        return tuple(sorted(plan, key=lambda n: self.order[n]))

    def _append(self, fp32: tuple[str, ...], phase: str, fields: dict) -> Evaluation:
        if fields["status"] != "ok":
            log.warning("evaluation of a plan with %d FP32 layers failed: %s", len(fp32), fields["error"])
        record = Evaluation(
            key=self.key(fp32), fp32_layers=fp32, phase=phase, sequence=len(self.journal.records), **fields
        )
        self.journal.append(record.to_json() | {"context": self.context_key, "format": JOURNAL_FORMAT})
        self.ran += 1
        return record


def _resolve_metric(
    metric: str, direction: str | None, tolerance: float | None, max_drop: float | None
) -> tuple[Metric, float, TaskMetric | None, float | None]:
    """The metric, its tolerance (NaN until the FP32 score is known when judged by ``max_drop``), the task metric
    that computes it (``None`` for built-in output metrics) and the allowed drop."""
    metric_obj = get_metric(metric, direction=direction)
    custom = TaskMetric(metric) if metric not in METRICS else None
    if max_drop is None and tolerance is None and metric in DEFAULT_MAX_DROPS:
        max_drop = DEFAULT_MAX_DROPS[metric]
    if max_drop is not None:
        if tolerance is not None:
            raise InputError("give either --tolerance or --max-drop, not both")
        if not metric_obj.higher_is_better:
            raise InputError(f"--max-drop is for higher-is-better metrics; '{metric}' is lower-is-better: use --tolerance")
        if not (0 <= max_drop < math.inf):
            raise InputError(f"--max-drop must be a finite value >= 0, got {max_drop}")
        if metric == "sqnr":
            raise InputError("--max-drop does not fit sqnr (the FP32 model's own sqnr is infinite); use --tolerance")
        return metric_obj, math.nan, custom, float(max_drop)
    if tolerance is None:
        if metric not in DEFAULT_TOLERANCES:
            raise InputError(f"metric '{metric}' has no default tolerance; pass --tolerance")
        tolerance = DEFAULT_TOLERANCES[metric]
    metric_obj.check_tolerance(float(tolerance))
    return metric_obj, float(tolerance), custom, None


def _search(
    evaluator: _Evaluator,
    names: Sequence[str],
    sensitivity: str,
    search: str,
    signals: Callable[[], dict[str, float]],
    max_drop: float | None = None,
) -> tuple[list[Outcome], dict[str, dict[str, float]], list[str], MinimalPlan]:
    """Baselines, the ranking (per-layer sensitivity, or one-pass signals for ``search="fast"``) and the
    minimal-plan search. Returns baselines, measured values by kind, the ranking and the search result.
    With ``max_drop``, the tolerance is set to the all-FP32 value minus ``max_drop`` first."""
    metric = evaluator.metric
    if max_drop is not None:
        (fp32_score,) = evaluator.evaluate([frozenset(names)], "baseline")
        evaluator.tolerance = fp32_score.value - max_drop
    tolerance = evaluator.tolerance
    baselines = evaluator.evaluate([frozenset(), frozenset(names)], "baseline")
    if not baselines[1].passed:
        raise UnattainableToleranceError(
            f"even the all-FP32 model fails the tolerance: {metric.name} = {baselines[1].value:.6g} vs "
            f"tolerance {tolerance:g}; no plan can meet it. Loosen --tolerance or check the metric"
        )
    values: dict[str, dict[str, float]] = {}
    if search == "fast":
        values["signal"] = signals()
        position = {name: i for i, name in enumerate(names)}
        ranking = sorted(names, key=lambda n: (-values["signal"][n], position[n]))
        strategy = fast_plan_search(ranking)
    else:
        plans = sensitivity_plans(names, sensitivity)
        outcomes = evaluator.evaluate([plan for _, plan in plans], f"sensitivity ({sensitivity})")
        for (kind, plan), outcome in zip(plans, outcomes):
            layer = next(iter(set(names) - plan)) if kind == "isolate" else next(iter(plan))
            values.setdefault(kind, {})[layer] = outcome.value
        ranking = rank_layers(
            names,
            isolate=values.get("isolate"),
            leave_one_out=values.get("leave-one-out"),
            higher_is_better=metric.higher_is_better,
        )
        strategy = minimal_plan_search(ranking)
    found = drive(strategy, lambda batch: evaluator.evaluate(batch, "search"))
    return baselines, values, ranking, found


def _isolate_worst_inputs(evaluator: _Evaluator, names: Sequence[str], labels: Sequence[str]) -> dict[str, str]:
    """Per layer, the evaluation sample on which the layer alone in INT8 (its ``isolate`` plan) errs most."""
    worst = {}
    for name in names:
        record = evaluator.record(frozenset(names) - {name})
        if record.status != "ok":
            continue
        values = [value for _, value in record.worst_per_sample(evaluator.metric)]
        if values:
            pick = min if evaluator.metric.higher_is_better else max
            worst[name] = labels[pick(range(len(values)), key=values.__getitem__)]
    return worst


def _resolve_backend(backend: str | Backend, options: Mapping[str, object] | None) -> tuple[Backend, str | None]:
    """The backend object; for ``auto`` the TensorRT ``options`` apply only if TensorRT is chosen."""
    if not isinstance(backend, str):
        return backend, None
    options = dict(options or {})
    if backend == "auto":
        chosen, reason = resolve_backend("auto", tensorrt=options)
    elif backend == "tensorrt":
        chosen, reason = resolve_backend("tensorrt", **options)
    else:
        chosen, reason = resolve_backend(backend)
    if reason:
        log.info("backend: %s (%s)", chosen.name, reason)
    return chosen, reason


def _check_options(
    *, recipe: str, sensitivity: str, calibration: str, percentile: float, seed: int, search: str
) -> None:
    if search not in ("full", "fast"):
        raise InputError(f"unknown search '{search}'; choose full or fast")
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe '{recipe}'; choose one of {', '.join(RECIPES)}")
    if sensitivity not in SENSITIVITY_MODES:
        raise InputError(f"unknown sensitivity '{sensitivity}'; choose one of {', '.join(SENSITIVITY_MODES)}")
    if calibration not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration '{calibration}'; choose one of {', '.join(CALIBRATION_METHODS)}")
    if not 0 < percentile <= 100:
        raise InputError(f"--percentile must be in (0, 100], got {percentile}")
    if not 0 <= seed < 2**32:
        raise InputError(f"--seed must be between 0 and 2**32 - 1, got {seed}")


def _check_out_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the outputs")
    try:
        (out / "cache").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {out} ({exc.strerror}); choose another --out") from exc
    return out


def _check_slices(prepared: PreparedModel, slices: Sequence[OutputSlice]) -> None:
    """Every ``--output-slice`` names an output and fits its (inferred) shape."""
    shapes = {vi.name: vi.type.tensor_type.shape.dim for vi in prepared.model.graph.output}
    for part in slices:
        if part.output not in shapes:
            raise InputError(
                f"--output-slice names output '{part.output}', but the model's outputs are {list(prepared.output_names)}"
            )
        dims = [d.dim_value if d.HasField("dim_value") else None for d in shapes[part.output]]
        if dims and not -len(dims) <= part.axis < len(dims):
            raise InputError(f"--output-slice axis {part.axis} does not exist: output '{part.output}' has rank {len(dims)}")
        if dims and dims[part.axis] is not None and part.stop > dims[part.axis]:
            raise InputError(
                f"--output-slice {part.output}:{part.axis}:{part.start}:{part.stop} does not fit: axis {part.axis} "
                f"of '{part.output}' has size {dims[part.axis]}"
            )


def _judged_outputs(
    prepared: PreparedModel, judge_outputs: Sequence[str], slices: Sequence[OutputSlice]
) -> tuple[str, ...] | None:
    """The outputs that decide the metric: ``judge_outputs`` plus those named by slices (``None``: all)."""
    if not judge_outputs:
        return None
    unknown = [name for name in judge_outputs if name not in prepared.output_names]
    if unknown:
        raise InputError(
            f"--judge-output names {unknown}, but the model's outputs are {list(prepared.output_names)}"
        )
    slice_outputs = [s.output for s in slices]
    return tuple(dict.fromkeys([*judge_outputs, *slice_outputs]))


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
    until_verified: bool = False,
    seed: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    output_slices: Sequence[str | OutputSlice] = (),
    judge_outputs: Sequence[str] = (),
    sensitivity: str = "isolate",
    backend: str | Backend = "auto",
    backend_options: Mapping[str, object] | None = None,
    resume: bool = True,
    progress: bool = True,
    search: str = "full",
    jobs: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
) -> SweepResult:
    """Find the smallest set of layers to keep FP32 so the model meets ``tolerance``; write the outputs.

    Defaults: metric ``rel-l2`` with tolerance 0.05 (``cosine`` 0.999, ``sqnr`` 20 dB, ``top1`` 0.99;
    ``accuracy`` a ``max_drop`` of 0.01 from the FP32 model's own score; other metrics need ``tolerance`` or
    ``max_drop``), criterion ``aggregate`` (the tolerance applies to the metric over the whole evaluation set;
    ``worst-sample`` or ``pNN`` apply it per sample), recipe ``trt``, ``max`` calibration; 16 calibration, 32
    evaluation and 16 verification samples (in proportion with fewer feeds); the final plan is judged on the
    verification feeds, and ``until_verified`` searches again at a stricter tolerance until it holds there;
    ``isolate`` sensitivity, backend ``auto`` (TensorRT when a working builder and a GPU exist, else ONNX
    Runtime; or a :class:`~precision_lab.backends.Backend` object; ``backend_options`` are the TensorRT
    options of :class:`~precision_lab.backends.tensorrt.TensorRTBackend`), synthetic data when neither ``data`` nor
    ``data_loader_script`` is given, labels (for ``accuracy`` and custom metrics that take them) from ``labels``
    or the loader script, every output judged (``judge_outputs`` names the ones that decide; an output named by
    an ``output_slices`` entry is judged too), output in ``reports/<model name>/``, resuming a journal found there.
    """
    started = time.perf_counter()
    _check_options(
        recipe=recipe, sensitivity=sensitivity, calibration=calibration, percentile=percentile, seed=seed, search=search
    )
    metric_obj, tolerance, custom, max_drop = _resolve_metric(metric, metric_direction, tolerance, max_drop)
    criterion_obj = Criterion.parse(criterion)
    slices = [s if isinstance(s, OutputSlice) else OutputSlice.parse(s) for s in output_slices]
    op_types = resolve_op_types(recipe, ops)
    out = _check_out_dir(Path(out_dir) if out_dir is not None else default_out_dir(model))
    lock = OutputLock(out).acquire()  # a second sweep on the same folder is refused
    try:

        original, model_sha256 = load_model(model)
        claim_out_dir(out, model, model_sha256)  # a folder of another model's sweep is refused
        specs = input_specs(original)
        del original
        check_input_shape_names(specs, input_shapes or {})
        dataset, warnings = make_dataset(
            specs,
            data_dir=data,
            data_loader_script=data_loader_script,
            calib_samples=calib_samples,
            eval_samples=eval_samples,
            verify_samples=verify_samples,
            seed=seed,
            input_shapes=input_shapes,
            labels_file=labels,
        )
        if custom is not None and custom.takes_labels and dataset.eval_targets is None:
            custom.evaluate([{}], [{}], None)  # raises the one-line "needs labels" error before any work
        shapes = dict(input_shapes or {}) or shapes_from_feeds(dataset.calib)
        constants = constant_inputs([*dataset.calib, *dataset.eval, *dataset.verify])
        prepared = prepare_model(model, input_shapes=shapes, constant_inputs=constants)
        _check_slices(prepared, slices)
        judged = _judged_outputs(prepared, judge_outputs, slices)
        candidates = list_candidates(prepared, op_types=op_types, exclude=exclude)
        if not candidates:
            raise InputError(
                f"the model has no candidate layers for recipe '{recipe}' (op types {', '.join(op_types)}"
                + (f", minus --exclude {list(exclude)}" if exclude else "")
                + "); try --recipe extended or name op types with --ops"
            )
        for warning in warnings:  # only once the inputs are known to be usable
            log.warning(warning)
        backend_obj, backend_reason = _resolve_backend(backend, backend_options)
        log.info("%s: %d candidate layers (recipe %s)", prepared.name, len(candidates), recipe)

        cache_dir = out / "cache"
        ranges = calibrate(
            prepared,
            dataset.calib,
            tensors=tensors_to_calibrate(prepared, candidates, recipe),
            fingerprint=dataset.calib_fingerprint,
            method=calibration,
            percentile=percentile,
            cache_dir=cache_dir,
        )
        reference = _reference_outputs(prepared, dataset.eval, cache_dir, dataset.eval_fingerprint)
        builder = QdqBuilder(prepared, candidates, ranges, recipe=recipe)
        backend_obj.setup(prepared=prepared, calib_feeds=dataset.calib, cache_dir=cache_dir)
        names = [c.name for c in candidates]

        def context(feeds_fingerprint: str) -> str:
            return _hash(
                prepared.prepared_sha256,
                recipe,
                names,
                ranges.key,
                feeds_fingerprint,
                backend_obj.identity(),
                [s.label for s in slices],
                metric if custom else None,
                *([sorted(judged)] if judged is not None else []),
                *([dataset.targets_fingerprint] if custom is not None and custom.takes_labels else []),
            )

        context_key = context(dataset.eval_fingerprint)
        journal = Journal(out / JOURNAL_NAME, resume=resume)
        if journal.outdated:
            raise InputError(
                f"{out / JOURNAL_NAME} was written by an earlier precision-lab and lacks per-sample results; "
                "run again with --no-resume (the old journal is kept as journal.jsonl.old)"
            )
        if journal.repaired:
            log.warning("the journal's last line was cut short (crash?); dropped it and kept everything before it")
        spec = WorkerSpec(
            prepared=prepared,
            candidates=tuple(candidates),
            ranges=ranges,
            recipe=recipe,
            backend=backend_obj,
            eval_feeds=tuple(dataset.eval),
            reference=reference,
            slices=tuple(slices),
            custom_spec=metric if custom else None,
            targets=dataset.eval_targets,
            judged=judged,
        )
        progress_bars = Progress(progress)
        executor_obj = make_executor(
            executor, jobs=jobs, spec=spec, runner=PlanRunner(builder, spec, custom=custom), ray_address=ray_address
        )
        evaluator = _Evaluator(
            executor=executor_obj,
            metric=metric_obj,
            tolerance=tolerance,
            journal=journal,
            context_key=context_key,
            order={c.name: c.index for c in candidates},
            progress=progress_bars,
            criterion=criterion_obj,
        )
        verifier = None
        if dataset.verify:
            verify_spec = replace(
                spec,
                eval_feeds=tuple(dataset.verify),
                reference=_reference_outputs(prepared, dataset.verify, cache_dir, dataset.verify_fingerprint),
                targets=dataset.verify_targets,
            )
            verifier = replace(
                evaluator,
                executor=SerialExecutor(PlanRunner(builder, verify_spec, custom=custom)),
                context_key=context(dataset.verify_fingerprint),
            )
        try:
            rounds: list[VerificationRound] = []
            search_tolerance = tolerance
            while True:
                evaluator.tolerance = search_tolerance
                baselines, sensitivity_values, ranking, found = _search(
                    evaluator,
                    names,
                    sensitivity,
                    search,
                    lambda: layer_signals(prepared, builder, candidates, dataset.eval, slices=slices),
                    max_drop=max_drop if not rounds else None,
                )
                if not rounds:
                    tolerance = search_tolerance = evaluator.tolerance  # with --max-drop: set from the FP32 score
                if verifier is None:
                    break
                verify_plan, verify_int8, verify_fp32 = verifier.evaluate(
                    [frozenset(found.fp32_layers), frozenset(), frozenset(names)],
                    "verification",
                )
                verify_tolerance = tolerance if max_drop is None else verify_fp32.value - max_drop
                verify_passed = metric_obj.passes(verify_plan.value, verify_tolerance)
                rounds.append(
                    VerificationRound(search_tolerance, tuple(found.fp32_layers), found.outcome.value,
                                      verify_plan.value, verify_passed)
                )
                if verify_passed or not until_verified or len(rounds) >= MAX_VERIFY_ROUNDS:
                    break
                if set(found.fp32_layers) == set(names):
                    break
                stricter = tighten_tolerance(metric_obj, search_tolerance, verify_tolerance, verify_plan.value)
                if not metric_obj.passes(baselines[1].value, stricter):
                    break  # even all-FP32 would fail a stricter search: keep this plan
                log.info(
                    "the plan fails verification (%s %.4g vs %.4g): searching again at tolerance %.4g",
                    metric_obj.name, verify_plan.value, verify_tolerance, stricter,
                )
                search_tolerance = stricter
            evaluator.progress.finish(metric_obj.name, found.outcome.value, tolerance)
        except UnattainableToleranceError:
            warn_noise_floor(metric_obj, tolerance, evaluator.record(frozenset(names)), reference, slices)
            raise
        finally:
            evaluator.close()
            if verifier is not None:
                verifier.executor.close()

        warn_noise_floor(metric_obj, tolerance, evaluator.record(frozenset(names)), reference, slices)
        rank_of = {name: i for i, name in enumerate(ranking)}
        fp32 = tuple(sorted(found.fp32_layers, key=rank_of.__getitem__))
        worst_inputs = _isolate_worst_inputs(evaluator, names, dataset.eval_labels) if "isolate" in sensitivity_values else {}
        layers = tuple(
            LayerSensitivity(
                name=c.name,
                op_type=c.op_type,
                index=c.index,
                rank=rank_of[c.name] + 1,
                isolate=sensitivity_values.get("isolate", {}).get(c.name),
                leave_one_out=sensitivity_values.get("leave-one-out", {}).get(c.name),
                signal=sensitivity_values.get("signal", {}).get(c.name),
                worst_input=worst_inputs.get(c.name),
            )
            for c in sorted(candidates, key=lambda c: rank_of[c.name])
        )
        plan = Plan(
            fp32_layers=fp32,
            int8_layers=tuple(n for n in names if n not in found.fp32_layers),
            value=found.outcome.value,
            passed=found.outcome.passed,
            key=found.outcome.key,
            evidence={
                name: {"key": o.key, "value": o.value, "passed": o.passed, "fp32_layers": sorted(o.fp32_layers)}
                for name, o in found.evidence.items()
            },
        )

        def records_of(context_key: str) -> tuple[Evaluation, ...]:
            chosen = (Evaluation.from_json(r) for r in journal.records.values() if r.get("context") == context_key)
            return tuple(sorted(chosen, key=lambda r: r.sequence))

        records = records_of(context_key)
        verification_records = records_of(verifier.context_key) if verifier is not None else ()
        by_key = {r.key: r for r in records}
        def interval(key: str) -> list[float] | None:
            found_interval = by_key[key].interval(metric_obj, criterion_obj)
            return None if found_interval is None else list(found_interval)

        confidence = {
            "level": 0.95,
            "plan": interval(plan.key),
            "all_int8": interval(baselines[0].key),
            "all_fp32": interval(baselines[1].key),
        }
        verification: dict = {"samples": len(dataset.verify)}
        if rounds:
            last = rounds[-1]
            verification |= {
                "value": last.verify_value,
                "passed": last.verify_passed,
                "tolerance": verify_tolerance,
                "all_int8": verify_int8.value,
                "all_fp32": verify_fp32.value,
                "key": verify_plan.key,
                "search_tolerance": last.search_tolerance,
                "until_verified": until_verified,
                "rounds": [r.to_json() for r in rounds],
            }
        notice = generalization_notice(
            metric=metric_obj,
            tolerance=tolerance,
            eval_samples=len(dataset.eval),
            verify_samples=len(dataset.verify),
            interval=confidence["plan"],
            verify_value=verification.get("value"),
            verify_passed=verification.get("passed"),
            rounds=rounds,
            until_verified=until_verified,
            criterion=criterion_obj.name,
        )
        if notice:
            log.warning(notice)
        result = SweepResult(
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
                "candidates": len(candidates),
            },
            backend=backend_obj.name,
            recipe=recipe,
            calibration={"method": calibration, "samples": len(dataset.calib), "percentile": percentile},
            data={
                "source": dataset.source,
                "synthetic": dataset.synthetic,
                "calib_samples": len(dataset.calib),
                "eval_samples": len(dataset.eval),
                "verify_samples": len(dataset.verify),
                "seed": seed,
                "labels": str(labels) if labels is not None else ("loader script" if dataset.eval_targets else None),
                "calib_feeds": list(dataset.calib_labels),
                "eval_feeds": list(dataset.eval_labels),
                "verify_feeds": list(dataset.verify_labels),
            },
            metric={
                "name": metric_obj.name,
                "direction": metric_obj.direction,
                "tolerance": tolerance,
                "criterion": criterion_obj.name,
                "max_drop": max_drop,
                "search_tolerance": search_tolerance,
            },
            output_slices=tuple(s.label for s in slices) + tuple(
                name for name in (judged or ()) if name not in {s.output for s in slices}
            ),
            sensitivity=sensitivity if search == "full" else "signals",
            search=search,
            status=found.status,
            plan=plan,
            baselines={"all_int8": baselines[0].value, "all_fp32": baselines[1].value},
            layer_results=layers,
            evaluation_records=records,
            wall_seconds=time.perf_counter() - started,
            out_dir=str(out),
            quantization={
                "recipe": recipe,
                "op_types": op_types,
                "exclude": list(exclude),
                "candidates": names,
                "ranges": ranges.amax,
                "ranges_key": ranges.key,
            },
            exports=_exports(backend_obj, out, prepared, fp32),
            backend_info={
                "identity": backend_obj.identity(),
                "mode": getattr(backend_obj, "mode", None),
                "reason": backend_reason,
            },
            verification=verification,
            verification_records=verification_records,
            confidence=confidence,
            notices=(notice,) if notice else (),
        )
        _write_outputs(result, builder, out, evaluations_run=evaluator.ran + (verifier.ran if verifier else 0))
        return result
    finally:
        lock.release()


def _exports(backend: Backend, out: Path, prepared: PreparedModel, fp32: Sequence[str]) -> dict[str, str]:
    """Build commands for the plan; TensorRT implicit sweeps add commands that pin its layers on the FP32 model
    (written to ``OUT/prepared.onnx``) with the sweep's calibration cache."""
    from precision_lab.plan import build_commands

    commands = build_commands(out / "plan.onnx")
    if getattr(backend, "mode", None) == "implicit":
        from precision_lab.backends.tensorrt import export_commands

        save_model(prepared.model, out / "prepared.onnx")
        layers = [name for names in backend.pinned_layer_names(fp32).values() for name in names]
        implicit = export_commands(
            out / "plan.onnx",
            mode="implicit",
            fp32_layers=layers,
            model_onnx=out / "prepared.onnx",
            calibration_cache=backend.calibration_cache_path,
        )
        commands.update({f"implicit_{key}": value for key, value in implicit.items()})
    return commands


def _write_outputs(result: SweepResult, builder: QdqBuilder, out: Path, *, evaluations_run: int) -> None:
    plan_model = builder.build(result.plan.fp32_layers)
    save_model(plan_model, out / "plan.onnx")  # with external data past the 2 GB protobuf limit
    write_text_atomic(out / "plan.json", json.dumps(plan_document(result, out / "plan.onnx"), indent=2) + "\n")
    write_text_atomic(out / "sensitivity.csv", result.layers.to_csv(index=False))
    write_text_atomic(out / RESULT_NAME, json.dumps(result.to_json(), indent=1) + "\n")
    write_report(result, out)
    total = len(result.evaluation_records) + len(result.verification_records)
    log.info("wrote %s (%d evaluations this run, %d in total)", out, evaluations_run, total)
