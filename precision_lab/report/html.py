"""``report.html``: one self-contained page rendered from a saved :class:`SweepResult`.

No network access of any kind: charts are inline SVG images (data URIs), styles and the small table script are
inline. Every string that comes from the model (node names, op types, output names, paths) goes through
:func:`html.escape`; charts are ``<img>`` elements, so nothing in them can run.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from datetime import datetime, timezone
from pathlib import Path

from precision_lab.report.channels import COLLAPSE_REL_L2, FINE_COSINE, channel_groups, channel_warnings
from precision_lab.report.plots import (
    BASELINE_LABELS,
    pareto_points,
    plot_output_channels,
    plot_pareto,
    plot_positions,
    plot_sensitivity,
    plot_tradeoff,
    sensitivity_column,
)
from precision_lab.console import fmt_value
from precision_lab.report.samples import plot_samples
from precision_lab.results import Evaluation, SweepResult
from precision_lab.verification import ON_RESAMPLES, failure_reason

__all__ = ["render_report", "write_report", "REPORT_NAME"]

REPORT_NAME = "report.html"
_METRICS = ("rel-l2", "max-abs", "mean-abs", "cosine", "sqnr", "top1")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, tolerance: float | None = None) -> str:
    """A value with enough digits to tell it from ``tolerance`` and from 1 (cosine 0.99997 is not "1")."""
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return fmt_value(value, tolerance) if isinstance(value, float) else str(value)


def _figure_img(fig, alt: str, attributes: str = "") -> str:
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: smaller, faster, selectable
        fig.savefig(buffer, format="svg")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="chart"{attributes} alt="{_e(alt)}" src="data:image/svg+xml;base64,{data}">'


def _row(cells, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{cell}</{tag}>" for cell in cells) + "</tr>"


def _summary(result: SweepResult) -> str:
    model, metric, data = result.model, result.metric, result.data
    records = result.all_records
    evaluated_seconds = sum(r.seconds.get("total", 0.0) for r in records)
    rows = [
        ("Model", f"{_e(model['name'])} <span class=muted>({_e(model['path'])})</span>"),
        ("sha256", f"<code>{_e(model['sha256'])}</code>"),
        ("Candidates", f"{_e(model.get('candidates', len(result.layer_results)))} layers, recipe <b>{_e(result.recipe)}</b>"),
        ("Backend", _e(result.backend)),
        (
            "Data",
            f"{_e(data['source'])}: {_e(data['calib_samples'])} calibration / {_e(data['eval_samples'])} evaluation / "
            f"{_e(data.get('verify_samples', 0))} verification samples"
            + (" <b class=warn-text>(synthetic)</b>" if data.get("synthetic") else ""),
        ),
        ("Calibration", f"{_e(result.calibration['method'])} on {_e(result.calibration['samples'])} samples"),
        (
            "Metric",
            f"{_e(metric['name'])} ({_e(metric['direction'])} is better), tolerance <b>{_e(_num(float(metric['tolerance'])))}</b>"
            + (f"; judged on {_e(', '.join(result.output_slices))}" if result.output_slices else ""),
        ),
        ("All INT8", _e(_num(result.baselines.get("all_int8"), metric["tolerance"]))),
        *([("All FP16", _e(_num(result.baselines["all_fp16"], metric["tolerance"])))] if "all_fp16" in result.baselines else []),
        ("All FP32", _e(_num(result.baselines.get("all_fp32"), metric["tolerance"]))),
        ("Plan", f"<b>{_e(_num(result.plan.value, metric['tolerance']))}</b> with "
         + (f"{len(result.plan.plan.fp16_layers)} FP16 and " if "fp16" in result.precision_levels else "")
         + f"{len(result.plan.fp32_layers)} FP32 layers"),
        ("Evaluations", f"{len(records)} ({evaluated_seconds:.1f} s evaluating)"),
        ("Wall time", f"{result.wall_seconds:.1f} s (last run)"),
    ]
    return "<table class=kv>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _warnings(result: SweepResult) -> str:
    notes = []
    if result.data.get("synthetic"):
        notes.append(
            "This sweep ran on <b>synthetic random inputs</b>. Layer sensitivity on random data can differ a lot "
            "from real data: re-run with <code>--data</code> for a plan you can trust."
        )
    if result.status == "all-int8-passes":
        notes.append("All-INT8 already meets the tolerance: the plan is empty.")
    notes.extend(_e(notice[0].upper() + notice[1:]) for notice in result.notices)
    notes.extend(_e(warning) for warning in channel_warnings(result))
    return "".join(f'<div class="warning">⚠ {note}</div>' for note in notes)


def _plan_section(result: SweepResult) -> str:
    plan = result.plan
    layers = {layer.name: layer for layer in result.layer_results}
    column = sensitivity_column(result)
    tolerance = float(result.metric["tolerance"])
    searched = float(result.metric.get("search_tolerance", tolerance))
    precisions = plan.plan
    three_level = "fp16" in result.precision_levels
    costed = result.cost.get("layers", {})
    raised = [*plan.fp32_layers, *(n for n in precisions if n not in plan.fp32_layers)]  # FP32, then FP16
    rows = [_row(["layer", "precision", "op", "rank", column.replace("_", "-"), "why it is needed"], header=True)]
    for name in raised:
        layer = layers.get(name)  # None: a node that is not an INT8 candidate (an FP32 island)
        precision = precisions.get(name, "fp32")
        lower = "FP16" if three_level and precision == "fp32" else "INT8"
        evidence = plan.evidence.get(name, {})
        stopped = evidence.get("stopped_early")  # a bound: the evaluation stopped once it certainly failed
        relation = ("≤" if result.metric_obj.higher_is_better else "≥") if stopped else "="
        why = (
            f"returning it to {lower} gives {_e(result.metric['name'])} {relation} <b>{_e(_num(evidence.get('value'), searched))}</b> "
            f"(fails {_e(_num(searched))}"
            + (f"; stopped after {stopped['samples']} of {stopped['of']} feeds" if stopped else "")
            + f"); evaluation <code>{_e(str(evidence.get('key', ''))[:12])}</code>"
            if evidence
            else "–"
        )
        op_type = layer.op_type if layer else costed.get(name, {}).get("op_type", "–")
        rows.append(_row([f"<code>{_e(name)}</code>", f"<b>{_e(precision.upper())}</b>", _e(op_type),
                          layer.rank if layer else "–", _e(_num(getattr(layer, column))) if layer else "–", why]))
    table = "<table id=plan>" + "".join(rows) + "</table>" if raised else "<p>No layer needs FP32: all-INT8 passes.</p>"
    from precision_lab.backends.exports import explicit_commands, onnxruntime_snippet

    plan_onnx = str(Path(result.out_dir) / "plan.onnx")
    exports = result.exports or explicit_commands(plan_onnx)
    titles = {
        "trtexec": "TensorRT ≥ 10 (explicit quantization): trtexec",
        "polygraphy": "TensorRT ≥ 10: Polygraphy",
        "polygraphy_compare": "Compare TensorRT with ONNX Runtime",
        "implicit_trtexec": "TensorRT 10 implicit mode: trtexec",
        "implicit_polygraphy": "TensorRT 10 implicit mode: Polygraphy",
        "trtexec_implicit": "TensorRT 10 implicit precisions (plan_qdq_fp32.onnx): trtexec",
        "polygraphy_implicit": "TensorRT 10 implicit precisions (plan_qdq_fp32.onnx): Polygraphy",
    }
    commands = [(titles[key], exports[key]) for key in titles if key in exports]
    commands.append(("ONNX Runtime (Python)", onnxruntime_snippet(plan_onnx, one_line=False)))
    build = "".join(f"<h4>{_e(title)}</h4><pre>{_e(command)}</pre>" for title, command in commands)
    return (
        (
            f"<p>Keep <b>{len(plan.fp32_layers)}</b> of {len(result.layer_results)} candidate layers in FP32; the rest "
            "run INT8." if not three_level else
            f"<p>Run <b>{len(precisions.fp16_layers)}</b> layer{'s' * (len(precisions.fp16_layers) != 1)} in FP16 and "
            f"<b>{len(plan.fp32_layers)}</b> node{'s' * (len(plan.fp32_layers) != 1)} in FP32 "
            f"({result.model.get('candidates', len(result.layer_results))} INT8 candidates); the rest of the candidates "
            "run INT8 and every other node FP16."
        )
        + f" Verified: {_e(result.metric['name'])} = <b>{_e(_num(plan.value, tolerance))}</b> "
        f"({'passes' if plan.passed else 'FAILS'} tolerance {_e(_num(tolerance))}). Each "
        + ("FP32 layer is needed: returning any one of them to INT8" if not three_level else
           "of them is needed: returning any one a level down (FP16 to INT8, FP32 to FP16)")
        + " was evaluated and fails"
        + (
            f" the stricter search tolerance <b>{_e(_num(searched))}</b>, used because the plan found at "
            f"{_e(_num(tolerance))} did not hold on the verification feeds.</p>"
            if searched != tolerance
            else ".</p>"
        )
        + table
        + (
            f"<h3>How to build it</h3><p>The plan is applied as Q/DQ in <code>{_e(plan_onnx)}</code>.</p>"
            if not three_level else
            f"<h3>How to build it</h3><p><code>{_e(plan_onnx)}</code> is one strongly typed network: an FP16 graph "
            "with Casts around the FP32 nodes and Q/DQ where layers run INT8; its inputs and outputs keep their types. "
            "The value above was measured on <code>plan_fp16_emulated.onnx</code> (FP16 storage emulated on FP32 "
            "kernels: ONNX Runtime's CPU has no FP16 kernels for most ops).</p>"
        )
        + build
    )


def _duration(seconds: float) -> str:
    return f"{seconds * 1e6:.3g} µs" if seconds < 1e-3 else f"{seconds * 1e3:.3g} ms"


def _cost_section(result: SweepResult) -> str:
    """The plan's estimated cost against all-FP16 and all-INT8, the baselines, the latencies the backend
    measured, and the Pareto chart of every evaluated plan."""
    cost = result.cost
    if not cost or "error" in cost:
        why = cost.get("error") if cost else "this result was saved before costs were estimated"
        return f"<p>No cost estimate: {_e(why)}.</p>"
    plan, baselines, seconds = cost["plan"], cost["baselines"], cost["seconds"]
    frame = result.evaluations
    evaluated = dict(zip(frame.get("key", []), frame.get("value", [])))
    values = {"plan": result.plan.value, **result.baselines}
    keys = cost.get("roles", {})
    rows = [_row(["plan", "estimated time relative to all FP16", "estimate (lower bound)", _e(result.metric["name"])],
                 header=True)]
    for role, label in (("plan", "the plan"), *BASELINE_LABELS.items()):
        relative = plan["relative_to_all_fp16"] if role == "plan" else baselines[role]
        value = values.get(role, evaluated.get(keys.get(role)))
        shown = "not evaluated" if value is None else _num(float(value), float(result.metric["tolerance"]))
        rows.append(_row([_e(label), f"{relative:#.3g}×", _e(_duration(seconds[role])), _e(shown)]))
    share = plan["seconds_by_precision"]
    total = sum(share.values()) or 1.0
    split = ", ".join(f"{p.upper()} {100 * t / total:.0f} %" for p, t in sorted(share.items()))
    measured = cost.get("measured", {})
    measured_text = ""
    if measured:
        ratios = "; ".join(f"{measured[f'relative_to_{r}']:#.3g}× {BASELINE_LABELS[r]}" for r in ("all_fp16", "all_int8")
                           if f"relative_to_{r}" in measured)
        measured_text = (f"<p><b>Measured</b> by the {_e(result.backend)} backend (median latency of one inference): "
                         f"the plan {measured['plan_ms']:.4g} ms" + (f" ({_e(ratios)})" if ratios else "") + ".</p>")
    points = len(pareto_points(result))
    return (
        f"<p>Estimated on <b>{_e(cost['gpu'])}</b>: the plan costs <b>{plan['relative_to_all_fp16']:#.3g}×</b> all FP16 "
        f"and <b>{plan['relative_to_all_int8']:#.3g}×</b> all INT8. Nodes that the plan neither runs INT8 nor names run "
        f"{_e(cost['default'].upper())}; FP32 is true FP32 (as the exports build it, without TF32). Of the plan's "
        f"estimated time: {_e(split)}. The estimate is a {_e(cost['note'])}.</p>"
        + measured_text
        + "<table id=cost>" + "".join(rows) + "</table>"
        + _figure_img(plot_pareto(result), f"metric against estimated cost for {points} evaluated plans",
                      f' id="pareto" data-points="{points}"')
    )


def _resampled_note(round_: dict, result: SweepResult) -> str:
    """' ✗' for a failed verification round, with the median resampled value when that is what failed."""
    if round_["verify_passed"]:
        return ""
    reason = failure_reason(result.metric_obj, round_, float(result.verification["tolerance"]))
    return f" ✗ ({_e(reason[0])}: {_e(_num(reason[1]))})" if reason else " ✗"


def _samples_section(result: SweepResult) -> str:
    """The verdict on the evaluation and verification feeds, the per-sample spread, and the hardest inputs."""
    metric, verification = result.metric, result.verification
    interval = result.confidence.get("plan")
    ci = f" (95% confidence interval {_e(_num(interval[0]))} to {_e(_num(interval[1]))})" if interval else ""
    judged = _e(metric.get("criterion", "aggregate"))
    lines = [
        f"<p>The tolerance applies to the <b>{judged}</b> value"
        + (" (the metric over the whole set)" if judged == "aggregate" else " of the per-sample values")
        + f". Evaluation set, {_e(result.data['eval_samples'])} samples the search saw: <b>{_e(_num(result.plan.value))}</b>{ci}.</p>"
    ]
    if "value" in verification:
        verdict = "passes" if verification["passed"] else "<b class=warn-text>fails</b>"
        median = verification.get("resampled_median")
        why = ""
        reason = failure_reason(result.metric_obj, verification, float(verification["tolerance"]))
        if reason and reason[0] == ON_RESAMPLES:
            why = (f": within it on these samples, but not on the median of 2000 resampled sets of them "
                   f"({_e(_num(median))}), so it passes by less than they can resolve")
        elif reason:
            why = (f": within it on these samples, but not {_e(reason[0])} ({_e(_num(reason[1]))}); the search "
                   f"never judged a plan on either (the calibration feeds can fail a plan, never rescue one)")
        lines.append(
            f"<p>Verification set, {_e(verification['samples'])} samples the search never saw: "
            f"<b>{_e(_num(verification['value']))}</b>, {verdict} tolerance {_e(_num(float(verification['tolerance'])))}"
            f"{why} (all INT8 {_e(_num(verification.get('all_int8')))}, all FP32 {_e(_num(verification.get('all_fp32')))})."
            + (f" With the calibration feeds, {_e(wide['samples'])} samples the search never judged: "
               f"{_e(_num(wide['value']))}." if (wide := verification.get("with_calibration")) and not reason else "")
            + "</p>"
        )
        rounds = verification.get("rounds", [])
        if len(rounds) > 1:
            rows = [_row(["round", "search tolerance", "FP32 layers", "evaluation", "verification"], header=True)]
            for i, r in enumerate(rounds, 1):
                rows.append(_row([i, _e(_num(r["search_tolerance"])), len(r["fp32_layers"]), _e(_num(r["eval_value"])),
                                  _e(_num(r["verify_value"])) + _resampled_note(r, result)]))
            lines.append("<p>The plan failed verification, so the search ran again at a stricter tolerance:</p>"
                         "<table>" + "".join(rows) + "</table>")
    else:
        lines.append("<p>No verification set: too few feeds to hold any back.</p>")
    lines.append(_figure_img(plot_samples(result), "per-sample values"))
    rows = [_row(["input", "set", "output part", f"{_e(metric['name'])} of the plan"], header=True)]
    for data_set in ("evaluation", "verification", "calibration"):
        for sample, part, value in result.worst_inputs(5, data_set=data_set):
            rows.append(_row([f"<code>{_e(sample)}</code>", data_set, _e(part), _e(_num(value))]))
    if len(rows) > 1:
        lines.append("<h3>Hardest inputs for the plan</h3><table id=hardest>" + "".join(rows) + "</table>")
    return "".join(lines)


def _output_metrics(result: SweepResult) -> str:
    rows = [_row(["evaluation", "output / part", *_METRICS], header=True)]
    picks: list[tuple[str, Evaluation | None]] = [
        ("all INT8", result.all_int8_record),
        ("plan", result.plan_record),
        ("all FP32", result.all_fp32_record),
    ]
    for label, record in picks:
        if record is None:
            continue
        shown = dict(record.outputs)
        for part, values in record.parts.items():
            shown.setdefault(part, values)
        for part, values in shown.items():
            rows.append(_row([_e(label), f"<code>{_e(part)}</code>", *(_e(_num(values.get(m))) for m in _METRICS)]))
    return "<table>" + "".join(rows) + "</table>"


def _channel_section(result: SweepResult) -> str:
    record = result.all_int8_record
    if record is None:
        return ""
    parts = []
    for output in result.model.get("outputs", []):
        groups = channel_groups(record, output)
        if not groups:
            continue
        plan_groups = {g.channels: g for g in channel_groups(result.plan_record, output)} if result.plan_record else {}
        rows = [_row(["channels", "FP32 RMS", "rel-l2 all INT8", "rel-l2 plan"], header=True)]
        for group in groups:
            plan_group = plan_groups.get(group.channels)
            collapsed = group.rel_l2 >= COLLAPSE_REL_L2
            rows.append(
                _row(
                    [
                        _e(group.label),
                        f"{_num(group.rms_low)}–{_num(group.rms_high)}",
                        f"<b class=warn-text>{_num(group.rel_l2)}</b>" if collapsed else _num(group.rel_l2),
                        _num(plan_group.rel_l2) if plan_group else "–",
                    ]
                )
            )
        parts.append(
            f"<h3>Output <code>{_e(output)}</code></h3><p>Its channels (axis 1) differ in scale by orders of magnitude, "
            f"so whole-output metrics are dominated by the large ones. A group counts as collapsed at rel-l2 ≥ "
            f"{COLLAPSE_REL_L2} (a whole output ‘looks fine’ at cosine ≥ {FINE_COSINE}).</p>"
            + "<table>" + "".join(rows) + "</table>"
            + _figure_img(plot_output_channels(result, output), f"per-channel error of {output}")
        )
    return "".join(parts) or "<p>No output has channels that differ in scale by two orders of magnitude or more.</p>"


def _layer_table(result: SweepResult) -> str:
    kinds = result.score_kinds
    head = ["rank", "layer", "op", "index", *kinds, "plan"]
    header = "<tr>" + "".join(f'<th data-col="{i}">{name} ⇅</th>' for i, name in enumerate(head)) + "</tr>"
    rows = []
    for layer in result.layer_results:
        fp32 = layer.name in result.plan.fp32_layers
        precision = "FP32" if fp32 else layer.precision.upper()  # results of earlier versions have no precision
        cells = [
            (layer.rank, layer.rank),
            (f"<code>{_e(layer.name)}</code>", _e(layer.name)),
            (_e(layer.op_type), _e(layer.op_type)),
            (layer.index, layer.index),
            *((_e(_num(layer.scores.get(kind))), layer.scores.get(kind, "")) for kind in kinds),
            (f"<b>{_e(precision)}</b>" if precision != "INT8" else "INT8", precision),
        ]
        rows.append(
            ("<tr class=fp32>" if fp32 else "<tr>")
            + "".join(f'<td data-v="{_e(key)}">{shown}</td>' for shown, key in cells)
            + "</tr>"
        )
    return (
        '<input id="filter" type="search" placeholder="filter layers by name or op type…" aria-label="filter layers">'
        f'<table id="layers"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table>'
    )


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2329;background:#f6f7f9}
main{max-width:1080px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 4px}h2{margin:10px 0 8px;border-bottom:2px solid #dde1e6;padding-bottom:4px}
section{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:8px 20px 16px;margin-top:18px}
.headline{display:flex;gap:14px;flex-wrap:wrap;margin:16px 0}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:12px 16px;min-width:160px}
.card .big{font-size:1.7em;font-weight:600}.card .label{color:#5b6570;font-size:.85em}
.ok{color:#1a7f37}.bad{color:#c62828}.muted{color:#6b7580}.warn-text{color:#b35c00}
.warning{background:#fff4e0;border:1px solid #f0b955;border-radius:6px;padding:10px 14px;margin:10px 0}
table{border-collapse:collapse;width:100%;font-size:.9em;margin:8px 0}
th,td{border-bottom:1px solid #e6e8eb;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f5;cursor:default}#layers th{cursor:pointer;user-select:none}
table.kv th{width:160px;background:none;color:#5b6570;font-weight:500}
tr.fp32 td{background:#fdecea}code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em;word-break:break-all}
pre{background:#1e2329;color:#e8eaed;padding:10px 12px;border-radius:6px;overflow-x:auto;font-size:.85em}
img.chart{max-width:100%;display:block;margin:10px 0}
#filter{width:100%;padding:7px 10px;margin:8px 0;border:1px solid #c9ced4;border-radius:6px;font-size:.95em}
"""

