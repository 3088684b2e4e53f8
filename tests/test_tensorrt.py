"""The TensorRT backend.

Runs everywhere: layer-to-node matching (plain objects with ``name``/``metadata``, the attributes TensorRT's
``ILayer`` has), export commands (parsed with shlex, trtexec's spec syntax and Polygraphy's own argparse
definitions), detection with TensorRT absent, broken or stub-only, option and version checks, and TensorRT
error capture.

Needs TensorRT and a CUDA GPU (``@pytest.mark.tensorrt``, skipped with the precise reason otherwise): real
engine builds and sweeps of ``sample_models/plain_cnn.onnx`` in both modes. No fake ``tensorrt`` module
stands in for the real one in any test that builds.
"""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

from conftest import REPO, SAMPLES, write_random_feeds
from precision_lab.backends import BACKENDS, detect_backend, get_backend, resolve_backend, tensorrt_status
from precision_lab.backends import detect as detect_module
from precision_lab.backends import tensorrt as trt_backend
from precision_lab.backends.base import PlanBuild
from precision_lab.backends.detect import TensorRTStatus
from precision_lab.backends.tensorrt import TensorRTBackend, TensorRTOptions, export_commands, trtexec_layer_spec_problem
from precision_lab.backends.trt_layers import (
    UnmatchedNodeError,
    layers_for_nodes,
    match_layers,
    nodes_from_layer_name,
    onnx_nodes_from_metadata,
)
from precision_lab.errors import EvaluationError, InputError, MissingDependencyError
from precision_lab.backends.exports import explicit_commands as build_commands

PLAIN_CNN = SAMPLES / "plain_cnn.onnx"


# ---------------------------------------------------------------------------------------------------------
# Layer-to-node matching (data structures only)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Layer:
    """What the matcher reads of a ``tensorrt.ILayer``."""

    name: str
    metadata: str = ""


NODES = ["conv1", "relu1", "conv1_1", "/block/conv/Conv", "/block/conv/Conv_1", "fc", "conv10", "odd]name"]


def names(layers):
    return [layer.name for layer in layers]


def test_metadata_entries_are_parsed_including_fused_and_odd_names():
    assert onnx_nodes_from_metadata("[ONNX Layer: conv1]") == ["conv1"]
    assert onnx_nodes_from_metadata("[ONNX Layer: conv2]\x1f[ONNX Layer: relu2]") == ["conv2", "relu2"]
    assert onnx_nodes_from_metadata("[ONNX Layer: a]\x1e[ONNX Layer: b]\x1f[ONNX Layer: c]") == ["a", "b", "c"]
    assert onnx_nodes_from_metadata("[ONNX Layer: a][ONNX Layer: b]") == ["a", "b"]
    assert onnx_nodes_from_metadata("[ONNX Layer: /m/x:0 y/Conv]") == ["/m/x:0 y/Conv"]
    assert onnx_nodes_from_metadata("[ONNX Layer: odd]name]") == ["odd]name"]
    assert onnx_nodes_from_metadata("") == []
    assert onnx_nodes_from_metadata(None) == []
    assert onnx_nodes_from_metadata("something else") == []


def test_node_split_into_several_layers_maps_all_of_them_by_metadata():
    layers = [
        Layer("/block/conv/Conv", "[ONNX Layer: /block/conv/Conv]"),
        Layer("/block/conv/Conv_2", "[ONNX Layer: /block/conv/Conv]"),  # second layer of the same node
        Layer("/block/conv/Conv_1", "[ONNX Layer: /block/conv/Conv_1]"),  # a different node
        Layer("(Unnamed Layer* 12) [Constant]", ""),
        Layer("fc", "[ONNX Layer: fc]"),
        Layer("fc_1", "[ONNX Layer: fc]"),
        Layer("fc_2", "[ONNX Layer: fc]"),
    ]
    found = layers_for_nodes(layers, ["/block/conv/Conv", "fc"], NODES)
    assert names(found["/block/conv/Conv"]) == ["/block/conv/Conv", "/block/conv/Conv_2"]
    assert names(found["fc"]) == ["fc", "fc_1", "fc_2"]
    assert names(match_layers(layers, NODES)["/block/conv/Conv_1"]) == ["/block/conv/Conv_1"]


