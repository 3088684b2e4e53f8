"""Plots of a saved sweep: each takes a :class:`~precision_lab.results.SweepResult` and returns a matplotlib
``Figure`` (no global pyplot state, so they work in notebooks, scripts and the HTML report alike)."""

from __future__ import annotations

import functools
import math

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from precision_lab.report.channels import channel_groups
from precision_lab.results import SweepResult

__all__ = [
    "plot_sensitivity",
    "plot_tradeoff",
    "plot_output_channels",
    "plot_positions",
    "plot_pareto",
    "pareto_front",
    "pareto_points",
    "sensitivity_column",
    "error_side",
]

_FP32 = "#d62728"
_INT8 = "#1f77b4"
_FP16 = "#ff7f0e"
_COLORS = {"fp32": _FP32, "fp16": _FP16, "int8": _INT8}


def _colors(layers) -> list[str]:
    """Bar colors by the plan's precision (FP32 red, FP16 orange, INT8 blue)."""
    precisions = layers["precision"] if "precision" in layers else ["fp32" if f else "int8" for f in layers["fp32"]]
    return [_FP32 if fp32 else _COLORS.get(p, _INT8) for fp32, p in zip(layers["fp32"], precisions)]


def _legend(layers) -> str:
    kinds = set(layers["precision"]) if "precision" in layers else set()
    return "red = kept FP32" + (", orange = FP16" if "fp16" in kinds else "")
_PASS = "#2ca02c"


def _plain_text(plot):
    """Layer names are data, not markup: build the figure with mathtext off (``$`` in a name stays ``$``)."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}):
            return plot(*args, **kwargs)

    return wrapper


def sensitivity_column(result: SweepResult) -> str:
    """The measured sensitivity column to show: ``isolate``, else ``leave_one_out``, else the fast search's
    ``signal``."""
    layers = result.layers
    for column in ("isolate", "leave_one_out"):
        if layers[column].notna().any():
            return column
    return "signal"


def error_side(result: SweepResult, column: str, values: list[float]) -> tuple[list[float], str, float | None]:
    """Values of ``column`` turned so that longer bars are worse, the quantity's name, and the tolerance on the
    same scale (``None`` for the signal). Lower-is-better metrics and the signal are shown as they are; for
    higher-is-better ones the error side is plotted: 1 − cosine, 1 − top1, 10^(−SQNR/10) (noise-to-signal
    power), and for a custom metric the distance below the best layer's value."""
    metric = result.metric
    name, tolerance = metric["name"], float(metric["tolerance"])
    if column == "signal" or metric["direction"] == "lower":
        return values, name if column != "signal" else "rel-l2", None if column == "signal" else tolerance
    if name in ("cosine", "top1"):
        return [1.0 - v for v in values], f"1 − {name}", 1.0 - tolerance
    if name == "sqnr":
        return [10 ** (-v / 10) for v in values], "10^(−SQNR/10), noise-to-signal power", 10 ** (-tolerance / 10)
    finite = [v for v in values if math.isfinite(v)]
    best = max(finite, default=0.0)
    return [best - v for v in values], f"{name}: best layer's value − this layer's", best - tolerance


def _with_plan_layers(layers, top: int):
    """The ``top`` ranked rows and every FP32 layer of the plan ranked below them."""
    import pandas as pd

    below = layers.iloc[top:]
    return pd.concat([layers.head(top), below[below["fp32"]]])


def _floored(values: list[float], log: bool) -> tuple[list[float], float | None]:
    """Non-finite values as 0; on a log axis, values <= 0 drawn at a floor (returned) so they stay visible."""
    shown = [v if math.isfinite(v) else 0.0 for v in values]  # NaN: not measured, drawn hollow by the caller
    if not log:
        return shown, None
    positive = [v for v in shown if v > 0]
    floor = min(positive) / 3 if positive else 1e-6
    return [max(v, floor) for v in shown], floor if any(v <= 0 for v in shown) else None


def _use_log(values, metric_lower_better: bool) -> bool:
    positive = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    return metric_lower_better and len(positive) >= 2 and max(positive) / min(positive) >= 100


