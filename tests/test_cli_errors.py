"""Bad input on the command line: exit code 2, ONE line ``precision-lab: error: ...`` on stderr, no traceback.

Most cases call ``precision_lab.cli.main`` in-process (fast, output captured with ``capsys``); a few run
``python -m precision_lab`` in a subprocess to prove what a user sees on the console. Every sweep uses tiny
sample counts and an ``--out`` folder in ``tmp_path``.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import SAMPLES, run_cli, write_random_feeds
from precision_lab.cli import main
from precision_lab.errors import InputError

SMALL = ("--calib-samples", "4", "--eval-samples", "2")
PLAIN_CNN = SAMPLES / "plain_cnn.onnx"


@pytest.fixture(autouse=True)
def _reset_precision_lab_logger():
    """``main`` configures the ``precision_lab`` logger with a handler on the *current* ``sys.stderr``; drop it
    after each test so a later test's capsys sees a fresh handler."""
    yield
    logger = logging.getLogger("precision_lab")
    logger.handlers.clear()


# ---------------------------------------------------------------------------------------------------------
# Small models
# ---------------------------------------------------------------------------------------------------------


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_model(path: Path, dims=(1, 3, 8, 8)) -> Path:
    """::

        x [dims] --Conv(W 4x3x3x3, B 4, pads 1)--> y [N, 4, 8, 8]
    """
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B")
    out_dims = [dims[0], 4, 8, 8]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
        [weight, bias],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def two_input_model(path: Path) -> Path:
    """::

        a [1, 3, 8, 8] --+
                         Add --Conv(W)--> y
        b [1, 3, 8, 8] --+
    """
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["s"], name="add"),
            helper.make_node("Conv", ["s", "W"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 8, 8]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 8, 8]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [weight],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def relu_add_model(path: Path) -> Path:
    """No candidate of recipe trt::

        x [1, 3, 8, 8] --Relu--> r --Add(r, x)--> y
    """
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("Add", ["r", "x"], ["y"], name="add"),
        ],
        "relu_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def feeds_folder(folder: Path, feeds: list[dict], *, npy: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, feed in enumerate(feeds):
        if npy:
            (array,) = feed.values()
            np.save(folder / f"feed_{i:03d}.npy", array)
        else:
            np.savez(folder / f"feed_{i:03d}.npz", **feed)
    return folder


def good_feeds(count: int = 6, name: str = "x", shape=(1, 3, 8, 8), dtype=np.float32) -> list[dict]:
    rng = np.random.default_rng(3)
    return [{name: rng.random(shape).astype(dtype)} for _ in range(count)]


# ---------------------------------------------------------------------------------------------------------
# The check every case makes
# ---------------------------------------------------------------------------------------------------------


def one_error_line(capsys, argv: list[str], *, code: int = 2) -> str:
    """Run ``main(argv)``; assert the exit code, exactly one stderr line ``precision-lab: error: ...`` and
    no traceback anywhere; return that line."""
    try:
        returned = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse must not exit on its own
        pytest.fail(f"main raised SystemExit({exc.code}) instead of returning {code}")
    except Exception:
        pytest.fail(f"main raised instead of returning {code}:\n{traceback.format_exc()}")
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("precision-lab: error: "), lines[0]
    assert returned == code, f"exit code {returned}, stderr: {err}"
    return lines[0]


def assert_mentions(line: str, *words: str) -> None:
    lowered = line.lower()
    for word in words:
        assert word.lower() in lowered, f"{word!r} not in {line!r}"


