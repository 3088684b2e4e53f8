"""What the user sees is true (issue 11, items 4-6): one test per item, on real sweeps of small models.

Sweeps run in-process through ``precision_lab.cli.main`` where the output is what is checked, and in a
subprocess where the CLI's own stdout/stderr, signals or worker processes are under test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, SAMPLES, run_cli, write_random_feeds
from test_report import browser, open_report  # noqa: F401 - the Chromium fixtures
from user_facing_models import (
    damped_and_amplified,
    cancelling_batchnorm,
    heavy_cnn,
    mixed_scale_concat,
    symbolic_output,
)

from precision_lab.cli import main

CNN = SAMPLES / "two_planted_cnn.onnx"
POLYGRAPHY_LINE = re.compile(r"^\s*\[[IWVE]\]|Comparing Output|PASSED \|")


def run_main(*args: str) -> tuple[int, str, str]:
    """``precision_lab.cli.main(args)`` with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def cnn_data(tmp_path_factory) -> Path:
    return write_random_feeds(CNN, tmp_path_factory.mktemp("cnn") / "data", count=24)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mixed")
    model = mixed_scale_concat(root / "mixed.onnx")
    return model, write_random_feeds(model, root / "data", count=24)


# ------------------------------------------------------------------------------------ Polygraphy's log lines


