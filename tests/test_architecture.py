"""The seams: backends behind one interface, no import cycles, lazy imports, and a backend added as one module
plus one registry line (``onnxrt-optimized``, a second opinion with ONNX Runtime's production optimizations)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SAMPLES, write_random_feeds

PACKAGE = REPO / "precision_lab"

#: what naming a concrete backend looks like: its class, its module, or its registry name as a string
CONCRETE = re.compile(
    r"OnnxRuntimeBackend|OptimizedOnnxRuntimeBackend|TensorRTBackend|TensorRTOptions"
    r"|backends\.(onnxrt|onnxrt_optimized|tensorrt)\b|[\"'](onnxrt|onnxrt-optimized|tensorrt)[\"']"
)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def test_no_code_outside_backends_names_a_concrete_backend():
    offenders = []
    for name, path in _modules().items():
        if name.startswith("precision_lab.backends"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if CONCRETE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def _module_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """precision_lab modules imported at module level (not inside functions) by ``path``."""
    tree = ast.parse(path.read_text())
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.If):  # if TYPE_CHECKING: imports for annotations only
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        found.update(t for t in targets if t in known and t != name)
    return found


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _module_imports(name, path, set(modules)) for name, path in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target] if target in stack else [name, target])
            elif target not in state:
                visit(target, stack + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_cli_import_loads_neither_matplotlib_nor_pandas():
    code = (
        "import sys, precision_lab.cli; "
        "print(sorted(m for m in ('matplotlib', 'pandas', 'onnxruntime', 'polygraphy') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout


def test_help_lists_every_registered_backend_and_its_options():
    from precision_lab.backends import BACKENDS
    from precision_lab.cli import _build_parser

    text = _build_parser()._subparsers._group_actions[0].choices["sweep"].format_help()
    assert all(name in text for name in BACKENDS)
    assert "--trt-mode" in text  # a backend's own options come from its options class


# --- a backend added as one module + one registry line --------------------------------------------------------


@pytest.fixture(scope="module")
def transformer_data(tmp_path_factory):
    return write_random_feeds(SAMPLES / "transformer_block.onnx", tmp_path_factory.mktemp("tb") / "data", count=24)


def test_the_optimized_onnx_runtime_backend_is_a_second_opinion(transformer_data, tmp_path):
    """On ``transformer_block``, ONNX Runtime's fused INT8 kernels compute another value than exact Q/DQ
    arithmetic for the same plan (all INT8 but ``mlp_fc2``), while the all-FP32 plan agrees."""
    from precision_lab import sweep
    from precision_lab.backends import BACKENDS, get_backend
    from precision_lab.precisions import PrecisionPlan

    exact = sweep(SAMPLES / "transformer_block.onnx", data=transformer_data, out_dir=tmp_path / "exact",
                  backend="onnxrt", progress=False)
    optimized = sweep(SAMPLES / "transformer_block.onnx", data=transformer_data, out_dir=tmp_path / "optimized",
                      backend="onnxrt-optimized", progress=False)
    assert optimized.backend == "onnxrt-optimized" and "optimizations on" in optimized.backend_info["description"]
    metric = exact.metric_obj
    plan = PrecisionPlan.fp32({"mlp_fc2"})  # everything INT8 but mlp_fc2
    def measured(result):
        record = next((r for r in result.evaluation_records if r.plan == plan), None)
        return None if record is None else record.value(metric)

    exact_value, optimized_value = measured(exact), measured(optimized)
    if exact_value is None or optimized_value is None:
        pytest.skip("the search did not evaluate all-INT8 but mlp_fc2 on this data")
    assert abs(optimized_value - exact_value) > 1e-3 * exact_value, (exact_value, optimized_value)
    assert exact.baselines["all_fp32"] < 1e-5 and optimized.baselines["all_fp32"] < 1e-5
    assert get_backend("onnxrt-optimized").for_workers(2).threads >= 1
    assert BACKENDS["onnxrt-optimized"].load().__module__ == "precision_lab.backends.onnxrt_optimized"
    assert "ORT_DISABLE_ALL" not in optimized.exports["onnxruntime"]


def test_precision_lab_sweep_stays_callable_after_the_cli_imports_its_module(tmp_path):
    """Importing the module ``precision_lab.sweep`` (as the CLI does) rebinds the package attribute ``sweep`` to
    the module; ``precision_lab.sweep(...)`` must still sweep."""
    import precision_lab
    import precision_lab.sweep  # noqa: F401  (what `from precision_lab.sweep import sweep` in the CLI does)
    from conftest import SAMPLES

    result = precision_lab.sweep(SAMPLES / "robust_cnn.onnx", out_dir=tmp_path / "o", progress=False)
    assert result.status == "all-int8-passes"
