"""Everything a sweep sets up before its first evaluation, in one value: :class:`Session`.

:func:`open_session` loads and splits the data, prepares the model, lists the candidates, picks the backend,
calibrates once, computes the FP32 references once, opens the journal and builds the two evaluators: one on the
evaluation feeds the search reads, one on the verification feeds it never reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from precision_lab.backends import Backend, reference_backend, resolve_backend
from precision_lab.calibration import Ranges, calibrate
from precision_lab.compare import OutputSlice
from precision_lab.criterion import Criterion
from precision_lab.data import DataSet, Feed, feeds_fingerprint, make_dataset, shapes_from_feeds
from precision_lab.errors import EvaluationError, InputError
from precision_lab.evaluation import PlanRunner, WorkerSpec
from precision_lab.evaluator import Evaluator, stable_hash
from precision_lab.executors import SerialExecutor, make_executor
from precision_lab.journal import JOURNAL_NAME, Journal
from precision_lab.model import (
    Candidate,
    PreparedModel,
    check_input_shape_names,
    constant_inputs,
    input_specs,
    list_candidates,
    load_model,
    prepare_model,
)
from precision_lab.outdir import claim_out_dir
from precision_lab.progress import Progress
from precision_lab.qdq import QdqBuilder, tensors_to_calibrate
from precision_lab.reference import ReferenceStore, build_reference
from precision_lab.settings import MetricSetting, SweepOptions, check_slices, judged_outputs
from precision_lab.modelopt_recipe import modelopt_candidates
from precision_lab.user_qdq import UserQdqBuilder, load_user_qdq, user_qdq_ranges

__all__ = ["Session", "open_session", "reference_outputs"]

log = logging.getLogger("precision_lab")


@dataclass
class Session:
    """A sweep's set-up: data, prepared model, candidates, backend, ranges, Q/DQ builder and evaluators
    (``verifier`` judges plans on the verification feeds, ``unjudged_verifier`` on those and the calibration feeds
    together; both are ``None`` when there are no verification feeds)."""

    out: Path
    dataset: DataSet
    prepared: PreparedModel
    candidates: list[Candidate]
    backend: Backend
    backend_reason: str | None
    ranges: Ranges
    builder: QdqBuilder | UserQdqBuilder
    reference: ReferenceStore
    slices: tuple[OutputSlice, ...]
    judged: tuple[str, ...] | None
    setting: MetricSetting
    evaluator: Evaluator
    verifier: Evaluator | None
    unjudged_verifier: Evaluator | None = None

    @property
    def names(self) -> list[str]:
        """The candidate layers in graph order."""
        return [c.name for c in self.candidates]

    @property
    def three_level(self) -> bool:
        """Whether plans may run layers FP16 (``--precisions int8,fp16,fp32``)."""
        return self.builder.with_fp16

    @property
    def everything_fp32(self):
        """The plan that keeps every candidate FP32, and in a three-level sweep every float node: the FP32
        model."""
        from precision_lab.precisions import PrecisionPlan

        return PrecisionPlan.fp32([*self.names, *self.builder.fp32_candidates])

    def fp16_closeness(self) -> dict[str, float]:
        """Each float node's calibrated ``max |x| / 65504`` over the float tensors it reads and writes (three-level
        sweeps calibrate them all)."""
        from precision_lab.fp16 import FP16_MAX

        graph = self.prepared.model.graph
        wanted = set(self.builder.fp32_candidates)
        closeness = {}
        for node in graph.node:
            if node.name in wanted:
                amaxes = [self.ranges.amax[t] for t in [*node.input, *node.output] if t in self.ranges.amax]
                closeness[node.name] = max(amaxes, default=0.0) / FP16_MAX
        return closeness

    @property
    def evaluations_run(self) -> int:
        return self.evaluator.ran + sum(v.ran for v in (self.verifier, self.unjudged_verifier) if v is not None)

    def close(self) -> None:
        self.evaluator.close()
        for verifier in (self.verifier, self.unjudged_verifier):
            if verifier is not None:
                verifier.executor.close()


def reference_outputs(prepared: PreparedModel, feeds: Sequence[Feed], cache_dir: Path, fingerprint: str) -> ReferenceStore:
    """FP32 outputs of the original model on ``feeds`` (ONNX Runtime CPU), computed once, kept on disk in
    ``cache_dir`` and read lazily."""
    backend = reference_backend()
    key = stable_hash(prepared.sha256, fingerprint, backend.identity(), sorted(s.name for s in prepared.inputs))[:32]

    def run(feeds, on_output):
        try:
            backend.run(prepared.path.read_bytes(), feeds, on_output)
        except EvaluationError as exc:  # e.g. external data: the prepared copy is loaded
            log.warning(
                "the original model does not run in ONNX Runtime (%s); the FP32 reference is the prepared model instead",
                exc,
            )
            backend.run(prepared.model, feeds, on_output)

    return build_reference(run, feeds, cache_dir / f"reference-{key}")


def _tensors_to_calibrate(
    prepared: PreparedModel, candidates: Sequence[Candidate], recipe: str, precisions: Sequence[str]
) -> list[str]:
    """The tensors Q/DQ may read, and with FP16 among ``precisions`` every float activation too (their ranges rank
    the nodes for the FP32 level)."""
    tensors = tensors_to_calibrate(prepared, candidates, recipe)
    if "fp16" not in precisions:
        return tensors
    from precision_lab.fp16 import float_tensors

    initializers = {init.name for init in prepared.model.graph.initializer}
    produced = {name for node in prepared.model.graph.node for name in node.output}
    inputs = {vi.name for vi in prepared.model.graph.input}
    activations = (float_tensors(prepared.model) - initializers) & (produced | inputs)
    return sorted(set(tensors) | activations)


def open_session(
    model: str | os.PathLike,
    out: Path,
    options: SweepOptions,
    *,
    setting: MetricSetting,
    criterion: Criterion,
    slices: Sequence[OutputSlice],
    op_types: Sequence[str],
) -> Session:
    """Set a sweep up (see the module docstring). Raises one-line errors for unusable inputs."""
    original, model_sha256 = load_model(model)
    claim_out_dir(out, model, model_sha256)  # a folder of another model's sweep is refused
    specs = input_specs(original)
    del original
    check_input_shape_names(specs, options.input_shapes or {})
    dataset, warnings = make_dataset(
        specs,
        data_dir=options.data,
        data_loader_script=options.data_loader_script,
        calib_samples=options.calib_samples,
        eval_samples=options.eval_samples,
        verify_samples=options.verify_samples,
        seed=options.seed,
        input_shapes=options.input_shapes,
        labels_file=options.labels,
    )
    task = setting.task
    if task is not None and task.takes_labels and dataset.eval_targets is None:
        task.evaluate([{}], [{}], None)  # raises the one-line "needs labels" error before any work
    shapes = dict(options.input_shapes or {}) or shapes_from_feeds(dataset.calib)
    constants = constant_inputs([*dataset.calib, *dataset.eval, *dataset.verify])
    prepared = prepare_model(model, input_shapes=shapes, constant_inputs=constants)
    check_slices(prepared, slices)
    judged = judged_outputs(prepared, options.judge_outputs, slices)
    recipe, exclude = options.recipe, options.exclude
    if options.qdq_model is not None and (options.ops or exclude or recipe != "trt"):
        raise InputError("--qdq-model takes its candidates from the Q/DQ model; drop --recipe, --ops and --exclude")
    user_qdq = load_user_qdq(options.qdq_model, prepared.path) if options.qdq_model is not None else None
    if user_qdq is not None:  # --qdq-model: the user's quantized nodes are the candidates
        candidates = user_qdq.candidates
        if not candidates:
            raise InputError(f"--qdq-model {user_qdq.path.name} has no node that reads a DequantizeLinear output")
    else:
        candidates = list_candidates(prepared, op_types=op_types, exclude=exclude)
        if recipe == "modelopt":  # ModelOpt's candidate filter (issue 14)
            candidates = modelopt_candidates(prepared, candidates)
    if not candidates:
        raise InputError(
            f"the model has no candidate layers for recipe '{recipe}' (op types {', '.join(op_types)}"
            + (f", minus --exclude {list(exclude)}" if exclude else "")
            + "); try --recipe extended or name op types with --ops"
        )
    for warning in warnings:  # only once the inputs are known to be usable
        log.warning(warning)
    backend = options.backend
    if isinstance(backend, str):
        backend_obj, reason = resolve_backend(backend, options.backend_options)
        if reason:
            log.info("backend: %s (%s)", backend_obj.name, reason)
    else:
        backend_obj, reason = backend, None
    log.info("%s: %d candidate layers (recipe %s)", prepared.name, len(candidates), recipe)

    cache_dir = out / "cache"
    ranges = user_qdq_ranges(user_qdq) if user_qdq is not None else calibrate(
        prepared,
        dataset.calib,
        tensors=_tensors_to_calibrate(prepared, candidates, recipe, options.precisions),
        fingerprint=dataset.calib_fingerprint,
        method=options.calibration,
        percentile=options.percentile,
        cache_dir=cache_dir,
    )
    reference = reference_outputs(prepared, dataset.eval, cache_dir, dataset.eval_fingerprint)
    builder = (
        UserQdqBuilder(user_qdq) if user_qdq is not None
        else QdqBuilder(prepared, candidates, ranges, recipe=recipe, precisions=options.precisions)
    )
    backend_obj.setup(prepared=prepared, calib_feeds=dataset.calib, cache_dir=cache_dir)
    names = [c.name for c in candidates]
    metric = setting.metric.name

    def context(fingerprint: str) -> str:
        """Everything that affects an evaluation's result besides its plan (binary plans' keys hash it)."""
        return stable_hash(
            prepared.prepared_sha256,
            recipe,
            names,
            ranges.key,
            fingerprint,
            backend_obj.identity(),
            [s.label for s in slices],
            metric if task else None,
            *([sorted(judged)] if judged is not None else []),
            *([dataset.targets_fingerprint] if task is not None and task.takes_labels else []),
            *([list(options.precisions)] if "fp16" in options.precisions else []),  # FP16 emulation changes values
        )

    journal = Journal(out / JOURNAL_NAME, resume=options.resume)
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
        custom_spec=metric if task else None,
        targets=dataset.eval_targets,
        judged=judged,
        precisions=tuple(options.precisions),
        user_qdq=user_qdq,
        batch=options.batch,
        # suffix evaluation needs every node upstream of the cut to compute the FP32 reference: not so when the
        # other nodes run FP16 (three levels), nor on a user's Q/DQ model (its own placement)
        suffix_cache=(
            str(cache_dir / f"activations-{context(dataset.eval_fingerprint)[:32]}")
            if options.suffix and "fp16" not in options.precisions and user_qdq is None else None
        ),
    )
    evaluator = Evaluator(
        executor=make_executor(
            options.executor, jobs=options.jobs, spec=spec, runner=PlanRunner(builder, spec, custom=task),
            ray_address=options.ray_address,
        ),
        metric=setting.metric,
        tolerance=setting.tolerance,
        journal=journal,
        context_key=context(dataset.eval_fingerprint),
        order={c.name: c.index for c in candidates},
        progress=Progress(options.progress),
        criterion=criterion,
        early_stop=options.early_stop,
    )
    def verifier_on(feeds: tuple[Feed, ...], targets: tuple | None, fingerprint: str) -> Evaluator:
        verify_spec = replace(
            spec,
            eval_feeds=feeds,
            reference=reference_outputs(prepared, feeds, cache_dir, fingerprint),
            targets=targets,
            suffix_cache=None,  # a few plans, each a full number: not worth an FP32 pass of their own
        )
        return replace(
            evaluator,
            executor=SerialExecutor(PlanRunner(builder, verify_spec, custom=task)),
            context_key=context(fingerprint),
        )

    verifier = unjudged_verifier = None
    if dataset.verify:
        verifier = verifier_on(dataset.verify, dataset.verify_targets, dataset.verify_fingerprint)
        unjudged_verifier = verifier_on(dataset.unjudged, dataset.unjudged_targets, feeds_fingerprint(dataset.unjudged))
    return Session(
        out=out,
        dataset=dataset,
        prepared=prepared,
        candidates=candidates,
        backend=backend_obj,
        backend_reason=reason,
        ranges=ranges,
        builder=builder,
        reference=reference,
        slices=tuple(slices),
        judged=judged,
        setting=setting,
        evaluator=evaluator,
        verifier=verifier,
        unjudged_verifier=unjudged_verifier,
    )
