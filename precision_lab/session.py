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
from precision_lab.data import DataSet, Feed, make_dataset, shapes_from_feeds
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

__all__ = ["Session", "open_session", "reference_outputs"]

log = logging.getLogger("precision_lab")


@dataclass
class Session:
    """A sweep's set-up: data, prepared model, candidates, backend, ranges, Q/DQ builder and evaluators
    (``verifier`` is ``None`` when there are no verification feeds)."""

    out: Path
    dataset: DataSet
    prepared: PreparedModel
    candidates: list[Candidate]
    backend: Backend
    backend_reason: str | None
    ranges: Ranges
    builder: QdqBuilder
    reference: ReferenceStore
    slices: tuple[OutputSlice, ...]
    judged: tuple[str, ...] | None
    setting: MetricSetting
    evaluator: Evaluator
    verifier: Evaluator | None

    @property
    def names(self) -> list[str]:
        """The candidate layers in graph order."""
        return [c.name for c in self.candidates]

    @property
    def evaluations_run(self) -> int:
        return self.evaluator.ran + (self.verifier.ran if self.verifier else 0)

    def close(self) -> None:
        self.evaluator.close()
        if self.verifier is not None:
            self.verifier.executor.close()


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
    candidates = list_candidates(prepared, op_types=op_types, exclude=exclude)
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
    ranges = calibrate(
        prepared,
        dataset.calib,
        tensors=tensors_to_calibrate(prepared, candidates, recipe),
        fingerprint=dataset.calib_fingerprint,
        method=options.calibration,
        percentile=options.percentile,
        cache_dir=cache_dir,
    )
    reference = reference_outputs(prepared, dataset.eval, cache_dir, dataset.eval_fingerprint)
    builder = QdqBuilder(prepared, candidates, ranges, recipe=recipe)
    backend_obj.setup(prepared=prepared, calib_feeds=dataset.calib, cache_dir=cache_dir)
    names = [c.name for c in candidates]
    metric = setting.metric.name

    def context(feeds_fingerprint: str) -> str:
        """Everything that affects an evaluation's result besides its plan (binary plans' keys hash it)."""
        return stable_hash(
            prepared.prepared_sha256,
            recipe,
            names,
            ranges.key,
            feeds_fingerprint,
            backend_obj.identity(),
            [s.label for s in slices],
            metric if task else None,
            *([sorted(judged)] if judged is not None else []),
            *([dataset.targets_fingerprint] if task is not None and task.takes_labels else []),
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
        batch=options.batch,
        suffix_cache=str(cache_dir / f"activations-{context(dataset.eval_fingerprint)[:32]}") if options.suffix else None,
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
    verifier = None
    if dataset.verify:
        verify_spec = replace(
            spec,
            eval_feeds=tuple(dataset.verify),
            reference=reference_outputs(prepared, dataset.verify, cache_dir, dataset.verify_fingerprint),
            targets=dataset.verify_targets,
            suffix_cache=None,  # three plans, each a full number: not worth an FP32 pass of their own
        )
        verifier = replace(
            evaluator,
            executor=SerialExecutor(PlanRunner(builder, verify_spec, custom=task)),
            context_key=context(dataset.verify_fingerprint),
        )
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
    )
