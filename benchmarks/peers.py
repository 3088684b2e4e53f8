"""Peers side by side (issue 15, item 3): precision-lab's default search, the Polygraphy-style prefix bisection,
a hand-rolled ``quantize_static`` loop and NNCF accuracy control, on the same feeds, metric, tolerance and
criterion, from one command::

    python benchmarks/peers.py --models two_planted_cnn,ppocr_det,yolov8n --out /tmp/peers [--results]

For each model the search and held-out feeds are made once (sample models: 48 seeded random search feeds and 16
held-out ones, their ``expected_plans.json`` recipe and tolerance; tier models, ``tests/real_tier.py``: their
realistic feeds and options, recipe ``trt``, tolerance 0.05). Then, one after another, each in its own process:

1. ``default``: ``precision-lab sweep`` with no ``--search`` (the CLI's defaults, ``--until-verified`` on), and
   ``full``: ``--search full``, only when the default is another strategy;
2. ``bisect``: ``--search bisect`` (Polygraphy ``debug precision --mode bisect`` as a precision-lab strategy);
3. ``loop``: the default's journal replayed in order, every plan made by ``quantize_static(nodes_to_exclude=plan)``
   (``run.py``'s hand-rolled settings), an ``InferenceSession`` and the metric on the feeds that plan was judged on;
4. ``nncf``: ``peer_nncf.py`` (NNCF ``quantize_with_accuracy_control``, ONNX backend) from its own venv.

Every precision-lab run gets ``--criterion aggregate``: NNCF's validation function returns one number for the
whole validation set, rel-l2 over all of it (benchmarks/PEERS.md says why this and not p90). The verdict compares
the wall time to the plan (imports and writing outputs excluded, the same for every peer). Afterwards, in another
process and not counted: the held-out value of each final model and its 1-minimality.

Results: one JSON line per (model, peer) in ``OUT/peers.jsonl`` (a rerun skips rows already there), a markdown
table on stdout, and with ``--results`` the section "## Peers side by side (issue 15)" of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))
from run import LoadSampler  # noqa: E402  (benchmarks/run.py)
from search_counts import SAMPLES, Target, sample_target, tier_target  # noqa: E402

PEERS = ("default", "full", "bisect", "loop", "nncf")
COMPETITORS = ("bisect", "loop", "nncf")  # the peers precision-lab's default must beat (full is precision-lab)
CRITERION = "aggregate"
SECTION = "## Peers side by side (issue 15)"


@dataclass(frozen=True)
class Setting:
    """How every peer judges a model: metric, criterion, tolerance, judged parts, fixed input shapes."""

    metric: str
    criterion: str
    tolerance: float
    slices: tuple[str, ...]
    judged: tuple[str, ...]
    shapes: tuple[str, ...]

    @classmethod
    def of(cls, target: Target) -> Setting:
        def values(name: str) -> tuple[str, ...]:
            return tuple(a for i, a in enumerate(target.args) if i and target.args[i - 1] == name)

        return cls("rel-l2", CRITERION, target.tolerance, values("--output-slice"), values("--judge-output"),
                   values("--input-shape"))

    def passes(self, value: float | None) -> bool:
        return value is not None and value <= self.tolerance  # rel-l2: lower is better


@dataclass(frozen=True)
class Context:
    """What every run of one invocation shares."""

    out: Path
    budget: float
    nncf_python: Path
    quantize_outputs: bool
    command: str


# ------------------------------------------------------------------------------------------------------------
# processes


@dataclass(frozen=True)
class Process:
    """A finished child process: exit code, wall time, its own peak RSS and the load average while it ran."""

    code: int
    seconds: float
    peak_rss_mb: float
    load: dict
    stderr: str


def spawn(command: list[str], log: Path, *, project_env: bool = True) -> Process:
    """Run ``command`` to the end (stdout and stderr into ``log``.out / .err); its peak RSS from ``wait4``.
    ``project_env``: put this tree first on PYTHONPATH (precision-lab's venv); off for NNCF's venv."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if project_env:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    log.parent.mkdir(parents=True, exist_ok=True)
    err_path = log.with_suffix(".err")
    with open(log.with_suffix(".out"), "w") as out, open(err_path, "w") as err, LoadSampler() as load:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
    summary = dict(load.summary(), values=[round(v, 2) for v in load.samples])
    return Process(code, seconds, usage.ru_maxrss / 1024.0, summary, err_path.read_text()[-2000:])


def worker(kind: str, request: dict, ctx: Context, label: str) -> tuple[Process, dict]:
    """Run ``peers.py --worker kind`` in a fresh process of this venv; its JSON answer (empty on failure)."""
    folder = ctx.out / "requests"
    folder.mkdir(parents=True, exist_ok=True)
    ask, answer = folder / f"{label}.json", folder / f"{label}.answer.json"
    ask.write_text(json.dumps(request))
    answer.unlink(missing_ok=True)
    proc = spawn([sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(ask), str(answer)],
                 ctx.out / "logs" / label)
    return proc, json.loads(answer.read_text()) if proc.code == 0 and answer.exists() else {}


def failure(proc: Process) -> str:
    """The last line of a failed process's stderr."""
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return f"exit {proc.code}: {lines[-1][:300] if lines else '?'}"


# ------------------------------------------------------------------------------------------------------------
# workers (run in their own process; imports inside so that the orchestrator stays light)


def _session(model: str | Path, optimized: bool):
    """An ONNX Runtime CPU session: graph optimizations off (precision-lab, NNCF, tests/real_tier.py) or the
    defaults (what a user's hand-rolled loop writes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def _run(session, feed: dict) -> dict:
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def _load(files: list[Path]) -> list[dict]:
    import numpy as np

    feeds = []
    for path in files:
        with np.load(path) as archive:
            feeds.append({name: archive[name] for name in archive.files})
    return feeds


class Judge:
    """A reference model's outputs on fixed feeds, computed once, and the value of candidates against them with
    precision-lab's comparison and criterion (``tests/real_tier.py::judged_value``, as ``heldout_value``)."""

    def __init__(self, reference: str | Path, files: list[Path], setting: dict, *, optimized: bool = False):
        self.setting = Setting(**{k: tuple(v) if isinstance(v, list) else v for k, v in setting.items()})
        self.optimized = optimized
        self.feeds = _load(files)
        session = _session(reference, optimized)
        self.reference = [_run(session, feed) for feed in self.feeds]

    def value(self, candidate: str | Path) -> float:
        session = _session(candidate, self.optimized)
        return self.value_of([_run(session, feed) for feed in self.feeds])

    def value_of(self, outputs: list[dict]) -> float:
        from real_tier import judged_value

        value, _ = judged_value(outputs, self.reference, metric=self.setting.metric, criterion=self.setting.criterion,
                                slices=self.setting.slices, judged=self.setting.judged)
        return float(value)


def worker_sweep(request: dict) -> dict:
    """``precision-lab sweep`` through the CLI's ``main``; the clock starts after the imports."""
    import onnxruntime  # noqa: F401  (imported before the clock, as NNCF's script imports before its own)

    import precision_lab
    import precision_lab.sweep  # noqa: F401
    from precision_lab.cli import main

    started = time.perf_counter()
    code = main(request["args"])
    return {"code": code, "seconds": time.perf_counter() - started, "precision_lab": precision_lab.__file__}


def _feeds_of(plan: dict, key: str) -> list[Path]:
    """The files of one part of the sweep's split (``calib_feeds``, ``eval_feeds``, ``verify_feeds``)."""
    return [Path(plan["data"]["source"]) / name for name in plan["data"][key]]


def _journal(sweep_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (sweep_dir / "journal.jsonl").read_text().splitlines()]
    return sorted(lines, key=lambda line: line["sequence"])


def _user_model(model: str, shapes: list[str]):
    """The model a user hands to ONNX Runtime's tools: input shapes fixed and nodes named by precision-lab's
    rule (``peer_nncf.name_nodes``), so that the journal's layer names are node names."""
    import onnx
    from peer_nncf import name_nodes, parse_shape
    from run import _fix_input_shapes

    proto = onnx.load(model)
    name_nodes(proto)
    return _fix_input_shapes(proto, dict(parse_shape(s) for s in shapes))


def worker_loop(request: dict) -> dict:
    """The quantize_static loop: the default sweep's plans in journal order, each quantized by ``quantize_static``
    (recalibrating), run in a default ``InferenceSession`` and judged against the FP32 model (default session) on
    the feeds the sweep judged it on. Stops after ``budget`` seconds. Keeps the final plan's model."""
    import logging

    import onnxruntime as ort
    from run import exclude_name_map, preprocess_for_ort, quantize_excluding

    from precision_lab.qdq import RECIPES

    logging.getLogger().setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    sweep_dir, work, setting = Path(request["sweep"]), Path(request["out"]), request["setting"]
    work.mkdir(parents=True, exist_ok=True)
    plan = json.loads((sweep_dir / "plan.json").read_text())
    journal = _journal(sweep_dir)
    calib = _load(_feeds_of(plan, "calib_feeds"))
    op_types = list(RECIPES[plan["recipe"]])
    final = sorted(plan["fp32_layers"])
    fixed, pre = work / "fixed.onnx", work / "preprocessed.onnx"
    started = time.perf_counter()

    def preprocess(skip_optimization: bool) -> tuple[dict[str, str], list[str]]:
        preprocess_for_ort(_user_model(request["model"], setting["shapes"]), fixed, pre, skip_optimization)
        return exclude_name_map(fixed, pre, [name for line in journal for name in line["fp32_layers"]])

    mapping, missing = preprocess(False)
    judges = {key: Judge(fixed, _feeds_of(plan, key), setting, optimized=True)
              for key in ("eval_feeds", "verify_feeds")}

    def evaluate(layers: list[str], feeds: str, path: Path) -> float:
        quantize_excluding(pre, path, calib, op_types, [mapping.get(n, n) for n in layers],
                           quantize_outputs=request["quantize_outputs"])
        return judges[feeds].value(path)

    notes, done, status = [], [], "ok"
    for line in journal:
        if request["budget"] and time.perf_counter() - started > request["budget"]:
            status = "stopped"
            break
        layers = sorted(line["fp32_layers"])
        feeds = "verify_feeds" if line["phase"] == "verification" else "eval_feeds"
        keep = feeds == "eval_feeds" and layers == final and not (work / "final.onnx").exists()
        path = work / ("final.onnx" if keep else "candidate.onnx")
        try:
            value = evaluate(layers, feeds, path)
        except Exception as exc:  # opset 11/12 Paddle models: invalid per-channel DQ after ORT's fusions (run.py)
            if done:
                raise
            notes.append("quantize_static on the optimized pre-processed model failed "
                         f"({str(exc).splitlines()[0][-160:]}); fell back to "
                         "quant_pre_process(skip_optimization=True), as run.py")
            mapping, missing = preprocess(True)
            value = evaluate(layers, feeds, path)
        done.append({"phase": line["phase"], "fp32_layers": layers, "feeds": feeds, "value": value})
    if missing:
        notes.append(f"{len(missing)} layers not found in the pre-processed model: {missing[:5]}")
    return {"status": status, "seconds": time.perf_counter() - started, "evaluations": done, "notes": notes,
            "mapping": mapping, "op_types": op_types}


def _minimality(values: dict[str, float | None], tolerance: float, source: str) -> dict:
    """``values``: each plan layer -> the value of the plan without it (None: not known). 1-minimal when every
    such plan fails."""
    back = sorted(layer for layer, value in values.items() if value is not None and value <= tolerance)
    unknown = sorted(layer for layer, value in values.items() if value is None)
    verdict = "no" if back else ("unproven" if unknown else "yes")
    return {"one_minimal": verdict, "source": source, "can_go_back": back, "unknown": unknown,
            "values": values, "tolerance": tolerance}


def check_precision_lab(request: dict) -> dict:
    """Held-out value of a sweep's plan.onnx, and its 1-minimality: by its own evidence when every layer has
    one, else each unproven layer put back to INT8 alone (``precision_lab.plan.apply_plan`` on a copy of
    plan.json without it, so with the sweep's calibration) and judged on the sweep's evaluation feeds at the
    sweep's final search tolerance."""
    from precision_lab.plan import apply_plan

    sweep_dir, setting = Path(request["sweep"]), request["setting"]
    plan = json.loads((sweep_dir / "plan.json").read_text())
    heldout_files = sorted(Path(request["heldout"]).glob("*.npz"))
    heldout = Judge(request["model"], heldout_files, setting).value(sweep_dir / "plan.onnx")
    pinned = sorted(plan["fp32_layers"])
    tolerance = plan["metric"]["search_tolerance"]
    evidence = {layer: proof["value"] for layer, proof in plan.get("evidence", {}).items() if layer in pinned}
    unproven = [layer for layer in pinned if layer not in evidence]
    if not unproven:
        return {"heldout_value": heldout, "minimality": _minimality(evidence, tolerance, "the sweep's own evidence")}
    judge = Judge(request["model"], _feeds_of(plan, "eval_feeds"), setting)
    work = Path(request["out"])
    work.mkdir(parents=True, exist_ok=True)

    def value_without(removed: list[str]) -> float:
        kept = [layer for layer in pinned if layer not in removed]
        document = dict(plan, fp32_layers=kept, precisions={layer: "fp32" for layer in kept})
        (work / "plan.json").write_text(json.dumps(document))
        apply_plan(request["model"], work / "plan.json", work / "candidate.onnx")
        return judge.value(work / "candidate.onnx")

    values = {layer: evidence[layer] if layer in evidence else value_without([layer]) for layer in pinned}
    result = _minimality(values, tolerance, "own evidence + each unproven layer put back to INT8 after the search")
    result["rebuilt_plan_value"] = value_without([])  # cross-check: should equal the plan's search value
    return {"heldout_value": heldout, "minimality": result}


def check_loop(request: dict) -> dict:
    """Held-out value of the loop's final model (default sessions, as its search), and 1-minimality from the
    loop's own values of plan-minus-one-layer, the missing ones quantized after the loop."""
    from run import quantize_excluding

    work, setting, loop = Path(request["out"]), request["setting"], request["loop"]
    plan = json.loads((Path(request["sweep"]) / "plan.json").read_text())
    final = sorted(plan["fp32_layers"])
    fixed, pre = work / "fixed.onnx", work / "preprocessed.onnx"
    heldout = Judge(fixed, sorted(Path(request["heldout"]).glob("*.npz")), setting, optimized=True)
    calib = _load(_feeds_of(plan, "calib_feeds"))

    def quantized(layers: list[str], path: Path) -> Path:
        if not path.exists():
            quantize_excluding(pre, path, calib, loop["op_types"], [loop["mapping"].get(n, n) for n in layers],
                               quantize_outputs=request["quantize_outputs"])
        return path

    heldout_value = heldout.value(quantized(final, work / "final.onnx"))
    seen = {tuple(e["fp32_layers"]): e["value"] for e in loop["evaluations"] if e["feeds"] == "eval_feeds"}
    judge = None
    values = {}
    for layer in final:
        without = [n for n in final if n != layer]
        if tuple(without) not in seen:
            judge = judge or Judge(fixed, _feeds_of(plan, "eval_feeds"), setting, optimized=True)
            seen[tuple(without)] = judge.value(quantized(without, work / f"without_{len(values)}.onnx"))
        values[layer] = seen[tuple(without)]
    tolerance = plan["metric"]["search_tolerance"]
    return {"heldout_value": heldout_value,
            "minimality": _minimality(values, tolerance, "the loop's values (missing ones made after the loop)")}


def check_nncf(request: dict) -> dict:
    """Held-out value of NNCF's final model against its prepared FP32 model (graph optimizations off)."""
    folder = Path(request["out"])
    judge = Judge(folder / "fp32_prepared.onnx", sorted(Path(request["heldout"]).glob("*.npz")), request["setting"])
    return {"heldout_value": judge.value(folder / "nncf_final.onnx")}


WORKERS = {"sweep": worker_sweep, "loop": worker_loop, "check-precision-lab": check_precision_lab,
           "check-loop": check_loop, "check-nncf": check_nncf}


# ------------------------------------------------------------------------------------------------------------
# the peers, as rows


def new_row(target: Target, peer: str, label: str, ctx: Context) -> dict:
    return {"model": target.name, "peer": peer, "label": label, "status": "ok", "reason": None,
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "command": ctx.command,
            "tolerance": target.tolerance, "criterion": CRITERION, "notes": []}


def with_process(row: dict, proc: Process) -> dict:
    row.update(process_seconds=round(proc.seconds, 2), peak_rss_mb=round(proc.peak_rss_mb, 1), load=proc.load)
    return row


def judged(row: dict, setting: Setting, heldout: float | None, minimality: dict | None) -> dict:
    """Fill in held-out value, whether the plan holds, 1-minimality and whether the peer reached a plan."""
    row["heldout_value"] = heldout
    row["holds"] = setting.passes(heldout) if heldout is not None else None
    row["search_passes"] = setting.passes(row.get("search_value"))
    row["minimality"] = minimality
    row["one_minimal"] = minimality["one_minimal"] if minimality and row["search_passes"] else "–"
    row["reached"] = row["status"] == "ok" and row["search_passes"] and bool(row["holds"])
    return row


def run_precision_lab(target: Target, ctx: Context, peer: str, search: str | None) -> dict:
    """One ``precision-lab sweep`` (CLI defaults, ``--criterion aggregate``), then its held-out/minimality check."""
    setting = Setting.of(target)
    out = ctx.out / target.name / peer
    args = ["sweep", str(target.path), "--data", str(target.search), "--out", str(out), "--quiet", "--no-resume",
            "--criterion", CRITERION, *target.args, *(["--search", search] if search else [])]
    if "--tolerance" not in target.args:
        args += ["--tolerance", str(target.tolerance)]
    labels = {"default": "precision-lab default", "full": "precision-lab `--search full`",
              "bisect": "Polygraphy-style `--search bisect`"}
    row = new_row(target, peer, labels[peer], ctx)
    proc, answer = worker("sweep", {"args": args}, ctx, f"{target.name}-{peer}")
    with_process(row, proc)
    row["cli"] = "precision-lab " + shlex.join(args)
    if not answer or answer["code"] != 0:
        return dict(row, status="error", reason=failure(proc) if not answer else f"CLI exit {answer['code']}")
    result = json.loads((out / "result.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    phases: dict[str, int] = {}
    for line in _journal(out):
        phases[line["phase"]] = phases.get(line["phase"], 0) + 1
    row.update(
        # to the plan: sweep() up to its result (data, calibration, search, verification), as NNCF's and the
        # loop's; cli_seconds adds writing plan.json, plan.onnx and report.html
        search=result["search"], seconds=round(result["wall_seconds"], 2), cli_seconds=round(answer["seconds"], 2),
        precision_lab=answer["precision_lab"],
        evaluations=sum(phases.values()), evaluations_detail=phases, high_precision=sorted(plan["fp32_layers"]),
        k=len(plan["fp32_layers"]), n=len(plan["fp32_layers"]) + len(plan["int8_layers"]),
        search_value=plan["achieved"]["value"], plan_status=plan["status"], backend=plan["backend"],
        search_tolerance=plan["metric"]["search_tolerance"], until_verified=(plan.get("verification") or {}).get(
            "until_verified"), verification_rounds=len((plan.get("verification") or {}).get("rounds", [])),
    )
    if peer == "default":
        row["label"] = f"precision-lab default (`{result['search']}`)"
    proc, check = worker("check-precision-lab", {"sweep": str(out), "model": str(target.path),
                                                 "heldout": str(target.heldout), "setting": asdict(setting),
                                                 "out": str(ctx.out / target.name / f"{peer}-check")},
                         ctx, f"{target.name}-{peer}-check")
    if not check:
        row["notes"].append(f"check failed: {failure(proc)}")
    return judged(row, setting, check.get("heldout_value"), check.get("minimality"))


def run_loop(target: Target, ctx: Context, default: dict) -> dict:
    """The quantize_static loop over the default sweep's journal, then its held-out/minimality check."""
    setting = Setting.of(target)
    sweep_dir, out = ctx.out / target.name / "default", ctx.out / target.name / "loop"
    label = f"quantize_static loop (replays the `{default.get('search', '?')}` journal" + (
        ", ORT quantizes outputs)" if ctx.quantize_outputs else ")")
    row = new_row(target, "loop", label, ctx)
    if default.get("status") != "ok":
        return dict(row, status="error", reason="the default sweep failed: nothing to replay")
    request = {"sweep": str(sweep_dir), "out": str(out), "model": str(target.path), "setting": asdict(setting),
               "heldout": str(target.heldout), "budget": ctx.budget, "quantize_outputs": ctx.quantize_outputs}
    proc, loop = worker("loop", request, ctx, f"{target.name}-loop")
    with_process(row, proc)
    if not loop:
        return dict(row, status="error", reason=failure(proc))
    (out / "loop.json").write_text(json.dumps(loop, indent=1))
    final = sorted(default["high_precision"])
    search_value = next((e["value"] for e in loop["evaluations"]
                         if e["feeds"] == "eval_feeds" and e["fp32_layers"] == final), None)
    phases: dict[str, int] = {}
    for e in loop["evaluations"]:
        phases[e["phase"]] = phases.get(e["phase"], 0) + 1
    row.update(status=loop["status"], seconds=round(loop["seconds"], 2), evaluations=len(loop["evaluations"]),
               evaluations_detail=phases, quantize_outputs=ctx.quantize_outputs, op_types=loop["op_types"])
    row["notes"] += loop["notes"]
    if loop["status"] != "ok":
        row["reason"] = f"stopped by --budget-seconds {ctx.budget:g} after {len(loop['evaluations'])} plans"
        return judged(row, setting, None, None)
    row.update(high_precision=final, k=len(final), n=default["n"], search_value=search_value)
    proc, check = worker("check-loop", dict(request, loop=loop), ctx, f"{target.name}-loop-check")
    if not check:
        row["notes"].append(f"check failed: {failure(proc)}")
    return judged(row, setting, check.get("heldout_value"), check.get("minimality"))


def nncf_command(target: Target, ctx: Context, out: Path) -> list[str]:
    setting = Setting.of(target)
    command = [str(ctx.nncf_python), str(HERE / "peer_nncf.py"), "--model", str(target.path), "--search-data",
               str(target.search), "--heldout", str(target.heldout), "--metric", setting.metric,
               "--tolerance", str(target.tolerance), "--out", str(out)]
    for option, values in (("--input-shape", setting.shapes), ("--output-slice", setting.slices),
                           ("--judge-output", setting.judged)):
        for value in values:
            command += [option, value]
    return command


def nncf_minimality(command: list[str], log: Path, row: dict) -> dict:
    """``peer_nncf.py --recheck-minimality`` in its own process: each reverted NNCF group put back to INT8 alone."""
    recheck = spawn([*command, "--recheck-minimality"], log, project_env=False)
    result = json.loads((Path(command[command.index("--out") + 1]) / "result.json").read_text())
    check = result["minimality"]
    if recheck.code == 0 and check.get("checked"):
        back = [g["group"] for g in check["groups"] if g["passes_without_it"]]
        return {"one_minimal": "no" if back else "yes", "can_go_back": back, "groups": len(check["groups"]),
                "source": "NNCF quantizer groups, each put back to INT8 alone after the search"}
    if recheck.code != 0:
        row["notes"].append(f"--recheck-minimality failed: {failure(recheck)}")
    return {"one_minimal": "yes" if result["one_minimal"] else "unproven", "source": check.get("reason")}


def run_nncf(target: Target, ctx: Context) -> dict:
    """NNCF accuracy control (search only, in NNCF's venv), its group-level 1-minimality check in a second
    process (``--recheck-minimality``), then the held-out value judged here like every other peer's."""
    setting = Setting.of(target)
    out = ctx.out / target.name / "nncf"
    row = new_row(target, "nncf", "NNCF `quantize_with_accuracy_control`", ctx)
    if not ctx.nncf_python.exists():
        return dict(row, status="error", reason=f"{ctx.nncf_python} not found (benchmarks/PEERS.md, Setup)")
    command = nncf_command(target, ctx, out)
    search = [*command, "--no-minimality", *(["--budget-seconds", str(ctx.budget)] if ctx.budget else [])]
    proc = spawn(search, ctx.out / "logs" / f"{target.name}-nncf", project_env=False)
    with_process(row, proc)
    row["cli"] = shlex.join(search)
    if proc.code not in (0, 2) or not (out / "result.json").exists():
        return dict(row, status="error", reason=failure(proc))
    result = json.loads((out / "result.json").read_text())
    row.update(seconds=round(result["seconds"], 2), evaluations=result["evaluations"],
               evaluations_detail=result.get("evaluations_by_phase"), versions=result.get("versions"),
               search_value=result.get("search_value"))
    if result.get("status") == "stopped by --budget-seconds":
        row.update(status="stopped", reason=f"stopped by --budget-seconds {ctx.budget:g}",
                   search_value=result.get("best_revert_loop_value"))
        row["notes"].append("search value = the best value its revert loop reached")
        return judged(row, setting, None, None)
    row.update(high_precision=result["high_precision_nodes"], k=result["high_precision_count"],
               n=result["quantized_nodes_initial"], nncf_heldout_value=result["heldout_value"],
               partially_reverted=result["partially_reverted_nodes"])
    minimality = nncf_minimality(command, ctx.out / "logs" / f"{target.name}-nncf-minimality", row) \
        if result["search_passed"] else None
    proc, check = worker("check-nncf", {"out": str(out), "heldout": str(target.heldout), "setting": asdict(setting)},
                         ctx, f"{target.name}-nncf-check")
    if not check:
        row["notes"].append(f"check failed: {failure(proc)}")
    return judged(row, setting, check.get("heldout_value"), minimality)


# ------------------------------------------------------------------------------------------------------------
# the table and RESULTS.md


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def minimal_cell(row: dict) -> str:
    """yes / no (how many of the plan's layers, or NNCF's groups, can go back to INT8 alone) / unproven / –."""
    verdict, detail = row.get("one_minimal", "–"), row.get("minimality") or {}
    if verdict != "no" or "can_go_back" not in detail:
        return verdict
    total = detail.get("groups", len(detail.get("values", {})))
    unit = "groups" if "groups" in detail else "layers"
    return f"no ({len(detail['can_go_back'])} of {total} {unit} can go back alone)"


def table(rows: list[dict]) -> list[str]:
    """One markdown row per model and peer."""
    header = ("| model | peer | evaluations | wall to plan (s) | process (s) | high-precision set k / N | search value "
              "| held-out value | holds on held-out | 1-minimal | peak RSS (MB) | load (1-min, mean) |")
    lines = [header, "|" + "---|" * 12]
    for r in rows:
        if r["status"] == "error":
            lines.append(f"| {r['model']} | {r['label'] or r['peer']} | error: {r['reason']} ||||||||||")
            continue
        stopped = r["status"] == "stopped"
        evaluations = f"{r['evaluations']}" + (" (stopped)" if stopped else "")
        wall = f"{r['seconds']:.1f}" + (" (budget, no plan)" if stopped else "")
        size = "–" if r.get("k") is None else f"{r['k']} / {r['n']}"
        holds = {True: "yes", False: "**no**", None: "–"}[r.get("holds")]
        lines.append(f"| {r['model']} | {r['label']} | {evaluations} | {wall} | {r['process_seconds']:.1f} | {size} "
                     f"| {_fmt(r.get('search_value'))} | {_fmt(r.get('heldout_value'))} | {holds} "
                     f"| {minimal_cell(r)} | {r['peak_rss_mb']:.0f} | {r['load']['mean']:.1f} |")
    return lines


def _beaten_by(peer: dict, default: dict) -> str:
    """A peer as fast as the default or faster, with what explains it: evaluations, plan size, 1-minimality."""
    return (f"{peer['label']} {peer['seconds']:.1f} s ({peer['evaluations']} evaluations against "
            f"{default['evaluations']}; its plan keeps {peer['k']} of {peer['n']} high precision against "
            f"{default['k']}, 1-minimal: {peer['one_minimal']})")


def verdicts(rows: list[dict], models: list[str]) -> list[str]:
    """Per model: did precision-lab's default reach a held-out-holding plan in less wall time than every peer
    (bisect, loop, NNCF) that also reached one?"""
    lines = []
    for model in models:
        mine = {r["peer"]: r for r in rows if r["model"] == model}
        default = mine.get("default")
        if not default or not default.get("reached"):
            why = f" ({default['reason']})" if default and default["reason"] else ""
            lines.append(f"- **{model}: not met.** precision-lab's default did not reach a plan that holds on "
                         f"held-out inputs{why}.")
            continue
        reached = [r for peer, r in mine.items() if peer in COMPETITORS and r.get("reached")]
        faster = [r for r in reached if r["seconds"] <= default["seconds"]]
        if faster:
            lines.append(f"- **{model}: not met.** The default took {default['seconds']:.1f} s; as fast or faster: "
                         + ", ".join(_beaten_by(r, default) for r in faster) + ".")
        else:
            others = ", ".join(f"{r['label']} {r['seconds']:.1f} s" for r in reached) or "none"
            lines.append(f"- **{model}: met.** The default reached a held-out-holding plan in "
                         f"{default['seconds']:.1f} s; peers that also reached one: {others}.")
    return lines


def software(rows: list[dict]) -> str:
    """Versions of this venv's packages, precision-lab's commit, and NNCF's venv (from its result.json)."""
    from importlib.metadata import version

    parts = [f"Python {platform.python_version()}"] + [f"{p} {version(p)}" for p in ("onnxruntime", "onnx", "numpy")]
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "precision_lab"],
                           capture_output=True, text=True).stdout.strip()
    parts.append(f"precision-lab {version('precision-lab')} at commit {commit}" + (" (precision_lab/ modified)"
                                                                                   if dirty else ""))
    nncf = next((r["versions"] for r in rows if r.get("versions")), None)
    if nncf:
        parts.append("NNCF's venv: " + ", ".join(f"{k} {v}" for k, v in nncf.items()))
    return ", ".join(parts)


def section(rows: list[dict], models: list[str], budget: float) -> str:
    """The RESULTS.md section: date, load, software, commands, settings, table, verdicts."""
    samples = [v for r in rows for v in r.get("load", {}).get("values", [])]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    dates = sorted(r["date"] for r in rows)
    commands = sorted({r["command"] for r in rows})
    lines = [
        SECTION, "",
        f"- **Date:** the peers started between {dates[0]} and {dates[-1]}, one after another." if dates else "- **Date:** –",
        f"- **Machine:** {os.cpu_count()} cores ({cpu}); load average (1 min, /proc/loadavg every 5 s while the peers "
        f"ran): min {min(samples, default=0):.2f}, mean {sum(samples) / max(len(samples), 1):.2f}, max "
        f"{max(samples, default=0):.2f}.",
        f"- **Software:** {software(rows)}.",
        "- **Command:** " + "; ".join(f"`{c}`" for c in commands) + (" (rows from more than one invocation: "
                                                                       "resumed)" if len(commands) > 1 else ""),
        f"- **Settings:** rel-l2, `--criterion aggregate` for every peer, each model's tolerance; precision-lab "
        f"runs with the CLI's defaults otherwise (`--until-verified` on); NNCF and the loop stop after "
        f"`--budget-seconds {budget:g}`. Wall to plan: from each peer's start (imports excluded) to its final "
        "plan, outputs not written; process: the peer's whole process. Columns and choices: benchmarks/PEERS.md, "
        "\"Peers side by side\".",
        "",
        *table(rows), "",
        "Did precision-lab's default reach a plan that holds on held-out inputs in less wall time than every peer "
        "that also reached one?", "",
        *verdicts(rows, models), "",
    ]
    return "\n".join(lines)


def replace_section(path: Path, text: str) -> None:
    """Write ``text`` as the section headed :data:`SECTION` of ``path``: replaced up to the next ``## `` heading,
    or appended."""
    old = path.read_text() if path.exists() else ""
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        path.write_text(old.rstrip("\n") + "\n\n" + text)
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    path.write_text("".join(lines[:start]) + text + ("\n" + "".join(lines[end:]) if end < len(lines) else ""))


# ------------------------------------------------------------------------------------------------------------


def read_rows(log: Path) -> dict[tuple[str, str], dict]:
    """The rows of ``peers.jsonl``, the last one per (model, peer)."""
    rows = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        row = json.loads(line)
        rows[(row["model"], row["peer"])] = row
    return rows


def run_model(target: Target, ctx: Context, rows: dict, peers: tuple[str, ...], log: Path) -> None:
    """Every peer not done yet on one model, one after another; each row appended to ``log`` when done."""
    for peer in peers:
        previous = rows.get((target.name, peer))
        if previous and previous["status"] != "error":
            continue
        default = rows.get((target.name, "default"), {})
        if peer == "full" and default.get("search") in (None, "full"):
            continue  # the default is full (or unknown): no separate row
        print(f"{target.name}: {peer} ...", file=sys.stderr, flush=True)
        if peer in ("default", "full", "bisect"):
            row = run_precision_lab(target, ctx, peer, None if peer == "default" else peer)
        elif peer == "loop":
            row = run_loop(target, ctx, default)
        else:
            row = run_nncf(target, ctx)
        rows[(target.name, peer)] = row
        with log.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"  {peer}: {row['status']}, {row.get('evaluations')} evaluations, {row.get('seconds')} s, "
              f"k={row.get('k')}, held-out {row.get('heldout_value')}", file=sys.stderr, flush=True)


