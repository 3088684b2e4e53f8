"""The command line: parses arguments and calls the library. ``main(argv) -> int``.

Exit codes: 0 success, 1 failure (e.g. an unattainable tolerance, or an internal error: one line, the traceback
in ``OUT/error.log``), 2 bad input or usage, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from precision_lab.errors import InputError, PrecisionLabError

__all__ = ["main", "entry_point"]

log = logging.getLogger("precision_lab")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so errors become one line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise InputError(f"{message} (see {self.prog} --help)")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", "-q", action="store_true", help="only errors and the final result")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logs and full tracebacks")


def _build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="precision-lab",
        description="Find the layers of an ONNX model that must stay FP32 so the rest can run INT8.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_ArgumentParser)

    sweep = sub.add_parser("sweep", help="rank layers by INT8 sensitivity and find the minimal FP32 plan")
    sweep.add_argument("model", help="FP32 ONNX model")
    sweep.add_argument("--out", "-o", help="output folder (default: reports/<model name>/)")
    data = sweep.add_argument_group("data")
    data.add_argument("--data", help="folder of .npz feeds (input name -> array), or .npy for one input")
    data.add_argument(
        "--data-loader-script",
        metavar="FILE.py[:FUNC]",
        help="Python script whose FUNC (default load_data) yields feed dicts; RUNS that code",
    )
    data.add_argument(
        "--labels", metavar="FILE",
        help="labels for --metric accuracy or a custom metric that takes them: JSON {file: label} or CSV file,label",
    )
    data.add_argument("--calib-samples", type=int, default=16, help="calibration samples (default 16)")
    data.add_argument("--eval-samples", type=int, default=32, help="evaluation samples: what the search judges (default 32)")
    data.add_argument(
        "--verify-samples", type=int, default=16,
        help="verification samples held back from the search; the final plan is judged on them (default 16; 0: off)",
    )
    data.add_argument("--seed", type=int, default=0, help="seed of the split and synthetic data (default 0)")
    data.add_argument(
        "--input-shape", action="append", default=[], metavar="NAME:1x3x224x224", help="fix dynamic input dims"
    )
    metric = sweep.add_argument_group("metric")
    metric.add_argument(
        "--metric",
        default="rel-l2",
        help="rel-l2 (default), max-abs, mean-abs, cosine, sqnr, top1, accuracy (needs labels), or "
        "module:function / file.py:function",
    )
    metric.add_argument("--metric-direction", choices=["lower", "higher"], help="which way is better (custom metric)")
    metric.add_argument(
        "--tolerance",
        type=float,
        help="pass threshold (defaults: rel-l2 0.05, cosine 0.999, sqnr 20, top1 0.99)",
    )
    metric.add_argument(
        "--max-drop", type=float, metavar="D",
        help="judge a higher-is-better metric by its drop from the FP32 model's own score (accuracy: default 0.01)",
    )
    metric.add_argument(
        "--criterion", default="p90", metavar="pNN|aggregate|worst-sample",
        help="what the tolerance applies to: a per-sample quantile (p90, the default: 90%% of the inputs meet it on "
        "their own), the metric over the whole set (aggregate), or every input (worst-sample)",
    )
    metric.add_argument(
        "--until-verified", action=argparse.BooleanOptionalAction, default=True,
        help="when the plan fails verification (the verification feeds, alone and with the calibration feeds), "
        "search again at a stricter tolerance until it holds (default on; --no-until-verified: report the failure "
        "only)",
    )
    metric.add_argument(
        "--output-slice",
        action="append",
        default=[],
        metavar="NAME:AXIS:START:STOP",
        help="judge this part of an output on its own (repeatable; worst part decides)",
    )
    metric.add_argument(
        "--judge-output", action="append", default=[], metavar="NAME",
        help="judge only this output (repeatable; default: every output), e.g. a detector's scores and not a "
        "recurrent model's state outputs",
    )
    quant = sweep.add_argument_group("quantization")
    quant.add_argument("--recipe", default="trt", help="candidate op set: trt (default), extended or modelopt (NVIDIA ModelOpt's INT8 rules)")
    quant.add_argument("--ops", help="comma-separated op types to use as candidates instead of the recipe's")
    quant.add_argument("--exclude", action="append", default=[], help="node name or pattern never quantized (repeatable)")
    quant.add_argument("--calibration", default="max", help="max (default), percentile or entropy")
    quant.add_argument("--percentile", type=float, default=99.999, help="for --calibration percentile (default 99.999)")
    quant.add_argument(
        "--precisions", default="int8,fp32",
        help="precision levels of the plan: int8,fp32 (default: layers not INT8 run FP32) or int8,fp16,fp32 (an "
        "INT8 + FP16 engine: every node not INT8 runs FP16, except the nodes the plan keeps FP32)",
    )
    quant.add_argument("--qdq-model", metavar="QUANTIZED.onnx", help=QDQ_MODEL_HELP)
    search = sweep.add_argument_group("search")
    search.add_argument("--sensitivity", default="isolate", help="isolate (default), leave-one-out or both")
    search.add_argument(
        "--search",
        default="full",
        help="full (default): sensitivity of every layer, then the plan; fast: one-pass signals order the "
        "layers and bisection rounds find the plan (far fewer evaluations, no full sensitivity table); adaptive: "
        "signals, one bisection and group pruning, the full mode's order when the signal's proves wrong; bisect, "
        "bisect-reverse: Polygraphy debug precision's prefix/suffix bisection (for comparison; not 1-minimal)",
    )
    from precision_lab.backends import BACKENDS, add_backend_arguments

    backend = sweep.add_argument_group("backend")
    backend.add_argument(
        "--backend",
        default="auto",
        choices=["auto", *BACKENDS],
        help="auto (default): TensorRT when a working builder and a GPU exist, else onnxrt. "
        + "; ".join(f"{name}: {entry.summary}" for name, entry in BACKENDS.items()),
    )
    add_backend_arguments(backend)
    from precision_lab.cost import DEFAULT_GPU, GPUS

    backend.add_argument(
        "--target-gpu", default=DEFAULT_GPU, metavar="NAME",
        help=f"GPU whose roofline estimates each plan's cost (default {DEFAULT_GPU}): {', '.join(GPUS)}",
    )
    search.add_argument("--no-resume", action="store_true", help="start over instead of resuming the journal in --out")
    search.add_argument(
        "--no-suffix", action="store_true",
        help="run the whole model for every plan (default: a binary plan runs only the part of the graph it "
        "changes, from cached FP32 activations; results agree to 1e-6)",
    )
    search.add_argument(
        "--batch", type=int, default=1, metavar="N",
        help="N feeds per inference when a probe shows the model computes them as one at a time to 1e-6 "
        "(default 1; not faster on small CPUs, see precision_lab/batching.py)",
    )
    search.add_argument(
        "--no-early-stop", action="store_true",
        help="run every feed of every evaluation (default: a pass/fail search evaluation stops once it certainly "
        "fails, and records a bound, shown as >=)",
    )
    search.add_argument(
        "--jobs", "-j", type=int, default=1,
        help="N workers: processes, or Ray actors with --executor ray (default 1; results are identical)",
    )
    search.add_argument(
        "--executor", choices=("local", "ray"), default="local",
        help="where evaluations run: local (default) or ray (pip install 'precision-lab[ray]')",
    )
    search.add_argument(
        "--ray-address", metavar="ADDR", default=None,
        help="Ray cluster for --executor ray: auto, HOST:6379 or ray://HOST:10001 (default: a local Ray instance)",
    )
    search.add_argument("--top", type=int, default=15, help="rows of the ranking to print (default 15)")
    _add_common(sweep)

    layers = sub.add_parser("layers", help="list candidate layers with op types and shapes")
    layers.add_argument("model")
    layers.add_argument("--recipe", default="trt", help="trt (default) or extended")
    layers.add_argument("--ops")
    layers.add_argument("--exclude", action="append", default=[])
    layers.add_argument("--input-shape", action="append", default=[], metavar="NAME:1x3x224x224")
    layers.add_argument("--qdq-model", metavar="QUANTIZED.onnx", help=QDQ_MODEL_HELP)
    _add_common(layers)

    from precision_lab import images

    images.add_parser(sub)

    report = sub.add_parser("report", help="re-render report.html from a sweep's output folder (no model needed)")
    report.add_argument("out_dir", help="the --out folder of a sweep")
    report.add_argument("--output", "-o", help="where to write the HTML (default OUT_DIR/report.html)")
    _add_common(report)

    apply = sub.add_parser("apply", help="write a model with a saved plan applied as Q/DQ")
    apply.add_argument("model")
    apply.add_argument("plan", help="plan.json written by sweep")
    apply.add_argument("--output", "-o", required=True, help="output .onnx path")
    apply.add_argument("--qdq-model", metavar="QUANTIZED.onnx", help="apply the plan to this Q/DQ model (the sweep's --qdq-model)")
    _add_common(apply)
    return parser


QDQ_MODEL_HELP = (
    "your own Q/DQ model of MODEL (ModelOpt, ONNX Runtime quantize_static, QAT export): its quantized nodes are the "
    "candidates and its scales are used, no calibration; MODEL stays the FP32 reference"
)


def _shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    from precision_lab.model import parse_input_shape

    return dict(parse_input_shape(item) for item in items)


def _ops(text: str | None) -> list[str] | None:
    return [op.strip() for op in text.split(",") if op.strip()] if text else None


def _fmt(value: float | None, tolerance: float | None = None) -> str:
    """A value with enough digits to tell it from ``tolerance`` and from 1 (cosine 0.99997 is not "1")."""
    from precision_lab.console import fmt_value

    if value is not None and not isinstance(value, bool) and isinstance(value, (int, float)):
        value = float(value)
    return fmt_value(value, tolerance)


def _ranked_rows(layers, top: int):
    """The ``top`` ranked rows, then (after ``None``, a gap) every FP32 layer of the plan ranked below them."""
    head = list(layers.head(top).itertuples())
    below = [row for row in layers.iloc[top:].itertuples() if row.fp32]
    return head + ([None] + below if below else [])


def _print_sweep(result, top: int) -> None:
    metric = result.metric
    layers = result.layers
    print(f"\nSensitivity ranking ({result.sensitivity}, {metric['name']}; top {min(top, len(layers))} of {len(layers)}):")
    width = max([len(n) for n in layers["name"][:top]] + [len(n) for n in result.plan.fp32_layers] + [5])
    # the score kinds the strategy measured (e.g. isolate and leave-one-out, or the fast search's signal)
    kinds = [k for k in result.score_kinds if any(k in layer.scores for layer in result.layer_results)]
    if not kinds and result.search == "full":
        kinds = ["isolate", "leave-one-out"]  # e.g. all-INT8 passed before any was measured: shown as "-"
    widths = [max(10, len(kind)) for kind in kinds]
    header = " ".join(f"{kind:>{w}}" for kind, w in zip(kinds, widths))
    print(f"  {'rank':>4}  {'layer':<{width}}  {'op':<14} {header}  plan")
    measured = {layer.name: layer for layer in result.layer_results}
    for row in _ranked_rows(layers, top):
        if row is None:
            print(f"  {'...':>4}  (FP32 layers of the plan ranked below the top {top}:)")
            continue
        layer = measured[row.name]  # None (not measured) prints "-", NaN (a failed evaluation) "failed"
        values = " ".join(
            f"{_fmt(layer.scores.get(kind), None if kind == 'signal' else metric['tolerance']):>{w}}"
            for kind, w in zip(kinds, widths)
        )
        print(f"  {row.rank:>4}  {row.name:<{width}}  {row.op_type:<14} {values}  {'FP32' if row.fp32 else (layer.precision.upper() if layer.precision != 'int8' else 'int8')}")
    plan = result.plan
    base = result.baselines
    print(
        f"\nMetric {metric['name']} ({metric['direction']} is better; {metric.get('criterion', 'aggregate')}), "
        f"tolerance {metric['tolerance']:g}: "
        f"all-INT8 {_fmt(base['all_int8'], metric['tolerance'])}, "
        + (f"all-FP16 {_fmt(base['all_fp16'], metric['tolerance'])}, " if "all_fp16" in base else "")
        + f"all-FP32 {_fmt(base['all_fp32'], metric['tolerance'])}"
    )
    fp16_layers = sorted(plan.plan.fp16_layers)
    if "fp16" in result.precision_levels and (fp16_layers or plan.fp32_layers):  # a three-level plan
        print(
            f"Plan: {len(fp16_layers)} FP16 and {len(plan.fp32_layers)} FP32 of {len(layers)} layers (other candidates "
            f"INT8, other nodes FP16) -> {metric['name']} = {_fmt(plan.value, metric['tolerance'])}"
        )
        for precision, names in (("FP16", fp16_layers), ("FP32", plan.fp32_layers)):
            for name in names:
                print(f"  {precision}  {name}")
    elif plan.fp32_layers:
        print(f"Plan: keep {len(plan.fp32_layers)} of {len(layers)} layers FP32 -> {metric['name']} = {_fmt(plan.value, metric['tolerance'])}")
        for name in plan.fp32_layers:
            print(f"  FP32  {name}")
    else:
        print(f"Plan: everything INT8 (all-INT8 passes) -> {metric['name']} = {_fmt(plan.value, metric['tolerance'])}")
    _print_verdict(result)
    _print_cost(result.cost)
    print(
        f"{len(result.all_records)} evaluations, {result.wall_seconds:.1f} s. "
        f"Outputs in {result.out_dir}/ (plan.json, plan.onnx, sensitivity.csv, report.html)"
    )


def _print_cost(cost: dict) -> None:
    """One line: the plan's cost against all-FP16 and all-INT8 (measured when the backend measures latency)."""
    if not cost:
        return
    if "error" in cost:
        print(f"  cost: no estimate ({cost['error']})")
        return
    plan, measured = cost["plan"], cost.get("measured", {})
    line = (f"  cost on {cost['gpu']} (roofline estimate): {plan['relative_to_all_fp16']:#.3g}x all-FP16, "
            f"{plan['relative_to_all_int8']:#.3g}x all-INT8 (lower bound {plan['seconds'] * 1e6:.3g} us)")
    if measured:
        line += f"; measured {measured['plan_ms']:.4g} ms" + (
            f" ({measured['relative_to_all_int8']:#.3g}x all-INT8)" if "relative_to_all_int8" in measured else "")
    print(line)