def sweep_args(model: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["sweep", str(model), *SMALL, "--out", str(tmp_path / "out"), *extra]


# ---------------------------------------------------------------------------------------------------------
# The model file
# ---------------------------------------------------------------------------------------------------------


def test_missing_model_file(capsys, tmp_path):
    line = one_error_line(capsys, sweep_args(tmp_path / "nope.onnx", tmp_path))
    assert_mentions(line, "not found", "nope.onnx", "check the path")


def test_model_path_is_a_directory(capsys, tmp_path):
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    line = one_error_line(capsys, sweep_args(folder, tmp_path))
    assert_mentions(line, "folder", ".onnx file")


def test_text_file_is_not_onnx(capsys, tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not an ONNX model\njust some text\n")
    line = one_error_line(capsys, sweep_args(path, tmp_path))
    assert_mentions(line, "notes.onnx", "not")
    assert "onnx" in line.lower()


def test_truncated_onnx(capsys, tmp_path):
    data = PLAIN_CNN.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    line = one_error_line(capsys, sweep_args(path, tmp_path))
    assert_mentions(line, "truncated.onnx", "truncated")


def test_empty_model_file(capsys, tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    line = one_error_line(capsys, sweep_args(path, tmp_path))
    assert_mentions(line, "empty", "re-export")


def test_layers_missing_model_file(capsys, tmp_path):
    line = one_error_line(capsys, ["layers", str(tmp_path / "nope.onnx")])
    assert_mentions(line, "not found")


# ---------------------------------------------------------------------------------------------------------
# The data folder
# ---------------------------------------------------------------------------------------------------------


def test_data_folder_does_not_exist(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(tmp_path / "no_data")))
    assert_mentions(line, "not found", "no_data", "--data")


def test_data_folder_empty(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    (tmp_path / "data").mkdir()
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(tmp_path / "data")))
    assert_mentions(line, "empty", ".npz")


def test_data_npz_wrong_input_name(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    data = feeds_folder(tmp_path / "data", good_feeds(name="image"))
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(data)))
    assert_mentions(line, "image", "'x'", "name the arrays")


def test_data_wrong_dtype(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    data = feeds_folder(tmp_path / "data", good_feeds(dtype=np.float64))
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(data)))
    assert_mentions(line, "float64", "float32", "astype")


def test_data_wrong_shape(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    data = feeds_folder(tmp_path / "data", good_feeds(shape=(1, 3, 16, 16)))
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(data)))
    assert_mentions(line, "1x3x16x16", "1x3x8x8", "reshape")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_data_not_finite(capsys, tmp_path, bad):
    model = conv_model(tmp_path / "conv.onnx")
    feeds = good_feeds()
    feeds[2]["x"][0, 1, 2, 3] = bad
    data = feeds_folder(tmp_path / "data", feeds)
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(data)))
    assert_mentions(line, "NaN or Inf", "#2", "clean the data")


def test_data_npy_for_two_input_model(capsys, tmp_path):
    model = two_input_model(tmp_path / "two.onnx")
    data = feeds_folder(tmp_path / "data", good_feeds(name="a"), npy=True)
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(data)))
    assert_mentions(line, ".npy", "single-input", ".npz")


def test_data_mixed_npz_and_npy(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    data = feeds_folder(tmp_path / "data", good_feeds(3))
    np.save(data / "extra.npy", good_feeds(1)[0]["x"])
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(data)))
    assert_mentions(line, "mixes", ".npz", ".npy")


def test_data_file_instead_of_folder(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    path = tmp_path / "one.npz"
    np.savez(path, **good_feeds(1)[0])
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(path)))
    assert_mentions(line, "folder", "one.npz")


# ---------------------------------------------------------------------------------------------------------
# The model's candidates
# ---------------------------------------------------------------------------------------------------------


def test_model_without_candidate_layers(capsys, tmp_path):
    model = relu_add_model(tmp_path / "relu_add.onnx")
    data = feeds_folder(tmp_path / "data", good_feeds())
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(data), "--recipe", "trt"))
    assert_mentions(line, "no candidate layers", "trt", "--recipe extended", "--ops")


def test_model_without_candidate_layers_synthetic_data(capsys, tmp_path):
    """The same without --data: the error must not be preceded by the synthetic-data warning (nothing ran)."""
    model = relu_add_model(tmp_path / "relu_add.onnx")
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--recipe", "trt"))
    assert_mentions(line, "no candidate layers")


def test_exclude_removes_every_candidate(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    data = feeds_folder(tmp_path / "data", good_feeds())
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(data), "--exclude", "*"))
    assert_mentions(line, "no candidate layers", "--exclude")


def test_ops_not_op_types(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    data = feeds_folder(tmp_path / "data", good_feeds())
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(data), "--ops", "conv"))
    assert_mentions(line, "--ops", "Conv,MatMul", "conv")


def test_layers_ops_not_op_types(capsys, tmp_path):
    """``layers --ops conv`` must reject a lower-case op type like ``sweep`` does, not list 0 layers and exit 0."""
    model = conv_model(tmp_path / "conv.onnx")
    line = one_error_line(capsys, ["layers", str(model), "--ops", "conv"])
    assert_mentions(line, "--ops", "conv")


