"""The ``modelopt`` tier (issue 14; ``pytest -m modelopt``, deselected by default): needs NVIDIA ModelOpt, which
needs PyTorch, in its own venv (``/opt/modelopt-venv/bin/python`` or ``$PRECISION_LAB_MODELOPT_PYTHON``;
docs/modelopt.md gives the install). It quantizes sample models and YOLOv8n with ModelOpt, then checks that

* ``--qdq-model`` reproduces ModelOpt's all-INT8 value (plain ONNX Runtime vs the FP32 model, 1e-5 relative);
* recipe ``modelopt`` places Q/DQ on the same Conv/ConvTranspose/Gemm/MatMul inputs as ModelOpt, and every other
  difference is one of the two kinds docs/modelopt.md section 9.1 lists (shared DQs, constant folding), printed
  per model;
* plan.json's ModelOpt command parses with ModelOpt's own parser (``get_parser()``).

The CI counterpart of the last check (without ModelOpt) is in test_modelopt_export.py.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import SAMPLES
from user_qdq_models import dq_edges, placement_edges, rel_l2, run_plain_ort

from precision_lab.cli import main

pytestmark = pytest.mark.modelopt

MODELOPT_PYTHON = Path(os.environ.get("PRECISION_LAB_MODELOPT_PYTHON", "/opt/modelopt-venv/bin/python"))
WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@pytest.fixture(autouse=True)
def _needs_modelopt():
    if not MODELOPT_PYTHON.exists():
        pytest.skip(f"ModelOpt's venv not found ({MODELOPT_PYTHON}); set PRECISION_LAB_MODELOPT_PYTHON")
    yield
    logging.getLogger("precision_lab").handlers.clear()


def _static_copy(model: Path, folder: Path, shape: tuple[int, ...] | None) -> Path:
    """A copy of ``model`` in ``folder`` (ModelOpt rewrites its input), with its one input fixed to ``shape``."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / model.name
    if shape is None:
        shutil.copy(model, target)
        return target
    proto = onnx.load(str(model))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, shape):
        dim.Clear()
        dim.dim_value = value
    onnx.save(onnx.shape_inference.infer_shapes(proto), str(target))
    return target


def _input_shape(model: Path) -> tuple[str, tuple[int, ...]]:
    value = onnx.load(str(model)).graph.input[0]
    return value.name, tuple(d.dim_value for d in value.type.tensor_type.shape.dim)


def _modelopt(model: Path, calib: Path, out: Path) -> Path:
    """ModelOpt 0.47 INT8, max calibration, FP32 high precision (docs/modelopt.md)."""
    command = [
        str(MODELOPT_PYTHON), "-m", "modelopt.onnx.quantization", "--onnx_path", str(model), "--quantize_mode", "int8",
        "--calibration_method", "max", "--calibration_data_path", str(calib), "--calibration_eps", "cpu",
        "--high_precision_dtype", "fp32", "--output_path", str(out),
    ]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and out.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def _difference_kind(node: onnx.NodeProto, modelopt_side: bool, modelopt_quantizes_node: bool) -> str:
    """Which documented difference (docs/modelopt.md section 9) explains an edge only one side quantizes."""
    if node.op_type == "Add" and not modelopt_side and not modelopt_quantizes_node:
        return "P5 head after folded constants: ModelOpt sees Unsqueeze(Constant) as a variable input (9.1)"
    if node.op_type in ("Concat", "Split", "Sigmoid", "Reshape", "Flatten", "LayerNormalization") and modelopt_side:
        return "shared DQ reaches a non-quantized consumer (3.4)"
    return "UNEXPLAINED"