def _print_verdict(result) -> None:
    """The plan's value on the evaluation and verification sets, its confidence interval, the hardest inputs."""
    from precision_lab.verification import failure_reason

    metric, verification = result.metric, result.verification
    interval = result.confidence.get("plan")
    ci = f" (95% CI {_fmt(interval[0])} to {_fmt(interval[1])})" if interval else ""
    judged = f"{metric.get('criterion', 'aggregate')}"
    if metric.get("max_drop") is not None:
        judged += f", at most {metric['max_drop']:g} below the FP32 score"
    print(f"  evaluation ({result.data['eval_samples']} samples, {judged}): {_fmt(result.plan.value)}{ci}")
    if "value" in verification:
        verdict = "passes" if verification["passed"] else f"FAILS (tolerance {_fmt(verification['tolerance'])})"
        reason = failure_reason(result.metric_obj, verification, verification["tolerance"])
        if reason:
            verdict = f"FAILS {reason[0]} ({_fmt(reason[1])} vs tolerance {_fmt(verification['tolerance'])})"
        wide = verification.get("with_calibration")
        if wide and not reason:
            verdict += f"; with the calibration feeds ({wide['samples']} samples) {_fmt(wide['value'])}"
        rounds = len(verification.get("rounds", []))
        searched = f", searched at tolerance {_fmt(verification['search_tolerance'])}" if rounds > 1 else ""
        print(
            f"  verification ({verification['samples']} held-back samples): {_fmt(verification['value'])} "
            f"{verdict}{searched}"
        )
    else:
        print("  verification: none (too few feeds to hold any back)")
    worst = result.worst_inputs(3)
    if worst:
        print("  hardest inputs: " + ", ".join(f"{sample} ({_fmt(value)})" for sample, _, value in worst))


