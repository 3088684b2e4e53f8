"""The report's per-sample section in a real headless Chromium: the verdict on the evaluation and verification
feeds, the tightening rounds, the per-sample chart and the hardest inputs named by file."""

from __future__ import annotations

import base64
import json
import re

import pytest

from conftest import SAMPLES, run_in_process
from test_generalization import _hard_verification_data
from test_report import DATA_IMG, browser, open_report  # noqa: F401 - fixtures used by name


@pytest.fixture(scope="module")
def verified_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_samples")
    data = _hard_verification_data(root / "data")
    out = root / "out"
    proc = run_in_process(
        "sweep", str(SAMPLES / "plain_cnn.onnx"), "--data", str(data), "--calib-samples", "6", "--eval-samples", "8",
        "--verify-samples", "6", "--until-verified", "--out", str(out), "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "plan.json").read_text())


def test_per_sample_section_in_chromium(verified_sweep, open_report):
    out, plan = verified_sweep
    page = open_report(out / "report.html")
    page.assert_clean()
    text = page.text
    verification = plan["verification"]
    assert f"Verification set, {verification['samples']} samples the search never saw" in text
    assert "The plan failed verification, so the search ran again at a stricter tolerance" in text
    rounds = page.page.evaluate(
        "() => Array.from(document.querySelectorAll('table')).filter(t => t.innerText.includes('search tolerance'))"
        ".map(t => t.rows.length - 1)"
    )
    assert rounds == [len(verification["rounds"])]
    hardest = page.page.evaluate(
        "() => Array.from(document.querySelectorAll('#hardest tbody tr, #hardest tr')).slice(1)"
        ".map(r => [r.cells[0].innerText, r.cells[1].innerText])"
    )
    expected = [[w["sample"], "evaluation"] for w in plan["worst_inputs"]]
    assert hardest[: len(expected)] == expected
    assert any(kind == "verification" for _, kind in hardest)
    cards = page.page.evaluate("() => Array.from(document.querySelectorAll('.card')).map(c => c.innerText)")
    assert any("verification (unseen)" in card and f"{verification['samples']} held-back samples" in card for card in cards)
    charts = [base64.b64decode(m).decode() for m in DATA_IMG.findall((out / "report.html").read_text())]
    assert any("Per-sample values" in svg for svg in charts)
    page.screenshot("report_samples.png")


def test_stricter_search_tolerance_is_stated_in_the_plan(verified_sweep):
    out, plan = verified_sweep
    html = (out / "report.html").read_text()
    searched = plan["metric"]["search_tolerance"]
    assert searched < plan["metric"]["tolerance"]
    assert re.search(r"the stricter search tolerance <b>[^<]+</b>, used because", html)