def test_polygraphy_lines_stay_off_stdout_with_jobs_2(cnn_data, tmp_path, monkeypatch):
    monkeypatch.setenv("PRECISION_LAB_MIN_BATCH_SECONDS", "0")  # workers for every batch, however cheap
    proc = run_cli("sweep", str(CNN), "--data", str(cnn_data), "--out", str(tmp_path / "out"), "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if POLYGRAPHY_LINE.search(line)] == []
    assert [line for line in proc.stderr.splitlines() if POLYGRAPHY_LINE.search(line)] == []
    assert "Plan: keep 2 of 8 layers FP32" in proc.stdout


def test_polygraphy_lines_stay_off_stdout_through_the_python_api(cnn_data, tmp_path, capfd):
    import precision_lab

    result = precision_lab.sweep(CNN, data=cnn_data, out_dir=tmp_path / "out", progress=False, backend="onnxrt")
    assert result.plan.fp32_layers
    captured = capfd.readouterr()
    assert captured.out == ""
    assert [line for line in captured.err.splitlines() if POLYGRAPHY_LINE.search(line)] == []


# ------------------------------------------------------------------------------ --search fast: FP32 visible


@pytest.fixture(scope="module")
def fast_sweep(cnn_data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("fast") / "out"
    code, stdout, stderr = run_main(
        "sweep", str(CNN), "--data", str(cnn_data), "--out", str(out), "--search", "fast", "--top", "1", "-q"
    )
    assert code == 0, stderr
    return {"out": out, "stdout": stdout, "plan": json.loads((out / "plan.json").read_text())}


def test_fast_mode_terminal_shows_every_fp32_layer_even_below_the_top(fast_sweep):
    fp32 = fast_sweep["plan"]["fp32_layers"]
    assert len(fp32) == 2
    rows = [line.split() for line in fast_sweep["stdout"].splitlines() if line.strip().endswith(("FP32", "int8"))]
    ranked = [row[1] for row in rows if row[0].isdigit()]
    assert set(fp32) <= set(ranked), fast_sweep["stdout"]  # --top 1, yet both FP32 layers are listed


def test_fast_mode_report_shows_fp32_layers_and_a_signal_column(fast_sweep, open_report):
    import precision_lab

    result = precision_lab.load(fast_sweep["out"])
    fig = result.plot_sensitivity(top=1)
    ticks = [tick.get_text().split(" (")[0] for tick in fig.axes[0].get_yticklabels()]
    assert set(result.plan.fp32_layers) <= set(ticks)
    assert all(patch.get_width() > 0 for patch in fig.axes[0].patches)  # zero signals stay visible on a log axis
    opened = open_report(fast_sweep["out"] / "report.html")
    table = opened.page.evaluate(
        """() => ({head: Array.from(document.querySelectorAll('#layers thead th')).map(th => th.textContent),
                   rows: Array.from(document.querySelectorAll('#layers tbody tr.fp32')).map(
                       r => Array.from(r.cells).map(c => c.textContent))})"""
    )
    column = [h.split(" ")[0] for h in table["head"]].index("signal")
    assert sorted(row[1] for row in table["rows"]) == sorted(result.plan.fp32_layers)
    assert all(float(row[column]) >= 0 for row in table["rows"])  # a measured signal, not "–"
    opened.assert_clean()


def test_signal_is_measured_on_the_output_slice(mixed):
    from precision_lab.calibration import calibrate
    from precision_lab.compare import OutputSlice
    from precision_lab.data import make_dataset
    from precision_lab.model import (
        input_specs,
        list_candidates,
        load_model,
        prepare_model,
    )
    from precision_lab.qdq import QdqBuilder, resolve_op_types, tensors_to_calibrate
    from precision_lab.signals import layer_signals

    model, data = mixed
    dataset, _ = make_dataset(input_specs(load_model(model)[0]), data_dir=data, calib_samples=16, eval_samples=8)
    prepared = prepare_model(model)
    candidates = list_candidates(prepared, op_types=resolve_op_types("extended", None))
    ranges = calibrate(prepared, dataset.calib, tensors=tensors_to_calibrate(prepared, candidates, "extended"),
                       fingerprint=dataset.calib_fingerprint)
    builder = QdqBuilder(prepared, candidates, ranges, recipe="extended")
    whole = layer_signals(prepared, builder, candidates, dataset.eval)
    sliced = layer_signals(prepared, builder, candidates, dataset.eval, slices=[OutputSlice("out", 1, 2, 3)])
    assert whole["concat"] < 0.01  # the whole output is dominated by channel 0
    assert sliced["concat"] > 0.9  # the judged score channel is lost
    assert max(sliced, key=sliced.get) == "concat"
    from precision_lab.signals import shadow_model

    shadow, pairs = shadow_model(prepared.model, builder.build_qdq(()), [c.name for c in candidates])
    assert pairs["concat"] == [("out#int8", "out")]  # compared after the Q/DQ the builder puts on its own output
    assert {"concat/output0/QuantizeLinear#int8", "concat/output0/DequantizeLinear#int8"} <= {n.name for n in shadow.graph.node}



def test_signal_is_each_layers_own_error_never_masked_by_inherited_error(tmp_path):
    """Measured in the all-INT8 model as output error minus input error, 7 of two_planted_cnn's 10 ``extended``
    candidates added "nothing" (their inherited error was larger), so they tied at 0 at the end of the order. Read
    on FP32 activations, every layer's own INT8 error is positive, and the planted pair ranks first."""
    from precision_lab.calibration import calibrate
    from precision_lab.data import make_dataset
    from precision_lab.model import input_specs, list_candidates, load_model, prepare_model
    from precision_lab.qdq import QdqBuilder, resolve_op_types, tensors_to_calibrate
    from precision_lab.signals import layer_signals

    model = SAMPLES / "two_planted_cnn.onnx"
    data = write_random_feeds(model, tmp_path / "data", count=24)
    dataset, _ = make_dataset(input_specs(load_model(model)[0]), data_dir=data, calib_samples=16, eval_samples=8)
    prepared = prepare_model(model)
    for recipe in ("trt", "extended"):
        candidates = list_candidates(prepared, op_types=resolve_op_types(recipe, None))
        ranges = calibrate(prepared, dataset.calib, tensors=tensors_to_calibrate(prepared, candidates, recipe),
                           fingerprint=dataset.calib_fingerprint)
        builder = QdqBuilder(prepared, candidates, ranges, recipe=recipe)
        signals = layer_signals(prepared, builder, candidates, dataset.eval)
        assert set(signals) == {c.name for c in candidates}
        assert all(value > 0 for value in signals.values()), (recipe, signals)
        assert set(sorted(signals, key=signals.get)[-2:]) == {"conv3", "conv6"}, (recipe, signals)


def _signal_setup(model: Path, data: Path, recipe: str = "trt"):
    from precision_lab.calibration import calibrate
    from precision_lab.data import make_dataset
    from precision_lab.model import input_specs, list_candidates, load_model, prepare_model
    from precision_lab.qdq import QdqBuilder, resolve_op_types, tensors_to_calibrate

    dataset, _ = make_dataset(input_specs(load_model(model)[0]), data_dir=data, calib_samples=16, eval_samples=8)
    prepared = prepare_model(model)
    candidates = list_candidates(prepared, op_types=resolve_op_types(recipe, None))
    ranges = calibrate(prepared, dataset.calib, tensors=tensors_to_calibrate(prepared, candidates, recipe),
                       fingerprint=dataset.calib_fingerprint)
    return dataset, prepared, candidates, QdqBuilder(prepared, candidates, ranges, recipe=recipe)


def _rel_l2_at(model_bytes: bytes, reference_bytes: bytes, tensor: str, reference: str, feeds) -> float:
    import numpy as np

    from precision_lab.ort_session import create_session

    run, ref = create_session(model_bytes), create_session(reference_bytes)
    err = total = 0.0
    for feed in feeds:
        y, r = run.run([tensor], dict(feed))[0], ref.run([reference], dict(feed))[0]
        err, total = err + float(np.sum((y - r) ** 2)), total + float(np.sum(r.astype(np.float64) ** 2))
    return (err / total) ** 0.5


def test_signal_carries_each_layers_error_to_the_output_it_reaches(tmp_path):
    """``conv_loud`` has by far the larger INT8 error of its own, but a x0.001 Mul damps it before the output;
    ``conv_quiet``'s small error is amplified x30. The signal is the error each one causes at the output alone
    (its measured ``isolate`` value, within 5 %), so ``conv_quiet`` ranks first; a layer's own error alone ranks
    them the other way round."""
    from precision_lab.signals import SHADOW, layer_signals, shadow_model

    model = damped_and_amplified(tmp_path / "damped.onnx")
    dataset, prepared, candidates, builder = _signal_setup(model, write_random_feeds(model, tmp_path / "data", 24))
    names = [c.name for c in candidates]
    reference = prepared.model.SerializeToString()
    isolate = {
        layer: _rel_l2_at(builder.build_qdq([n for n in names if n != layer]).SerializeToString(), reference, "out",
                          "out", dataset.eval[:8])
        for layer in names
    }
    assert isolate["conv_quiet"] > 100 * isolate["conv_loud"]
    shadow, pairs = shadow_model(prepared.model, builder.build_qdq(()), names)
    own = {layer: _rel_l2_at(shadow.SerializeToString(), shadow.SerializeToString(), pairs[layer][0][0],
                             pairs[layer][0][1], dataset.eval[:8]) for layer in names}
    assert own["conv_loud"] > 3 * own["conv_quiet"]  # the trap: own errors rank them the other way
    assert pairs["conv_loud"][0][0] == "y_loud" + SHADOW
    signals = layer_signals(prepared, builder, candidates, dataset.eval)
    assert signals["conv_quiet"] > signals["conv_loud"]
    for layer in names:
        assert signals[layer] == pytest.approx(isolate[layer], rel=0.05), (layer, signals, isolate)


def test_signal_gives_no_weight_to_a_branch_outside_the_judged_slice(mixed):
    """``out`` = Concat(box, mid, score) judged on the score channel only: the box and mid convolutions cannot
    change it (their ``isolate`` value on the slice is 0), however large their error on the whole output. The
    slice's elements are traced back through the Concat, so their signal is 0 and the score convolution's matches
    its measured ``isolate`` value."""
    from precision_lab.compare import OutputSlice
    from precision_lab.signals import layer_signals

    model, data = mixed
    dataset, prepared, candidates, builder = _signal_setup(model, data)
    score = OutputSlice("out", 1, 2, 3)
    names = [c.name for c in candidates]
    signals = layer_signals(prepared, builder, candidates, dataset.eval, slices=[score])
    reference = prepared.model.SerializeToString()
    isolate = {}
    for layer in names:
        quantized = builder.build_qdq([n for n in names if n != layer])
        isolate[layer] = _sliced_rel_l2(quantized.SerializeToString(), reference, score, dataset.eval[:8])
    assert isolate["conv_box"] == isolate["conv_mid"] == 0.0 and isolate["conv_score"] > 0
    assert signals["conv_box"] == signals["conv_mid"] == 0.0, signals
    assert signals["conv_score"] == pytest.approx(isolate["conv_score"], rel=0.05), (signals, isolate)


def _sliced_rel_l2(model_bytes: bytes, reference_bytes: bytes, part, feeds) -> float:
    import numpy as np

    from precision_lab.ort_session import create_session

    run, ref = create_session(model_bytes), create_session(reference_bytes)
    err = total = 0.0
    for feed in feeds:
        y, r = part.take(run.run(["out"], dict(feed))[0]), part.take(ref.run(["out"], dict(feed))[0])
        err, total = err + float(np.sum((y - r) ** 2)), total + float(np.sum(r.astype(np.float64) ** 2))
    return (err / total) ** 0.5


# ---------------------------------------------------------------------------------------- digits and charts


@pytest.fixture(scope="module")
def cosine_sweep(cnn_data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("cosine") / "out"
    code, stdout, stderr = run_main(
        "sweep", str(CNN), "--data", str(cnn_data), "--out", str(out), "--metric", "cosine", "-q"
    )
    assert code == 0, stderr
    return {"out": out, "stdout": stdout, "plan": json.loads((out / "plan.json").read_text())}


def test_cosine_values_print_with_enough_digits(cosine_sweep):
    value, tolerance = cosine_sweep["plan"]["achieved"]["value"], 0.999
    assert 0.999 < value < 1.0
    printed = re.search(r"Plan: keep .* cosine = (\S+)", cosine_sweep["stdout"]).group(1)
    assert float(printed) != 1.0 and float(printed) > tolerance and abs(float(printed) - value) < 1e-4
    for line in cosine_sweep["stdout"].splitlines():  # every ranked value is told apart from 1 and from 0.999
        cells = line.split()
        if cells and cells[0].isdigit() and cells[-1] in ("FP32", "int8"):
            shown = float(cells[3])
            assert shown != 1.0 and shown != tolerance, line
    report = (cosine_sweep["out"] / "report.html").read_text()
    assert f"<b>{printed}</b>" in report


def test_cosine_chart_plots_the_error_side(cosine_sweep):
    import precision_lab

    result = precision_lab.load(cosine_sweep["out"])
    ax = result.plot_sensitivity().axes[0]
    assert "1 − cosine" in ax.get_xlabel()
    widths = [patch.get_width() for patch in ax.patches]  # bars in rank order, most sensitive first
    assert widths[0] == max(widths) and widths[0] > 10 * widths[-1]  # the culprit has the longest bar


# ------------------------------------------------------------------------------------- channel warnings


@pytest.fixture(scope="module")
def sliced_sweep(mixed, tmp_path_factory) -> dict:
    model, data = mixed
    out = tmp_path_factory.mktemp("sliced") / "out"
    code, stdout, stderr = run_main(
        "sweep", str(model), "--data", str(data), "--out", str(out), "--recipe", "extended",
        "--output-slice", "out:1:1:3", "--tolerance", "0.1",
    )
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("WARNING")]
    return {"out": out, "warnings": warnings, "report": (out / "report.html").read_text()}


def test_channel_warnings_never_ask_for_the_slice_already_given(sliced_sweep):
    collapse = [w for w in sliced_sweep["warnings"] if "Channel collapse" in w]
    assert collapse
    assert all("--output-slice out:1:1:3" not in w.split("judged through")[0] for w in collapse)
    assert all("judged through your --output-slice out:1:1:3" in w for w in collapse)
    assert "judged through your --output-slice out:1:1:3" in sliced_sweep["report"]


def test_channel_warnings_print_no_degenerate_ranges(sliced_sweep):
    text = "\n".join(sliced_sweep["warnings"]) + sliced_sweep["report"]
    assert "channel 2 (FP32 RMS " in text
    assert not re.search(r"RMS ([0-9.e+-]+)[-–]\1\)", text)


def test_channel_warnings_flag_collapsed_channels_hidden_in_a_passing_slice(sliced_sweep):
    plan = json.loads((sliced_sweep["out"] / "plan.json").read_text())
    assert plan["achieved"]["passed"]
    hidden = [w for w in sliced_sweep["warnings"] if "hide" in w]
    assert len(hidden) == 1, sliced_sweep["warnings"]
    assert "channel 2 is at rel-l2 1" in hidden[0] and "channel 1 dominates" in hidden[0]
    assert "--output-slice out:1:2:3" in hidden[0]


# ----------------------------------------------------------------------------------------- --out reuse


def test_out_folder_of_another_model_is_refused(cnn_data, mixed, tmp_path):
    out = tmp_path / "out"
    assert run_main("sweep", str(CNN), "--data", str(cnn_data), "--out", str(out), "-q")[0] == 0
    before = (out / "plan.json").read_bytes()
    model, data = mixed
    code, stdout, stderr = run_main("sweep", str(model), "--data", str(data), "--out", str(out), "-q")
    assert code == 2 and stdout == ""
    assert len(stderr.splitlines()) == 1 and "holds the sweep of another model" in stderr
    assert (out / "plan.json").read_bytes() == before
    code, stdout, stderr = run_main("sweep", str(CNN), "--data", str(cnn_data), "--out", str(out))
    assert code == 0 and "(0 evaluations this run" in stderr  # the same model resumes


# ------------------------------------------------------------------------------------------- progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_never_passes_100_percent_and_ends_on_the_plan(cnn_data, tmp_path, monkeypatch):
    import precision_lab

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    result = precision_lab.sweep(CNN, data=cnn_data, out_dir=tmp_path / "out", backend="onnxrt")
    monkeypatch.undo()
    text = terminal.getvalue()
    counts = [(int(n), int(total)) for n, total in re.findall(r"\b(\d+)/(\d+) \[", text)]
    assert counts and all(n <= total for n, total in counts)
    totals: dict[str, set[int]] = {}
    for phase, total in re.findall(r"([a-z ()]+): +\d+%\|[^|]*\| *\d+/(\d+)", text):
        totals.setdefault(phase.strip(), set()).add(int(total))
    assert all(len(seen) == 1 for seen in totals.values()), totals  # a total never grows
    last = text.replace("\r", "\n").strip().splitlines()[-1]
    assert f"plan rel-l2={result.plan.value:.4g}" in last, last


def test_progress_in_a_log_is_a_few_short_lines(cnn_data, tmp_path):
    proc = run_cli("sweep", str(CNN), "--data", str(cnn_data), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) <= 10 and max(len(line) for line in lines) < 400, proc.stderr
    progress = [line for line in lines if re.match(r"[a-z ()]+: \d+(/\d+)? evaluations", line)]
    assert any(line.startswith("search: ") for line in progress)
    assert "plan rel-l2=" in progress[-1]  # the last bar ends on the plan's value


# ---------------------------------------------------------------------------------------------- ranks


def test_ranks_start_at_1_and_unmeasured_columns_are_float(fast_sweep):
    import precision_lab

    result = precision_lab.load(fast_sweep["out"])
    layers = result.layers
    assert list(layers["rank"]) == list(range(1, len(layers) + 1))
    assert all(pd.api.types.is_float_dtype(layers[c]) for c in ("isolate", "leave_one_out", "signal"))
    csv = pd.read_csv(fast_sweep["out"] / "sensitivity.csv")
    assert csv["rank"].min() == 1
    first = next(line for line in fast_sweep["stdout"].splitlines() if line.strip().startswith("1 "))
    assert first.split()[1] == layers["name"][0]
    assert '<td data-v="1">1</td>' in (fast_sweep["out"] / "report.html").read_text()


# -------------------------------------------------------------------------------- Ctrl-C, SIGTERM, --jobs


@pytest.fixture(scope="module")
def heavy(tmp_path_factory) -> tuple[Path, Path]:
    """A model whose every inference takes seconds in a worker (:func:`user_facing_models.heavy_cnn`), and two
    feeds: one for calibration, one for evaluation."""
    root = tmp_path_factory.mktemp("heavy")
    model = heavy_cnn(root / "heavy.onnx", layers=HEAVY_LAYERS)
    return model, write_random_feeds(model, root / "data", count=2, seed=3)


HEAVY_LAYERS = 20


#: a worker evaluation must take longer than the exit bound, or a shutdown that waits for the workers would
#: also pass and the tests would prove nothing
EXIT_BOUND_SECONDS = 3.0


def _start_parallel_sweep(heavy: tuple[Path, Path], tmp_path: Path) -> tuple[subprocess.Popen, Path, float]:
    """A ``--jobs 2`` sweep of the heavy model in its own process group, returned with the seconds of the first
    evaluation the workers delivered, at the moment it was delivered: both workers are then inside the
    ONNX Runtime inference of their next plan (the sensitivity batch has one per layer), which does not return to Python
    for seconds. A shutdown that waits for the workers (the code before the fix: ``pool.shutdown()``) waits
    for those inferences."""
    model, data = heavy
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), PRECISION_LAB_MIN_BATCH_SECONDS="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "precision_lab", "sweep", str(model), "--data", str(data), "--out", str(out),
         "--calib-samples", "1", "--eval-samples", "1", "--verify-samples", "0", "--tolerance", "0.001",
         "--jobs", "2", "-q"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 300
    journal = out / "journal.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        lines = journal.read_text().splitlines() if journal.exists() else []
        if len(lines) >= 3:  # the two baselines ran here; the workers have delivered their first plan
            worker = json.loads(lines[2])
            assert worker["phase"].startswith("sensitivity") and worker["fp32_layers"], worker
            return proc, out, worker["seconds"]["total"]
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"the sweep did not reach its workers: {proc.communicate()[1]}")