def _cmd_sweep(args) -> int:
    from precision_lab.backends import backend_options_from_args
    from precision_lab.sweep import sweep

    result = sweep(
        args.model,
        data=args.data,
        data_loader_script=args.data_loader_script,
        labels=args.labels,
        metric=args.metric,
        metric_direction=args.metric_direction,
        tolerance=args.tolerance,
        max_drop=args.max_drop,
        criterion=args.criterion,
        verify_samples=args.verify_samples,
        until_verified=args.until_verified,
        out_dir=args.out,
        recipe=args.recipe,
        ops=_ops(args.ops),
        exclude=args.exclude,
        calibration=args.calibration,
        percentile=args.percentile,
        calib_samples=args.calib_samples,
        eval_samples=args.eval_samples,
        seed=args.seed,
        input_shapes=_shapes(args.input_shape),
        output_slices=args.output_slice,
        judge_outputs=args.judge_output,
        sensitivity=args.sensitivity,
        search=args.search,
        backend=args.backend,
        backend_options=backend_options_from_args(args),
        resume=not args.no_resume,
        progress=not args.quiet,
        jobs=args.jobs,
        executor=args.executor,
        ray_address=args.ray_address,
        precisions=args.precisions,
        target_gpu=args.target_gpu,
        qdq_model=args.qdq_model,
        suffix=not args.no_suffix,
        early_stop=not args.no_early_stop,
        batch=args.batch,
    )
    _print_sweep(result, args.top)
    from precision_lab.report.channels import channel_warnings

    for warning in channel_warnings(result):
        log.warning(warning)
    if args.quiet:  # the log showed them otherwise: a doubt about the plan is part of the result
        for notice in result.notices:
            print(f"WARNING: {notice}", file=sys.stderr)
    return 0