CASES = {
    "residual_branches": (SAMPLES / "residual_branches.onnx", None),
    "robust_cnn": (SAMPLES / "robust_cnn.onnx", None),
    "two_planted_cnn": (SAMPLES / "two_planted_cnn.onnx", None),
    "transformer_block": (SAMPLES / "transformer_block.onnx", None),
    "yolov8n": (None, (1, 3, 320, 320)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_modelopt_all_int8_and_placement(name, tmp_path, capsys):
    source, shape = CASES[name]
    if source is None:
        from real_models import fetch_wheel_member

        source = fetch_wheel_member("nudenet", "3.4.2", "nudenet/320n.onnx")
    work = tmp_path / "work"
    model = _static_copy(source, work, shape)
    input_name, input_shape = _input_shape(model)
    rng = np.random.default_rng(0)
    calib = [{input_name: rng.random(input_shape, dtype=np.float32)} for _ in range(8)]
    np.save(work / "calib.npy", np.concatenate([f[input_name] for f in calib]))
    fp32 = tmp_path / model.name
    shutil.copy(model, fp32)  # the FP32 reference, untouched by ModelOpt
    quantized = _modelopt(model, work / "calib.npy", tmp_path / f"{model.stem}.modelopt.onnx")

    data = tmp_path / "feeds"
    data.mkdir()
    for i in range(20):
        np.savez(data / f"f{i:02d}.npz", **{input_name: rng.random(input_shape, dtype=np.float32)})
    out = tmp_path / "out"
    args = ["sweep", str(fp32), "--qdq-model", str(quantized), "--data", str(data), "--out", str(out), "--quiet",
            "--calib-samples", "2", "--eval-samples", "10", "--verify-samples", "8", "--criterion", "aggregate",
            "--search", "fast", "--tolerance", "0.5"]
    assert main(args) == 0
    plan = json.loads((out / "plan.json").read_text())
    feeds = [dict(np.load(data / f)) for f in plan["data"]["eval_feeds"]]
    expected = rel_l2(run_plain_ort(quantized, feeds), run_plain_ort(fp32, feeds))
    assert plan["baselines"]["all_int8"] == pytest.approx(expected, rel=1e-5)

    # recipe modelopt vs ModelOpt, node input by node input
    ours, _, prepared = placement_edges(fp32)
    theirs = dq_edges(onnx.load(str(quantized)))
    nodes = {n.name: n for n in prepared.model.graph.node}
    differences = []
    for edge in sorted(ours ^ theirs):
        node = nodes.get(edge[0])
        if node is None:
            differences.append((edge, "node renamed by precision-lab's preparation", edge in theirs))
            continue
        quantized_by_modelopt = any(consumer == edge[0] for consumer, _ in theirs)
        differences.append((edge, _difference_kind(node, edge in theirs, quantized_by_modelopt), edge in theirs))
    with capsys.disabled():
        print(f"\n{name}: ModelOpt {len(theirs)} quantized inputs, recipe modelopt {len(ours)}, all-INT8 {expected:.6f}")
        for edge, kind, modelopt_only in differences:
            print(f"  {'ModelOpt only' if modelopt_only else 'recipe only  '} {edge}: {kind}")
    weighted = [d for d in differences if nodes.get(d[0][0]) is not None and nodes[d[0][0]].op_type in WEIGHTED]
    assert weighted == []
    assert [d for d in differences if d[1] == "UNEXPLAINED"] == []

    # plan.json's ModelOpt command parses with ModelOpt's own parser
    command = plan["exports"]["modelopt"]
    check = (
        "import shlex, sys\nfrom modelopt.onnx.quantization.__main__ import get_parser\n"
        "a = get_parser().parse_args(shlex.split(sys.argv[1])[3:])\n"
        "print(a.quantize_mode, a.calibration_method, a.high_precision_dtype, a.nodes_to_exclude)\n"
    )
    proc = subprocess.run([str(MODELOPT_PYTHON), "-c", check, command], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[:3] == ["int8", "max", "fp32"]
    assert shlex.split(command)[:3] == ["python", "-m", "modelopt.onnx.quantization"]


def test_modelopt_default_fp16_model_is_refused_in_one_line(tmp_path, capsys):
    """ModelOpt's default ``--high_precision_dtype fp16`` changes the model beyond Q/DQ (Casts, FP16 weights and
    scales): refused with one line, exit code 2 (docs/modelopt.md section 7)."""
    work = tmp_path / "work"
    model = _static_copy(SAMPLES / "residual_branches.onnx", work, None)
    np.save(work / "calib.npy", np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32))
    out = tmp_path / "fp16.onnx"
    command = [str(MODELOPT_PYTHON), "-m", "modelopt.onnx.quantization", "--onnx_path", str(model), "--quantize_mode",
               "int8", "--calibration_method", "max", "--calibration_data_path", str(work / "calib.npy"),
               "--calibration_eps", "cpu", "--output_path", str(out)]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-2000:]
    code = main(["layers", str(SAMPLES / "residual_branches.onnx"), "--qdq-model", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--qdq-model" in err, err
    with capsys.disabled():
        print(f"\nFP16 ModelOpt model: {err}")