def _stopped_mid_batch(out: Path) -> None:
    """The sweep stopped with evaluations of the sensitivity batch still unfinished."""
    lines = (out / "journal.jsonl").read_text().splitlines()
    assert len(lines) < 2 + HEAVY_LAYERS, "the whole sensitivity batch finished: the signal came too late to test anything"


def test_ctrl_c_with_jobs_2_exits_within_3_seconds(heavy, tmp_path):
    proc, out, evaluation = _start_parallel_sweep(heavy, tmp_path)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
    _, stderr = proc.communicate(timeout=120)
    elapsed = time.monotonic() - sent
    print(f"Ctrl-C with --jobs 2: exited in {elapsed:.2f} s (a worker evaluation takes {evaluation:.1f} s)")
    assert evaluation > EXIT_BOUND_SECONDS, "the model is too light on this machine to test the shutdown"
    assert proc.returncode == 130, stderr
    assert elapsed < EXIT_BOUND_SECONDS
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("precision-lab: interrupted")
    assert not (out / ".lock").exists()
    _stopped_mid_batch(out)


def test_sigterm_exits_within_3_seconds_and_leaves_no_lock_and_no_leaked_semaphores(heavy, tmp_path):
    proc, out, evaluation = _start_parallel_sweep(heavy, tmp_path)
    sent = time.monotonic()
    proc.terminate()  # SIGTERM to the sweep only, as kill(1) does: the workers get no signal of their own
    _, stderr = proc.communicate(timeout=120)
    elapsed = time.monotonic() - sent
    print(f"SIGTERM with --jobs 2: exited in {elapsed:.2f} s (a worker evaluation takes {evaluation:.1f} s)")
    assert evaluation > EXIT_BOUND_SECONDS, "the model is too light on this machine to test the shutdown"
    assert proc.returncode == 143, stderr
    assert elapsed < EXIT_BOUND_SECONDS
    assert not (out / ".lock").exists()
    assert "leaked semaphore" not in stderr and "Traceback" not in stderr, stderr
    _stopped_mid_batch(out)
    time.sleep(0.5)
    left = subprocess.run(["ps", "-o", "pid,args", "-s", str(proc.pid)], capture_output=True, text=True, check=False).stdout
    running = [line for line in left.strip().splitlines()[1:] if "<defunct>" not in line]
    assert running == [], left  # no orphaned worker