@_plain_text
def plot_sensitivity(result: SweepResult, *, top: int = 20) -> Figure:
    """Horizontal bars of the ``top`` most sensitive layers (FP32 plan layers in red), log scale when the
    values span two decades or more; the tolerance as a dashed line."""
    column = sensitivity_column(result)
    layers = _with_plan_layers(result.layers, top)
    metric = result.metric
    raw = [float(v) if v == v else math.nan for v in layers[column]]
    values, quantity, tolerance = error_side(result, column, raw)
    log = _use_log(values, True)
    shown, floor = _floored(values, log)
    fig = Figure(figsize=(8, max(2.5, 0.32 * len(layers) + 1.2)), layout="constrained")
    ax = fig.add_subplot()
    positions = np.arange(len(layers))[::-1]
    colors = _colors(layers)
    measured = [v == v for v in raw]  # a plan node that is not an INT8 candidate has no sensitivity: hollow bar
    for is_measured in (True, False):  # one call per hatch: older matplotlib takes a single hatch per call
        rows = [i for i, m in enumerate(measured) if m == is_measured]
        if rows:
            ax.barh(positions[rows], [shown[i] for i in rows], color=[colors[i] for i in rows] if is_measured else "none",
                    edgecolor=[colors[i] for i in rows], hatch=None if is_measured else "//")
    ax.set_yticks(
        positions,
        [f"{name} ({op})" + ("" if m else ", not measured") for name, op, m in zip(layers["name"], layers["op_type"], measured)],
        fontsize=8,
    )
    if log:
        ax.set_xscale("log")
    if column == "isolate" and tolerance is not None and (tolerance > 0 or not log):
        ax.axvline(tolerance, color="k", linestyle="--", linewidth=1, label=f"tolerance {metric['tolerance']:g}")
        ax.legend(loc="lower right", fontsize=8)
    labels = {
        "isolate": f"{quantity} with only this layer INT8",
        "leave_one_out": f"{quantity} with all INT8 but this layer",
        "signal": "rel-l2 this layer adds in the all-INT8 model (one-pass signal)",
    }
    xlabel = labels[column] + (" (longer = worse)" if quantity != metric["name"] and column != "signal" else "")
    ax.set_xlabel(xlabel + (f"; 0 and not measured drawn at {floor:.1g}" if floor is not None else ""))
    shown_top = min(top, len(result.layer_results))
    extra = len(layers) - shown_top
    ax.set_title(
        f"Layer sensitivity (top {shown_top} of {len(result.layer_results)}"
        + (f", and {extra} FP32 layer{'s' if extra > 1 else ''} ranked below" if extra > 0 else "")
        + f"; {_legend(layers)})",
        fontsize=10,
    )
    return fig


def _metric_axis(frame, metric: dict):
    """The ``value`` column of ``frame`` as drawn, the axis label, and the floor zeros are drawn at (``None``:
    a linear axis). A log axis when the values span two decades or more; zeros (e.g. all FP32) cannot sit on a
    log axis, so they are drawn on a floor and the label says so."""
    values = frame["value"].astype(float)
    ylabel = metric["name"]
    if not _use_log(list(values) + [metric["tolerance"]], metric["direction"] == "lower"):
        return values, ylabel, None
    positive = values[values > 0]
    floor = float(positive.min()) / 3 if len(positive) else 1e-6
    if (values <= 0).any():
        ylabel += f" (0 drawn at {floor:.1g})"
    return values.clip(lower=floor), ylabel, floor