_SCRIPT = """
(function(){
  var table=document.getElementById('layers');if(!table)return;
  var body=table.tBodies[0],dir={};
  table.querySelectorAll('th[data-col]').forEach(function(th){
    th.addEventListener('click',function(){
      var col=+th.dataset.col,rows=Array.prototype.slice.call(body.rows);dir[col]=-(dir[col]||-1);
      rows.sort(function(a,b){
        var x=a.cells[col].dataset.v,y=b.cells[col].dataset.v,nx=parseFloat(x),ny=parseFloat(y);
        var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return c*dir[col];});
      rows.forEach(function(r){body.appendChild(r);});});});
  document.getElementById('filter').addEventListener('input',function(ev){
    var q=ev.target.value.toLowerCase();
    Array.prototype.forEach.call(body.rows,function(r){
      r.style.display=(r.cells[1].textContent+' '+r.cells[2].textContent).toLowerCase().indexOf(q)<0?'none':'';});});
})();
"""


def _verification_card(result: SweepResult) -> str:
    verification = result.verification
    if "value" not in verification:
        return '<div class="card"><div class="label">verification</div><div class="big">–</div><div class="label">no held-back feeds</div></div>'
    css = "ok" if verification["passed"] else "bad"
    return (
        f'<div class="card"><div class="label">verification (unseen)</div><div class="big {css}">'
        f'{_e(_num(verification["value"]))}</div><div class="label">{_e(verification["samples"])} held-back samples</div></div>'
    )


