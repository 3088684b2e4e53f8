"""``--jobs 2`` evaluates in worker processes and gives the same plan.json as a serial run."""

from __future__ import annotations

import json

from conftest import plan_without_paths, SAMPLES, run_cli, write_random_feeds

MODEL = SAMPLES / "two_planted_cnn.onnx"


def test_jobs_2_gives_the_same_plan_json_as_serial(tmp_path):
    data = write_random_feeds(MODEL, tmp_path / "data", count=24)
    plans = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        proc = run_cli("sweep", str(MODEL), "--data", str(data), "--out", str(out), "--quiet", "--jobs", jobs)
        assert proc.returncode == 0, proc.stderr
        plans[jobs] = json.loads((out / "plan.json").read_text())
        journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
        assert len({r["key"] for r in journal}) == len(journal) == plans[jobs]["evaluations"]
    assert plan_without_paths(plans["2"]) == plan_without_paths(plans["1"])
    assert (tmp_path / "jobs1" / "plan.onnx").read_bytes() == (tmp_path / "jobs2" / "plan.onnx").read_bytes()
