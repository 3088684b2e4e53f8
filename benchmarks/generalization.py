"""Do plans hold on inputs the sweep never read? The measurement behind the defaults of ``--criterion``,
``--until-verified`` and the data split.

For each real model of the tier (``tests/real_tier.py``) and each amount of search data, the script writes
realistic feeds, keeps ``--heldout`` other inputs aside (never given to the sweep), and sweeps with every
criterion, with and without ``--until-verified``. The plan of each run is then judged on the held-out inputs
with plain ONNX Runtime. Runs of one model and data size share the baseline and sensitivity evaluations (they
do not depend on the criterion), so each run's cost is counted as if it had started from scratch: those shared
evaluations plus the ones it ran itself.

    python benchmarks/generalization.py --models ppocr_cls,minilm_l3 --sizes 16,48 --out /tmp/generalization

Writes one JSON line per run to ``OUT/runs.jsonl`` (resumable: finished runs are skipped) and prints a markdown
table, per criterion and mode, of the held-out pass rate, the held-out value relative to the tolerance, plan
sizes and cost.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

CRITERIA = ("aggregate", "p90", "worst-sample")
SHARED_PHASES = ("baseline", "sensitivity (isolate)")


def _journal(out: Path) -> list[dict]:
    path = out / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _sweep(model_path: Path, data: Path, out: Path, args: list[str]) -> tuple[int, str]:
    from precision_lab.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = main(["sweep", str(model_path), "--data", str(data), "--out", str(out), "--quiet", *args])
    return code, stderr.getvalue().strip()



def run_model(key: str, size: int, heldout: int, root: Path, recipe: str, log) -> list[dict]:
    from real_tier import TIER, heldout_value, search_and_heldout

    model = TIER[key]
    work = root / f"{key}-{size}-{recipe}"
    search, held = search_and_heldout(model, work / "feeds", size, heldout)
    path = model.fetch()
    base_args = list(model.args) + ["--recipe", recipe]
    rows = []
    base = work / "base"
    for criterion in CRITERIA:
        for until in (False, True):
            label = f"{key} n={size} {recipe} {criterion}{' until-verified' if until else ''}"
            out = work / f"{criterion}-{'until' if until else 'once'}"
            if out.exists():
                shutil.rmtree(out)
            shared = 0
            shared_seconds = 0.0
            if base.exists():  # start from the shared baseline + sensitivity evaluations only
                (out / "cache").mkdir(parents=True)
                shutil.copytree(base / "cache", out / "cache", dirs_exist_ok=True)
                records = [r for r in _journal(base) if r["phase"] in SHARED_PHASES]
                (out / "journal.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
                shared = len(records)
                shared_seconds = sum(r.get("seconds", {}).get("total", 0.0) for r in records)
            before = len(_journal(out))
            started = time.perf_counter()
            args = base_args + ["--criterion", criterion] + (["--until-verified"] if until else [])
            code, err = _sweep(path, search, out, args)
            seconds = time.perf_counter() - started
            if code != 0:
                log(f"{label}: exit {code}: {err.splitlines()[-1] if err else ''}")
                rows.append({"model": key, "size": size, "recipe": recipe, "criterion": criterion, "until": until,
                             "error": err.splitlines()[-1] if err else f"exit {code}"})
                break
            if not base.exists():
                shutil.copytree(out, base)
            plan = json.loads((out / "plan.json").read_text())
            tolerance = plan["metric"]["tolerance"]
            value, per_input = heldout_value(
                path, out / "plan.onnx", held, metric=plan["metric"]["name"], criterion=criterion,
                slices=model.option_values("--output-slice"), judged=model.option_values("--judge-output"),
            )
            aggregate, _ = heldout_value(
                path, out / "plan.onnx", held, metric=plan["metric"]["name"], criterion="aggregate",
                slices=model.option_values("--output-slice"), judged=model.option_values("--judge-output"),
            )
            row = {
                "model": key, "size": size, "recipe": recipe, "criterion": criterion, "until": until,
                "candidates": len(plan["fp32_layers"]) + len(plan["int8_layers"]),
                "fp32_layers": len(plan["fp32_layers"]), "tolerance": tolerance,
                "eval_value": plan["achieved"]["value"], "verify_value": plan["verification"].get("value"),
                "verify_passed": plan["verification"].get("passed"),
                "rounds": len(plan["verification"].get("rounds", [])),
                "heldout_value": value, "heldout_aggregate": aggregate,
                "heldout_worst_input": max(per_input) if per_input else None,
                "heldout_passed": value <= tolerance, "heldout_ratio": value / tolerance if tolerance else None,
                "evaluations": shared + len(_journal(out)) - before,
                "seconds": seconds + shared_seconds,
                "splits": [plan["data"]["calib_samples"], plan["data"]["eval_samples"], plan["data"]["verify_samples"]],
                "notice": bool(plan.get("notices")),
            }
            rows.append(row)
            log(
                f"{label}: {row['fp32_layers']} FP32, eval {row['eval_value']:.4g}, verify {row['verify_value']}, "
                f"held-out {value:.4g} ({row['heldout_ratio']:.2f}x tol), {row['evaluations']} evals, "
                f"{row['seconds']:.0f} s"
            )
    return rows


def summarize(rows: list[dict]) -> str:
    """Markdown: per criterion and mode and size, held-out pass rate, worst held-out/tolerance, plan sizes, cost."""
    ok = [r for r in rows if "error" not in r]
    lines = [
        "| criterion | --until-verified | search feeds | runs | held-out passes | held-out ≤ 1.5× tol | worst held-out / tol | "
        "mean FP32 layers | mean evaluations |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in sorted({r["size"] for r in ok}):
        for criterion in CRITERIA:
            for until in (False, True):
                group = [r for r in ok if r["criterion"] == criterion and r["until"] == until and r["size"] == size]
                if not group:
                    continue
                passes = sum(r["heldout_passed"] for r in group)
                within = sum(r["heldout_ratio"] <= 1.5 for r in group)
                worst = max(r["heldout_ratio"] for r in group)
                layers = sum(r["fp32_layers"] for r in group) / len(group)
                evals = sum(r["evaluations"] for r in group) / len(group)
                lines.append(
                    f"| {criterion} | {'on' if until else 'off'} | {size} | {len(group)} | {passes}/{len(group)} | "
                    f"{within}/{len(group)} | {worst:.2f} | {layers:.1f} | {evals:.0f} |"
                )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ppocr_cls,minilm_l3,oww_embedding,silero_v6,oww_mel,ppocr_det,ppocr_rec,yolov8n")
    parser.add_argument("--sizes", default="16,48", help="search feeds per model (comma-separated)")
    parser.add_argument("--heldout", type=int, default=16)
    parser.add_argument("--recipe", default="trt")
    parser.add_argument("--out", default="/tmp/precision-lab-generalization")
    args = parser.parse_args(argv)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    runs = root / "runs.jsonl"
    done = {(r["model"], r["size"], r["recipe"]) for r in map(json.loads, runs.read_text().splitlines())} if runs.exists() else set()
    for key in args.models.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            if (key, size, args.recipe) in done:
                continue
            for row in run_model(key, size, args.heldout, root, args.recipe, lambda line: print(line, flush=True)):
                with runs.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in runs.read_text().splitlines()]
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
