"""``--search fast`` on every sample model: the full mode's plan within 2k*ceil(log2 N)+4 evaluations."""

from __future__ import annotations

import json
import math

import pytest

from conftest import EXPECTED, SAMPLE_NAMES, sweep_sample


def _search_evaluations(out) -> int:
    """The evaluations of a sweep's search: its journal's records, less those of the verification phase."""
    records = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    return sum(record["phase"] != "verification" for record in records)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_fast_mode_matches_the_full_plan_within_the_bound(sample_sweeps, tmp_path, name):
    full = json.loads((sample_sweeps[name] / "plan.json").read_text())
    expected = EXPECTED[f"{name}.onnx"]
    out = tmp_path / "fast"
    proc = sweep_sample(name, full["data"]["source"], out, "--search", "fast")
    assert proc.returncode == 0, proc.stderr
    fast = json.loads((out / "plan.json").read_text())
    assert sorted(fast["fp32_layers"]) == sorted(full["fp32_layers"])
    assert fast["achieved"]["value"] == pytest.approx(full["achieved"]["value"], rel=1e-9)
    k, n = len(expected["planted"]), len(full["fp32_layers"]) + len(full["int8_layers"])
    bound = 2 * k * math.ceil(math.log2(n)) + 4
    searched = _search_evaluations(out)  # the bound is on the search; verification judges its one plan
    assert searched <= bound, (searched, bound)
    assert searched < _search_evaluations(sample_sweeps[name]) or k == 0
    # every pinned layer still has its proof in the journal
    journal = {frozenset(json.loads(line)["fp32_layers"]): json.loads(line)
               for line in (out / "journal.jsonl").read_text().splitlines()}
    for layer in fast["fp32_layers"]:
        proof = journal[frozenset(set(fast["fp32_layers"]) - {layer})]
        assert max(p["rel-l2"] for p in proof["parts"].values()) > expected["tolerance"]
    table = (out / "sensitivity.csv").read_text().splitlines()
    assert table[0].split(",")[:7] == ["name", "op_type", "index", "rank", "isolate", "leave_one_out", "signal"]
