"""What every backend offers the sweep: the :class:`Backend` interface.

A backend is set up once per sweep (:meth:`Backend.setup`: the prepared FP32 model, the calibration feeds and a
cache folder), then runs one :class:`PlanBuild` per evaluation. Explicit-quantization backends use
``qdq_model``; TensorRT 10's implicit mode reads the plan's precisions and pins layers of the FP32 model
instead. Nothing outside ``precision_lab/backends/`` names a concrete backend: it asks the interface.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from precision_lab.precisions import PrecisionPlan

if TYPE_CHECKING:
    from precision_lab.model import PreparedModel

__all__ = ["Backend", "PlanBuild", "RunTimings"]


@dataclass(frozen=True)
class PlanBuild:
    """One plan to build and run: its Q/DQ ONNX model (serialized) and the plan itself (a backend that pins
    layers by other means, such as TensorRT 10's implicit mode, reads the precisions from it)."""

    qdq_model: bytes
    plan: PrecisionPlan = field(default_factory=PrecisionPlan)

    @property
    def fp32_layers(self) -> tuple[str, ...]:
        return tuple(sorted(self.plan.fp32_layers))


@dataclass(frozen=True)
class RunTimings:
    """Seconds spent building the runner (session or engine) and running inference; ``latency_ms`` is the
    median latency of one inference when the backend measures it (TensorRT), else ``None``."""

    build: float
    infer: float
    latency_ms: float | None = None


class Backend(ABC):
    """Builds a plan and runs it on a list of feeds, returning each feed's outputs by output name.

    Everything the sweep, executors, exports and report need from a backend is here, with defaults that fit a
    backend running self-contained Q/DQ models in this process; a backend overrides what differs.
    """

    #: registry name (``--backend NAME``)
    name: str = ""
    #: whether each parallel worker needs a GPU of its own (Ray asks for one per actor)
    needs_gpu_per_worker: bool = False

    @abstractmethod
    def identity(self) -> str:
        """A string that changes whenever results could change (library version, device, options)."""

    def describe(self) -> str:
        """One line for the terminal and the report: what runs the plans."""
        return self.identity()

    def setup(self, *, prepared: PreparedModel, calib_feeds: Sequence[dict[str, np.ndarray]], cache_dir: Path) -> None:
        """Called once per sweep before any :meth:`run` (default: nothing to prepare)."""

    @abstractmethod
    def run(
        self,
        plan: PlanBuild,
        feeds: Sequence[dict[str, np.ndarray]],
        on_output: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    ) -> tuple[list[dict[str, np.ndarray]], RunTimings]:
        """Build ``plan`` and run it on ``feeds``; with ``on_output`` each feed's outputs are handed over as they
        are produced instead of returned, and a true return value of ``on_output`` asks to stop before the next
        feed (a backend may run the remaining feeds anyway; their outputs are then dropped). Raises ``EvaluationError`` when it cannot be built or run; errors of
        ``on_output`` itself propagate unchanged."""

    @property
    def runs_suffixes(self) -> bool:
        """Whether a part of a Q/DQ model, fed with FP32 activations computed by this backend from the prepared
        model, gives exactly the outputs of the whole Q/DQ model (default ``False``: always run the whole model)."""
        return False

    @property
    def batches_feeds(self) -> bool:
        """Whether :meth:`run` takes feeds concatenated on axis 0 by a model with a symbolic first dimension
        (default ``False``: one feed per inference)."""
        return False

    def quiet(self) -> Backend:
        """This backend without log lines of its own, for probes that are expected to fail (default: as it is)."""
        return self

    def for_workers(self, jobs: int) -> Backend:
        """This backend as it ships to each of ``jobs`` parallel workers (default: as it is)."""
        return self

    @property
    def cache_dir(self) -> Path | None:
        """Where the backend keeps caches of its own (``None``: it has none)."""
        return None

    def with_cache_dir(self, path: Path) -> Backend:
        """This backend with its caches in ``path`` (a worker on another machine; default: unchanged)."""
        return self

    def pinned_layers(self, plan: PrecisionPlan) -> dict[str, list[str]]:
        """How the backend keeps each of ``plan``'s FP32 nodes out of INT8: node -> the backend's own layer
        names pinned for it (default: the Q/DQ model carries the plan, so each node stands for itself)."""
        return {node: [node] for node in sorted(plan.fp32_layers)}

    def build_commands(
        self, plan_onnx: Path, *, out: Path, prepared: PreparedModel, plan: PrecisionPlan
    ) -> dict[str, str]:
        """Command lines that build the plan (default: ``plan.onnx`` with TensorRT's and ONNX Runtime's tools)."""
        from precision_lab.backends.exports import explicit_commands

        return explicit_commands(plan_onnx)

    def info(self) -> dict:
        """What results and the report record about the backend."""
        return {"identity": self.identity(), "description": self.describe()}