def test_fused_layer_maps_to_each_of_its_nodes():
    fused_by_metadata = Layer("conv1 + relu1", "[ONNX Layer: conv1]\x1f[ONNX Layer: relu1]")
    fused_by_name = Layer("conv1 + relu1")
    for layer in (fused_by_metadata, fused_by_name):
        found = layers_for_nodes([layer], ["conv1", "relu1"], NODES)
        assert found == {"conv1": [layer], "relu1": [layer]}


def test_name_fallback_uses_the_longest_node_name_at_a_separator():
    assert nodes_from_layer_name("conv1", NODES) == ["conv1"]
    assert nodes_from_layer_name("conv1_1", NODES) == ["conv1_1"]  # the node of that name, not conv1 + "_1"
    assert nodes_from_layer_name("conv1_2", NODES) == ["conv1"]  # conv1 split by the parser
    assert nodes_from_layer_name("conv10", NODES) == ["conv10"]
    assert nodes_from_layer_name("conv100", NODES) == []  # no separator after a node name
    assert nodes_from_layer_name("/block/conv/Conv_1_3", NODES) == ["/block/conv/Conv_1"]
    assert nodes_from_layer_name("(Unnamed Layer* 12) [Constant]", NODES) == []
    assert nodes_from_layer_name("conv1 + relu1 + somethingelse", NODES) == ["conv1", "relu1"]


def test_metadata_wins_over_a_look_alike_name():
    layer = Layer("conv1_1", "[ONNX Layer: conv1]")
    assert names(match_layers([layer], NODES)["conv1"]) == ["conv1_1"]
    assert match_layers([layer], NODES)["conv1_1"] == []
    foreign = Layer("conv1", "[ONNX Layer: not_in_this_model]")  # metadata of another graph: no name guess
    assert all(not found for found in match_layers([foreign], NODES).values())


def test_unmatched_pinned_node_is_an_error_naming_it():
    layers = [Layer("conv1", "[ONNX Layer: conv1]"), Layer("(Unnamed Layer* 3) [Constant]")]
    with pytest.raises(UnmatchedNodeError) as info:
        layers_for_nodes(layers, ["conv1", "gone/Conv"], [*NODES, "gone/Conv"])
    assert isinstance(info.value, InputError)
    assert info.value.names == ("gone/Conv",)
    assert "'gone/Conv'" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Export commands
# ---------------------------------------------------------------------------------------------------------


def flag_values(argv, flag):
    """Values of ``flag=value`` tokens (trtexec style)."""
    return [token.split("=", 1)[1] for token in argv if token.startswith(flag + "=")]


def trtexec_spec(spec):
    """A ``--layerPrecisions``/``--layerOutputTypes`` value as trtexec's sampleOptions.cpp parses it: split on
    ',', then name/value at the last ':', single quotes removed from the name."""
    pairs = []
    for item in spec.split(","):
        name, _, value = item.rpartition(":")
        pairs.append((name.replace("'", ""), value))
    return pairs


def polygraphy_parser(tool_name):
    if tool_name == "convert":
        from polygraphy.tools.convert.convert import Convert as Tool
    else:
        from polygraphy.tools.run.run import Run as Tool
    return Tool().setup_parser()


def polygraphy_args(command):
    argv = shlex.split(command)
    assert argv[0] == "polygraphy"
    return polygraphy_parser(argv[1]).parse_args(argv[2:])  # argparse exits on any unknown flag


def test_explicit_commands(tmp_path):
    plan = tmp_path / "out dir" / "plan.onnx"
    commands = export_commands(plan, mode="explicit", fp32_layers=["conv4"])
    assert set(commands) == {"trtexec", "polygraphy", "polygraphy_compare"}

    argv = shlex.split(commands["trtexec"])
    assert argv[0] == "trtexec"
    assert flag_values(argv, "--onnx") == [str(plan)]
    assert flag_values(argv, "--saveEngine") == [str(plan.with_suffix(".engine"))]
    assert "--stronglyTyped" in argv
    assert not any(t.startswith(("--int8", "--calib", "--layerPrecisions", "--precisionConstraints")) for t in argv)
    # the same command plan.json's exports carry
    assert argv == shlex.split(build_commands(plan)["trtexec"])

    convert = polygraphy_args(commands["polygraphy"])
    assert convert.model_file == str(plan) and convert.strongly_typed is True
    assert convert.output == str(plan.with_suffix(".engine"))
    assert not convert.int8 and convert.layer_precisions is None

    run = polygraphy_args(commands["polygraphy_compare"])
    assert run.model_file == str(plan) and run.strongly_typed is True
    assert run.runners == ["trt", "onnxrt"]