def test_jobs_2_runs_cheap_evaluations_here_and_warns_beyond_the_cores(cnn_data, tmp_path):
    code, _, stderr = run_main("sweep", str(CNN), "--data", str(cnn_data), "--out", str(tmp_path / "a"), "--jobs", "2")
    assert code == 0
    assert "running them in this process, which is faster than starting 2 workers" in stderr
    many = str((os.cpu_count() or 1) + 1)
    code, _, stderr = run_main("sweep", str(CNN), "--data", str(cnn_data), "--out", str(tmp_path / "b"), "--jobs", many)
    assert code == 0 and f"--jobs {many} is more than the" in stderr


# ------------------------------------------------------------------------------------------- errors


def test_internal_error_is_one_line_with_the_traceback_in_error_log(cnn_data, tmp_path, monkeypatch):
    import importlib

    def broken(*args, **kwargs):
        raise ValueError()  # a bug without a message: no IndexError on its first line either

    monkeypatch.setattr(importlib.import_module("precision_lab.calibration"), "_cache_key", broken)
    out = tmp_path / "out"
    code, stdout, stderr = run_main("sweep", str(CNN), "--data", str(cnn_data), "--out", str(out), "-q")
    assert code == 1 and stdout == ""
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert "internal error while calibrating: ValueError: ValueError" in stderr
    assert str(out / "error.log") in stderr
    log = (out / "error.log").read_text()
    assert "Traceback" in log and "in broken" in log
    assert not (out / ".lock").exists()
    code, _, stderr = run_main("sweep", str(CNN), "--data", str(cnn_data), "--out", str(out), "-q", "--verbose")
    assert code == 1 and "Traceback" in stderr and "in broken" in stderr


