"""Evaluations per search strategy, per model, and the adaptive search's bound (issue 15).

For each model, every strategy of ``--searches`` sweeps the same feeds (CLI, ``--no-resume``, one search round:
``--no-until-verified``; other options at their defaults); the plan is then
judged on held-out feeds the sweep never read (plain ONNX Runtime). Sample models get 48 seeded random search
feeds and 16 held-out ones (as the tests make them) at their ``expected_plans.json`` recipe and tolerance; tier
models (``tests/real_tier.py``) get their realistic feeds, ``--tier-search`` / ``--tier-heldout`` of them.

Evaluations are counted as the distinct plans the search evaluated: journal lines whose phase is not
``verification`` (the journal holds each plan once; the verification feeds' evaluations are the same for every
strategy and are reported apart). The bound checked is the issue's: adaptive <= 2k + 2*ceil(log2 N) + 4 with k
the size of its plan and N the candidates, and adaptive <= full.

    python benchmarks/search_counts.py --out /tmp/search_counts                       # the sample models
    python benchmarks/search_counts.py --models ppocr_det,yolov8n --out /tmp/search_counts
    python benchmarks/search_counts.py --fake            # the fake-evaluator families of the tests, summed

Writes one JSON line per run to ``OUT/runs.jsonl`` (resumable) and prints the table. Exit code 1 when a bound
fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

SAMPLES = REPO / "sample_models"
SEARCHES = ("full", "fast", "adaptive", "bisect")


@dataclass(frozen=True)
class Target:
    """A model to sweep: its path, search and held-out feeds, sweep options, and the expected plan if known."""

    name: str
    path: Path
    search: Path
    heldout: Path
    args: tuple[str, ...]
    tolerance: float
    expected: tuple[str, ...] | None = None


def sample_target(name: str, root: Path) -> Target:
    """A sample model with 48 search feeds (seed 1) and 16 held-out ones (seed 2), its recipe and tolerance."""
    from real_models import random_feeds

    expected = json.loads((SAMPLES / "expected_plans.json").read_text())[f"{name}.onnx"]
    path = SAMPLES / f"{name}.onnx"
    search, heldout = root / name / "search", root / name / "heldout"
    if not search.exists():
        random_feeds(path, search, 48, 1)
        random_feeds(path, heldout, 16, 2)
    args = ("--recipe", expected["recipe"], "--tolerance", str(expected["tolerance"]))
    return Target(name, path, search, heldout, args, expected["tolerance"], tuple(sorted(expected["planted"])))


def tier_target(key: str, root: Path, search: int, heldout: int) -> Target:
    """A tier model with its realistic feeds and options, recipe ``trt``, tolerance 0.05."""
    from real_tier import TIER, search_and_heldout

    model = TIER[key]
    folder = root / key
    if not (folder / "search").exists():
        search_and_heldout(model, folder, search, heldout)
    return Target(key, model.fetch(), folder / "search", folder / "heldout", (*model.args, "--recipe", "trt"), 0.05)


def sweep(target: Target, search: str, out: Path) -> dict:
    """One sweep with ``--search search``: evaluations by phase, wall time, plan, proofs, held-out value."""
    from real_tier import heldout_value

    from precision_lab.cli import main

    args = ["sweep", str(target.path), "--data", str(target.search), "--out", str(out), "--quiet", "--no-resume",
            "--no-until-verified", "--search", search, *target.args]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(args)
    seconds = time.perf_counter() - started
    if code != 0:
        return {"model": target.name, "search": search, "error": err.getvalue().strip()[-400:]}
    plan = json.loads((out / "plan.json").read_text())
    phases: dict[str, int] = {}
    for line in (out / "journal.jsonl").read_text().splitlines():
        phase = json.loads(line)["phase"]
        phases[phase] = phases.get(phase, 0) + 1
    pinned = sorted(plan["fp32_layers"])
    held, _ = heldout_value(
        target.path, out / "plan.onnx", target.heldout, metric=plan["metric"]["name"],
        criterion=plan["metric"].get("criterion") or "aggregate", slices=tuple(
            a for i, a in enumerate(target.args) if i and target.args[i - 1] == "--output-slice"),
        judged=tuple(a for i, a in enumerate(target.args) if i and target.args[i - 1] == "--judge-output"),
    )
    return {
        "model": target.name, "search": search, "candidates": len(pinned) + len(plan["int8_layers"]),
        "evaluations": sum(n for phase, n in phases.items() if phase != "verification"),
        "verification": phases.get("verification", 0), "phases": phases, "seconds": round(seconds, 2),
        "pinned": pinned, "value": plan["achieved"]["value"], "heldout": held,
        "heldout_passes": held <= target.tolerance if plan["metric"]["direction"] == "lower" else held >= target.tolerance,
        "proven": all(layer in plan["evidence"] for layer in pinned), "expected": target.expected,
        "rounds": len(plan["verification"].get("rounds", [])) if plan.get("verification") else 0,
    }


def bound(k: int, n: int) -> int:
    """The issue's count bound: 2k + 2 * ceil(log2 N) + 4."""
    return 2 * k + 2 * math.ceil(math.log2(max(n, 2))) + 4


