"""OutputLock: one sweep per output folder; stale and garbage locks are taken over; released on errors."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from precision_lab.errors import SweepLockedError
from precision_lab.lock import LOCK_NAME, OutputLock, read_lock


def _write_lock(folder, pid, *, host=None, started=None, old=True):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    info = {"pid": pid, "host": host or socket.gethostname(), "started": started or time.time() - 60}
    path.write_text(json.dumps(info) + "\n")
    if old:
        stamp = time.time() - 60
        os.utime(path, (stamp, stamp))
    return path


@pytest.fixture
def live_pid():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: the pid no longer exists
    return proc.pid


def test_acquire_writes_the_holder_and_release_removes_it(tmp_path):
    out = tmp_path / "out"  # created by the lock
    with OutputLock(out) as lock:
        assert lock.held
        info = read_lock(out / LOCK_NAME)
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert abs(info["started"] - time.time()) < 60
        assert lock.warnings == []
    assert not (out / LOCK_NAME).exists() and not lock.held
    with OutputLock(out):  # can be taken again
        pass
    assert os.listdir(out) == []


def test_second_acquire_in_the_same_folder_is_refused(tmp_path):
    with OutputLock(tmp_path):
        with pytest.raises(SweepLockedError, match=f"pid {os.getpid()}"):
            OutputLock(tmp_path).acquire()
        assert (tmp_path / LOCK_NAME).exists()  # the refused one did not remove the holder's lock
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_a_live_process_is_refused_with_one_clear_line(tmp_path, live_pid):
    path = _write_lock(tmp_path, live_pid)
    before = path.read_bytes()
    with pytest.raises(SweepLockedError) as info:
        with OutputLock(tmp_path):
            pytest.fail("the lock of a live sweep was taken")
    message = str(info.value)
    assert f"pid {live_pid}" in message and "another --out" in message and "wait" in message
    assert "\n" not in message
    assert info.value.exit_code == 2
    assert path.read_bytes() == before


def test_lock_from_another_host_is_refused(tmp_path, dead_pid):
    _write_lock(tmp_path, dead_pid, host="some-other-host.invalid")
    with pytest.raises(SweepLockedError, match="another host"):
        OutputLock(tmp_path).acquire()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, dead_pid, caplog):
    _write_lock(tmp_path, dead_pid)
    with caplog.at_level(logging.WARNING, logger="precision_lab"):
        with OutputLock(tmp_path) as lock:
            assert read_lock(tmp_path / LOCK_NAME)["pid"] == os.getpid()
    assert len(lock.warnings) == 1 and "stale" in lock.warnings[0] and f"pid {dead_pid}" in lock.warnings[0]
    assert any("stale" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_a_reused_pid_is_stale(tmp_path, live_pid):
    if not os.path.exists(f"/proc/{live_pid}/stat"):
        pytest.skip("needs Linux /proc to tell a reused pid apart")
    path = _write_lock(tmp_path, live_pid)
    info = json.loads(path.read_text())
    info["proc_start"] = 1  # the recorded process started at boot: not the live one with this pid
    path.write_text(json.dumps(info))
    with OutputLock(tmp_path) as lock:
        pass
    assert "no longer running" in lock.warnings[0]


@pytest.mark.parametrize("content", [b"", b"garbage\x00\xff", b'{"pid": "x"}', b"[1, 2]", b'{"pid": -5, "host": "h"}'])
def test_garbage_lock_file_is_taken_over(tmp_path, content):
    path = tmp_path / LOCK_NAME
    path.write_bytes(content)
    stamp = time.time() - 60
    os.utime(path, (stamp, stamp))
    with OutputLock(tmp_path) as lock:
        assert read_lock(path)["pid"] == os.getpid()
    assert "unreadable" in lock.warnings[0]
    assert not path.exists()


def test_fresh_garbage_lock_is_given_time_to_be_written(tmp_path):
    path = tmp_path / LOCK_NAME
    path.write_bytes(b"")  # as if another sweep had just created it and not yet written its pid
    started = time.monotonic()
    with OutputLock(tmp_path) as lock:
        pass
    assert time.monotonic() - started >= OutputLock.FRESH_SECONDS * 0.9
    assert lock.warnings


def test_lock_is_released_on_exception_and_keyboard_interrupt(tmp_path):
    with pytest.raises(ValueError):
        with OutputLock(tmp_path):
            raise ValueError("boom")
    assert not (tmp_path / LOCK_NAME).exists()
    with pytest.raises(KeyboardInterrupt):
        with OutputLock(tmp_path):
            raise KeyboardInterrupt
    assert not (tmp_path / LOCK_NAME).exists()


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path, live_pid):
    lock = OutputLock(tmp_path).acquire()
    other = _write_lock(tmp_path, live_pid)  # replaced behind our back (e.g. deleted by hand, then retaken)
    lock.release()
    assert other.exists()


def test_a_live_holder_in_another_process_blocks_until_it_ends(tmp_path):
    script = (
        "import sys, time\n"
        "from precision_lab.lock import OutputLock\n"
        f"with OutputLock({str(tmp_path)!r}):\n"
        "    print('locked', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SweepLockedError, match=f"pid {holder.pid}"):
            OutputLock(tmp_path).acquire()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / LOCK_NAME).exists()
    with OutputLock(tmp_path) as lock:
        assert lock.warnings == []
