"""What every backend offers the evaluation loop.

A backend is set up once per sweep (:meth:`Backend.setup`: the prepared FP32 model, the calibration feeds and a
cache folder), then runs one :class:`PlanBuild` per evaluation. Explicit-quantization backends use
``qdq_model``; TensorRT 10's implicit mode uses ``fp32_layers`` on the prepared FP32 model instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from precision_lab.model import PreparedModel

__all__ = ["Backend", "PlanBuild", "RunTimings"]


@dataclass(frozen=True)
class PlanBuild:
    """One plan to build and run: its Q/DQ ONNX model (serialized) and its FP32 (pinned) layer names."""

    qdq_model: bytes
    fp32_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunTimings:
    """Seconds spent building the runner (session or engine) and running inference; ``latency_ms`` is the
    median latency of one inference when the backend measures it (TensorRT), else ``None``."""

    build: float
    infer: float
    latency_ms: float | None = None


class Backend(Protocol):
    """Runs a plan on a list of feeds and returns the outputs of each feed, by output name."""

    name: str

    def identity(self) -> str:
        """A string that changes whenever results could change (library version, device, options)."""
        ...

    def setup(self, *, prepared: PreparedModel, calib_feeds: Sequence[dict[str, np.ndarray]], cache_dir: Path) -> None:
        """Called once per sweep before any :meth:`run`."""
        ...

    def run(
        self,
        plan: PlanBuild,
        feeds: Sequence[dict[str, np.ndarray]],
        on_output: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    ) -> tuple[list[dict[str, np.ndarray]], RunTimings]:
        """Build ``plan`` and run it on ``feeds``; with ``on_output`` each feed's outputs are handed over as they
        are produced instead of returned. Raises ``EvaluationError`` when it cannot be built or run."""
        ...
