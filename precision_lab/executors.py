"""Where evaluations run: here (serial), in local worker processes (``jobs`` > 1), or on a Ray cluster.

An executor takes the plans of one batch and yields ``(plan, fields)`` as each evaluation finishes; the sweep
writes the journal. Workers get the :class:`~precision_lab.evaluation.WorkerSpec` (model, ranges, data,
reference) once and build their own :class:`~precision_lab.evaluation.PlanRunner`, so results are identical
to a serial run.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Protocol

from precision_lab.errors import InputError
from precision_lab.evaluation import PlanRunner, WorkerSpec

__all__ = ["Executor", "SerialExecutor", "ProcessExecutor", "make_executor", "EXECUTORS"]

EXECUTORS = ("local", "ray")
Plan = tuple[str, ...]


class Executor(Protocol):
    def run(self, plans: Sequence[Plan]) -> Iterator[tuple[Plan, dict]]:
        """Evaluate ``plans``; yield each ``(plan, fields)`` as it finishes (any order)."""
        ...

    def close(self) -> None:
        ...


class SerialExecutor:
    """Evaluations one after another in this process."""

    def __init__(self, runner: PlanRunner) -> None:
        self.runner = runner

    def run(self, plans: Sequence[Plan]) -> Iterator[tuple[Plan, dict]]:
        for plan in plans:
            yield plan, self.runner.run(plan)

    def close(self) -> None:
        pass


_WORKER: PlanRunner | None = None


def _init_worker(spec: WorkerSpec) -> None:
    global _WORKER
    logging.getLogger("precision_lab").setLevel(logging.ERROR)
    _WORKER = PlanRunner.from_spec(spec)


def _work(plan: Plan) -> dict:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.run(plan)


def backend_for_workers(spec: WorkerSpec, jobs: int) -> WorkerSpec:
    """The spec each of ``jobs`` workers gets: ONNX Runtime with cores // jobs threads, so workers do not
    oversubscribe the machine; other backends are sent as they are."""
    from dataclasses import replace

    from precision_lab.backends.onnxrt import OnnxRuntimeBackend

    backend = spec.backend
    if isinstance(backend, OnnxRuntimeBackend):
        threads = max(1, (os.cpu_count() or 1) // jobs)
        backend = OnnxRuntimeBackend(providers=backend.providers, threads=threads, optimize=backend.optimize)
    return replace(spec, backend=backend)


class ProcessExecutor:
    """``jobs`` spawned worker processes; a batch of one plan runs here (no process start-up for it)."""

    def __init__(self, spec: WorkerSpec, jobs: int, runner: PlanRunner) -> None:
        self.spec = backend_for_workers(spec, jobs)
        self.jobs = jobs
        self.local = SerialExecutor(runner)
        self._pool: ProcessPoolExecutor | None = None

    def run(self, plans: Sequence[Plan]) -> Iterator[tuple[Plan, dict]]:
        if len(plans) == 1:
            yield from self.local.run(plans)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.spec,),
            )
        futures = {self._pool.submit(_work, plan): plan for plan in plans}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def make_executor(
    kind: str = "local", *, jobs: int = 1, spec: WorkerSpec, runner: PlanRunner, ray_address: str | None = None
) -> Executor:
    """``local`` (default): serial for ``jobs`` 1, else worker processes; ``ray``: Ray tasks (extra ``ray``)."""
    if not 1 <= jobs <= 256:
        raise InputError(f"--jobs must be between 1 and 256, got {jobs}")
    if kind == "local":
        return SerialExecutor(runner) if jobs == 1 else ProcessExecutor(spec, jobs, runner)
    if kind == "ray":
        from precision_lab.executors_ray import RayExecutor

        return RayExecutor(spec, jobs=jobs, address=ray_address, runner=runner)
    raise InputError(f"unknown executor '{kind}'; choose one of {', '.join(EXECUTORS)}")
