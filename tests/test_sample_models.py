"""Every sample model's sweep returns exactly its planted layers, with a 1-minimal, verified plan."""

from __future__ import annotations

import json

import onnx
import pytest

from conftest import EXPECTED, SAMPLE_NAMES


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_plan_is_exactly_the_planted_layers(sample_sweeps, name):
    plan = json.loads((sample_sweeps[name] / "plan.json").read_text())
    assert sorted(plan["fp32_layers"]) == sorted(EXPECTED[f"{name}.onnx"]["planted"])
    assert plan["achieved"]["passed"] is True
    assert plan["achieved"]["value"] <= plan["metric"]["tolerance"]


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_plan_json_contract(sample_sweeps, name):
    plan = json.loads((sample_sweeps[name] / "plan.json").read_text())
    for key in ("schema_version", "model", "backend", "recipe", "calibration", "metric", "fp32_layers",
                "int8_layers", "achieved", "baselines", "evaluations", "exports"):
        assert key in plan, key
    assert set(plan["model"]) >= {"path", "sha256"}
    assert set(plan["calibration"]) >= {"method", "samples"}
    assert set(plan["metric"]) >= {"name", "direction", "tolerance"}
    assert set(plan["baselines"]) == {"all_int8", "all_fp32"}
    assert set(plan["exports"]) >= {"trtexec", "polygraphy"}
    assert "--stronglyTyped" in plan["exports"]["trtexec"]
    assert isinstance(plan["evaluations"], int) and plan["evaluations"] >= 2
    journal_lines = (sample_sweeps[name] / "journal.jsonl").read_text().splitlines()
    assert plan["evaluations"] == len(journal_lines)
    candidates = set(plan["fp32_layers"]) | set(plan["int8_layers"])
    assert len(candidates) == len(plan["fp32_layers"]) + len(plan["int8_layers"])


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_one_minimality_evidence_is_in_the_journal(sample_sweeps, name):
    out = sample_sweeps[name]
    plan = json.loads((out / "plan.json").read_text())
    journal = {}
    for line in (out / "journal.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["phase"] != "verification":  # the search's evidence is on the evaluation feeds
            journal[frozenset(record["fp32_layers"])] = record
    tolerance = plan["metric"]["tolerance"]
    pinned = set(plan["fp32_layers"])
    for layer in pinned:
        record = journal[frozenset(pinned - {layer})]  # the plan with that layer back in INT8
        value = max(part["rel-l2"] for part in record["parts"].values())
        assert value > tolerance, f"returning {layer} to INT8 still passes: {value}"
        assert plan["evidence"][layer]["key"] == record["key"]
    # the plan itself was evaluated and passes
    record = journal[frozenset(pinned)]
    assert max(part["rel-l2"] for part in record["parts"].values()) <= tolerance


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sensitivity_csv_has_a_row_per_candidate(sample_sweeps, name):
    import pandas as pd

    out = sample_sweeps[name]
    plan = json.loads((out / "plan.json").read_text())
    table = pd.read_csv(out / "sensitivity.csv")
    assert set(table["name"]) == set(plan["fp32_layers"]) | set(plan["int8_layers"])
    assert list(table["rank"]) == sorted(table["rank"])
    assert {"name", "op_type", "rank", "isolate"} <= set(table.columns)
    # the planted layers are at the top of the ranking
    planted = set(EXPECTED[f"{name}.onnx"]["planted"])
    assert set(table["name"][: len(planted)]) == planted


def test_sample_models_are_small_and_valid():
    from conftest import SAMPLES

    total = 0
    for name in SAMPLE_NAMES:
        path = SAMPLES / f"{name}.onnx"
        onnx.checker.check_model(onnx.load(str(path)))
        total += path.stat().st_size
    assert total < 1_000_000
