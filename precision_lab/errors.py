"""The error hierarchy: every error a user can cause or meet, raised explicitly.

The CLI turns a :class:`PrecisionLabError` into one line and an exit code; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

__all__ = [
    "PrecisionLabError",
    "InputError",
    "MissingDependencyError",
    "UnattainableToleranceError",
    "EvaluationError",
    "SweepLockedError",
]


class PrecisionLabError(Exception):
    """Base class of the errors precision-lab raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(PrecisionLabError):
    """The user's model, data or arguments cannot be used as given (exit code 2)."""

    exit_code = 2


class MissingDependencyError(PrecisionLabError):
    """An optional package (an extra) is needed but not installed (exit code 2)."""

    exit_code = 2


class UnattainableToleranceError(PrecisionLabError):
    """Even the all-FP32 plan fails the tolerance: no plan can meet it (exit code 1)."""

    exit_code = 1


class EvaluationError(PrecisionLabError):
    """A backend could not build or run a model (exit code 1)."""

    exit_code = 1


class SweepLockedError(PrecisionLabError):
    """Another sweep is writing to the same output folder (exit code 2)."""

    exit_code = 2
