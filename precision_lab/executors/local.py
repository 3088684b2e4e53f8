"""Evaluations on this machine: one after another here (:class:`SerialExecutor`), or in spawned worker
processes (:class:`ProcessExecutor`, ``--jobs N``)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from dataclasses import replace

from precision_lab.early_stop import StopRule
from precision_lab.evaluation import PlanRunner, WorkerSpec
from precision_lab.precisions import PrecisionPlan
from precision_lab.results import Measurement

__all__ = ["SerialExecutor", "ProcessExecutor", "spec_for_workers", "MIN_BATCH_SECONDS"]

log = logging.getLogger("precision_lab")


class SerialExecutor:
    """Evaluations one after another in this process."""

    def __init__(self, runner: PlanRunner) -> None:
        self.runner = runner

    def prefetch(self, plans: Sequence[PrecisionPlan]) -> None:
        """Cache what ``plans`` read before they run (suffix evaluation's FP32 activations)."""
        self.runner.prefetch(plans)

    def run(
        self, plans: Sequence[PrecisionPlan], stop: StopRule | None = None
    ) -> Iterator[tuple[PrecisionPlan, Measurement]]:
        for plan in plans:
            yield plan, self.runner.run(plan, stop)

    def close(self) -> None:
        pass


_WORKER: PlanRunner | None = None


def _init_worker(spec: WorkerSpec) -> None:
    global _WORKER
    # Ctrl-C reaches the whole process group: the parent decides and terminates its workers, which must not
    # print a traceback each
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("precision_lab").setLevel(logging.ERROR)
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR  # a worker's stdout is the user's terminal
    _WORKER = PlanRunner.from_spec(spec)


def _work(plan: PrecisionPlan, stop: StopRule | None = None) -> Measurement:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.run(plan, stop)


def spec_for_workers(spec: WorkerSpec, jobs: int) -> WorkerSpec:
    """The spec each of ``jobs`` workers gets: with the backend as it ships to one of ``jobs`` workers (ONNX
    Runtime, for one, takes cores // jobs threads so workers do not oversubscribe the machine)."""
    return replace(spec, backend=spec.backend.for_workers(jobs))


def min_batch_seconds() -> float:
    """Serial seconds a batch must be expected to take before worker processes start for it
    (``PRECISION_LAB_MIN_BATCH_SECONDS``, default :data:`MIN_BATCH_SECONDS`)."""
    try:
        return float(os.environ.get("PRECISION_LAB_MIN_BATCH_SECONDS", MIN_BATCH_SECONDS))
    except ValueError:
        return MIN_BATCH_SECONDS


#: spawning workers (Python, ONNX Runtime, the Q/DQ builder) costs about 1.5 s each on a 2-core machine: below
#: this expected serial time, a batch is faster here than in worker processes
MIN_BATCH_SECONDS = 4.0


class ProcessExecutor:
    """``jobs`` spawned worker processes, started only for batches worth them.

    Plans run here until evaluations are measured; a batch then goes to the workers only when it is expected to
    take at least :func:`min_batch_seconds` serially (cheap evaluations are faster here than the workers'
    start-up). Once started, the workers take every batch of two plans or more."""

    def __init__(self, spec: WorkerSpec, jobs: int, runner: PlanRunner) -> None:
        self.spec = spec_for_workers(spec, jobs)
        self.jobs = jobs
        self.local = SerialExecutor(runner)
        self._pool: ProcessPoolExecutor | None = None
        self._seconds: list[float] = []
        self._told = False
        cores = os.cpu_count() or 1
        if jobs > cores:
            log.warning(
                "--jobs %d is more than the %d cores of this machine: workers will compete for them and the "
                "sweep can be slower than with --jobs %d", jobs, cores, cores
            )

    def _worth_workers(self, plans: Sequence[PrecisionPlan]) -> bool:
        if self._pool is not None:
            return len(plans) > 1
        if len(plans) < 2 or not self._seconds:
            return False
        each = sum(self._seconds) / len(self._seconds)
        if each * len(plans) >= min_batch_seconds():
            return True
        if not self._told:
            self._told = True
            log.info(
                "evaluations take %.2f s each: running them in this process, which is faster than starting "
                "%d workers; workers start for a batch expected to take %.0f s or more",
                each, self.jobs, min_batch_seconds(),
            )
        return False

    def prefetch(self, plans: Sequence[PrecisionPlan]) -> None:
        """Cache what ``plans`` read, here, before workers (which share the cache folder) run them."""
        self.local.prefetch(plans)

    def run(
        self, plans: Sequence[PrecisionPlan], stop: StopRule | None = None
    ) -> Iterator[tuple[PrecisionPlan, Measurement]]:
        if not self._worth_workers(plans):
            for plan, measurement in self.local.run(plans, stop):
                self._seconds.append(measurement.seconds.get("total", 0.0))
                yield plan, measurement
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.spec,),
            )
        futures = {self._pool.submit(_work, plan, stop): plan for plan in plans}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        """Stop the workers at once: after a finished sweep they are idle, after Ctrl-C or SIGTERM their
        evaluations are not wanted (the journal holds every finished one)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=2)
        pool.shutdown(wait=True)  # joins the pool's management thread and frees its queues and semaphores