def _cost_card(result: SweepResult) -> str:
    cost = result.cost
    if not cost or "error" in cost:
        return ""
    return (
        f'<div class="card"><div class="label">estimated cost</div><div class="big">'
        f'{cost["plan"]["relative_to_all_fp16"]:#.3g}×</div><div class="label">all FP16 on {_e(cost["gpu"])}; '
        f'{cost["plan"]["relative_to_all_int8"]:#.3g}× all INT8</div></div>'
    )


def _plan_card(result: SweepResult) -> str:
    """The headline's plan size: FP32 layers of the candidates, or for three levels the FP16 and FP32 counts."""
    plan = result.plan
    if "fp16" not in result.precision_levels:
        return (
            f'<div class="card"><div class="label">keep in FP32</div><div class="big">{len(plan.fp32_layers)} '
            f'<span class=muted>/ {len(result.layer_results)}</span></div><div class="label">layers</div></div>'
        )
    fp16 = len(plan.plan.fp16_layers)
    return (
        f'<div class="card"><div class="label">FP16 / FP32</div><div class="big">{fp16} / {len(plan.fp32_layers)}</div>'
        f'<div class="label">of {result.model.get("candidates", "?")} INT8 candidates; other nodes FP16</div></div>'
    )


def render_report(result: SweepResult) -> str:
    """The HTML text of the report of ``result`` (from saved results only)."""
    from precision_lab import __version__

    plan, metric = result.plan, result.metric
    passed_class = "ok" if plan.passed else "bad"
    int8_class = "ok" if result.status == "all-int8-passes" else "bad"
    headline = (
        '<div class="headline">'
        + _plan_card(result)
        + f'<div class="card"><div class="label">plan {_e(metric["name"])}</div><div class="big {passed_class}">'
        f'{_e(_num(plan.value, metric["tolerance"]))}</div><div class="label">tolerance {_e(_num(float(metric["tolerance"])))}</div></div>'
        + _verification_card(result)
        + f'<div class="card"><div class="label">all INT8</div><div class="big {int8_class}">{_e(_num(result.baselines.get("all_int8"), metric["tolerance"]))}</div>'
        + '<div class="label">'
        + ("all FP16 " + _e(_num(result.baselines["all_fp16"], metric["tolerance"])) + " · " if "all_fp16" in result.baselines else "")
        + f'all FP32 {_e(_num(result.baselines.get("all_fp32"), metric["tolerance"]))}</div></div>'
        f'<div class="card"><div class="label">evaluations</div><div class="big">{len(result.all_records)}</div>'
        f'<div class="label">backend {_e(result.backend)}</div></div>'
        + _cost_card(result)
        + "</div>"
    )
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f"<h1>INT8 sensitivity: {_e(result.model['name'])}</h1>"
        f"<div class=muted>precision-lab {_e(__version__)} · {_e(generated)}</div>"
        + headline
        + _warnings(result)
        + "<section><h2>The plan</h2>" + _plan_section(result) + "</section>"
        + "<section><h2>Inputs: evaluation, verification and per-sample spread</h2>" + _samples_section(result) + "</section>"
        + "<section><h2>Summary</h2>" + _summary(result) + "</section>"
        + "<section><h2>Sensitivity ranking</h2>"
        + _figure_img(plot_sensitivity(result), "sensitivity ranking")
        + _figure_img(plot_positions(result), "sensitivity by position in the graph")
        + "</section>"
        + "<section><h2>Trade-off: error vs FP32 layers</h2>"
        + _figure_img(plot_tradeoff(result), "metric against number of FP32 layers")
        + "</section>"
        + "<section><h2>Cost: accuracy against estimated time</h2>" + _cost_section(result) + "</section>"
        + "<section><h2>Per-output metrics</h2>" + _output_metrics(result) + "</section>"
        + "<section><h2>Per-channel breakdown</h2>" + _channel_section(result) + "</section>"
        + "<section><h2>All layers</h2>" + _layer_table(result) + "</section>"
    )
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<meta name=viewport content=\"width=device-width,initial-scale=1\"><title>precision-lab: {_e(result.model['name'])}</title>"
        f"<style>{_STYLE}</style></head><body><main>{body}</main><script>{_SCRIPT}</script></body></html>"
    )


def write_report(result: SweepResult, out_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Write ``report.html`` of ``result`` into ``out_dir`` (or to ``path``), atomically. Returns the path."""
    from precision_lab.io import write_text_atomic

    target = Path(path) if path is not None else Path(out_dir) / REPORT_NAME
    write_text_atomic(target, render_report(result))
    return target