def test_layers_conv_inside_if_branch_warns_once(capsys, tmp_path):
    """A Conv inside a data-dependent If is no candidate: one warning names it (docs/control_flow.md)."""
    then_graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["t"], name="inner_conv", pads=[1, 1, 1, 1])],
        "then_body", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4, 8, 8])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["e"], name="inner_conv_else", pads=[1, 1, 1, 1])],
        "else_body", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4, 8, 8])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], name="branchy", then_branch=then_graph, else_branch=else_graph)],
        "if",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")],
    )
    model = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "if.onnx")
    assert main(["layers", str(model)]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out + err, err
    assert_mentions(lines[0], "inner_conv", "branchy.then_branch", "stay FP32")
    assert "0 candidate layers" in out


# ---------------------------------------------------------------------------------------------------------
# Other sweep options
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_data", [False, True], ids=["synthetic", "data"])
def test_negative_seed(capsys, tmp_path, with_data):
    extra = ["--data", str(write_random_feeds(PLAIN_CNN, tmp_path / "data", count=6))] if with_data else []
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, *extra, "--seed", "-5"))
    assert_mentions(line, "--seed")


def test_out_is_an_existing_file(capsys, tmp_path):
    data = write_random_feeds(PLAIN_CNN, tmp_path / "data", count=6)
    out = tmp_path / "out.txt"
    out.write_text("not a folder\n")
    line = one_error_line(
        capsys, ["sweep", str(PLAIN_CNN), *SMALL, "--data", str(data), "--out", str(out), "--quiet"]
    )
    assert_mentions(line, "out.txt", "--out")


def test_percentile_out_of_range(capsys, tmp_path):
    data = write_random_feeds(PLAIN_CNN, tmp_path / "data", count=6)
    line = one_error_line(
        capsys,
        sweep_args(PLAIN_CNN, tmp_path, "--data", str(data), "--calibration", "percentile", "--percentile", "150"),
    )
    assert_mentions(line, "--percentile", "150")


# ---------------------------------------------------------------------------------------------------------
# The metric
# ---------------------------------------------------------------------------------------------------------


def test_unknown_metric(capsys, tmp_path):
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, "--metric", "foo"))
    assert_mentions(line, "unknown metric 'foo'", "rel-l2", "module:function")


@pytest.mark.parametrize(
    "metric, tolerance, allowed",
    [("cosine", "1.5", "-1.0 to 1.0"), ("rel-l2", "-1", "0.0 to inf"), ("top1", "2", "0.0 to 1.0")],
)
def test_tolerance_out_of_range(capsys, tmp_path, metric, tolerance, allowed):
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, "--metric", metric, "--tolerance", tolerance))
    assert_mentions(line, "out of range", metric, allowed)


def test_tolerance_nan(capsys, tmp_path):
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, "--tolerance", "nan"))
    assert_mentions(line, "out of range")


def test_custom_metric_without_direction(capsys, tmp_path):
    metric = tmp_path / "metric.py"
    metric.write_text("def always_bad(outputs, reference):\n    return 1.0\n")
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, "--metric", f"{metric}:always_bad", "--tolerance", "0.5"))
    assert_mentions(line, "--metric-direction")


def test_custom_metric_file_missing(capsys, tmp_path):
    line = one_error_line(
        capsys,
        sweep_args(
            PLAIN_CNN, tmp_path, "--metric", f"{tmp_path / 'nope.py'}:f", "--metric-direction", "lower", "--tolerance", "1"
        ),
    )
    assert_mentions(line, "not found", "nope.py")


def test_builtin_metric_with_wrong_direction(capsys, tmp_path):
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, "--metric", "cosine", "--metric-direction", "lower"))
    assert_mentions(line, "cosine", "--metric-direction")


def test_max_abs_needs_tolerance(capsys, tmp_path):
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, "--metric", "max-abs"))
    assert_mentions(line, "max-abs", "no default tolerance", "--tolerance")


# ---------------------------------------------------------------------------------------------------------
# Input shapes
# ---------------------------------------------------------------------------------------------------------


