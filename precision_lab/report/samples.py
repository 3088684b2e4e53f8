"""Per-sample views of a saved sweep: how the error spreads over the inputs, and which inputs are hardest.

A plan judged on its aggregate can hide inputs on which it fails; these views show every sample's value (the
worst output part of that sample) for the plan and the two baselines, on the evaluation feeds the search saw
and on the verification feeds it did not.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from precision_lab.results import Evaluation, SweepResult

__all__ = ["plot_samples", "per_sample_worst", "sample_groups"]

_COLORS = {"all INT8": "#d62728", "plan": "#1f77b4", "all FP32": "#7f7f7f"}


def per_sample_worst(result: SweepResult, record: Evaluation) -> np.ndarray:
    """Each sample's value of the sweep's metric in ``record``: the worst part of that sample (NaN if failed)."""
    return np.asarray([value for _, value in record.worst_per_sample(result.metric_obj)], dtype=np.float64)


def sample_groups(result: SweepResult) -> list[tuple[str, str, np.ndarray]]:
    """``(set, plan role, values)`` for the plan and both baselines on the evaluation and verification sets."""
    everything = sorted(layer.name for layer in result.layer_results)
    wanted = {"all INT8": [], "plan": sorted(result.plan.fp32_layers), "all FP32": everything}
    groups = []
    for data_set, records in (("evaluation", result.evaluation_records), ("verification", result.verification_records)):
        for role, layers in wanted.items():
            record = next((r for r in records if sorted(r.fp32_layers) == layers and r.status == "ok"), None)
            if record is not None:
                values = per_sample_worst(result, record)
                if values.size:
                    groups.append((data_set, role, values))
    return groups


def plot_samples(result: SweepResult) -> Figure:
    """Every sample's value for all-INT8, the plan and all-FP32, on the evaluation and verification feeds, with
    the tolerance (log scale when the values span more than two decades)."""
    import matplotlib

    metric = result.metric_obj
    groups = sample_groups(result)
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = Figure(figsize=(8, 3.6), layout="constrained")
        ax = fig.add_subplot()
        rng = np.random.default_rng(0)
        positive = np.concatenate([g[2][np.isfinite(g[2]) & (g[2] > 0)] for g in groups] or [np.array([])])
        log = positive.size > 1 and positive.max() / positive.min() > 100 and not metric.higher_is_better
        labels = []
        for x, (data_set, role, values) in enumerate(groups):
            shown = values[np.isfinite(values)]
            hidden = 0
            if log:
                hidden = int(np.sum(shown <= 0))
                shown = shown[shown > 0]
            ax.scatter(x + rng.uniform(-0.18, 0.18, shown.size), shown, s=14, alpha=0.7, color=_COLORS[role])
            if shown.size:
                ax.hlines(np.median(shown), x - 0.3, x + 0.3, color="black", linewidth=1)
            if hidden:  # a log axis cannot show an exact 0: say so where the points would be
                ax.annotate(f"{hidden} × 0", (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 4),
                            textcoords="offset points", ha="center", fontsize=8, color=_COLORS[role])
            labels.append(f"{role}\n{data_set} ({values.size})")
        tolerance = result.verification.get("tolerance", result.metric["tolerance"])
        if tolerance is not None and math.isfinite(float(tolerance)):
            ax.axhline(float(tolerance), color="#2ca02c", linestyle="--", linewidth=1, label=f"tolerance {float(tolerance):.4g}")
            ax.legend(loc="best", fontsize=8)
        ax.set_xticks(range(len(groups)), labels, fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(f"{metric.name} per sample ({metric.direction} is better)")
        ax.set_title("Per-sample values (worst output part of each sample; bar = median)", fontsize=10)
    return fig
