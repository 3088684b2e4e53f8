"""Every real model of the tier, both recipes, default settings: the plan must hold on inputs the sweep never read.

Each model gets realistic feeds made the way its shipping package preprocesses (``tests/real_tier.py``). They
are split into the folder the sweep reads and held-out inputs it never sees; the plan's held-out value, measured
with plain ONNX Runtime against the original model, must be within 1.5x the tolerance. A model that cannot be
quantized must say why in one line (exit 2), never with a traceback.

Cheap models run in every CI run (marker ``real``); the others are behind ``real_full``
(``pytest -m real_full``), which the default run deselects.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import run_cli
from real_models import FetchError
from real_tier import TIER, heldout_value, search_and_heldout

SEARCH_FEEDS, HELDOUT_FEEDS = 48, 16  # the data size measured in benchmarks/generalization.py
SWEEP_TIMEOUT = 3 * 3600  # seconds: the slowest real_full sweep (U2-Net-p, extended) on the shared 2-core machine
HELDOUT_LIMIT = 1.5  # the plan's held-out value may exceed the tolerance by at most this factor


def _cases():
    for key, model in TIER.items():
        for recipe in model.recipes:
            marks = [pytest.mark.real] if recipe in model.ci else [pytest.mark.real_full]
            yield pytest.param(key, recipe, id=f"{key}-{recipe}", marks=marks)



@pytest.mark.parametrize("key, recipe", list(_cases()))
def test_plan_holds_on_heldout_inputs(key, recipe, tmp_path_factory, real_model_log):
    model = TIER[key]
    root = tmp_path_factory.mktemp(f"{key}-{recipe}")
    try:
        search, heldout = search_and_heldout(model, root, SEARCH_FEEDS, HELDOUT_FEEDS)
    except FetchError as exc:
        pytest.skip(str(exc))
    out = root / "out"
    started = time.perf_counter()
    proc = run_cli("sweep", str(model.fetch()), "--data", str(search), "--recipe", recipe, "--out", str(out),
                   "--quiet", *model.args, timeout=SWEEP_TIMEOUT)
    seconds = time.perf_counter() - started
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 2:  # cannot be quantized: one clear line
        lines = [line for line in proc.stderr.splitlines() if line.startswith("precision-lab: error:")]
        assert len(lines) == 1, proc.stderr
        real_model_log(f"{key} ({recipe}): refused in one line: {lines[0]}")
        return
    assert proc.returncode == 0, proc.stderr
    plan = json.loads((out / "plan.json").read_text())
    metric = plan["metric"]
    value, per_input = heldout_value(
        model.fetch(), out / "plan.onnx", heldout, metric=metric["name"], criterion=metric["criterion"],
        slices=model.option_values("--output-slice"), judged=model.option_values("--judge-output"),
    )
    feeds = set(plan["data"]["calib_feeds"]) | set(plan["data"]["eval_feeds"]) | set(plan["data"]["verify_feeds"])
    assert not feeds & {p.name for p in heldout.glob("*.npz")}
    real_model_log(
        f"{key} ({recipe}): {len(plan['fp32_layers'])}/{len(plan['fp32_layers']) + len(plan['int8_layers'])} FP32, "
        f"{plan['evaluations']} evaluations, {seconds:.0f} s; {metric['name']} ({metric['criterion']}) evaluation "
        f"{plan['achieved']['value']:.4g}, verification {plan['verification'].get('value', float('nan')):.4g}, "
        f"held-out {value:.4g} (tolerance {metric['tolerance']:g}; worst held-out input {max(per_input):.4g})"
    )
    assert value <= HELDOUT_LIMIT * metric["tolerance"], f"held-out {value} vs tolerance {metric['tolerance']}"