def test_dynamic_dims_without_data_or_input_shape(capsys, tmp_path):
    model = conv_model(tmp_path / "dynamic.onnx", dims=("N", 3, 8, 8))
    line = one_error_line(capsys, sweep_args(model, tmp_path))
    assert_mentions(line, "'x'", "dynamic", "--input-shape x:1x3x8x8", "--data")


def test_layers_dynamic_dims_without_input_shape(capsys, tmp_path):
    model = conv_model(tmp_path / "dynamic.onnx", dims=("N", 3, 8, 8))
    line = one_error_line(capsys, ["layers", str(model)])
    assert_mentions(line, "dynamic", "--input-shape x:1x3x8x8")


@pytest.mark.parametrize("text", ["x", "x:", ":1x3x8x8", "x:1x3xAx8", "x:1x0x8x8", "x:1,3,8,8"])
def test_bad_input_shape_syntax(capsys, tmp_path, text):
    model = conv_model(tmp_path / "conv.onnx")
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--input-shape", text))
    assert_mentions(line, "bad --input-shape", "NAME:1x3x224x224")


def test_input_shape_names_unknown_input(capsys, tmp_path):
    model = conv_model(tmp_path / "dynamic.onnx", dims=("N", 3, 8, 8))
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--input-shape", "image:2x3x8x8"))
    assert_mentions(line, "'image'", "['x']")


def test_input_shape_names_unknown_input_static_model(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--input-shape", "image:1x3x8x8"))
    assert_mentions(line, "'image'", "['x']")


def test_layers_input_shape_names_unknown_input(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    line = one_error_line(capsys, ["layers", str(model), "--input-shape", "image:1x3x8x8"])
    assert_mentions(line, "'image'", "['x']")


def test_input_shape_wrong_rank(capsys, tmp_path):
    model = conv_model(tmp_path / "dynamic.onnx", dims=("N", 3, 8, 8))
    line = one_error_line(capsys, ["layers", str(model), "--input-shape", "x:2x3x8"])
    assert_mentions(line, "does not fit", "same rank")


# ---------------------------------------------------------------------------------------------------------
# Output slices
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["fc", "fc:1:4", "fc:a:0:4", "fc:1:4:2", "fc:1:-1:3", ":1:0:4"])
def test_bad_output_slice_syntax(capsys, tmp_path, text):
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, "--output-slice", text))
    assert_mentions(line, "bad --output-slice")


def test_output_slice_names_unknown_output(capsys, tmp_path):
    data = write_random_feeds(PLAIN_CNN, tmp_path / "data", count=6)
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, "--data", str(data), "--output-slice", "logits:1:0:4"))
    assert_mentions(line, "'logits'", "fc")


def test_output_slice_does_not_fit_the_output(capsys, tmp_path):
    data = write_random_feeds(PLAIN_CNN, tmp_path / "data", count=6)
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, "--data", str(data), "--output-slice", "fc:1:0:100000"))
    assert_mentions(line, "does not fit")


# ---------------------------------------------------------------------------------------------------------
# Usage errors (argparse)
# ---------------------------------------------------------------------------------------------------------


def test_unknown_option(capsys, tmp_path):
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, "--bogus"))
    assert_mentions(line, "unrecognized arguments: --bogus", "--help")
    assert "precision-lab precision-lab" not in line, line  # the hint names the command once


def test_missing_model_argument(capsys):
    line = one_error_line(capsys, ["sweep"])
    assert_mentions(line, "model", "precision-lab sweep --help")


def test_missing_option_value(capsys, tmp_path):
    line = one_error_line(capsys, ["sweep", str(PLAIN_CNN), "--tolerance"])
    assert_mentions(line, "--tolerance", "expected one argument")


def test_option_value_of_wrong_type(capsys, tmp_path):
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, "--calib-samples", "many"))
    assert_mentions(line, "--calib-samples", "many")


def test_invalid_choice(capsys, tmp_path):
    line = one_error_line(capsys, sweep_args(PLAIN_CNN, tmp_path, "--recipe", "fast"))
    assert_mentions(line, "--recipe", "fast", "trt")


def test_unknown_command(capsys):
    line = one_error_line(capsys, ["sweeep", str(PLAIN_CNN)])
    assert_mentions(line, "sweeep")


