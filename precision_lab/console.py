"""What the user sees when something goes wrong, and how numbers are printed.

- :func:`first_line`: the first line of an exception's message, never an ``IndexError`` on an empty one.
- :func:`quiet_polygraphy`: Polygraphy's info lines (``[I] Comparing Output ... PASSED``) and onnx-graphsurgeon's
  warnings stay off stdout, in this process, in worker processes and through the Python API; ``--verbose`` lets them through.
- :func:`report_internal_error`: an unexpected exception becomes one line naming the phase that failed; the
  full traceback goes to ``OUT/error.log``.
- :func:`terminate_as_interrupt`: SIGTERM unwinds like Ctrl-C, so locks and worker pools are released.
- :func:`fmt_value`: a metric value with enough digits to tell it from the tolerance and from 1.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import tempfile
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "first_line",
    "quiet_polygraphy",
    "set_polygraphy_verbose",
    "phase_of",
    "report_internal_error",
    "Terminated",
    "terminate_as_interrupt",
    "fmt_value",
]

ERROR_LOG = "error.log"
_POLYGRAPHY_VERBOSE = False


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of ``exc``'s message (cut to ``limit`` characters), or its type's name."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


def set_polygraphy_verbose(verbose: bool) -> None:
    """``--verbose``: let Polygraphy's info lines through :func:`quiet_polygraphy`."""
    global _POLYGRAPHY_VERBOSE
    _POLYGRAPHY_VERBOSE = verbose


@contextlib.contextmanager
def quiet_polygraphy() -> Iterator[None]:
    """Only Polygraphy's and onnx-graphsurgeon's errors are printed inside the block (unless
    :func:`set_polygraphy_verbose`): graphsurgeon's own logger otherwise prints "[W] colored module is not
    installed" and constant-folding notes the user cannot act on."""
    if _POLYGRAPHY_VERBOSE:
        yield
        return
    from onnx_graphsurgeon.logger import G_LOGGER as GS_LOGGER
    from polygraphy.logger import G_LOGGER

    severity = GS_LOGGER.severity
    GS_LOGGER.severity = max(severity, GS_LOGGER.ERROR)
    try:
        with G_LOGGER.verbosity(G_LOGGER.ERROR):
            yield
    finally:
        GS_LOGGER.severity = severity


# --- internal errors ---------------------------------------------------------------------------------------

#: (function, module file) -> phase, most specific first: the first one found anywhere in the traceback names it
_PHASES: tuple[tuple[str, str, str], ...] = (
    ("layer_signals", "signals.py", "computing the one-pass signals"),
    ("calibrate", "calibration.py", "calibrating"),
    ("reference_outputs", "session.py", "computing the FP32 reference"),
    ("write_outputs", "outputs.py", "writing the outputs"),
    ("assemble_result", "assemble.py", "assembling the result"),
    ("write_report", "html.py", "writing the report"),
    ("build", "qdq.py", "building a Q/DQ model"),
    ("run", "evaluation.py", "evaluating a plan"),
    ("run", "local.py", "evaluating plans"),
    ("run", "ray.py", "evaluating plans"),
    ("drive", "evaluator.py", "searching the plan"),
    ("prepare_model", "model.py", "preparing the model"),
    ("load_model", "model.py", "loading the model"),
    ("make_dataset", "data.py", "reading the data"),
    ("apply_plan", "plan.py", "applying the plan"),
    ("list_candidates", "model.py", "listing the candidate layers"),
)


def phase_of(exc: BaseException) -> str:
    """The phase of precision-lab's own code where ``exc`` was raised, from its traceback."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if "precision_lab" in frame.filename]
    for function, module, phase in _PHASES:
        if any(frame.name == function and frame.filename.endswith(module) for frame in frames):
            return phase
    return f"running {frames[-1].name}" if frames else "starting"


def report_internal_error(exc: BaseException, out_dir: str | os.PathLike | None, command: str) -> str:
    """Write ``exc``'s traceback to ``out_dir/error.log`` (a temporary file when there is no output folder)
    and return the one line to show: what failed, in which phase, and where the traceback is."""
    text = f"precision-lab {command}: internal error\n" + "".join(traceback.format_exception(exc))
    path: Path | None = None
    if out_dir is not None:
        try:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            path = Path(out_dir) / ERROR_LOG
            path.write_text(text)
        except OSError:
            path = None
    if path is None:
        fd, name = tempfile.mkstemp(prefix="precision-lab-error-", suffix=".log")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        path = Path(name)
    return (
        f"internal error while {phase_of(exc)}: {type(exc).__name__}: {first_line(exc)}. This is a bug in "
        f"precision-lab; the full traceback is in {path} (--verbose prints it)"
    )


# --- SIGTERM -----------------------------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler of :func:`terminate_as_interrupt`: unwinds like Ctrl-C."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated`, so ``finally`` blocks release the output lock and
    shut worker processes down (the default action would kill the process on the spot)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- numbers -----------------------------------------------------------------------------------------------


def fmt_value(value: float | None, *references: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits, or more until the printed number is on the same side of
    every reference (the tolerance; 1 and 0 always) as the true value: cosine 0.99997 prints as 0.99997,
    not 1, and 0.04996 against a tolerance of 0.05 never prints as 0.05."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "failed"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    refs = [r for r in (*references, 1.0, 0.0, -1.0) if r is not None and math.isfinite(r)]
    text = f"{value:.{digits}g}"
    for more in range(digits, 17):
        text = f"{value:.{more}g}"
        shown = float(text)
        if all(_side(shown, r) == _side(value, r) for r in refs):
            return text
    return text


def _side(value: float, reference: float) -> int:
    return (value > reference) - (value < reference)

