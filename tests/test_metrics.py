"""Metric definitions (docs/design.md, "Definitions") against direct numpy, through Polygraphy's name pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from precision_lab.compare import METRICS, ErrorStats, OutputSlice, compare_outputs, get_metric, worst_value
from precision_lab.errors import InputError


def _iterations(seed=0, n=5):
    rng = np.random.default_rng(seed)
    reference = [{"a": rng.normal(size=(2, 10)).astype(np.float32), "b": rng.normal(size=(1, 3, 4)).astype(np.float32)}
                 for _ in range(n)]
    outputs = [{name: value + rng.normal(scale=0.1, size=value.shape).astype(np.float32) for name, value in r.items()}
               for r in reference]
    return outputs, reference


def _direct(outputs, reference, name):
    y = np.concatenate([o[name] for o in outputs]).astype(np.float64)
    r = np.concatenate([o[name] for o in reference]).astype(np.float64)
    d = y - r
    rows_y, rows_r = y.reshape(y.shape[0], -1), r.reshape(r.shape[0], -1)
    cos = np.mean([a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(rows_y, rows_r)])
    return {
        "rel-l2": np.linalg.norm(d) / np.linalg.norm(r),
        "max-abs": np.abs(d).max(),
        "mean-abs": np.abs(d).mean(),
        "cosine": cos,
        "sqnr": 10 * np.log10(np.sum(r * r) / np.sum(d * d)),
        "top1": np.mean(np.argmax(y, axis=-1) == np.argmax(r, axis=-1)),
    }


def test_every_metric_matches_its_definition():
    outputs, reference = _iterations()
    stats = compare_outputs(outputs, reference).parts
    assert set(stats) == {"a", "b"}
    for name in ("a", "b"):
        expected = _direct(outputs, reference, name)
        values = stats[name].values()
        for metric in METRICS:
            assert values[metric] == pytest.approx(expected[metric], rel=1e-9, abs=1e-12), (name, metric)


def test_outputs_are_paired_by_name_not_position():
    outputs, reference = _iterations()
    swapped = [dict(reversed(list(o.items()))) for o in outputs]  # same arrays, other order
    a = compare_outputs(outputs, reference).parts
    b = compare_outputs(swapped, reference).parts
    assert {k: v.values() for k, v in a.items()} == {k: v.values() for k, v in b.items()}


def test_output_slices_are_judged_separately_and_the_worst_decides():
    rng = np.random.default_rng(1)
    reference = [{"out": np.concatenate([rng.uniform(0, 320, (1, 4, 50)), rng.uniform(0, 1, (1, 18, 50))], 1).astype(np.float32)}]
    broken = reference[0]["out"].copy()
    broken[:, 4:] = 0  # scores lost, boxes intact
    outputs = [{"out": broken}]
    whole = compare_outputs(outputs, reference).parts["out"].values()
    assert whole["cosine"] > 0.99  # the aggregate looks fine...
    comparison = compare_outputs(outputs, reference, slices=[OutputSlice.parse("out:1:0:4"), OutputSlice.parse("out:1:4:22")])
    values = {part: s.values() for part, s in comparison.parts.items()}
    assert comparison.outputs["out"].values()["cosine"] == pytest.approx(whole["cosine"])  # whole output kept
    channel_rel = np.sqrt(comparison.channels["out"].sum_sq_err / comparison.channels["out"].sum_sq_ref)
    assert np.allclose(channel_rel[:4], 0) and np.allclose(channel_rel[4:], 1)
    assert values["out[axis 1: 0:4]"]["rel-l2"] == 0
    assert values["out[axis 1: 4:22]"]["rel-l2"] == pytest.approx(1.0)  # ...the scores are gone
    assert worst_value(values, METRICS["rel-l2"]) == (pytest.approx(1.0), "out[axis 1: 4:22]")
    assert worst_value(values, METRICS["cosine"])[1] == "out[axis 1: 4:22]"


def test_tolerance_semantics():
    assert METRICS["rel-l2"].passes(0.05, 0.05) and not METRICS["rel-l2"].passes(0.0501, 0.05)
    assert METRICS["cosine"].passes(0.999, 0.999) and not METRICS["cosine"].passes(0.9989, 0.999)
    assert not METRICS["sqnr"].passes(math.nan, 0.0)
    with pytest.raises(InputError):
        METRICS["cosine"].check_tolerance(1.5)
    with pytest.raises(InputError):
        get_metric("mod:func")  # custom metric without direction
    assert get_metric("mod:func", direction="higher").higher_is_better


def test_degenerate_statistics():
    zero = ErrorStats.of(np.zeros((2, 3)), np.zeros((2, 3))).values()
    assert zero["rel-l2"] == 0 and zero["cosine"] == 1 and zero["sqnr"] == math.inf
    assert ErrorStats.of(np.ones((1, 3)), np.zeros((1, 3))).values()["rel-l2"] == math.inf
