"""A lock on a sweep's output folder: a second sweep into the same ``--out`` while one runs is refused.

``OUT/.lock`` is created with ``O_CREAT | O_EXCL`` and holds one JSON line: pid, hostname, start time (and,
on Linux, the process start in clock ticks since boot). It is removed when the ``with`` block ends, whatever
the reason (success, error, ``KeyboardInterrupt``).

An existing lock is honoured when its pid is alive on this host, and when it was written on another host
(its process cannot be checked from here; a shared file system is the usual case). It is *stale*, and is
replaced with a warning, when:

* its pid no longer exists on this host (``os.kill(pid, 0)`` raises ``ProcessLookupError``);
* on Linux, its pid now belongs to another process (the recorded process start differs: a reused pid);
* the file cannot be parsed (a crash between creating and writing it, or a hand-edited file).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

from precision_lab.errors import InputError, SweepLockedError

__all__ = ["OutputLock", "LOCK_NAME", "read_lock"]

LOCK_NAME = ".lock"
log = logging.getLogger("precision_lab")


def read_lock(path: str | os.PathLike) -> dict | None:
    """The holder recorded in a lock file (``pid``, ``host``, ``started``), or ``None`` if it is unreadable."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int) or isinstance(info.get("pid"), bool):
        return None
    if info["pid"] <= 0 or not isinstance(info.get("host"), str):
        return None
    return info


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def _process_start_ticks(pid: int) -> int | None:
    """Start of ``pid`` in clock ticks since boot (Linux ``/proc/PID/stat`` field 22); ``None`` elsewhere.

    With the pid, it identifies a process across pid reuse and is immune to wall-clock changes."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _holder_running(info: dict) -> bool:
    """Whether the process recorded in a lock of this host still runs (and is not a later one reusing its pid)."""
    if not _pid_alive(info["pid"]):
        return False
    recorded = info.get("proc_start")
    current = _process_start_ticks(info["pid"])
    if isinstance(recorded, int) and current is not None and current != recorded:
        return False  # the pid now belongs to another process
    return True


def _describe(info: dict) -> str:
    started = info.get("started")
    when = ""
    if isinstance(started, (int, float)):
        when = f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
    return f"pid {info['pid']} on {info['host']}{when}"


class OutputLock:
    """``with OutputLock(out_dir):`` holds ``out_dir/.lock`` for the duration of the block.

    Raises :class:`SweepLockedError` (exit code 2) when a live sweep holds it. A stale lock is taken over;
    the warning is logged on the ``precision_lab`` logger and kept in :attr:`warnings`.
    """

    #: an unreadable lock younger than this may be one another sweep is writing right now: wait, then judge
    FRESH_SECONDS = 1.0

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.warnings: list[str] = []
        self._token: str | None = None

    # -- acquire / release -------------------------------------------------------------------------------
    def acquire(self) -> "OutputLock":
        if self._token is not None:
            raise RuntimeError(f"{self.path} is already held by this OutputLock")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the output folder {self.out_dir} ({exc.strerror}); pick another --out") from exc
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        ticks = _process_start_ticks(os.getpid())
        if ticks is not None:
            info["proc_start"] = ticks
        token = json.dumps(info) + "\n"
        deadline = time.monotonic() + 5 * self.FRESH_SECONDS
        while time.monotonic() < deadline:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue  # stale lock removed: try again
            except OSError as exc:
                raise InputError(f"cannot create the lock {self.path} ({exc.strerror}); check the --out folder") from exc
            try:
                os.write(fd, token.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._token = token
            return self
        raise SweepLockedError(
            f"could not take the lock {self.path} (other sweeps keep taking it); wait for them to finish or use "
            "another --out folder"
        )

    def _raw(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def _handle_existing(self) -> None:
        raw = self._raw()
        info = read_lock(self.path)
        if info is None:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:  # released between our open and our read
                return
            if -self.FRESH_SECONDS < age < self.FRESH_SECONDS:  # maybe being written: look again shortly
                time.sleep(self.FRESH_SECONDS / 10)
                return
            reason = "it is unreadable or not a precision-lab lock"
        elif info["host"] != socket.gethostname():
            raise SweepLockedError(
                f"output folder {self.out_dir} is locked by a sweep on another host ({_describe(info)}); wait "
                f"for it to finish or use another --out (if no sweep is running there, delete {self.path})"
            )
        elif info["pid"] == os.getpid() or _holder_running(info):
            raise SweepLockedError(
                f"another sweep ({_describe(info)}) is writing to {self.out_dir}; wait for it to finish "
                f"or use another --out folder"
            )
        else:
            reason = f"its sweep ({_describe(info)}) is no longer running"
        if self._raw() != raw:  # someone else replaced it meanwhile: judge the new one
            return
        message = f"removing the stale lock {self.path}: {reason}"
        log.warning(message)
        self.warnings.append(message)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        """Remove the lock file if it is still ours (a no-op when not held)."""
        token, self._token = self._token, None
        if token is None:
            return
        try:
            if self.path.read_text(encoding="utf-8") == token:
                self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # never hide the sweep's own outcome behind a cleanup failure
            log.warning(f"could not remove the lock {self.path} ({exc}); delete it by hand")

    @property
    def held(self) -> bool:
        return self._token is not None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"OutputLock({str(self.out_dir)!r}, held={self.held})"
