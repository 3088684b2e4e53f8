"""Two-level (INT8/FP32) against three-level (INT8/FP16/FP32) plans on the real-model tier: the README table.

For each model of ``tests/real_tier.py``, the script writes realistic feeds (``--search`` for the sweep and
``--heldout`` others it never reads), sweeps once with ``--precisions int8,fp32`` and once with
``--precisions int8,fp16,fp32`` (recipe ``trt``, the tier's options, every other setting default), and reports
per plan: the layers at each precision, the estimated cost relative to all-FP16 on the target GPU (roofline,
``precision_lab.cost``, true FP32 as exported with ``--noTF32``), the evaluation value, the held-out value, and
the evaluations and wall time the sweep took. The three-level plan is judged on the held-out inputs through the
model that ran (``plan_fp16_emulated.onnx``: FP16 emulated on ONNX Runtime's FP32 kernels).

    python benchmarks/three_level.py --models ppocr_cls,magika --out /tmp/three_level

Writes one JSON line per model and mode to ``OUT/runs.jsonl`` (finished runs are skipped) and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

MODES = {"two-level": "int8,fp32", "three-level": "int8,fp16,fp32"}


def _sweep(model_path: Path, data: Path, out: Path, args: list[str]) -> tuple[int, str]:
    from precision_lab.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = main(["sweep", str(model_path), "--data", str(data), "--out", str(out), "--quiet", *args])
    return code, stderr.getvalue().strip()


def _costs(model_path: Path, plan: dict, gpu: str) -> dict[str, float]:
    """The plan's, all-INT8's and all-FP32's estimated cost relative to all-FP16."""
    from precision_lab.cost import GPUS, model_cost
    from precision_lab.model import prepare_model
    from precision_lab.precisions import FP16, PrecisionPlan

    shapes = {k: v for k, v in plan["model"]["input_shapes"].items() if all(isinstance(d, int) for d in v)}
    prepared = prepare_model(model_path, input_shapes=shapes)
    candidates = plan["quantization"]["candidates"]
    three = "fp16" in plan.get("precision_levels", [])

    def cost(p: PrecisionPlan, default: str) -> float:
        return model_cost(prepared, p, candidates=candidates, gpu=GPUS[gpu], default=default, fp32_mode="fp32").seconds

    reference = cost(PrecisionPlan((c, FP16) for c in candidates), FP16)
    return {
        "plan": cost(PrecisionPlan(plan["precisions"]), "fp16" if three else "fp32") / reference,
        "all_int8": cost(PrecisionPlan(), "fp16" if three else "fp32") / reference,
        "all_fp32": cost(PrecisionPlan.fp32(candidates), "fp32") / reference,
    }


def run_model(
    key: str, search_count: int, heldout_count: int, root: Path, gpu: str, log, modes: tuple[str, ...] = tuple(MODES)
) -> list[dict]:
    from real_tier import TIER, heldout_value, search_and_heldout

    model = TIER[key]
    work = root / key
    feeds = work / "feeds"
    if (feeds / "search").is_dir() and (feeds / "heldout").is_dir():  # the same inputs as the other mode's run
        search, held = feeds / "search", feeds / "heldout"
    else:
        search, held = search_and_heldout(model, feeds, search_count, heldout_count)
    path = model.fetch()
    rows = []
    for mode in modes:
        precisions = MODES[mode]
        out = work / mode
        started = time.perf_counter()
        code, stderr = _sweep(path, search, out, [*model.args, "--recipe", "trt", "--precisions", precisions])
        seconds = time.perf_counter() - started
        row = {"model": key, "mode": mode, "code": code, "seconds": round(seconds, 1)}
        if code != 0:
            row["error"] = stderr.splitlines()[-1] if stderr else ""
            rows.append(row)
            log(row)
            continue
        plan = json.loads((out / "plan.json").read_text())
        judged = out / ("plan_fp16_emulated.onnx" if mode == "three-level" else "plan.onnx")
        value, _ = heldout_value(
            path, judged, held, metric=plan["metric"]["name"], criterion=plan["metric"]["criterion"],
            slices=model.option_values("--output-slice"), judged=model.option_values("--judge-output"),
        )
        precisions_of = plan["precisions"]
        row |= {
            "candidates": len(plan["quantization"]["candidates"]),
            "int8": len(plan["int8_layers"]),
            "fp16": sorted(n for n, p in precisions_of.items() if p == "fp16"),
            "fp32": sorted(n for n, p in precisions_of.items() if p == "fp32"),
            "value": plan["achieved"]["value"],
            "heldout": value,
            "tolerance": plan["metric"]["tolerance"],
            "all_fp16": plan["baselines"].get("all_fp16"),
            "evaluations": plan["evaluations"],
            "cost": _costs(path, plan, gpu),
        }
        rows.append(row)
        log(row)
    return rows


def _table(rows: list[dict]) -> str:
    lines = [
        "| model | plan | INT8 / FP16 / FP32 layers | est. cost vs all-FP16 | value | held-out | all-FP16 | evaluations | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.get("code") != 0:
            lines.append(f"| {row['model']} | {row['mode']} | failed: {row.get('error', '')} | | | | | | |")
            continue
        fp32 = f"{len(row['fp32'])}" + (f" ({', '.join(row['fp32'][:3])}{', ...' if len(row['fp32']) > 3 else ''})" if row["fp32"] else "")
        all_fp16 = "" if row["all_fp16"] is None else f"{float(row['all_fp16']):.4g}"  # "inf" is written as text
        lines.append(
            f"| {row['model']} | {row['mode']} | {row['int8']} / {len(row['fp16'])} / {fp32} | "
            f"{row['cost']['plan']:.3f} (all-INT8 {row['cost']['all_int8']:.3f}) | {row['value']:.4g} | "
            f"{row['heldout']:.4g} | {all_fp16} | {row['evaluations']} | {row['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ppocr_cls,magika,lac_bigru,silero_v6,oww_mel,oww_embedding,minilm_l3,yolov8n")
    parser.add_argument("--search", type=int, default=48, help="feeds the sweep reads (default 48)")
    parser.add_argument("--heldout", type=int, default=16, help="feeds it never reads (default 16)")
    parser.add_argument("--gpu", default=None, help="target GPU of the cost estimate (default: precision_lab.cost.DEFAULT_GPU)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/three_level"))
    args = parser.parse_args(argv)
    from precision_lab.cost import DEFAULT_GPU

    gpu = args.gpu or DEFAULT_GPU
    args.out.mkdir(parents=True, exist_ok=True)
    runs = args.out / "runs.jsonl"
    done = [json.loads(line) for line in runs.read_text().splitlines()] if runs.exists() else []
    finished = {(row["model"], row["mode"]) for row in done if row.get("code") == 0}

    def log(row: dict) -> None:
        with runs.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps({k: row[k] for k in row if k not in ("fp16", "fp32")}), flush=True)

    for key in args.models.split(","):
        todo = tuple(mode for mode in MODES if (key, mode) not in finished)
        if todo:
            done = [row for row in done if row["model"] != key or row["mode"] not in todo]
            done += run_model(key, args.search, args.heldout, args.out, gpu, log, todo)
    wanted = args.models.split(",")
    print(_table([row for row in done if row["model"] in wanted]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