def test_custom_metric_that_raises_is_the_users_error(cnn_data, tmp_path):
    metric = tmp_path / "metric.py"
    metric.write_text("def score(outputs, reference):\n    raise KeyError('logits')\n")
    code, _, stderr = run_main(
        "sweep", str(CNN), "--data", str(cnn_data), "--out", str(tmp_path / "out"), "-q",
        "--metric", f"{metric}:score", "--metric-direction", "lower", "--tolerance", "1",
    )
    assert code == 2 and stderr.count("\n") == 1
    assert f"metric '{metric}:score' raised KeyError: 'logits'" in stderr


def test_output_slice_error_while_comparing_is_an_input_error(tmp_path):
    model = symbolic_output(tmp_path / "sym.onnx")
    data = write_random_feeds(model, tmp_path / "data", count=24)
    code, _, stderr = run_main(
        "sweep", str(model), "--data", str(data), "--out", str(tmp_path / "out"), "-q",
        "--output-slice", "idx:1:0:1000",
    )
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and "--output-slice idx:1:0:1000 does not fit" in stderr
    assert "nan" not in stderr


def test_noise_floor_is_reported_with_its_reason(tmp_path):
    model = cancelling_batchnorm(tmp_path / "bn.onnx")
    data = write_random_feeds(model, tmp_path / "data", count=24)
    code, _, stderr = run_main("sweep", str(model), "--data", str(data), "--out", str(tmp_path / "a"), "--tolerance", "0.2")
    assert code == 0
    floor = [line for line in stderr.splitlines() if "noise floor" in line]
    assert len(floor) == 1 and "of the tolerance 0.2" in floor[0] and "--metric max-abs" in floor[0]
    code, _, stderr = run_main("sweep", str(model), "--data", str(data), "--out", str(tmp_path / "b"))
    assert code == 1  # unattainable at 0.05: the warning says why
    assert "noise floor" in stderr and "even the all-FP32 model fails" in stderr


