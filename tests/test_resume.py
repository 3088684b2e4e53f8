"""Interruption and resume: a SIGKILLed sweep loses nothing and ends with the same plan; runs are deterministic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, SAMPLES, run_cli, write_random_feeds

MODEL = SAMPLES / "residual_branches.onnx"


def _sweep_args(data: Path, out: Path) -> list[str]:
    # many evaluation samples make each evaluation slow enough to be interrupted midway
    return ["sweep", str(MODEL), "--data", str(data), "--out", str(out), "--eval-samples", "96",
            "--calib-samples", "16", "--quiet"]


def _journal(out: Path) -> list[dict]:
    """The journal's complete records (a line still being written by a running sweep is left out)."""
    path = out / "journal.jsonl"
    if not path.exists():
        return []
    complete = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete]


def _plan(out: Path) -> dict:
    return json.loads((out / "plan.json").read_text())


def test_sigkill_midway_then_resume_repeats_nothing(tmp_path):
    data = write_random_feeds(MODEL, tmp_path / "data", count=112)
    reference_out = tmp_path / "uninterrupted"
    assert run_cli(*_sweep_args(data, reference_out)).returncode == 0
    total = len(_journal(reference_out))

    out = tmp_path / "interrupted"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "precision_lab", *_sweep_args(data, out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(_journal(out)) < total // 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "plan.json").exists(), "the sweep finished before it could be interrupted"
    before = _journal(out)
    assert 0 < len(before) < total

    assert run_cli(*_sweep_args(data, out)).returncode == 0
    after = _journal(out)
    keys = [record["key"] for record in after]
    assert len(keys) == len(set(keys)), "a finished evaluation was repeated"
    assert after[: len(before)] == before, "finished evaluations were rewritten"
    assert len(after) == total
    assert _plan(out)["fp32_layers"] == _plan(reference_out)["fp32_layers"]
    assert _plan(out)["achieved"] == _plan(reference_out)["achieved"]
    assert _plan(out)["evaluations"] == total


def test_truncated_last_journal_line_is_repaired(tmp_path):
    data = write_random_feeds(MODEL, tmp_path / "data", count=24)
    out = tmp_path / "out"
    args = ["sweep", str(MODEL), "--data", str(data), "--out", str(out), "--quiet"]
    assert run_cli(*args).returncode == 0
    lines = (out / "journal.jsonl").read_text().splitlines(keepends=True)
    # keep 3 records and half of the 4th, as a crash mid-write would
    (out / "journal.jsonl").write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    (out / "plan.json").unlink()
    proc = run_cli(*args[:-1])
    assert proc.returncode == 0, proc.stderr
    assert "cut short" in proc.stderr
    repaired = _journal(out)
    assert [r["key"] for r in repaired[:3]] == [json.loads(line)["key"] for line in lines[:3]]
    assert len(repaired) == len(lines)
    assert (out / "plan.json").exists()


def test_resume_reuses_everything_and_no_resume_starts_over(tmp_path):
    data = write_random_feeds(MODEL, tmp_path / "data", count=24)
    out = tmp_path / "out"
    args = ["sweep", str(MODEL), "--data", str(data), "--out", str(out), "--quiet"]
    assert run_cli(*args).returncode == 0
    first = _journal(out)
    assert run_cli(*args).returncode == 0
    assert _journal(out) == first  # nothing evaluated again
    assert run_cli(*args, "--no-resume").returncode == 0
    assert len(_journal(out)) == len(first)
    assert (out / "journal.jsonl.old").exists()


def test_same_command_twice_gives_the_same_plan(tmp_path):
    data = write_random_feeds(MODEL, tmp_path / "data", count=24)
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert run_cli("sweep", str(MODEL), "--data", str(data), "--out", str(out), "--quiet").returncode == 0
    a, b = (_plan(out) for out in outs)
    assert a["fp32_layers"] == b["fp32_layers"]
    assert a["achieved"]["value"] == b["achieved"]["value"]
    assert (outs[0] / "plan.onnx").read_bytes() == (outs[1] / "plan.onnx").read_bytes()
    assert (outs[0] / "sensitivity.csv").read_text() == (outs[1] / "sensitivity.csv").read_text()


def test_second_sweep_on_a_busy_folder_is_refused(tmp_path):
    data = write_random_feeds(MODEL, tmp_path / "data", count=112)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    first = subprocess.Popen([sys.executable, "-m", "precision_lab", *_sweep_args(data, out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (out / ".lock").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        second = run_cli(*_sweep_args(data, out))
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and str(first.pid) in lines[0] and "--out" in lines[0], second.stderr
    finally:
        first.kill()
        first.wait()
    # the killed sweep's lock is stale: the next run takes it over and finishes
    third = run_cli(*_sweep_args(data, out))
    assert third.returncode == 0, third.stderr
    assert not (out / ".lock").exists()


def test_resuming_with_another_search_reports_that_searchs_evaluations(tmp_path):
    """The strategy is not part of the journal's context, so ``--search fast`` on a folder a ``full`` sweep filled
    reuses its evaluations; but the count it reports (terminal, ``plan.json``) is the plans fast asked for, as in a
    fresh folder, never the whole journal."""
    from precision_lab.cli import main

    data = write_random_feeds(MODEL, tmp_path / "data", count=48)

    def sweep(out: Path, search: str) -> dict:
        assert main(["sweep", str(MODEL), "--data", str(data), "--out", str(out), "--search", search, "-q"]) == 0
        return _plan(out)

    shared = tmp_path / "shared"
    full = sweep(shared, "full")
    resumed = sweep(shared, "fast")
    fresh = sweep(tmp_path / "fresh", "fast")
    assert resumed["evaluations"] == fresh["evaluations"] < full["evaluations"] < len(_journal(shared))
    assert resumed["fp32_layers"] == fresh["fp32_layers"]
