"""The report's cost section in a real headless Chromium (issue 13, item 6): the Pareto chart of every evaluated
plan is there, decodes and draws one marker per plan, and the plan's cost against all-FP16 and all-INT8 is
stated as ``plan.json`` has it."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLES, run_in_process, write_random_feeds
from test_report import browser, open_report  # noqa: F401 - fixtures used by name

from precision_lab.results import load


@pytest.fixture(scope="module")
def cost_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_cost")
    model = SAMPLES / "two_planted_cnn.onnx"
    data = write_random_feeds(model, root / "data", count=24)
    out = root / "out"
    proc = run_in_process("sweep", str(model), "--data", str(data), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "plan.json").read_text())


def test_pareto_chart_renders_with_one_marker_per_evaluated_plan(cost_sweep, open_report):
    out, plan = cost_sweep
    result = load(out)
    expected = int(result.evaluations["value"].notna().sum())
    assert expected == len(result.evaluation_records) > 5
    opened = open_report(out / "report.html")
    opened.assert_clean()
    page = opened.page
    chart = page.locator("img#pareto")
    assert chart.count() == 1
    chart.scroll_into_view_if_needed()
    state = page.evaluate(
        """() => {
            const img = document.getElementById('pareto');
            const svg = new DOMParser().parseFromString(atob(img.src.split(',')[1]), 'image/svg+xml');
            const count = id => svg.querySelectorAll('#' + id + ' use').length;
            const texts = Array.from(svg.querySelectorAll('text')).map(t => t.textContent);
            return {width: img.naturalWidth, height: img.naturalHeight, shown: img.getBoundingClientRect().width,
                    points: +img.dataset.points, passes: count('pareto-pass'), fails: count('pareto-fail'),
                    plan: count('pareto-plan'), front: svg.querySelectorAll('#pareto-front path').length, texts};
        }"""
    )
    assert state["width"] > 0 and state["height"] > 0 and state["shown"] > 300, state
    assert state["points"] == expected
    assert state["passes"] + state["fails"] == expected, state
    assert state["passes"] == int(result.evaluations["passed"].sum())
    assert state["plan"] == 1 and state["front"] == 1
    for label in ("all INT8", "all FP32", "tolerance 0.05", "Pareto front"):
        assert label in state["texts"], (label, state["texts"])
    cost = plan["cost"]
    text = opened.text
    assert f"the plan costs {cost['relative_to_all_fp16']:#.3g}× all FP16 and {cost['relative_to_all_int8']:#.3g}× all INT8" in text
    rows = page.evaluate("() => Array.from(document.querySelectorAll('#cost tr')).slice(1).map(r => r.cells[0].innerText + '|' + r.cells[1].innerText)")
    assert rows == [
        f"the plan|{cost['relative_to_all_fp16']:#.3g}×",
        f"all INT8|{cost['baselines']['all_int8']:#.3g}×",
        "all FP16|1.00×",
        f"all FP32|{cost['baselines']['all_fp32']:#.3g}×",
    ]
    cards = page.locator(".headline .card .big").all_inner_texts()
    assert cards[-1] == f"{cost['relative_to_all_fp16']:#.3g}×"
    page.locator("img#pareto").screenshot(path=str(opened.screenshot("report_cost.png").with_name("pareto.png")))
