"""Peer benchmark: NNCF ``quantize_with_accuracy_control`` (ONNX backend) on precision-lab's models and data.

Runs in its own virtual environment (NNCF is not a dependency of precision-lab)::

    python3 -m venv /opt/nncf-venv && /opt/nncf-venv/bin/pip install nncf onnx onnxruntime
    /opt/nncf-venv/bin/python benchmarks/peer_nncf.py --model FP32.onnx --search-data DIR --heldout DIR \
        --metric rel-l2 --tolerance 0.05 --out OUT [--input-shape x:1x3x160x320] [--output-slice output0:1:4:22]

What it does (benchmarks/PEERS.md explains the choices):

* **Data.** ``--search-data`` is split exactly as precision-lab splits ``--data`` (files sorted by name,
  ``numpy.random.default_rng(seed).permutation``, 16 calibration / 32 evaluation / 16 verification by default,
  shrunk in proportion when there are fewer feeds). NNCF's calibration dataset = precision-lab's calibration
  feeds; NNCF's validation dataset = all the other search feeds (precision-lab's evaluation + verification
  feeds: NNCF has no separate verification step). ``--heldout`` is never shown to NNCF.
* **Metric.** rel-l2 against the FP32 model in ONNX Runtime (graph optimizations off), over the whole
  validation set, worst judged part (outputs, ``--output-slice`` parts, ``--judge-output``, by precision-lab's
  rule) -- precision-lab's rel-l2 with ``--criterion aggregate``. NNCF
  wants higher-is-better, so the validation function returns ``1 - rel-l2`` (and ``1 - rel-l2`` of each item);
  NNCF's FP32 value is then exactly 1, so ``max_drop = tolerance`` with ``drop_type = ABSOLUTE`` means
  ``rel-l2 <= tolerance``.
* **Counting.** Every call of the validation function is one evaluation (one ONNX Runtime session + inference
  on the items NNCF passes); the JSON breaks them down by phase.
* **Outputs.** ``OUT/initial_int8.onnx`` (NNCF's all-INT8 model), ``OUT/nncf_final.onnx``, ``OUT/result.json``.
  The high-precision set = compute nodes with a DequantizeLinear input in the initial INT8 model and none in
  the final one. Held-out rel-l2 of the final model. 1-minimality at NNCF's granularity (quantizer groups):
  for each reverted group, the other groups are reverted in the initial INT8 model and that model is validated
  on the validation set; the plan is 1-minimal when every such model fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NNCF_CI", "1")  # disables NNCF's telemetry sender only (nncf/telemetry/wrapper.py)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

DEFAULT_SPLIT = (16, 32, 16)  # precision_lab.data DEFAULT_CALIB/EVAL/VERIFY_SAMPLES
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


# ------------------------------------------------------------------------------------------------------------
# data: precision-lab's folder reading and split, re-implemented (NNCF's venv has no precision_lab)


def load_folder(folder: Path) -> tuple[list[dict], list[str]]:
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise SystemExit(f"no .npz feeds in {folder}")
    feeds = []
    for path in files:
        with np.load(path) as archive:
            feeds.append({name: np.ascontiguousarray(archive[name]) for name in archive.files})
    return feeds, [p.name for p in files]


def _proportional(total: int, wanted: tuple[int, int, int]) -> tuple[int, int, int]:
    """precision_lab.data._proportional."""
    calib_w, eval_w, verify_w = wanted
    verify = 0 if verify_w == 0 or total < 3 else max(1, round(total * verify_w / sum(wanted)))
    calib = max(1, round(total * calib_w / sum(wanted)))
    calib = min(calib, total - verify - 1)
    return calib, total - calib - verify, verify


def split(n: int, wanted: tuple[int, int, int], seed: int) -> tuple[list[int], list[int], tuple[int, int, int]]:
    """precision_lab.data.split_feeds: calibration indices, and the rest (evaluation + verification)."""
    order = np.random.default_rng(seed).permutation(n)
    counts = wanted if n >= sum(wanted) else _proportional(n, wanted)
    calib = [int(i) for i in order[: counts[0]]]
    rest = [int(i) for i in order[counts[0] : sum(counts)]]
    return calib, rest, counts


# ------------------------------------------------------------------------------------------------------------
# model preparation: the same fixed shapes and node names precision-lab uses


def name_nodes(model: onnx.ModelProto) -> int:
    """precision_lab.model._name_nodes: unnamed / duplicate nodes get ``<OpType>_<position>``."""
    seen = {node.name for node in model.graph.node if node.name}
    used: set[str] = set()
    renamed = 0
    for position, node in enumerate(model.graph.node):
        if node.name and node.name not in used:
            used.add(node.name)
            continue
        base = new = f"{node.op_type}_{position}"
        suffix = 1
        while new in used or new in seen:
            new = f"{base}_{suffix}"
            suffix += 1
        node.name = new
        used.add(new)
        renamed += 1
    return renamed


def fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> None:
    known = [vi.name for vi in model.graph.input]
    for name in shapes:
        if name not in known:
            raise SystemExit(f"--input-shape names '{name}', but the inputs are {known}")
    for vi in model.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) != len(shapes[vi.name]):
                raise SystemExit(f"--input-shape {vi.name}: rank {len(shapes[vi.name])}, model rank {len(dims)}")
            for dim, value in zip(dims, shapes[vi.name]):
                dim.ClearField("dim_param")
                dim.dim_value = int(value)


def session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as precision-lab
    options.log_severity_level = 3
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, feed: dict) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feed)))


# ------------------------------------------------------------------------------------------------------------
# metric: rel-l2, worst judged part, aggregated over the items (precision-lab's "aggregate" criterion)


class RelL2:
    """precision-lab's judged parts: an output with ``--output-slice`` parts is judged by those parts, any other
    output whole; with ``--judge-output``, only those outputs and the sliced ones (``settings.judged_outputs``)."""

    def __init__(self, slices: list[tuple[str, int, int, int]], judged: list[str] | None = None):
        self.slices = slices
        self.judged = set(judged) | {s[0] for s in slices} if judged else None

    def parts(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = {}
        for name, array in outputs.items():
            if self.judged is not None and name not in self.judged:
                continue
            own = [s for s in self.slices if s[0] == name]
            if not own:
                parts[name] = np.asarray(array, dtype=np.float64).ravel()
            for _, axis, start, stop in own:
                index = [slice(None)] * array.ndim
                index[axis] = slice(start, stop)
                parts[f"{name}[{axis}:{start}:{stop}]"] = np.asarray(array[tuple(index)], np.float64).ravel()
        return parts

    def stats(self, outputs: dict, reference: dict) -> dict[str, tuple[float, float]]:
        """Per part: (sum of squared error, sum of squared reference)."""
        got, ref = self.parts(outputs), self.parts(reference)
        return {k: (float(np.sum((got[k] - ref[k]) ** 2)), float(np.sum(ref[k] ** 2))) for k in ref}

    @staticmethod
    def value(stats: list[dict[str, tuple[float, float]]]) -> float:
        worst = 0.0
        for part in stats[0]:
            err = sum(s[part][0] for s in stats)
            norm = sum(s[part][1] for s in stats)
            value = float(np.sqrt(err) / np.sqrt(norm)) if norm > 0 else (0.0 if err == 0 else float("inf"))
            if not np.isfinite(value):
                return float("inf")
            worst = max(worst, value)
        return worst


# ------------------------------------------------------------------------------------------------------------
# Q/DQ placement


def quantized_inputs(model: onnx.ModelProto) -> dict[str, dict]:
    """Compute nodes that read a DequantizeLinear output: name -> {op, inputs: [input indices fed by DQ]}."""
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    result = {}
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        fed = [i for i, name in enumerate(node.input) if name in dq_outputs]
        if fed:
            result[node.name] = {"op": node.op_type, "inputs": fed}
    return result


# ------------------------------------------------------------------------------------------------------------


def check_minimality(fp32: onnx.ModelProto, initial: onnx.ModelProto, removed: list[list[str]], value_of,
                     tolerance: float) -> dict:
    """Put each reverted NNCF group back to INT8, one at a time: revert all the other groups in NNCF's initial
    INT8 model with NNCF's own ``revert_operations_to_floating_point_precision`` (biases and weights restored as
    in the accuracy-control loop) and validate. ``removed``: the quantizer names of each reverted group."""
    import nncf
    from nncf.common.factory import build_graph
    from nncf.common.quantization.quantizer_removal import revert_operations_to_floating_point_precision
    from nncf.quantization.advanced_parameters import RestoreMode
    from nncf.quantization.algorithms.accuracy_control.algorithm import QuantizationAccuracyRestorer
    from nncf.quantization.algorithms.accuracy_control.onnx_backend import ONNXAccuracyControlAlgoBackend
    from nncf.quantization.algorithms.accuracy_control.ranker import Ranker

    backend = ONNXAccuracyControlAlgoBackend()
    qgraph = build_graph(initial)
    QuantizationAccuracyRestorer._collect_original_biases_and_weights(build_graph(fp32), qgraph, fp32, backend)
    groups = Ranker(1, nncf.Dataset([]), backend, None).find_groups_of_quantizers_to_rank(qgraph)
    by_key = {tuple(sorted(q.node_name for q in g.quantizers)): g for g in groups}
    chosen = [by_key[tuple(k)] for k in removed]

    def revert(group_list):
        ops = [o for g in group_list for o in g.operations]
        qs = [q for g in group_list for q in g.quantizers]
        return revert_operations_to_floating_point_precision(
            ops, qs, initial, qgraph, RestoreMode.ACTIVATIONS_AND_WEIGHTS, backend.get_op_with_weights_metatypes(),
            backend.is_node_with_weight, backend.get_weight_tensor_port_ids)

    t0 = time.perf_counter()
    rebuilt = value_of(revert(chosen))
    results = []
    for i, g in enumerate(chosen):
        v = value_of(revert([x for j, x in enumerate(chosen) if j != i]))
        results.append({"group": i, "operations": sorted(o.node_name for o in g.operations),
                        "quantizers": len(g.quantizers), "value": v, "passes_without_it": v <= tolerance})
    return {"checked": True, "granularity": "NNCF quantizer groups (the unit NNCF reverts)",
            "rebuilt_all_groups_value": rebuilt, "evaluations": len(results) + 1,
            "seconds": time.perf_counter() - t0, "groups": results,
            "one_minimal": not any(r["passes_without_it"] for r in results)}


def recheck(out: Path, args) -> int:
    """--recheck-minimality: the minimality check alone, from a finished run's folder."""
    result = json.loads((out / "result.json").read_text())
    fp32 = onnx.load(str(out / "fp32_prepared.onnx"))
    initial = onnx.load(str(out / "initial_int8.onnx"))
    slices = [parse_slice(s) for s in args.output_slice]
    metric = RelL2(slices, args.judge_output)
    feeds, _ = load_folder(args.search_data)
    _, val_idx, _ = split(len(feeds), (args.calib_samples, args.eval_samples, args.verify_samples), args.seed)
    validation = [feeds[i] for i in val_idx]
    ref_sess = session(fp32)
    reference = [run(ref_sess, f) for f in validation]

    def value_of(m):
        sess = session(m)
        return metric.value([metric.stats(run(sess, f), r) for f, r in zip(validation, reference)])

    removed = [g["quantizers"] for g in result["nncf_reverted_groups"]]
    check = check_minimality(fp32, initial, removed, value_of, args.tolerance)
    result["minimality"], result["one_minimal"] = check, check["one_minimal"]
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in check.items() if k != "groups"}, indent=1))
    return 0