def _cmd_layers(args) -> int:
    from precision_lab.model import list_candidates, prepare_model
    from precision_lab.qdq import resolve_op_types

    if args.qdq_model:
        from precision_lab.user_qdq import print_user_layers

        return print_user_layers(args.model, args.qdq_model)
    op_types = resolve_op_types(args.recipe, _ops(args.ops))
    prepared = prepare_model(args.model, input_shapes=_shapes(args.input_shape))
    candidates = list_candidates(prepared, op_types=op_types, exclude=args.exclude)
    if args.recipe == "modelopt":
        from precision_lab.modelopt_recipe import modelopt_candidates

        candidates = modelopt_candidates(prepared, candidates)

    def shape(s):
        return "?" if s is None else "x".join("?" if d is None else str(d) for d in s)

    width = max([len(c.name) for c in candidates] + [5])
    print(f"{'index':>5}  {'layer':<{width}}  {'op':<14} inputs -> outputs")
    for c in candidates:
        ins = ", ".join(shape(s) for s in c.input_shapes)
        outs = ", ".join(shape(s) for s in c.output_shapes)
        print(f"{c.index:>5}  {c.name:<{width}}  {c.op_type:<14} {ins} -> {outs}")
    print(f"{len(candidates)} candidate layers (recipe {args.recipe if not args.ops else 'custom --ops'})")
    return 0