def test_apply_without_output(capsys, tmp_path):
    line = one_error_line(capsys, ["apply", str(PLAIN_CNN), str(tmp_path / "plan.json")])
    assert_mentions(line, "--output")


def test_zero_samples(capsys, tmp_path):
    line = one_error_line(capsys, ["sweep", str(PLAIN_CNN), "--calib-samples", "0", "--out", str(tmp_path / "o")])
    assert_mentions(line, "--calib-samples")


# ---------------------------------------------------------------------------------------------------------
# Data loader scripts
# ---------------------------------------------------------------------------------------------------------


def test_data_and_data_loader_script_together(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    data = feeds_folder(tmp_path / "data", good_feeds())
    script = tmp_path / "loader.py"
    script.write_text("def load_data():\n    return []\n")
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data", str(data), "--data-loader-script", str(script)))
    assert_mentions(line, "either --data or --data-loader-script")


def test_data_loader_script_missing(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data-loader-script", str(tmp_path / "loader.py")))
    assert_mentions(line, "not found", "loader.py")


def test_data_loader_script_missing_with_function(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    spec = f"{tmp_path / 'loader.py'}:my_feeds"
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data-loader-script", spec))
    assert_mentions(line, "not found", "loader.py")


def test_data_loader_script_raises(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    script = tmp_path / "loader.py"
    script.write_text("def load_data():\n    raise RuntimeError('camera offline')\n")
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data-loader-script", str(script)))
    assert_mentions(line, "loader.py", "RuntimeError", "camera offline")


def test_data_loader_script_without_the_function(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    script = tmp_path / "loader.py"
    script.write_text("def other():\n    return []\n")
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data-loader-script", f"{script}:load_feeds"))
    assert_mentions(line, "loader.py", "load_feeds")


def test_data_loader_script_yields_nothing(capsys, tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    script = tmp_path / "loader.py"
    script.write_text("def load_data():\n    return []\n")
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data-loader-script", str(script)))
    assert_mentions(line, "no feeds")


def test_data_loader_script_bad_feeds(capsys, tmp_path):
    """Feeds from a script are validated like a folder's."""
    model = conv_model(tmp_path / "conv.onnx")
    script = tmp_path / "loader.py"
    script.write_text(
        "import numpy as np\n"
        "def load_data():\n"
        "    for _ in range(6):\n"
        "        yield {'x': np.zeros((1, 3, 8, 8), dtype=np.float64)}\n"
    )
    line = one_error_line(capsys, sweep_args(model, tmp_path, "--data-loader-script", str(script)))
    assert_mentions(line, "float64", "float32")


# ---------------------------------------------------------------------------------------------------------
# apply
# ---------------------------------------------------------------------------------------------------------


def test_apply_missing_plan_file(capsys, tmp_path):
    line = one_error_line(
        capsys, ["apply", str(PLAIN_CNN), str(tmp_path / "plan.json"), "--output", str(tmp_path / "plan.onnx")]
    )
    assert_mentions(line, "plan file not found", "plan.json")
    assert not (tmp_path / "plan.onnx").exists()


def test_apply_json_that_is_not_a_plan(capsys, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"hello": "world"}))
    line = one_error_line(capsys, ["apply", str(PLAIN_CNN), str(plan), "--output", str(tmp_path / "plan.onnx")])
    assert_mentions(line, "not a precision-lab plan")
    assert not (tmp_path / "plan.onnx").exists()


@pytest.mark.parametrize("content", ["[1, 2, 3]", "\"plan\"", "42"])
def test_apply_json_of_another_type(capsys, tmp_path, content):
    plan = tmp_path / "plan.json"
    plan.write_text(content)
    line = one_error_line(capsys, ["apply", str(PLAIN_CNN), str(plan), "--output", str(tmp_path / "plan.onnx")])
    assert_mentions(line, "not a precision-lab plan")


def test_apply_file_that_is_not_json(capsys, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text("fp32_layers: [conv1]\n")
    line = one_error_line(capsys, ["apply", str(PLAIN_CNN), str(plan), "--output", str(tmp_path / "plan.onnx")])
    assert_mentions(line, "not valid JSON")


def test_apply_missing_model(capsys, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"schema_version": 1, "fp32_layers": [], "quantization": {"ranges": {}}}))
    line = one_error_line(
        capsys, ["apply", str(tmp_path / "nope.onnx"), str(plan), "--output", str(tmp_path / "plan.onnx")]
    )
    assert_mentions(line, "not found", "nope.onnx")


# ---------------------------------------------------------------------------------------------------------
# --verbose keeps the traceback
# ---------------------------------------------------------------------------------------------------------


def test_verbose_propagates_the_exception(capsys, tmp_path):
    with pytest.raises(InputError, match="model file not found"):
        main(sweep_args(tmp_path / "nope.onnx", tmp_path, "--verbose"))


def test_verbose_short_flag_propagates_the_exception(capsys, tmp_path):
    with pytest.raises(InputError, match="unknown metric"):
        main(sweep_args(PLAIN_CNN, tmp_path, "--metric", "foo", "-v"))


def test_verbose_console_shows_a_traceback(tmp_path):
    proc = run_cli(*sweep_args(tmp_path / "nope.onnx", tmp_path, "--verbose"), timeout=120)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "InputError" in proc.stderr and "model file not found" in proc.stderr


# ---------------------------------------------------------------------------------------------------------
# The console (subprocess): what a user sees
# ---------------------------------------------------------------------------------------------------------


def _console_one_line(proc, code: int = 2) -> str:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("precision-lab: error: "), lines[0]
    assert proc.returncode == code, proc.stderr
    return lines[0]


def test_console_truncated_model(tmp_path):
    data = PLAIN_CNN.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    line = _console_one_line(run_cli(*sweep_args(path, tmp_path), timeout=120))
    assert_mentions(line, "truncated")


def test_console_usage_error(tmp_path):
    line = _console_one_line(run_cli("sweep", str(PLAIN_CNN), "--nope", timeout=120))
    assert_mentions(line, "--nope")


def test_console_wrong_dtype(tmp_path):
    model = conv_model(tmp_path / "conv.onnx")
    data = feeds_folder(tmp_path / "data", good_feeds(dtype=np.float64))
    line = _console_one_line(run_cli(*sweep_args(model, tmp_path, "--data", str(data)), timeout=120))
    assert_mentions(line, "float64")


# ---------------------------------------------------------------------------------------------------------
# Unattainable tolerance: exit 1, one clear line
# ---------------------------------------------------------------------------------------------------------


def _always_bad_metric(tmp_path: Path) -> str:
    path = tmp_path / "metric.py"
    path.write_text("def always_bad(outputs, reference):\n    return 1.0\n")
    return f"{path}:always_bad"


def test_unattainable_tolerance_exits_1(capsys, tmp_path):
    data = write_random_feeds(PLAIN_CNN, tmp_path / "data", count=6)
    argv = sweep_args(
        PLAIN_CNN, tmp_path, "--data", str(data), "--quiet",
        "--metric", _always_bad_metric(tmp_path), "--metric-direction", "lower", "--tolerance", "0.5",
    )
    line = one_error_line(capsys, argv, code=1)
    assert_mentions(line, "all-FP32", "tolerance 0.5", "1", "loosen --tolerance")


def test_unattainable_tolerance_console(tmp_path):
    argv = sweep_args(
        PLAIN_CNN, tmp_path, "--quiet",
        "--metric", _always_bad_metric(tmp_path), "--metric-direction", "lower", "--tolerance", "0.5",
    )
    proc = run_cli(*argv, timeout=300)
    line = _console_one_line(proc, code=1)
    assert_mentions(line, "all-FP32", "0.5")


def test_unattainable_tolerance_not_quiet_has_one_error_line(capsys, tmp_path):
    """Without --quiet, progress bars and info lines may be shown, but the error is one line of its own
    (not glued to an unfinished progress bar) and the exit code is 1."""
    data = write_random_feeds(PLAIN_CNN, tmp_path / "data", count=6)
    argv = sweep_args(
        PLAIN_CNN, tmp_path, "--data", str(data),
        "--metric", _always_bad_metric(tmp_path), "--metric-direction", "lower", "--tolerance", "0.5",
    )
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    errors = [line for line in err.replace("\r", "\n").splitlines() if "precision-lab: error:" in line]
    assert len(errors) == 1, err
    # the progress bar is closed (its line ended) before the error is printed, so the error starts a line
    assert err.splitlines()[-1].startswith("precision-lab: error: even the all-FP32"), err
