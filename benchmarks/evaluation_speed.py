"""Cheaper evaluations, identical results: the acceptance figures of issue 15 item 2.

For each model (default: PP-OCRv4 detection and YOLOv8n of the real-model tier, realistic feeds), in one run on
the same data folder, full-mode sweeps (``--search full``, default options otherwise) run one after another:

* ``before``: the code before the change (``--before-tree``), or this code with ``--no-suffix --no-early-stop``
  (every evaluation runs the whole model on every feed);
* ``after``: the defaults (suffix evaluation and exact early stop on);
* ``suffix only`` (``--no-early-stop``), on the models named by ``--early-stop-models``: the same search with
  every feed run, to measure what early stop saves.

Printed (and written to ``--out``/results.json): the wall time of the isolate phase (every evaluation of the
``sensitivity (isolate)`` batch, plus the FP32 pass that fills the activation cache), its ratio, whether the
final plans are identical, the largest difference of any metric value between the two runs' complete
evaluations, and the share of inference time early stop saves on the failing search evaluations (the same
plans in ``suffix only`` and ``after``).

    git worktree add --detach /tmp/base <commit before the change>
    python benchmarks/evaluation_speed.py --before-tree /tmp/base --out /tmp/evaluation_speed

Each sweep runs in a fresh Python process (``--before-tree``: importing the code of that checkout).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def _phase_timer():
    """Wall seconds per phase of every ``Evaluator.evaluate`` call in this process (the real method runs; it is
    only timed)."""
    from precision_lab.evaluator import Evaluator

    seconds: dict[str, float] = defaultdict(float)
    original = Evaluator.evaluate

    def timed(self, plans, phase):
        start = time.perf_counter()
        try:
            return original(self, plans, phase)
        finally:
            seconds[phase] += time.perf_counter() - start

    Evaluator.evaluate = timed
    return seconds, lambda: setattr(Evaluator, "evaluate", original)


def _sweep_here(model_path: str, data: str, out: str, args: list[str]) -> dict:
    """One sweep in this process, its wall time and its wall seconds per phase."""
    from precision_lab.cli import main

    seconds, restore = _phase_timer()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["sweep", model_path, "--data", data, "--out", out, "--quiet", "--no-resume", *args])
    finally:
        restore()
    return {"code": code, "phases": dict(seconds), "wall": time.perf_counter() - start}


def _sweep(model_path: Path, data: Path, out: Path, args: list[str], tree: Path) -> tuple[dict[str, float], float]:
    """One sweep in a fresh Python process that imports precision_lab from ``tree`` (this checkout, or a
    checkout of the code before the change)."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, __file__, "--child", json.dumps([str(model_path), str(data), str(out), args])]
    proc = subprocess.run(command, check=False, env=env, capture_output=True, text=True, cwd=tree)
    if proc.returncode != 0:
        raise SystemExit(f"sweep of {model_path.name} failed:\n{proc.stderr[-2000:]}")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    if found["code"] != 0:
        raise SystemExit(f"sweep of {model_path.name} failed with exit code {found['code']}:\n{proc.stderr[-2000:]}")
    return found["phases"], found["wall"]


def _compare(before, after) -> tuple[float, int]:
    """Largest absolute difference of any built-in metric value over the complete evaluations both runs hold,
    and how many evaluations were compared."""
    theirs = {r.key: r for r in before.evaluation_records}
    worst, compared = 0.0, 0
    for record in after.evaluation_records:
        other = theirs.get(record.key)
        if other is None or record.status != "ok" or other.status != "ok":
            continue
        compared += 1
        for part, values in record.parts.items():
            for name, value in values.items():
                if value != other.parts[part][name]:
                    worst = max(worst, abs(value - other.parts[part][name]))
    return worst, compared


def _stopped_consistent(before, after) -> str:
    """How many of ``after``'s stopped evaluations fail in ``before`` (at the tolerance they were stopped at: the
    search tolerance of their round) with a value at or beyond their bound."""
    metric, criterion = before.metric_obj, before.criterion
    theirs = {r.key: r for r in before.evaluation_records}
    stopped = [r for r in after.evaluation_records if r.status == "stopped" and r.key in theirs]
    good = 0
    for record in stopped:
        bound, value = record.value(metric, criterion), theirs[record.key].value(metric, criterion)
        beyond = value <= bound if metric.higher_is_better else value >= bound
        good += beyond and not metric.passes(value, record.stopped["tolerance"])
    return f"{good}/{len(stopped)}"


def _isolate_steps(result) -> dict[str, float]:
    """Seconds per step (Q/DQ build, session build, inference, comparison, total), summed over the isolate
    evaluations; the rest of the phase's wall time is the FP32 pass that fills the activation cache."""
    records = [r for r in result.evaluation_records if r.phase == "sensitivity (isolate)"]
    return {step: round(sum(r.seconds.get(step, 0.0) for r in records), 2)
            for step in ("qdq", "build", "infer", "compare", "total")}


def _early_stop_share(full, cut) -> dict:
    """Inference seconds of the failing search evaluations with every feed run (``full``) and with early stop
    (``cut``), the same plans."""
    metric, tolerance = full.metric_obj, full.metric["tolerance"]
    criterion = full.criterion
    cut_records = {r.key: r for r in cut.evaluation_records}
    failing = [
        r for r in full.evaluation_records
        if r.phase == "search" and r.status == "ok" and not metric.passes(r.value(metric, criterion), tolerance)
        and r.key in cut_records
    ]
    infer_full = sum(r.seconds.get("infer", 0.0) for r in failing)
    infer_cut = sum(cut_records[r.key].seconds.get("infer", 0.0) for r in failing)
    stopped = [cut_records[r.key] for r in failing if cut_records[r.key].status == "stopped"]
    feeds_run = sum(r.stopped["samples"] for r in stopped)
    feeds_all = sum(r.stopped["of"] for r in stopped)
    return {
        "failing_search_evaluations": len(failing),
        "stopped": len(stopped),
        "infer_seconds_full": infer_full,
        "infer_seconds_early_stop": infer_cut,
        "share_saved": 1 - infer_cut / infer_full if infer_full else None,
        "feeds_run_by_stopped": f"{feeds_run}/{feeds_all}",
    }