LAYERS = ["/features/conv 4/Conv", "/head/fc:0", "conv1"]


def test_implicit_commands(tmp_path):
    plan, model, cache = tmp_path / "plan.onnx", tmp_path / "my model.onnx", tmp_path / "calibration-ab.cache"
    commands = export_commands(plan, mode="implicit", fp32_layers=LAYERS, model_onnx=model, calibration_cache=cache)

    argv = shlex.split(commands["trtexec"])
    assert argv[0] == "trtexec"
    assert flag_values(argv, "--onnx") == [str(model)]
    assert "--int8" in argv and "--stronglyTyped" not in argv
    assert flag_values(argv, "--calib") == [str(cache)]
    assert flag_values(argv, "--precisionConstraints") == ["obey"]
    assert flag_values(argv, "--saveEngine") == [str(plan.with_suffix(".engine"))]
    (precisions,) = flag_values(argv, "--layerPrecisions")
    (output_types,) = flag_values(argv, "--layerOutputTypes")
    assert trtexec_spec(precisions) == [(name, "fp32") for name in LAYERS]
    assert trtexec_spec(output_types) == [(name, "fp32") for name in LAYERS]

    from polygraphy.tools.args.util import util as args_util

    for key in ("polygraphy", "polygraphy_compare"):
        args = polygraphy_args(commands[key])
        assert args.model_file == str(model)
        assert args.int8 is True and not args.strongly_typed
        assert args.calibration_cache == str(cache)
        assert args.precision_constraints == "obey"
        # Polygraphy's own parsing of the option (split at the last ':')
        assert args_util.parse_arglist_to_dict(args.layer_precisions, allow_empty_key=False) == {
            name: "float32" for name in LAYERS
        }
    assert polygraphy_args(commands["polygraphy"]).output == str(plan.with_suffix(".engine"))
    assert polygraphy_args(commands["polygraphy_compare"]).runners == ["trt", "onnxrt"]


def test_polygraphy_argument_groups_accept_the_implicit_command(tmp_path):
    """Polygraphy's own argument groups turn the command into builder settings: ``float32`` is a TensorRT type
    alias (``trt.float32``), names keep their '/', ':' and spaces."""
    from polygraphy.tools.args.backend.trt.config import TrtConfigArgs
    from polygraphy.tools.args.backend.trt.loader import TrtLoadNetworkArgs
    from polygraphy.tools.convert.convert import Convert

    command = export_commands(
        tmp_path / "plan.onnx", mode="implicit", fp32_layers=LAYERS, model_onnx=tmp_path / "m.onnx",
        calibration_cache=tmp_path / "c.cache",
    )["polygraphy"]
    tool = Convert()
    args = tool.setup_parser().parse_args(shlex.split(command)[2:])
    for group in tool.arg_groups.values():
        group.parse(args)
    network_args, config_args = tool.arg_groups[TrtLoadNetworkArgs], tool.arg_groups[TrtConfigArgs]
    assert {name: str(value) for name, value in network_args.layer_precisions.items()} == {
        name: "trt.float32" for name in LAYERS
    }
    assert config_args.int8 is True and config_args.precision_constraints == "obey"
    assert config_args.calibration_cache == str(tmp_path / "c.cache")


def test_trtexec_spec_limits_are_reported_not_mangled(tmp_path):
    assert trtexec_layer_spec_problem("a,b") == "contains ','"
    assert trtexec_layer_spec_problem("it's") == "contains a single quote"
    assert trtexec_layer_spec_problem("*") is not None
    assert trtexec_layer_spec_problem("/a b/c:0") is None
    commands = export_commands(
        tmp_path / "plan.onnx", mode="implicit", fp32_layers=["ok", "a,b"], model_onnx="m.onnx", calibration_cache="c"
    )
    assert commands["trtexec"].startswith("# trtexec cannot")
    assert shlex.split(commands["trtexec"], comments=True) == []  # a comment: running it does nothing
    assert "'a,b'" in commands["trtexec"]
    args = polygraphy_args(commands["polygraphy"])  # Polygraphy takes one name per argument: fine
    assert args.layer_precisions == ["ok:float32", "a,b:float32"]


