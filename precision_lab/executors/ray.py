"""Evaluations on Ray actors: a local Ray instance (default) or a Ray cluster (``--ray-address``).

The :class:`~precision_lab.evaluation.WorkerSpec` is put into Ray's object store once; each of ``jobs`` actors
fetches it once and builds its own :class:`~precision_lab.evaluation.PlanRunner` (Q/DQ builder, quantized
weights) in its constructor, then evaluates plans sent to it. Results are the same fields a serial run gives.
With the TensorRT backend every actor asks Ray for a GPU (``num_gpus=1``), so on a multi-GPU cluster each
actor builds its engines on its own GPU. Needs the ``ray`` extra: ``pip install 'precision-lab[ray]'``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from precision_lab._optional import require
from precision_lab.errors import InputError, MissingDependencyError, PrecisionLabError
from precision_lab.evaluation import PlanRunner, WorkerSpec
from precision_lab.executors.local import SerialExecutor, spec_for_workers
from precision_lab.precisions import PrecisionPlan
from precision_lab.results import Measurement

__all__ = ["RayExecutor"]

log = logging.getLogger("precision_lab")

IN_FLIGHT_PER_ACTOR = 2  # one running, one queued: the actor never waits for the driver between plans
CONNECT_CHECK_SECONDS = 5.0


class _PlanActor:
    """One Ray worker: builds its :class:`PlanRunner` once from the shared spec, then evaluates plans."""

    def __init__(self, spec: WorkerSpec, driver_node: str) -> None:
        logging.getLogger("precision_lab").setLevel(logging.ERROR)
        self.error: PrecisionLabError | None = None
        try:
            self.runner = PlanRunner.from_spec(_node_local_caches(spec, driver_node))
        except PrecisionLabError as exc:  # e.g. a custom metric file missing on this node: re-raised by run(),
            self.error = exc  # where Ray keeps the exception (a failed constructor only gives "actor died")

    def ready(self) -> bool:
        return True

    def run(self, plan: PrecisionPlan, stop=None) -> Measurement:
        if self.error is not None:
            raise self.error
        return self.runner.run(plan, stop)


def _node_local_caches(spec: WorkerSpec, driver_node: str) -> WorkerSpec:
    """An actor on another node than the sweep cannot use the sweep's cache folder (a driver path): the spec
    with the backend's caches (e.g. TensorRT timing and calibration caches) moved to that node's temp folder."""
    import ray

    cache_dir = spec.backend.cache_dir
    if cache_dir is None or ray.get_runtime_context().get_node_id() == driver_node:
        return spec  # same machine as the sweep: share its cache folder, as --jobs workers do
    import hashlib
    from dataclasses import replace

    local = Path(tempfile.gettempdir()) / "precision-lab-ray" / hashlib.sha256(str(cache_dir).encode()).hexdigest()[:16]
    local.mkdir(parents=True, exist_ok=True)
    return replace(spec, backend=spec.backend.with_cache_dir(local))


def _check_reachable(address: str) -> None:
    """A ``host:port`` / ``ray://host:port`` address that refuses TCP is reported at once (``ray.init`` would
    retry for minutes)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return  # "auto", "local" or something Ray itself will judge
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_CHECK_SECONDS):
            pass
    except OSError as exc:
        raise InputError(_connect_error(address, f"{host}:{port} is unreachable: {exc.strerror or exc}")) from exc


def _connect_error(address: str, why: str) -> str:
    return (
        f"cannot connect to the Ray cluster at '{address}' ({why}); start one with 'ray start --head' and pass "
        "its address (e.g. --ray-address auto on a cluster node, or ray://HEAD:10001), or omit --ray-address "
        "for a local Ray instance"
    )


