"""Shared fixtures: sample models, their expected plans, and data folders made from seeded random inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"
EXPECTED = json.loads((SAMPLES / "expected_plans.json").read_text())
SAMPLE_NAMES = sorted(name.removesuffix(".onnx") for name in EXPECTED)
EXPECTED_FP16 = json.loads((SAMPLES / "expected_plans_fp16.json").read_text())  # three-level planted plans
FP16_SAMPLE_NAMES = sorted(name.removesuffix(".onnx") for name in EXPECTED_FP16)


def write_random_feeds(model_path: Path, folder: Path, count: int = 48, seed: int = 1) -> Path:
    """``count`` .npz feeds of uniform 0..1 inputs for ``model_path`` in ``folder``."""
    from real_models import random_feeds

    return random_feeds(model_path, folder, count, seed)


def plan_without_paths(plan: dict) -> dict:
    """plan.json without the keys that name the output folder (``plan_onnx``, ``exports``), for comparing runs."""
    plan = dict(plan)
    for key in ("plan_onnx", "exports"):
        plan.pop(key)
    return plan


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m precision_lab ARGS`` in a subprocess."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "precision_lab", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_in_process(*args: str) -> subprocess.CompletedProcess:
    """``precision-lab ARGS`` run by ``precision_lab.cli.main`` in this process (for tests where the command line
    process itself is not under test: no interpreter start-up per sweep), with its exit code and output."""
    import contextlib
    import io

    from precision_lab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["precision-lab", *args], code, out.getvalue(), err.getvalue())


def sweep_sample(
    name: str, data: str | Path, out: Path, *args: str, expected: dict | None = None
) -> subprocess.CompletedProcess:
    """``precision-lab sweep`` of sample model ``name`` on ``data`` into ``out`` at its recipe and tolerance in
    ``expected`` (default ``expected_plans.json``; ``--quiet``, in this process), with any further ``args``."""
    entry = (expected or EXPECTED)[f"{name}.onnx"]
    return run_in_process(
        "sweep", str(SAMPLES / f"{name}.onnx"), "--data", str(data), "--out", str(out), "--quiet",
        "--recipe", entry["recipe"], "--tolerance", str(entry["tolerance"]), *args,
    )


def sweep_sample_models(root: Path, expected: dict, names, *extra: str) -> dict[str, Path]:
    """Sweep each sample model of ``names`` once (CLI, real data folder, its expected recipe and tolerance, plus
    ``extra`` options) into ``root``: name -> out dir."""
    outs = {}
    for name in names:
        data = write_random_feeds(SAMPLES / f"{name}.onnx", root / f"{name}_data")
        proc = sweep_sample(name, data, root / name, *extra, expected=expected)
        assert proc.returncode == 0, proc.stderr
        outs[name] = root / name
    return outs


@pytest.fixture(scope="session")
def three_level_sweeps(tmp_path_factory) -> dict[str, Path]:
    """The two FP16 sample models swept once with ``--precisions int8,fp16,fp32``: name -> out dir."""
    root = tmp_path_factory.mktemp("three_level")
    return sweep_sample_models(root, EXPECTED_FP16, FP16_SAMPLE_NAMES, "--precisions", "int8,fp16,fp32")


@pytest.fixture(scope="session")
def sample_sweeps(tmp_path_factory) -> dict[str, Path]:
    """Every sample model swept once (CLI, real data folder, expected recipe/tolerance): name -> out dir."""
    return sweep_sample_models(tmp_path_factory.mktemp("sample_sweeps"), EXPECTED, SAMPLE_NAMES)


# --- real-model figures in the log ----------------------------------------------------------------------------
_REAL_MODEL_LINES: list[str] = []


@pytest.fixture
def real_model_log():
    """Call with one line per swept real model; the lines are printed in a summary section of every run."""
    return _REAL_MODEL_LINES.append


def pytest_terminal_summary(terminalreporter):
    if _REAL_MODEL_LINES:
        terminalreporter.section("real-model sweeps")
        for line in _REAL_MODEL_LINES:
            terminalreporter.write_line(line)