def table(runs: list[dict], searches: tuple[str, ...]) -> tuple[list[str], bool]:
    """The markdown table (one row per model) and whether every adaptive run kept the bound and full's count."""
    by_model: dict[str, dict[str, dict]] = {}
    for run in runs:
        by_model.setdefault(run["model"], {})[run["search"]] = run
    header = ["model", "N"] + [f"{s} evals (k, s)" for s in searches] + ["bound 2k+2⌈log₂N⌉+4", "adaptive ok",
                                                                        "held-out (adaptive)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ok = True
    for model, row in by_model.items():
        cells = [model, str(next(iter(row.values())).get("candidates", "?"))]
        for search in searches:
            run = row.get(search)
            if run is None or "error" in run:
                cells.append("error" if run else "–")
                continue
            mark = "" if run["proven"] else ", unproven"
            cells.append(f"{run['evaluations']} ({len(run['pinned'])}, {run['seconds']:.0f}{mark})")
        adaptive, full = row.get("adaptive"), row.get("full")
        if adaptive and "error" not in adaptive:
            limit = bound(len(adaptive["pinned"]), adaptive["candidates"])
            fine = adaptive["evaluations"] <= limit and (not full or adaptive["evaluations"] <= full["evaluations"])
            fine = fine and (adaptive["expected"] is None or tuple(adaptive["pinned"]) == tuple(adaptive["expected"]))
            ok &= fine
            passes = "passes" if adaptive["heldout_passes"] else "fails"
            cells += [str(limit), "yes" if fine else "NO", f"{adaptive['heldout']:.4g} ({passes})"]
        else:
            cells += ["–", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines, ok


def strategy_table(runs: list[dict]) -> list[str]:
    """One row per model and strategy: evaluations, wall time, plan size, held-out value, 1-minimal (proven)."""
    header = ("| model | search | evaluations | wall (s) | high-precision layers | search value | held-out value "
              "| holds on held-out | every layer proven (1-minimal) |")
    lines = [header, "|" + "---|" * 9]
    for run in runs:
        if "error" in run:
            lines.append(f"| {run['model']} | {run['search']} | error | | | | | | |")
            continue
        lines.append(
            f"| {run['model']} | {run['search']} | {run['evaluations']} | {run['seconds']:.1f} | {len(run['pinned'])} "
            f"| {run['value']:.4g} | {run['heldout']:.4g} | {'yes' if run['heldout_passes'] else 'no'} "
            f"| {'yes' if run['proven'] else 'no'} |"
        )
    return lines


def fake_table() -> list[str]:
    """The fake-evaluator families of ``tests/test_adaptive_search.py`` (every size, k and order there), per
    problem kind and signal order: total evaluations of full, fast and adaptive, how many adaptive runs kept the
    bound and full's count, and the total plan sizes (adaptive / full)."""
    from test_adaptive_search import CASES, evaluations, problem, signal_order

    rows: dict[tuple[str, str], list[int]] = {}
    for kind, n, k, order in CASES:
        seed = sum(map(ord, f"{kind}{n}{k}{order}"))
        names, errors, tolerance, pairs = problem(kind, n, k, seed)
        order_ = signal_order(order, names, errors, pairs, k, seed)
        counts = {}
        for search in ("full", "fast", "adaptive"):
            counts[search], result, _ = evaluations(search, names, errors, tolerance, pairs, order_)
            counts[search + " k"] = len(result.pinned)
        row = rows.setdefault((kind, order), [0] * 8)
        for i, value in enumerate((1, counts["full"], counts["fast"], counts["adaptive"],
                                   counts["adaptive"] <= bound(counts["adaptive k"], n),
                                   counts["adaptive"] <= counts["full"], counts["adaptive k"], counts["full k"])):
            row[i] += value
    header = ("| problem | signal order | cases | full evals | fast evals | adaptive evals | adaptive within bound "
              "| adaptive <= full | plan sizes adaptive / full |")
    lines = [header, "|" + "---|" * 9]
    for (kind, order), r in rows.items():
        lines.append(f"| {kind} | {order} | {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]} / {r[7]} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="sample model names and tier keys (default: every sample model)")
    parser.add_argument("--searches", default=",".join(SEARCHES), help=f"default {','.join(SEARCHES)}")
    parser.add_argument("--tier-search", type=int, default=32, help="search feeds of a tier model (default 32)")
    parser.add_argument("--tier-heldout", type=int, default=16, help="held-out feeds of a tier model (default 16)")
    parser.add_argument("--out", type=Path, help="folder for feeds, sweeps and runs.jsonl (needed unless --fake)")
    parser.add_argument("--fake", action="store_true", help="print the fake-evaluator families' table instead")
    args = parser.parse_args(argv)
    if args.fake:
        print("\n".join(fake_table()))
        return 0
    if args.out is None:
        parser.error("--out is needed")
    samples = sorted(json.loads((SAMPLES / "expected_plans.json").read_text()))
    names = args.models.split(",") if args.models else [s.removesuffix(".onnx") for s in samples]
    searches = tuple(args.searches.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.jsonl"
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {(r["model"], r["search"]) for r in runs}
    for name in names:
        if all((name, s) in done for s in searches):
            continue
        feeds = args.out / "feeds"
        target = (sample_target(name, feeds) if f"{name}.onnx" in samples
                  else tier_target(name, feeds, args.tier_search, args.tier_heldout))
        for search in searches:
            if (name, search) in done:
                continue
            run = sweep(target, search, args.out / "sweeps" / name / search)
            runs.append(run)
            with log.open("a") as handle:
                handle.write(json.dumps(run) + "\n")
            print(json.dumps({k: run.get(k) for k in ("model", "search", "evaluations", "seconds", "pinned")}),
                  file=sys.stderr)
    mine = [r for r in runs if r["model"] in names and r["search"] in searches]
    lines, ok = table(mine, searches)
    print("\n".join(lines + [""] + strategy_table(mine)))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