class RayExecutor:
    """``jobs`` Ray actors on a local Ray instance (``address`` None) or the cluster at ``address``
    (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``). A batch of one plan runs here with ``runner``."""

    def __init__(self, spec: WorkerSpec, *, jobs: int, address: str | None = None, runner: PlanRunner) -> None:
        ray = require("ray", "ray")
        self.ray = ray
        self.jobs = max(1, int(jobs))
        self.address = address or None
        self.started_ray = False
        self._actors: list = []
        self._connect()  # first: a wrong address is reported before anything else
        self.local = SerialExecutor(runner)
        self.spec = spec_for_workers(spec, self.jobs)  # ONNX Runtime: cores // jobs threads per actor
        self._gpu = spec.backend.needs_gpu_per_worker
        self._resources = self._actor_resources()

    # --- connecting --------------------------------------------------------------------------------------

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():  # e.g. a notebook that called ray.init() itself: use it, leave it running
            log.info("using the Ray instance this process is already connected to")
            return
        if self.address is None:
            ray.init(
                address="local",  # a new local instance, even if RAY_ADDRESS is set (use --ray-address auto)
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
                logging_level=logging.WARNING,
            )
            self.started_ray = True
            return
        if self.address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
            raise MissingDependencyError(
                f"--ray-address '{self.address}' uses Ray Client, which needs grpcio; "
                "install it with: pip install 'ray[client]'"
            )
        _check_reachable(self.address)
        try:
            ray.init(address=self.address, log_to_driver=False, ignore_reinit_error=True, logging_level=logging.WARNING)
        except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(_connect_error(self.address, why)) from exc
        self.started_ray = True  # connected by us: disconnect in close() (a cluster keeps running)

    def _actor_resources(self) -> dict:
        """``num_cpus`` (and ``num_gpus`` for TensorRT) per actor: one each, or shares if the cluster has fewer
        CPUs/GPUs than ``jobs`` (Ray would otherwise leave the extra actors pending forever)."""
        total = self.ray.cluster_resources()
        cpus = float(total.get("CPU", 0)) or 1.0
        resources = {"num_cpus": 1.0 if self.jobs <= cpus else math.floor(cpus / self.jobs * 1e4) / 1e4}
        if self._gpu:
            gpus = int(total.get("GPU", 0))
            where = f"the Ray cluster at '{self.address}'" if self.address else "the local Ray instance"
            if gpus == 0:
                self.close()
                raise InputError(
                    f"the TensorRT backend needs a GPU per Ray worker but {where} has none; "
                    "add GPU nodes or use --backend onnxrt"
                )
            share = math.ceil(self.jobs / gpus)
            if share > 1:
                log.warning("%d Ray workers on %d GPUs: %d workers share each GPU", self.jobs, gpus, share)
            resources["num_gpus"] = 1.0 / share
        return resources

    def _start_actors(self) -> None:
        ray = self.ray
        spec_ref = ray.put(self.spec)  # shipped once; every actor reads the same object
        driver_node = ray.get_runtime_context().get_node_id()
        actor_class = ray.remote(max_restarts=0, max_task_retries=0)(_PlanActor)
        self._actors = [actor_class.options(**self._resources).remote(spec_ref, driver_node) for _ in range(self.jobs)]
        log.info("started %d Ray workers (%s each)", self.jobs, self._resources)

    # --- evaluating --------------------------------------------------------------------------------------

    def run(self, plans: Sequence[PrecisionPlan], stop=None) -> Iterator[tuple[PrecisionPlan, Measurement]]:
        if len(plans) == 1:
            yield from self.local.run(plans, stop)
            return
        ray = self.ray
        if not self._actors:
            self._start_actors()
        todo = list(plans)[::-1]
        pending: dict = {}  # ref -> (plan, actor)
        idle = [actor for _ in range(IN_FLIGHT_PER_ACTOR) for actor in self._actors]
        try:
            while todo or pending:
                while todo and idle:
                    plan, actor = todo.pop(), idle.pop(0)
                    pending[actor.run.remote(plan, stop)] = (plan, actor)
                (done,), _ = ray.wait(list(pending), num_returns=1)
                plan, actor = pending.pop(done)
                fields = self._result(done)
                idle.append(actor)
                yield plan, fields
        finally:
            for ref in pending:  # the consumer stopped early (an error): drop the queued evaluations
                try:
                    ray.cancel(ref)
                except Exception as exc:  # noqa: BLE001 - best effort; close() kills the actors anyway
                    log.debug("could not cancel a Ray evaluation: %s", exc)

    def _result(self, ref) -> Measurement:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, PrecisionLabError):
                raise cause from exc  # one line in the CLI, as in a serial run
            raise

    def close(self) -> None:
        ray = self.ray
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception as exc:  # noqa: BLE001 - already gone
                log.debug("could not kill a Ray worker: %s", exc)
        self._actors = []
        if self.started_ray and ray.is_initialized():
            ray.shutdown()
        self.started_ray = False