class BudgetExceeded(Exception):
    """Raised from the validation function once --budget-seconds have passed (stops NNCF's loop)."""


def budget_report(args, calls: list[dict], seconds: float, version: str) -> int:
    """NNCF stopped by --budget-seconds: evaluations so far and the best value any validated model reached."""
    full = [c for c in calls if c["phase"] not in ("mode probe",)]
    loop = [c for c in calls if c["phase"] == "revert loop"]
    result = {
        "peer": "nncf.quantize_with_accuracy_control (ONNX backend)", "status": "stopped by --budget-seconds",
        "nncf": version, "model": str(args.model), "budget_seconds": args.budget_seconds,
        "evaluations": len(calls), "evaluations_without_mode_probe": len(full), "seconds": seconds,
        "revert_loop_iterations": len(loop),
        "all_int8_value": next((c["rel_l2"] for c in calls if c["phase"] == "all-INT8 model"), None),
        "best_revert_loop_value": min((c["rel_l2"] for c in loop), default=None),
        "last_revert_loop_value": loop[-1]["rel_l2"] if loop else None,
        "high_precision_nodes": None, "search_value": None, "heldout_value": None, "held_out_passed": None,
        "one_minimal": None, "tolerance": args.tolerance,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 2


def parse_shape(text: str) -> tuple[str, list[int]]:
    name, _, dims = text.rpartition(":")
    return name, [int(d) for d in dims.lower().split("x")]


def parse_slice(text: str) -> tuple[str, int, int, int]:
    name, axis, start, stop = text.rsplit(":", 3)
    return name, int(axis), int(start), int(stop)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--search-data", type=Path, required=True, help="folder of .npz feeds (what precision-lab reads)")
    p.add_argument("--heldout", type=Path, required=True, help="folder of .npz feeds never shown to NNCF")
    p.add_argument("--metric", default="rel-l2", choices=["rel-l2"])
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:1x3x..")
    p.add_argument("--output-slice", action="append", default=[], metavar="OUT:AXIS:START:STOP",
                   help="judge this output by these slices (as precision-lab's --output-slice)")
    p.add_argument("--judge-output", action="append", default=[], metavar="NAME",
                   help="judge only this output (and the sliced ones), as precision-lab's --judge-output")
    p.add_argument("--calib-samples", type=int, default=DEFAULT_SPLIT[0])
    p.add_argument("--eval-samples", type=int, default=DEFAULT_SPLIT[1])
    p.add_argument("--verify-samples", type=int, default=DEFAULT_SPLIT[2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subset-size", type=int, default=300,
                   help="NNCF's calibration subset_size (default 300, NNCF's default: all calibration feeds here)")
    p.add_argument("--ranking-subset-size", type=int, default=None,
                   help="NNCF's ranking subset (default None: NNCF uses subset_size, i.e. every validation item here)")
    p.add_argument("--max-num-iterations", type=int, default=None, help="NNCF default: unlimited")
    p.add_argument("--tune-hyperparams", action="store_true", help="NNCF default: off")
    p.add_argument("--budget-seconds", type=float, default=0.0,
                   help="stop NNCF (from inside the validation function) after this many seconds; 0: no limit")
    p.add_argument("--no-minimality", action="store_true", help="skip the 1-minimality check")
    p.add_argument("--verbose", action="store_true", help="show NNCF's log")
    p.add_argument("--recheck-minimality", action="store_true",
                   help="only run the 1-minimality check on the finished run in --out")
    args = p.parse_args(argv)
    if args.recheck_minimality:
        return recheck(args.out, args)

    import nncf
    from nncf.common.logging import nncf_logger
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters
    from nncf.quantization.algorithms.accuracy_control import algorithm as ac_algorithm
    from nncf.quantization.algorithms.accuracy_control import ranker as ac_ranker

    nncf_logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    ort.set_default_logger_severity(3)
    args.out.mkdir(parents=True, exist_ok=True)
    shapes = dict(parse_shape(s) for s in args.input_shape)
    slices = [parse_slice(s) for s in args.output_slice]
    metric = RelL2(slices, args.judge_output)
    t_start = time.perf_counter()

    # ---- model and data (what precision-lab does before its sweep)
    model = onnx.load(str(args.model))
    renamed = name_nodes(model)
    fix_input_shapes(model, shapes)
    fp32_path = args.out / "fp32_prepared.onnx"
    onnx.save(model, str(fp32_path))
    feeds, files = load_folder(args.search_data)
    calib_idx, val_idx, counts = split(len(feeds), (args.calib_samples, args.eval_samples, args.verify_samples),
                                       args.seed)
    calib = [feeds[i] for i in calib_idx]
    validation = [feeds[i] for i in val_idx]
    heldout, heldout_files = load_folder(args.heldout)

    t_ref = time.perf_counter()
    ref_sess = session(model)
    reference = [run(ref_sess, f) for f in validation]
    reference_seconds = time.perf_counter() - t_ref

    # ---- the validation function NNCF calls; every call is one evaluation
    calls: list[dict] = []
    phase = {"name": "setup"}

    progress = (args.out / "calls.jsonl").open("w")

    def validation_fn(candidate: onnx.ModelProto, items) -> tuple[float, list[float]]:
        if args.budget_seconds and time.perf_counter() - t_start > args.budget_seconds:
            raise BudgetExceeded
        t0 = time.perf_counter()
        sess = session(candidate)
        t1 = time.perf_counter()
        stats, indices = [], []
        for index, feed in items:  # raw items of the validation dataset: (position in `validation`, feed)
            stats.append(metric.stats(run(sess, feed), reference[index]))
            indices.append(index)
        t2 = time.perf_counter()
        value = metric.value(stats)
        per_item = [1.0 - metric.value([s]) for s in stats]
        calls.append({"phase": phase["name"], "items": len(indices), "rel_l2": value,
                      "seconds": {"session": t1 - t0, "infer_compare": t2 - t1, "total": time.perf_counter() - t0},
                      "elapsed": time.perf_counter() - t_start})
        progress.write(json.dumps(calls[-1]) + "\n")
        progress.flush()
        return 1.0 - value, per_item

    # phase labels: wrap NNCF's ranking and loop entry points (behaviour unchanged)
    original_rank = ac_ranker.Ranker.rank_groups_of_quantizers
    original_collect = ac_algorithm.QuantizationAccuracyRestorer._collect_original_biases_and_weights
    original_report = ac_algorithm.QuantizationAccuracyRestorer._print_report
    captured: dict = {}
    first_ranking = {"done": False}

    def rank(self, *a, **k):
        phase["name"] = "ranking" if not first_ranking["done"] else "re-ranking"
        try:
            return original_rank(self, *a, **k)
        finally:
            first_ranking["done"] = True
            phase["name"] = "revert loop"

    def collect(initial_graph, quantized_graph, initial_model, backend):
        captured["quantized_graph"] = quantized_graph  # nodes carry original_bias / original_weight.*
        return original_collect(initial_graph, quantized_graph, initial_model, backend)

    def report(rep, max_num_iterations):
        captured["report"] = rep
        return original_report(rep, max_num_iterations)

    from nncf.quantization.algorithms.accuracy_control import evaluator as ac_evaluator

    original_mode = ac_evaluator.Evaluator.determine_mode
    original_collect_results = ac_evaluator.Evaluator.collect_metric_results

    def determine_mode(*a, **k):
        saved, phase["name"] = phase["name"], "mode probe"
        try:
            return original_mode(*a, **k)
        finally:
            phase["name"] = saved

    def collect_results(self, model_, dataset, model_name=""):
        phase["name"] = {"initial": "FP32 model", "quantized": "all-INT8 model"}.get(model_name, model_name)
        return original_collect_results(self, model_, dataset, model_name)

    ac_evaluator.Evaluator.determine_mode = staticmethod(determine_mode)
    ac_evaluator.Evaluator.collect_metric_results = collect_results
    ac_ranker.Ranker.rank_groups_of_quantizers = rank
    ac_algorithm.QuantizationAccuracyRestorer._collect_original_biases_and_weights = staticmethod(collect)
    ac_algorithm.QuantizationAccuracyRestorer._print_report = staticmethod(report)

    # determine_mode (1 item, FP32 model), then FP32 "initial" validation, then the INT8 model
    calibration_dataset = nncf.Dataset(calib)
    validation_dataset = nncf.Dataset(list(enumerate(validation)), lambda item: item[1])
    restorer = dict(intermediate_model_dir=str(args.out), tune_hyperparams=args.tune_hyperparams)
    if args.ranking_subset_size is not None:
        restorer["ranking_subset_size"] = args.ranking_subset_size
    if args.max_num_iterations is not None:
        restorer["max_num_iterations"] = args.max_num_iterations

    t_nncf = time.perf_counter()
    try:
        final = nncf.quantize_with_accuracy_control(
            model, calibration_dataset, validation_dataset, validation_fn,
            max_drop=args.tolerance, drop_type=nncf.DropType.ABSOLUTE,
            subset_size=args.subset_size,  # NNCF default 300: every calibration feed, and (as ranking_subset_size
            # defaults to it) every validation item for ranking
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(**restorer),
        )
    except BudgetExceeded:
        return budget_report(args, calls, time.perf_counter() - t_start, nncf.__version__)
    nncf_seconds = time.perf_counter() - t_nncf
    search_seconds = time.perf_counter() - t_start
    phase["name"] = "post-hoc (not counted)"
    counted = list(calls)

    initial_path = args.out / "initial_int8.onnx"
    os.replace(args.out / "intermediate_model.onnx", initial_path)
    final_path = args.out / "nncf_final.onnx"
    onnx.save(final, str(final_path))
    initial = onnx.load(str(initial_path))

    # ---- high-precision set: Q/DQ placement, initial INT8 vs final
    q_initial, q_final = quantized_inputs(initial), quantized_inputs(final)
    high = sorted(n for n in q_initial if n not in q_final)
    partial = sorted(n for n in q_initial if n in q_final and q_final[n]["inputs"] != q_initial[n]["inputs"])
    rep = captured.get("report")
    groups = [{"quantizers": sorted(q.node_name for q in g.quantizers), "operations": sorted(o.node_name for o in g.operations)}
              for g in (rep.removed_groups if rep else [])]

    # ---- values of the final and the all-INT8 model (post-hoc, not counted as NNCF evaluations)
    def value_on(candidate_path_or_model, data, ref) -> float:
        sess = session(candidate_path_or_model if isinstance(candidate_path_or_model, onnx.ModelProto)
                       else str(candidate_path_or_model))
        return metric.value([metric.stats(run(sess, f), r) for f, r in zip(data, ref)])

    search_value = value_on(final, validation, reference)
    all_int8_value = value_on(initial, validation, reference)
    heldout_reference = [run(ref_sess, f) for f in heldout]
    heldout_value = value_on(final, heldout, heldout_reference)
    heldout_all_int8 = value_on(initial, heldout, heldout_reference)

    # ---- 1-minimality over NNCF's reverted groups (each group put back to INT8, one at a time)
    removed = [sorted(q.node_name for q in g.quantizers) for g in (rep.removed_groups if rep else [])]
    if rep is None:
        minimality = {"checked": False, "reason": "NNCF reverted nothing (the all-INT8 model passed)"}
        one_minimal = True if all_int8_value <= args.tolerance else None
    elif args.no_minimality:
        minimality, one_minimal = {"checked": False, "reason": "--no-minimality"}, None
    elif search_value > args.tolerance:
        minimality = {"checked": False, "reason": "the final model fails the tolerance: no valid plan"}
        one_minimal = False
    else:
        minimality = check_minimality(model, initial, removed, lambda m: value_on(m, validation, reference),
                                      args.tolerance)
        one_minimal = minimality["one_minimal"]

    phases: dict[str, int] = {}
    for c in counted:
        key = f"{c['phase']} ({'1 item' if c['items'] == 1 else str(c['items']) + ' items'})"
        phases[key] = phases.get(key, 0) + 1
    eval_seconds = sum(c["seconds"]["total"] for c in counted)
    result = {
        "peer": "nncf.quantize_with_accuracy_control (ONNX backend)",
        "versions": {"nncf": nncf.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                     "numpy": np.__version__, "python": sys.version.split()[0]},
        "model": str(args.model),
        "settings": {"metric": "rel-l2 (worst judged part, aggregate over items); "
                               "validation_fn returns 1 - rel-l2", "max_drop": args.tolerance,
                     "drop_type": "ABSOLUTE", "preset": "NNCF default (performance: symmetric)",
                     "target_device": "ANY", "fast_bias_correction": True, "subset_size": args.subset_size,
                     "ranking_subset_size": args.ranking_subset_size or "NNCF default (= subset_size)",
                     "tune_hyperparams": args.tune_hyperparams, "input_shapes": shapes,
                     "output_slices": args.output_slice, "judged_outputs": args.judge_output,
                     "renamed_unnamed_nodes": renamed},
        "data": {"search_feeds": len(feeds), "split_calib_eval_verify": list(counts),
                 "calibration": len(calib), "validation": len(validation), "heldout": len(heldout)},
        "evaluations": len(counted),
        "evaluations_without_mode_probe": sum(1 for c in counted if c["phase"] != "mode probe"),
        "evaluations_by_phase": phases,
        "seconds": search_seconds,
        "seconds_split": {"nncf_call": nncf_seconds, "reference": reference_seconds,
                          "in_validation_fn": eval_seconds, "nncf_outside_validation_fn": nncf_seconds - eval_seconds},
        "quantized_nodes_initial": len(q_initial),
        "quantized_nodes_final": len(q_final),
        "high_precision_nodes": high,
        "high_precision_count": len(high),
        "partially_reverted_nodes": partial,
        "nncf_reverted_groups": groups,
        "nncf_removed_all_groups": None if rep is None else bool(rep.removed_all),
        "nncf_reached_required_drop": None if rep is None else bool(rep.reached_required_drop),
        "all_int8_value": all_int8_value,
        "search_value": search_value,
        "search_passed": search_value <= args.tolerance,
        "heldout_all_int8_value": heldout_all_int8,
        "heldout_value": heldout_value,
        "held_out_passed": heldout_value <= args.tolerance,
        "one_minimal": one_minimal,
        "minimality": minimality,
        "tolerance": args.tolerance,
        "outputs": {"initial_int8": str(initial_path), "final": str(final_path)},
        "calls": counted,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    summary = {k: result[k] for k in ("evaluations", "evaluations_without_mode_probe",
                                      "evaluations_by_phase", "seconds", "high_precision_count",
                                      "high_precision_nodes", "all_int8_value", "search_value", "heldout_value",
                                      "held_out_passed", "one_minimal")}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
