"""NVIDIA's vocabulary (issue 14): plan.json's ModelOpt command, and recipe ``modelopt`` against the committed
ModelOpt sample.

The command is parsed with ModelOpt's own parser (``modelopt.onnx.quantization.__main__.get_parser``) when ModelOpt's
venv exists (``/opt/modelopt-venv/bin/python`` or ``$PRECISION_LAB_MODELOPT_PYTHON``), else with an argparse parser
built from the flags docs/modelopt.md section 2 documents (``MODELOPT_FLAGS``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import subprocess
from pathlib import Path

import onnx
import pytest
from user_qdq_models import FP32, MODELOPT, dq_edges, placement_edges, write_feeds

from precision_lab.cli import main
from precision_lab.modelopt_export import (
    MODELOPT_FLAGS,
    exclusion_patterns,
    modelopt_command,
    modelopt_node_names,
)

MODELOPT_PYTHON = Path(os.environ.get("PRECISION_LAB_MODELOPT_PYTHON", "/opt/modelopt-venv/bin/python"))
DOCS = Path(__file__).resolve().parents[1] / "docs" / "modelopt.md"


@pytest.fixture(autouse=True)
def _reset_logger():
    yield
    logging.getLogger("precision_lab").handlers.clear()


def _documented_parser() -> argparse.ArgumentParser:
    """The flags the export uses, as docs/modelopt.md section 2 documents them (ModelOpt 0.47 ``get_parser``)."""
    documented = set(re.findall(r"^\| `(--[a-z_]+)", DOCS.read_text(), flags=re.MULTILINE))
    assert set(MODELOPT_FLAGS) <= documented, set(MODELOPT_FLAGS) - documented
    parser = argparse.ArgumentParser(prog="python -m modelopt.onnx.quantization", allow_abbrev=False)
    parser.add_argument("--onnx_path", required=True)
    parser.add_argument("--quantize_mode", choices=["fp8", "int8", "int4"], default="int8")
    parser.add_argument("--calibration_method", choices=["max", "entropy", "awq_clip", "rtn_dq"])
    parser.add_argument("--calibration_data_path")
    parser.add_argument("--calibration_eps", nargs="+")
    parser.add_argument("--high_precision_dtype", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--nodes_to_exclude", nargs="+")
    parser.add_argument("--output_path")
    return parser


def _parse(command: str) -> dict:
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "modelopt.onnx.quantization"]
    if MODELOPT_PYTHON.exists():
        check = (
            "import json, shlex, sys\nfrom modelopt.onnx.quantization.__main__ import get_parser\n"
            "print(json.dumps(vars(get_parser().parse_args(shlex.split(sys.argv[1])[3:])), default=str))\n"
        )
        proc = subprocess.run([str(MODELOPT_PYTHON), "-c", check, command], check=False, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])
    return vars(_documented_parser().parse_args(argv[3:]))


def test_plan_json_carries_a_modelopt_command_that_parses(tmp_path):
    data = write_feeds(tmp_path / "feeds", count=12)
    out = tmp_path / "out"
    assert main(["sweep", str(FP32), "--data", str(data), "--out", str(out), "--quiet", "--calib-samples", "4",
                 "--eval-samples", "4", "--verify-samples", "4", "--search", "fast", "--criterion", "aggregate"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    args = _parse(plan["exports"]["modelopt"])
    assert args["onnx_path"] == str(FP32)
    assert args["quantize_mode"] == "int8" and args["calibration_method"] == "max"
    assert args["high_precision_dtype"] == "fp32"
    assert Path(args["calibration_data_path"]) == out / "modelopt_calibration.npz"
    assert (out / "modelopt_calibration.npz").exists()
    excluded = args["nodes_to_exclude"] or []
    assert sorted(excluded) == sorted(exclusion_patterns(plan["fp32_layers"]))
    assert plan["fp32_layers"], "residual_branches has a planted layer"


def test_exclusion_patterns_match_only_their_node():
    """ModelOpt applies ``re.match`` (a prefix match): ``conv1`` alone would also exclude ``conv10``."""
    names = ["conv1", "conv10", "/model.0/conv/Conv", "a(b)[c]$"]
    for name, pattern in zip(names, exclusion_patterns(names)):
        assert [n for n in names if re.match(pattern, n)] == [name]
    command = modelopt_command("m.onnx", ["a(b)[c]$"])
    assert "'^a\\(b\\)\\[c\\]\\$$'" in command


def test_recipe_modelopt_matches_the_committed_modelopt_sample():
    """Same 13 nodes and the same 22 quantized node inputs as ModelOpt 0.47 on residual_branches: the Conv-side
    input of each residual Add stays FP (P4), the graph-output Gemm head is left out (P10/P11)."""
    ours, placement, _ = placement_edges(FP32)
    theirs = dq_edges(onnx.load(str(MODELOPT)))
    assert {n for n, _ in theirs} == {n for n, _ in ours}
    assert ours == theirs
    assert not placement.outputs  # ModelOpt never quantizes node outputs


def test_unnamed_nodes_are_exported_with_modelopts_names(tmp_path):
    """precision-lab calls an unnamed node ``<OpType>_<position>``, ModelOpt ``<OpType>_<k>`` with ``k`` from the
    number of distinct names (``name_onnx_nodes``): the command must use ModelOpt's."""
    model = onnx.load(str(FP32))
    for node in model.graph.node:
        if node.op_type in ("Conv", "Relu") and node.name not in ("conv1", "conv_a2"):
            node.name = ""
    path = tmp_path / "unnamed.onnx"
    onnx.save(model, str(path))
    names = modelopt_node_names(path)
    distinct = len({n.name for n in model.graph.node})  # 15 named + the empty name
    position = [n.name for n in onnx.load(str(FP32)).graph.node].index("conv_a1")
    assert names[f"Conv_{position}"] == f"Conv_{distinct}"  # the first unnamed Conv
    assert len(set(names.values())) == len(names)
    command = modelopt_command(path, [f"Conv_{position}", "conv_a2"])
    assert f"'^Conv_{distinct}$'" in command and "'^conv_a2$'" in command
    if MODELOPT_PYTHON.exists():  # ModelOpt's own naming, on the same graph
        check = (
            "import onnx, sys\nfrom modelopt.onnx.utils import name_onnx_nodes\n"
            "m = onnx.load(sys.argv[1]); name_onnx_nodes(m.graph); print(' '.join(n.name for n in m.graph.node))\n"
        )
        proc = subprocess.run([str(MODELOPT_PYTHON), "-c", check, str(path)], check=False, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        theirs = proc.stdout.split()
        for position, node in enumerate(model.graph.node):
            if not node.name:
                assert names[f"{node.op_type}_{position}"] == theirs[position]