def test_export_argument_errors(tmp_path):
    with pytest.raises(InputError, match="model_onnx"):
        export_commands(tmp_path / "p.onnx", mode="implicit", fp32_layers=["x"], calibration_cache="c")
    with pytest.raises(InputError, match="calibration_cache"):
        export_commands(tmp_path / "p.onnx", mode="implicit", fp32_layers=["x"], model_onnx="m.onnx")
    with pytest.raises(InputError, match="unknown TensorRT mode"):
        export_commands(tmp_path / "p.onnx", mode="weak", fp32_layers=[])


# ---------------------------------------------------------------------------------------------------------
# Detection and usage errors
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_tensorrt(monkeypatch):
    """``import tensorrt`` fails, whatever is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def _stub(tmp_path, monkeypatch, body):
    root = tmp_path / "stub"
    (root / "tensorrt").mkdir(parents=True)
    (root / "tensorrt" / "__init__.py").write_text(textwrap.dedent(body))
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # records the original state, restored after the test
    monkeypatch.delitem(sys.modules, "tensorrt")  # so that the import finds the stub
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    return root


@pytest.fixture
def stub_tensorrt(tmp_path, monkeypatch):
    """A ``tensorrt`` package that imports but has no Builder (like PyPI's metapackage without the library)."""
    return _stub(tmp_path, monkeypatch, '__version__ = "10.9.0"\n')


def one_line(text):
    assert "\n" not in text, text
    return text


def test_backend_registry():
    assert set(BACKENDS) == {"onnxrt", "onnxrt-optimized", "tensorrt"}
    assert get_backend("onnxrt").name == "onnxrt"
    assert get_backend().name == "onnxrt"
    with pytest.raises(InputError, match="unknown backend"):
        get_backend("tensorrt-llm")


def test_tensorrt_absent(no_tensorrt):
    status = tensorrt_status()
    assert not status.usable
    assert "not installed" in one_line(status.reason)
    assert "pip install 'precision-lab[tensorrt]'" in status.reason
    with pytest.raises(MissingDependencyError) as info:
        get_backend("tensorrt")
    assert "not installed" in one_line(str(info.value)) and "precision-lab[tensorrt]" in str(info.value)
    name, reason = detect_backend()
    assert name == "onnxrt" and "ONNX Runtime" in reason and "not installed" in one_line(reason)
    backend, why = resolve_backend("auto")
    assert backend.name == "onnxrt" and why == reason
    assert get_backend("auto", {"onnxrt": {"threads": 1}}).threads == 1
    with pytest.raises(InputError, match="per backend"):
        get_backend("auto", {"threads": 1})


def test_tensorrt_stub_without_builder(stub_tensorrt):
    status = tensorrt_status()
    assert not status.usable and status.version == "10.9.0"
    reason = one_line(status.reason)
    assert "stub" in reason and "tensorrt.Builder" in reason and str(stub_tensorrt) in reason
    assert "pip install 'precision-lab[tensorrt]'" in reason
    with pytest.raises(MissingDependencyError, match="stub"):
        get_backend("tensorrt")
    assert detect_backend()[0] == "onnxrt"


def test_tensorrt_that_fails_to_import(tmp_path, monkeypatch):
    _stub(tmp_path, monkeypatch, 'raise ImportError("libnvinfer.so.10: cannot open shared object file")\n')
    status = tensorrt_status()
    assert not status.usable
    assert "does not import" in one_line(status.reason) and "libnvinfer.so.10" in status.reason


def test_tensorrt_without_a_cuda_gpu(tmp_path, monkeypatch):
    """Detection logic only (no build): a package with a Builder on a machine whose driver sees no GPU."""
    _stub(tmp_path, monkeypatch, '__version__ = "10.9.0"\nclass Logger:\n    ERROR = 0\nclass Builder:\n    pass\n')
    monkeypatch.setattr(detect_module, "cuda_devices", lambda: ([], "no NVIDIA driver (libcuda not found)"))
    status = tensorrt_status()
    assert not status.usable
    assert "no NVIDIA driver" in one_line(status.reason) and "CUDA GPU" in status.reason
    with pytest.raises(MissingDependencyError, match="CUDA GPU"):
        get_backend("tensorrt")


def test_tensorrt_whose_builder_fails(tmp_path, monkeypatch):
    """Detection logic only (no build): creating the Builder raises, as TensorRT does when CUDA init fails."""
    _stub(
        tmp_path,
        monkeypatch,
        """
        __version__ = "10.9.0"
        class Logger:
            ERROR = 0
            def __init__(self, severity):
                pass
        class Builder:
            def __init__(self, logger):
                raise RuntimeError("CUDA initialization failure with error: 35")
        """,
    )
    monkeypatch.setattr(detect_module, "cuda_devices", lambda: (["Some GPU"], None))
    status = tensorrt_status()
    assert not status.usable
    assert "could not create a builder" in one_line(status.reason) and "error: 35" in status.reason


def test_this_machine_is_reported_precisely():
    """Whatever this machine has, the status is one line and names the missing piece or the GPU."""
    status = tensorrt_status()
    reason = one_line(status.reason)
    if not status.usable:
        assert any(
            key in reason for key in ("not installed", "stub", "does not import", "CUDA GPU", "builder", "CUDA runtime")
        )
    else:
        assert status.device and status.device in reason


def test_importing_the_backend_does_not_import_tensorrt():
    code = (
        "import sys; sys.modules['tensorrt'] = None\n"
        "import precision_lab.backends, precision_lab.backends.tensorrt, precision_lab.backends.trt_layers\n"
        "from precision_lab.backends import TensorRTBackend\n"
        "TensorRTBackend(mode='implicit', profiles={'x': ((1, 3), (2, 3), (4, 3))})\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_backend_options_are_checked_without_tensorrt():
    with pytest.raises(InputError, match="unknown TensorRT mode"):
        TensorRTBackend(mode="weak")
    with pytest.raises(InputError, match="optimization level"):
        TensorRTBackend(builder_optimization_level=9)
    with pytest.raises(InputError, match="workspace"):
        TensorRTBackend(workspace_mib=0)
    with pytest.raises(InputError, match="min <= opt <= max"):
        TensorRTBackend(profiles={"input": ((1, 3, 64, 64), (1, 3, 32, 32), (1, 3, 128, 128))})
    with pytest.raises(InputError, match="rank"):
        TensorRTBackend(profiles={"input": ((1, 3), (1, 3, 32), (1, 3, 64))})
    with pytest.raises(InputError, match="three shapes"):
        TensorRTBackend(profiles={"input": ((1, 3),)})
    backend = TensorRTBackend(profiles={"input": ([1, 3, 32, 32], [4, 3, 64, 64], [8, 3, 128, 128])})
    assert backend.profiles == {"input": ((1, 3, 32, 32), (4, 3, 64, 64), (8, 3, 128, 128))}
    assert backend.builder_optimization_level <= 1  # low by default: sweeps build many engines


def _pretend_usable(monkeypatch, version):
    """Version gate only: what require_tensorrt() would report; nothing is built."""
    status = TensorRTStatus(True, f"TensorRT {version} with a working builder on Some GPU", version, "Some GPU")
    monkeypatch.setattr(trt_backend, "require_tensorrt", lambda: status)


def test_implicit_mode_on_tensorrt_11_is_a_clear_error(monkeypatch):
    _pretend_usable(monkeypatch, "11.1.0")
    with pytest.raises(InputError) as info:
        TensorRTBackend(mode="implicit").identity()
    message = one_line(str(info.value))
    assert "TensorRT 11 removed weak typing" in message and "explicit" in message
    assert TensorRTBackend(mode="explicit").identity().startswith("tensorrt-11.1.0:Some GPU:mode=explicit")


def test_tensorrt_older_than_10_is_refused(monkeypatch):
    _pretend_usable(monkeypatch, "8.6.1")
    with pytest.raises(MissingDependencyError, match="TensorRT >= 10"):
        TensorRTBackend().identity()


def test_tensorrt_errors_are_captured_for_the_evaluation_error():
    """TensorRT logs build errors through Polygraphy's logger; the EvaluationError must carry them."""
    from polygraphy.logger import G_LOGGER

    before = G_LOGGER.error
    with trt_backend._captured_errors() as messages:
        with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
            G_LOGGER.error("[graphShapeAnalyzer.cpp::analyzeShapes::2084] Error Code 4: Miscellaneous")
    error = trt_backend._failure("TensorRT could not build the engine", RuntimeError("Invalid Engine"), messages)
    assert isinstance(error, EvaluationError)
    assert "Error Code 4" in one_line(str(error))
    assert trt_backend._failure("x", RuntimeError("Invalid Engine\nmore"), []).args[0] == "x: Invalid Engine"
    assert G_LOGGER.error == before and "error" not in vars(G_LOGGER)  # the logger is left as it was


# ---------------------------------------------------------------------------------------------------------
# Real TensorRT (GPU)
# ---------------------------------------------------------------------------------------------------------


def _require_real_tensorrt():
    status = tensorrt_status()
    if not status.usable:
        pytest.skip(status.reason)
    return status


@pytest.fixture(scope="module")
def cnn_data(tmp_path_factory):
    return write_random_feeds(PLAIN_CNN, tmp_path_factory.mktemp("trt_data"), count=24)


def _sweep(tmp_path, data, backend):
    import precision_lab

    return precision_lab.sweep(
        PLAIN_CNN, data=data, out_dir=tmp_path, backend=backend, progress=False, calib_samples=16, eval_samples=8
    )


@pytest.mark.tensorrt
def test_explicit_sweep_on_tensorrt(tmp_path, cnn_data):
    _require_real_tensorrt()
    result = _sweep(tmp_path, cnn_data, TensorRTBackend(mode="explicit"))
    assert result.backend == "tensorrt"
    assert result.plan.fp32_layers == ("conv4",)
    records = result.evaluation_records
    assert records and all(r.status == "ok" for r in records), [r.error for r in records if r.status != "ok"]
    assert all(r.seconds.get("latency_ms", 0) > 0 for r in records)
    timing = list((tmp_path / "cache" / "tensorrt").glob("timing-*.cache"))
    assert len(timing) == 1 and timing[0].stat().st_size > 0


@pytest.mark.tensorrt
def test_implicit_sweep_on_tensorrt_10(tmp_path, cnn_data):
    status = _require_real_tensorrt()
    if trt_backend._major(status.version) >= 11:
        pytest.skip(f"TensorRT {status.version}: the implicit mode needs TensorRT 10 (11 removed weak typing)")
    result = _sweep(tmp_path, cnn_data, TensorRTBackend(mode="implicit"))
    records = result.evaluation_records
    assert records and all(r.status == "ok" for r in records), [r.error for r in records if r.status != "ok"]
    assert "conv4" in result.plan.fp32_layers
    assert len(list((tmp_path / "cache" / "tensorrt").glob("calibration-*.cache"))) == 1


@pytest.mark.tensorrt
def test_implicit_mode_maps_pinned_nodes_on_a_real_network(tmp_path, cnn_data):
    status = _require_real_tensorrt()
    if trt_backend._major(status.version) >= 11:
        pytest.skip(f"TensorRT {status.version}: the implicit mode needs TensorRT 10 (11 removed weak typing)")
    from precision_lab.data import make_dataset
    from precision_lab.model import input_specs, load_model, prepare_model

    prepared = prepare_model(PLAIN_CNN)
    dataset, _ = make_dataset(input_specs(load_model(PLAIN_CNN)[0]), data_dir=cnn_data, calib_samples=4,
                              eval_samples=2, seed=0, input_shapes=None)
    backend = TensorRTBackend(mode="implicit")
    backend.setup(prepared=prepared, calib_feeds=dataset.calib, cache_dir=tmp_path)
    layers = backend.pinned_layer_names(["conv4", "fc"])
    assert layers["conv4"] and layers["fc"]
    with pytest.raises(UnmatchedNodeError, match="no_such_node"):
        backend.run(PlanBuild(qdq_model=b"", fp32_layers=("no_such_node",)), dataset.eval)


@pytest.mark.tensorrt
def test_failed_build_raises_evaluation_error_with_tensorrt_message(tmp_path):
    _require_real_tensorrt()
    from precision_lab.model import prepare_model

    backend = TensorRTBackend(mode="explicit")
    backend.setup(prepared=prepare_model(PLAIN_CNN), calib_feeds=[], cache_dir=tmp_path)
    with pytest.raises(EvaluationError, match="TensorRT could not build the engine: .+"):
        backend.run(PlanBuild(qdq_model=b"this is not an onnx model"), [])


def test_get_backend_checks_the_mode_against_the_version_up_front(monkeypatch):
    _pretend_usable(monkeypatch, "11.0.0")
    with pytest.raises(InputError, match="TensorRT 11 removed weak typing"):
        get_backend("tensorrt", {"tensorrt": {"mode": "implicit"}})
    backend = get_backend(
        "tensorrt", {"tensorrt": TensorRTOptions(mode="explicit", builder_optimization_level=0, workspace_mib=512)}
    )
    assert isinstance(backend, TensorRTBackend) and backend.workspace_mib == 512
