"""Per-channel breakdown from saved statistics: grouping by scale and the collapse warning."""

from __future__ import annotations

import numpy as np

from precision_lab.report.channels import channel_groups, collapses
from precision_lab.results import Evaluation


def _record(rms, rel, cosine):
    rms, rel = np.asarray(rms, float), np.asarray(rel, float)
    ref = rms**2 * 100  # 100 elements per channel
    return Evaluation(
        "k", (), "baseline", "ok", {},
        outputs={"out": {"cosine": cosine}},
        channels={"out": {"sum_sq_err": (ref * rel**2).tolist(), "sum_sq_ref": ref.tolist(), "count": 100}},
    )


def _yolo_like(score_rel, cosine=0.9996):
    rng = np.random.default_rng(0)
    rms = np.concatenate([rng.uniform(80, 300, 4), 10 ** rng.uniform(-3, -1, 18)])
    rel = np.concatenate([np.full(4, 0.001), np.full(18, score_rel)])
    return _record(rms, rel, cosine)


def test_boxes_and_scores_form_two_groups_largest_first():
    groups = channel_groups(_yolo_like(1.0), "out")
    assert [g.channels for g in groups] == [tuple(range(4)), tuple(range(4, 22))]
    assert groups[1].label == "4-21"
    assert abs(groups[0].rel_l2 - 0.001) < 1e-12
    assert abs(groups[1].rel_l2 - 1.0) < 1e-12
    assert groups[0].rms_low > 50 > 0.2 > groups[1].rms_high


def test_collapse_is_flagged_only_when_the_aggregate_looks_fine():
    assert [(g.label, c) for g, c in collapses(_yolo_like(1.0))] == [("4-21", 0.9996)]
    assert collapses(_yolo_like(0.1)) == []  # scores damaged but not lost
    assert collapses(_yolo_like(1.0, cosine=0.8)) == []  # the aggregate already looks bad


def test_channels_of_similar_scale_get_no_breakdown():
    record = _record(np.linspace(1.0, 5.0, 16), np.full(16, 0.9), 0.999)
    assert channel_groups(record, "out") == []
    assert collapses(record) == []


def test_labels_of_non_contiguous_groups():
    rms = [100, 0.01, 100, 0.01, 0.02, 100]
    groups = channel_groups(_record(rms, [0.0] * 6, 1.0), "out")
    assert [g.label for g in groups] == ["0, 2, 5", "1, 3-4"]
