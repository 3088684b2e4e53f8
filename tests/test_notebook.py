"""examples/explore.ipynb runs top to bottom in a fresh python3 kernel of this interpreter and draws its figures."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO

NOTEBOOK = REPO / "examples" / "explore.ipynb"
PLOT_CALLS = ("plot_sensitivity()", "plot_tradeoff()", "plot_output_channels()", "plot_positions()", "plot_pareto()")

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[test]')")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[test]')")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -e '.[test]')")


@pytest.fixture
def python3_kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec ``python3`` that runs *this* interpreter, first on JUPYTER_PATH, so that a python3 kernel
    installed elsewhere on the machine (another Python without precision_lab) cannot be picked instead."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (precision-lab tests)",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(spec.parents[1]))
    monkeypatch.delenv("PRECISION_LAB_OUT", raising=False)
    monkeypatch.setenv("PRECISION_LAB_MODEL", str(REPO / "sample_models" / "two_planted_cnn.onnx"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's tempfile.mkdtemp() folders land here
    return "python3"


def test_explore_notebook_runs_and_draws(python3_kernel):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert any(cell.cell_type == "markdown" for cell in nb.cells)

    client = nbclient.NotebookClient(
        nb,
        kernel_name=python3_kernel,
        timeout=300,  # per cell
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},  # run from examples/, as Jupyter would
        allow_errors=False,
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:  # names the cell and shows its traceback
        pytest.fail(f"a notebook cell raised:\n{error}")

    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    errors = [out for cell in code_cells for out in cell.outputs if out.output_type == "error"]
    assert not errors, [f"{e.ename}: {e.evalue}" for e in errors]
    assert all(cell.execution_count for cell in code_cells), "every code cell ran"

    # each plot method's cell shows a PNG figure
    for call in PLOT_CALLS:
        cells = [cell for cell in code_cells if call in cell.source]
        assert cells, f"no cell calls {call}"
        pngs = [out for cell in cells for out in cell.outputs if "image/png" in out.get("data", {})]
        assert pngs, f"{call} produced no image/png output"
        assert len(pngs[0]["data"]["image/png"]) > 5000  # base64 of a real chart, not an empty canvas

    text = "\n".join(
        out.get("text", "") + out.get("data", {}).get("text/plain", "")
        for cell in code_cells
        for out in cell.outputs
    )
    # the walkthrough finds the planted layers and shows the DataFrames
    assert "keep FP32: ('conv6', 'conv3')" in text or "keep FP32: ('conv3', 'conv6')" in text, text[:2000]
    assert "passed: True" in text
    html_tables = [out for cell in code_cells for out in cell.outputs if "text/html" in out.get("data", {})]
    assert len(html_tables) >= 5  # layers, filters, evaluations: DataFrames render as tables