@_plain_text
def plot_tradeoff(result: SweepResult) -> Figure:
    """Metric value against the number of FP32 layers for every evaluated plan of the baselines and the search,
    the tolerance line, and the chosen plan marked."""
    frame = result.evaluations
    frame = frame[~frame["phase"].str.startswith("sensitivity") & frame["value"].notna()]
    metric = result.metric
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    values, ylabel, floor = _metric_axis(frame, metric)
    log = floor is not None
    passed = frame["passed"].fillna(False).astype(bool)
    complete = frame["complete"].astype(bool)
    failed = ~passed & complete
    ax.scatter(frame["num_fp32"][failed], values[failed], color=_FP32, label="fails", zorder=3)
    ax.scatter(frame["num_fp32"][passed], values[passed], color=_PASS, label="passes", zorder=3)
    if (~complete).any():  # an evaluation stopped early: its value is only a bound, drawn as one
        lower = metric["direction"] == "lower"
        ax.scatter(frame["num_fp32"][~complete], values[~complete], marker="^" if lower else "v", facecolors="none",
                   edgecolors=_FP32, zorder=3,
                   label=f"fails, stopped early ({'at least' if lower else 'at most'} this value)")
    plan = result.plan
    if math.isfinite(plan.value):
        plan_y = max(plan.value, floor) if log else plan.value
        ax.scatter([len(plan.fp32_layers)], [plan_y], marker="*", s=260, color="gold", edgecolor="k",
                   zorder=4, label=f"plan: {len(plan.fp32_layers)} FP32 layers")
    ax.axhline(metric["tolerance"], color="k", linestyle="--", linewidth=1, label=f"tolerance {metric['tolerance']:g}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("number of FP32 layers")
    ax.set_ylabel(ylabel)
    ax.set_title("Accuracy bought back by FP32 layers (every evaluated plan)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


@_plain_text
def plot_output_channels(result: SweepResult, output: str | None = None) -> Figure:
    """Per-channel rel-l2 of ``output`` (default: the first output with per-channel data) for all-INT8 and the
    plan, over the channels' FP32 RMS on a log axis, with channel groups by scale."""
    records = {"all INT8": result.all_int8_record, "plan": result.plan_record}
    available = [name for name in result.model.get("outputs", []) if name in (result.all_int8_record.channels if result.all_int8_record else {})]
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.add_subplot()
    output = output or (available[0] if available else None)
    if output is None or result.all_int8_record is None:
        ax.text(0.5, 0.5, "no per-channel data (outputs need rank >= 2 and 2..256 channels on axis 1)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    width = 0.4
    for offset, (label, record) in zip((-width / 2, width / 2), records.items()):
        if record is None or output not in record.channels:
            continue
        stats = record.channels[output]
        err, ref = np.asarray(stats["sum_sq_err"]), np.asarray(stats["sum_sq_ref"])
        rel = np.sqrt(np.divide(err, ref, out=np.zeros_like(err), where=ref > 0))
        ax.bar(np.arange(rel.size) + offset, rel, width, label=f"{label}", color=_FP32 if label == "all INT8" else _PASS)
    stats = result.all_int8_record.channels[output]
    rms = np.sqrt(np.asarray(stats["sum_sq_ref"]) / max(stats.get("count", 1), 1))
    ax2 = ax.twinx()
    ax2.plot(np.arange(rms.size), rms, "k.", label="FP32 RMS")
    if rms[rms > 0].size and rms.max() / max(rms[rms > 0].min(), 1e-30) >= 10:
        ax2.set_yscale("log")
    ax2.set_ylabel("FP32 RMS of the channel")
    for group in channel_groups(result.all_int8_record, output)[1:]:
        ax.axvline(min(group.channels) - 0.5, color="0.5", linestyle=":", linewidth=1)
    ax.set_xlabel(f"channel of '{output}' (axis 1)")
    ax.set_ylabel("rel-l2 of the channel")
    ax.set_title(f"Per-channel error of '{output}'", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return fig


@_plain_text
def plot_positions(result: SweepResult) -> Figure:
    """Sensitivity against layer position in the graph (topological index); FP32 plan layers in red."""
    column = sensitivity_column(result)
    layers = result.layers.sort_values("index")
    raw = [float(v) if v == v else math.nan for v in layers[column]]
    values, quantity, _ = error_side(result, column, raw)
    log = _use_log(values, True)
    shown, floor = _floored(values, log)
    fig = Figure(figsize=(8, 2.8), layout="constrained")
    ax = fig.add_subplot()
    colors = _colors(layers)
    ax.scatter(layers["index"], shown, c=colors, s=18)
    ax.vlines(layers["index"], floor or 0, shown, colors=colors, linewidth=0.6)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("position in the graph (node index, topological order)")
    ax.set_ylabel(f"{quantity} ({column.replace('_', '-')})" + (f"; 0 at {floor:.1g}" if floor is not None else ""))
    ax.set_title(f"Where the sensitive layers sit ({_legend(layers)})", fontsize=10)
    return fig


def pareto_front(costs: list[float], values: list[float], *, higher_is_better: bool) -> list[int]:
    """Indices of the plans no other plan beats on both cost and value (cheaper or as cheap, and better or as
    good, one of them strictly), cheapest first."""
    sign = -1.0 if higher_is_better else 1.0  # sort so that the best value of a cost comes first
    order = sorted(range(len(costs)), key=lambda i: (costs[i], sign * values[i]))
    front, best = [], math.inf
    for i in order:
        if sign * values[i] < best:
            front.append(i)
            best = sign * values[i]
    return front


def pareto_points(result: SweepResult):
    """The rows of ``result.evaluations`` the Pareto chart draws: those with a value and an estimated cost."""
    frame = result.evaluations
    if "estimated_cost" not in frame:
        return frame.iloc[0:0]
    return frame[frame["value"].notna() & frame["estimated_cost"].notna()]


#: what the Pareto chart names each baseline
BASELINE_LABELS = {"all_int8": "all INT8", "all_fp16": "all FP16", "all_fp32": "all FP32"}


@_plain_text
def plot_pareto(result: SweepResult, *, ax=None) -> Figure:
    """Metric value against estimated cost relative to all-FP16 (the roofline of ``result.cost``) for every
    evaluated plan: passing plans green, failing red, the Pareto front (no plan is both cheaper and better) as a
    line, the baselines named, the chosen plan as a star and the tolerance dashed. Drawn on ``ax`` (default: a
    new Figure); returns the Figure, like the other plots. The point collections carry SVG ids
    ``pareto-pass`` / ``pareto-fail``."""
    if ax is None:
        ax = Figure(figsize=(8, 4.2), layout="constrained").add_subplot()
    cost, metric = result.cost, result.metric
    if not cost or "error" in cost:
        why = cost.get("error", "this result was saved before costs were estimated") if cost else (
            "this result was saved before costs were estimated")
        ax.text(0.5, 0.5, f"no cost estimate: {why}", ha="center", va="center", wrap=True, transform=ax.transAxes)
        ax.set_axis_off()
        return ax.figure
    frame = pareto_points(result)
    x = frame["estimated_cost"].astype(float)
    tolerance = float(metric["tolerance"])
    values, ylabel, floor = _metric_axis(frame, metric)
    log = floor is not None
    passed = frame["passed"].astype(bool)
    fails = ax.scatter(x[~passed], values[~passed], color=_FP32, s=22, alpha=0.8, label="fails", zorder=3)
    passes = ax.scatter(x[passed], values[passed], color=_PASS, s=22, alpha=0.8, label="passes", zorder=3)
    fails.set_gid("pareto-fail")
    passes.set_gid("pareto-pass")
    higher = metric["direction"] == "higher"
    front = pareto_front(list(x), list(values), higher_is_better=higher)
    if front:
        line, = ax.plot(x.iloc[front], values.iloc[front], drawstyle="steps-post", color="0.35", linewidth=1,
                        label="Pareto front", zorder=2)
        line.set_gid("pareto-front")
    rows = {key: i for i, key in enumerate(frame["key"])}
    for role, key in cost.get("roles", {}).items():
        if key in rows:
            i = rows[key]
            ax.annotate(BASELINE_LABELS.get(role, role), (x.iloc[i], values.iloc[i]), xytext=(6, 6),
                        textcoords="offset points", fontsize=8)
    ax.axvline(1.0, color="0.6", linestyle=":", linewidth=1, label="all FP16 (the reference, 1)")
    plan = result.plan
    if plan.key in rows and math.isfinite(plan.value):
        i = rows[plan.key]
        star = ax.scatter([x.iloc[i]], [values.iloc[i]], marker="*", s=260, color="gold", edgecolor="k", zorder=4,
                          label=f"plan: {cost['plan']['relative_to_all_fp16']:#.3g}× all-FP16")
        star.set_gid("pareto-plan")
    ax.axhline(tolerance, color="k", linestyle="--", linewidth=1, label=f"tolerance {tolerance:g}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(f"estimated time relative to all-FP16 on {cost['gpu']} (roofline; FP32 = {cost['fp32_mode']})")
    ax.set_ylabel(ylabel)
    ax.set_title(f"Accuracy against cost ({len(frame)} evaluated plans)", fontsize=10)
    ax.legend(fontsize=8)
    return ax.figure
