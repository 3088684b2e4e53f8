"""Progress of a sweep's evaluations, one phase at a time, on stderr.

- On a terminal: one tqdm bar per phase. A phase of one known batch (baselines, sensitivity) shows ``n/total``;
  the search, whose batches are not known in advance, shows a count, so no bar reaches 100 % and then grows.
- Elsewhere (a log file, CI, a pipe): plain lines, one when a phase ends and at most one every
  :data:`LINE_INTERVAL` seconds while it runs; never carriage returns.
- The last bar ends on the plan's value (:meth:`Progress.finish`), not on the last evaluation's.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from precision_lab.console import fmt_value

__all__ = ["Progress", "LINE_INTERVAL", "OPEN_ENDED_PHASES"]

LINE_INTERVAL = 5.0  # seconds between two lines of a running phase in a non-terminal log
OPEN_ENDED_PHASES = ("search",)  # phases whose number of evaluations is not known in advance


class _Lines:
    """A tqdm look-alike for non-terminal streams: a line per phase, and one every few seconds."""

    def __init__(self, phase: str, total: int | None, stream: TextIO, interval: float) -> None:
        self.phase, self.total, self.stream, self.interval = phase, total, stream, interval
        self.n = 0
        self.postfix = ""
        self.started = self._last = time.monotonic()
        self.closed = False

    def _write(self, ending: str) -> None:
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        postfix = f", {self.postfix}" if self.postfix else ""
        elapsed = time.monotonic() - self.started
        self.stream.write(f"{self.phase}: {count} evaluations{postfix} ({elapsed:.1f} s{ending})\n")
        self.stream.flush()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write(", running")

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write("")


class Progress:
    """One bar per phase, kept open across the batches of that phase; nothing when not ``enabled``."""

    def __init__(self, enabled: bool, *, stream: TextIO | None = None, interval: float = LINE_INTERVAL) -> None:
        self.enabled = enabled
        self.stream = stream
        self.interval = interval
        self._bars: dict = {}
        self._last = None

    def _terminal(self) -> bool:
        stream = self.stream or sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)())

    def bar(self, phase: str, todo: int):
        """The bar of ``phase``, grown by ``todo`` evaluations."""
        bar = self._bars.get(phase)
        if bar is None:
            self.close()  # one bar on screen at a time
            total = None if phase in OPEN_ENDED_PHASES else todo
            if not self.enabled:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, disable=True)
            elif self._terminal():
                from tqdm.auto import tqdm

                bar = tqdm(total=total, desc=phase, unit="eval", dynamic_ncols=True, file=self.stream)
            else:
                bar = _Lines(phase, total, self.stream or sys.stderr, self.interval)
            self._bars[phase] = bar
        elif bar.total is not None:  # a phase that turns out to have more batches: a count, never past 100 %
            bar.total = None
            bar.refresh()
        self._last = bar
        return bar

    def finish(self, metric: str, value: float, tolerance: float) -> None:
        """End the last bar on the plan's value."""
        if self._last is not None:
            self._last.set_postfix_str(f"plan {metric}={fmt_value(value, tolerance)}", refresh=True)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