def target_of(name: str, feeds: Path, tier_search: int, tier_heldout: int) -> Target:
    """A sample model or a tier model, its feeds made once under ``feeds``."""
    samples = json.loads((SAMPLES / "expected_plans.json").read_text())
    if f"{name}.onnx" in samples:
        return sample_target(name, feeds)
    return tier_target(name, feeds, tier_search, tier_heldout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="sample model names and tier keys, comma-separated (needed)")
    parser.add_argument("--out", type=Path, help="folder for feeds, runs, logs and peers.jsonl (needed)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"subset of {','.join(PEERS)} (default: all)")
    parser.add_argument("--budget-seconds", type=float, default=1800.0,
                        help="stop NNCF and the quantize_static loop after this many seconds (default 1800; 0: none)")
    parser.add_argument("--nncf-python", type=Path, default=Path("/opt/nncf-venv/bin/python"))
    parser.add_argument("--loop-quantize-outputs", action="store_true",
                        help="the loop: let quantize_static quantize Conv/Gemm/MatMul outputs (ONNX Runtime's "
                        "default; an excluded node's input then stays quantized by its producer)")
    parser.add_argument("--tier-search", type=int, default=32, help="search feeds of a tier model (default 32)")
    parser.add_argument("--tier-heldout", type=int, default=16, help="held-out feeds of a tier model (default 16)")
    parser.add_argument("--results", nargs="?", type=Path, const=HERE / "RESULTS.md", default=None,
                        help="write the section into this RESULTS.md (default benchmarks/RESULTS.md)")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "REQUEST", "ANSWER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, request, answer = args.worker
        Path(answer).write_text(json.dumps(WORKERS[kind](json.loads(Path(request).read_text()))))
        return 0
    if not args.models or not args.out:
        parser.error("--models and --out are needed")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    peers = tuple(p for p in PEERS if p in args.peers.split(","))
    command = "python benchmarks/peers.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    ctx = Context(args.out.resolve(), args.budget_seconds, args.nncf_python, args.loop_quantize_outputs, command)
    ctx.out.mkdir(parents=True, exist_ok=True)
    log = ctx.out / "peers.jsonl"
    rows = read_rows(log)
    for name in models:
        run_model(target_of(name, ctx.out / "feeds", args.tier_search, args.tier_heldout), ctx, rows, peers, log)
    mine = [rows[(m, p)] for m in models for p in PEERS if (m, p) in rows]
    print("\n".join(table(mine) + [""] + verdicts(mine, models)))
    if args.results:
        replace_section(args.results, section(mine, models, args.budget_seconds))
        print(f"wrote the section '{SECTION}' of {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