def test_polygraphy_pairing_needs_nothing_newer_than_0_49():
    """compare.py uses only Polygraphy API present since 0.49, the minimum pyproject allows."""
    import tomllib

    source = (REPO / "precision_lab" / "compare.py").read_text()
    assert "_run_comparison" not in source and "BaseCompareFunc" not in source
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "polygraphy>=0.49" in deps


# ------------------------------------------------------------------------------ onnx-graphsurgeon's own logger


def _model_with_a_large_foldable_constant(path: Path) -> Path:
    """A MatMul whose weight is a constant subgraph (Expand of a 1x1 constant) folding to 2 MiB: onnx-graphsurgeon
    then warns "It looks like this model contains foldable nodes that produce large outputs" (and, without the
    ``colored`` module, that it is missing), which the user can do nothing about."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Expand", ["one", "shape"], ["weight"], name="expand"),
        helper.make_node("MatMul", ["x", "weight"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes, "large_fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])],
        [numpy_helper.from_array(np.full((1, 1), 0.01, np.float32), "one"),
         numpy_helper.from_array(np.array([1024, 512], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_graphsurgeon_warnings_stay_off_the_terminal(tmp_path, capfd):
    from precision_lab.model import prepare_model

    model = _model_with_a_large_foldable_constant(tmp_path / "large_fold.onnx")
    prepare_model(model)  # the library call: nothing on the terminal
    captured = capfd.readouterr()
    assert "[W]" not in captured.out + captured.err, captured.out + captured.err
    proc = run_cli("layers", str(model))
    assert proc.returncode == 0, proc.stderr
    assert "[W]" not in proc.stdout + proc.stderr and "1 candidate layers" in proc.stdout, proc.stdout + proc.stderr
