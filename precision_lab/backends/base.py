"""What every backend offers the evaluation loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx

__all__ = ["Backend", "RunTimings"]


@dataclass(frozen=True)
class RunTimings:
    """Seconds spent building the runner (session or engine) and running inference."""

    build: float
    infer: float


class Backend(Protocol):
    """Runs a Q/DQ ONNX model on a list of feeds and returns the outputs of each feed, by output name."""

    name: str

    def identity(self) -> str:
        """A string that changes whenever results could change (library version, provider, options)."""
        ...

    def run(
        self, model: onnx.ModelProto | bytes, feeds: Sequence[dict[str, np.ndarray]]
    ) -> tuple[list[dict[str, np.ndarray]], RunTimings]:
        ...
