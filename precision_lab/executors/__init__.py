"""Where evaluations run: here (serial), in local worker processes (``jobs`` > 1), or on Ray actors.

An executor takes the plans of one batch and yields ``(plan, measurement)`` as each evaluation finishes; the
sweep writes the journal. Workers get the :class:`~precision_lab.evaluation.WorkerSpec` (model, ranges, data,
reference) once and build their own :class:`~precision_lab.evaluation.PlanRunner`, so results are identical
to a serial run. Executors are looked up by name in :data:`EXECUTORS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from precision_lab.early_stop import StopRule
from precision_lab.errors import InputError
from precision_lab.evaluation import PlanRunner, WorkerSpec
from precision_lab.executors.local import ProcessExecutor, SerialExecutor
from precision_lab.precisions import PrecisionPlan
from precision_lab.results import Measurement

__all__ = ["Executor", "SerialExecutor", "ProcessExecutor", "make_executor", "EXECUTORS"]


class Executor(Protocol):
    def run(
        self, plans: Sequence[PrecisionPlan], stop: StopRule | None = None
    ) -> Iterator[tuple[PrecisionPlan, Measurement]]:
        """Evaluate ``plans``; yield each ``(plan, measurement)`` as it finishes (any order). With ``stop``, an
        evaluation may stop once it certainly fails (:mod:`precision_lab.early_stop`)."""
        ...

    def close(self) -> None:
        ...


def _local(spec: WorkerSpec, runner: PlanRunner, jobs: int, address: str | None) -> Executor:
    return SerialExecutor(runner) if jobs == 1 else ProcessExecutor(spec, jobs, runner)


def _ray(spec: WorkerSpec, runner: PlanRunner, jobs: int, address: str | None) -> Executor:
    from precision_lab.executors.ray import RayExecutor  # needs the `ray` extra: imported only when chosen

    return RayExecutor(spec, jobs=jobs, address=address, runner=runner)


EXECUTORS: dict[str, Callable[[WorkerSpec, PlanRunner, int, str | None], Executor]] = {"local": _local, "ray": _ray}


def make_executor(
    kind: str = "local", *, jobs: int = 1, spec: WorkerSpec, runner: PlanRunner, ray_address: str | None = None
) -> Executor:
    """``local`` (default): serial for ``jobs`` 1, else worker processes; ``ray``: Ray actors (extra ``ray``)."""
    if not 1 <= jobs <= 256:
        raise InputError(f"--jobs must be between 1 and 256, got {jobs}")
    if kind not in EXECUTORS:
        raise InputError(f"unknown executor '{kind}'; choose one of {', '.join(EXECUTORS)}")
    return EXECUTORS[kind](spec, runner, jobs, ray_address)