def _cmd_report(args) -> int:
    from precision_lab.report import write_report
    from precision_lab.results import load

    path = write_report(load(args.out_dir), args.out_dir, args.output)
    print(f"wrote {path}")
    return 0


def _cmd_apply(args) -> int:
    from precision_lab.plan import apply_plan

    for warning in apply_plan(args.model, args.plan, args.output, qdq_model=args.qdq_model):
        log.warning(warning)
    print(f"wrote {args.output}")
    return 0


def _configure_logging(verbose: bool, quiet: bool) -> None:
    logger = logging.getLogger("precision_lab")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if not verbose else "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO)
    logger.propagate = False
    try:
        from polygraphy.logger import G_LOGGER

        G_LOGGER.module_severity = G_LOGGER.VERBOSE if verbose else G_LOGGER.ERROR
        from precision_lab.console import set_polygraphy_verbose

        set_polygraphy_verbose(verbose)
    except ImportError:
        pass
    try:  # onnx-graphsurgeon logs on its own logger ("[W] colored module is not installed", folding notes)
        from onnx_graphsurgeon.logger import G_LOGGER as GS_LOGGER

        GS_LOGGER.severity = GS_LOGGER.VERBOSE if verbose else GS_LOGGER.ERROR
    except ImportError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    from precision_lab.console import terminate_as_interrupt

    with terminate_as_interrupt():  # SIGTERM unwinds like Ctrl-C: the lock and the workers are released
        return _main(argv)


def _out_dir(args) -> str | None:
    """The output folder of the command, where ``error.log`` goes (``None``: a temporary file)."""
    if getattr(args, "command", None) == "sweep":
        from precision_lab.sweep import default_out_dir

        return args.out or str(default_out_dir(args.model))
    return getattr(args, "out_dir", None)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv or "-v" in argv
    args = None
    try:
        parser = _build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        _configure_logging(args.verbose, args.quiet)
        from precision_lab import images

        commands = {
            "sweep": _cmd_sweep,
            "layers": _cmd_layers,
            "report": _cmd_report,
            "apply": _cmd_apply,
            "data": images.run,
        }
        return commands[args.command](args)
    except PrecisionLabError as exc:
        if verbose:
            raise
        message = " ".join(str(exc).split())  # always one line
        print(f"precision-lab: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        from precision_lab.console import Terminated

        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"precision-lab: {what}; re-run the same command to resume where it stopped", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # a bug: one line naming the phase, the traceback in OUT/error.log
        import traceback

        from precision_lab.console import report_internal_error

        if verbose:
            traceback.print_exception(exc, file=sys.stderr)
        line = report_internal_error(exc, _out_dir(args), getattr(args, "command", None) or "")
        print(f"precision-lab: error: {line}", file=sys.stderr)
        return 1


def entry_point() -> None:
    """Console-script entry: ``sys.exit(main())``; a closed stdout (``| head``) ends quietly."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