def run_model(key: str, root: Path, feeds: int, early_stop: bool, before_tree: Path | None, log) -> dict:
    from real_tier import TIER

    import precision_lab as pl

    model = TIER[key]
    path = model.fetch()
    data = root / key / "feeds"
    if not data.exists():
        model.make_feeds(path, data, feeds)
    args = list(model.args)
    # "before": the code before the change (--before-tree), or this code with both shortcuts off
    runs = {"before": (before_tree, []) if before_tree else (REPO, ["--no-suffix", "--no-early-stop"]),
            "after": (REPO, [])}
    if early_stop:
        runs["suffix only"] = (REPO, ["--no-early-stop"])
    results, phases, walls = {}, {}, {}
    for name, (tree, extra) in runs.items():
        out = root / key / name.replace(" ", "_")
        phases[name], walls[name] = _sweep(path, data, out, args + extra, tree)
        results[name] = pl.load(out)
        log(f"{key} {name}: wall {walls[name]:.1f} s, phases " + ", ".join(f"{p} {s:.1f} s" for p, s in phases[name].items()))
    isolate = "sensitivity (isolate)"
    before, after = results["before"], results["after"]
    difference, compared = _compare(before, after)
    row = {
        "model": key,
        "before": str(before_tree) if before_tree else "this code, --no-suffix --no-early-stop",
        "candidates": len(before.layer_results),
        "feeds": {k: before.data[k] for k in ("calib_samples", "eval_samples", "verify_samples")},
        "isolate_seconds": {name: phases[name].get(isolate) for name in runs},
        "isolate_ratio": phases["before"][isolate] / phases["after"][isolate],
        "isolate_steps": {name: _isolate_steps(r) for name, r in results.items()},
        "stopped_fail_in_before": _stopped_consistent(before, after),
        "wall_seconds": walls,
        "evaluations": {name: len(r.evaluation_records) for name, r in results.items()},
        "plans_identical": all(sorted(r.plan.fp32_layers) == sorted(before.plan.fp32_layers) for r in results.values()),
        "fp32_layers": len(before.plan.fp32_layers),
        "max_value_difference": difference,
        "evaluations_compared": compared,
        "isolate_scores_max_difference": max(
            abs(a.scores["isolate"] - b.scores["isolate"])
            for a, b in zip(sorted(before.layer_results, key=lambda x: x.name), sorted(after.layer_results, key=lambda x: x.name))
        ),
    }
    if early_stop:
        row["early_stop"] = _early_stop_share(results["suffix only"], after)
    log(json.dumps(row, indent=1))
    return row


def markdown(summary: dict) -> str:
    """The figures of ``summary`` (what :func:`main` writes to results.json) as the tables of RESULTS.md."""
    lines = [
        ("| model | N | isolate phase before / after (s) | ratio | wall before / after (s) | evaluations before / after "
        "| plans identical | FP32 layers | max value difference | isolate scores max difference |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        iso, wall, evals = row["isolate_seconds"], row["wall_seconds"], row["evaluations"]
        lines.append(
            f"| {row['model']} | {row['candidates']} | {iso['before']:.1f} / {iso['after']:.1f} | "
            f"**{row['isolate_ratio']:.2f}x** | {wall['before']:.1f} / {wall['after']:.1f} | "
            f"{evals['before']} / {evals['after']} | {'yes' if row['plans_identical'] else '**no**'} | "
            f"{row['fp32_layers']} | {row['max_value_difference']:.3g} ({row['evaluations_compared']} evaluations) | "
            f"{row['isolate_scores_max_difference']:.3g} |"
        )
    stops = [row for row in summary["rows"] if "early_stop" in row]
    if stops:
        lines += [
            "",
            ("| model | failing search evaluations | stopped early | feeds run by the stopped ones | inference (s), every "
            "feed / early stop | share of inference saved |"),
            "|---|---|---|---|---|---|",
        ]
        for row in stops:
            e = row["early_stop"]
            lines.append(
                f"| {row['model']} | {e['failing_search_evaluations']} | {e['stopped']} | {e['feeds_run_by_stopped']} | "
                f"{e['infer_seconds_full']:.1f} / {e['infer_seconds_early_stop']:.1f} | **{e['share_saved']:.0%}** |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ppocr_det,yolov8n")
    parser.add_argument("--early-stop-models", default="ppocr_det")
    parser.add_argument("--feeds", type=int, default=64, help="feeds made per model (default 64: 16/32/16 split)")
    parser.add_argument("--out", default="/tmp/evaluation_speed")
    parser.add_argument("--before-tree", default=None,
                        help="a checkout of the code before the change (e.g. a git worktree of the base commit); "
                        "default: this code with --no-suffix --no-early-stop")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_sweep_here(*json.loads(args.child))))
        return 0
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    rows = []
    for key in args.models.split(","):
        rows.append(run_model(key, root, args.feeds, key in args.early_stop_models.split(","),
                              Path(args.before_tree).resolve() if args.before_tree else None,
                              lambda line: print(line, flush=True)))
    summary = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.platform()}",
        "load_1min_before": load,
        "load_1min_after": os.getloadavg()[0],
        "rows": rows,
    }
    (root / "results.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
