"""Evaluation counts of search strategies, replayed against the journals of earlier sweeps (issue 15).

A sweep resumes from its journal: a plan evaluated before, on the same model, feeds and options (the journal's
context hash), is read back instead of evaluated again, with the same value. So once a few sweeps of a model
have run, any strategy can be re-counted in seconds: this script merges their journals into one folder, runs
each strategy of ``--searches`` as a resumed sweep on a copy of it, and counts the distinct plans the strategy
asked for. Plans no earlier sweep evaluated are evaluated for real (and added to the merged journal for the
next replay). The counts are those of a fresh sweep; the wall time is not, so it is not reported.

Besides the registered strategies, two experiments made of the library's parts can be counted:

- ``signal-group``: one-pass signal order, one bisection over the whole order, group pruning and proofs (the
  ``adaptive`` search's path when its order is trusted, without probes and without the fall-back);
- ``signal-single``: the same with one-layer-at-a-time pruning (the full mode's ``prune``).

    python benchmarks/replay_counts.py --model ppocr_det --data FEEDS/search \\
        --journals SWEEPS/full,SWEEPS/fast --work /tmp/replay --searches full,adaptive,signal-group

``--model`` is a tier key (``tests/real_tier.py``: its file and options, recipe ``trt``) and ``--data`` the
search feeds the journals were made with. One search round (``--no-until-verified``), as in
``benchmarks/search_counts.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from search_counts import bound  # noqa: E402  (benchmarks/search_counts.py: the issue's count bound)

from precision_lab.search import strategies  # noqa: E402
from precision_lab.search.adaptive import _prefix_then_prune, group_prune  # noqa: E402
from precision_lab.search.base import Strategy  # noqa: E402
from precision_lab.search.minimal import MinimalPlan, baseline_step, prune  # noqa: E402


def _signal_search(pruning):
    def search(context: strategies.SearchContext) -> Strategy[MinimalPlan]:
        signal, order = strategies._signal_order(context, "signal")
        (all_int8, all_fp32), verdict = yield from baseline_step(order, context.level, context.start)
        if verdict is not None:
            return verdict
        found = yield from _prefix_then_prune(order, all_int8, all_fp32, 0, pruning, context.level, context.start)
        return replace(found, scores={"signal": signal})

    return search


EXPERIMENTS = {"signal-group": _signal_search(group_prune), "signal-single": _signal_search(prune)}


def merge_journals(sources: list[Path], merged: Path) -> int:
    """One journal holding every plan of ``sources`` once (verification records left out); returns the count."""
    merged.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    lines = []
    for source in sources:
        for line in (source / "journal.jsonl").read_text().splitlines():
            record = json.loads(line)
            if record["phase"] != "verification" and record["key"] not in seen:
                seen.add(record["key"])
                lines.append(line)
    (merged / "journal.jsonl").write_text("\n".join(lines) + "\n")
    return len(lines)


def _counting(make, asked: dict):
    """``make`` with every plan its strategy yields recorded in ``asked`` (plan -> phase)."""

    def counted(context):
        strategy = make(context)
        batch = next(strategy)
        while True:
            for plan in batch:
                asked.setdefault(plan, getattr(batch, "phase", "search"))
            try:
                batch = strategy.send((yield batch))
            except StopIteration as stop:
                return stop.value

    return counted


def replay(model_key: str, data: Path, merged: Path, search: str, work: Path) -> dict:
    """One resumed sweep with ``--search search`` on a copy of ``merged``: the plans it asked for, by phase."""
    from real_tier import TIER

    from precision_lab.cli import main

    model = TIER[model_key]
    out = work / f"{model_key}-{search}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(merged, out)
    known = len((out / "journal.jsonl").read_text().splitlines())
    asked: dict = {}
    strategies.SEARCHES[search] = _counting(EXPERIMENTS.get(search) or strategies.SEARCHES[search], asked)
    args = ["sweep", str(model.fetch()), "--data", str(data), "--out", str(out), "--quiet", "--no-until-verified",
            "--search", search, "--recipe", "trt", *model.args]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(args)
    if code:
        raise SystemExit(f"{model_key} {search}: exit {code}: {err.getvalue().strip()[-500:]}")
    new = [line for line in (out / "journal.jsonl").read_text().splitlines()[known:]
           if json.loads(line)["phase"] != "verification"]
    with open(merged / "journal.jsonl", "a") as journal:
        journal.writelines(line + "\n" for line in new)
    plan = json.loads((out / "plan.json").read_text())
    phases: dict[str, int] = {}
    for phase in asked.values():
        phases[phase] = phases.get(phase, 0) + 1
    k, n = len(plan["fp32_layers"]), len(plan["fp32_layers"]) + len(plan["int8_layers"])
    return {
        "model": model_key, "search": search, "evaluations": len(asked), "phases": phases, "k": k, "N": n,
        "bound": bound(k, n), "value": plan["achieved"]["value"],
        "proven": all(layer in plan["evidence"] for layer in plan["fp32_layers"]), "evaluated_now": len(new),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="tier key (tests/real_tier.py)")
    parser.add_argument("--data", type=Path, required=True, help="the search feeds the journals were made with")
    parser.add_argument("--journals", required=True, help="comma-separated sweep folders of that model and data")
    parser.add_argument("--work", type=Path, required=True, help="folder for the merged journal and the replays")
    parser.add_argument("--searches", default="full,fast,adaptive,bisect",
                        help=f"registered strategies and {', '.join(EXPERIMENTS)} (default full,fast,adaptive,bisect)")
    args = parser.parse_args(argv)
    merged = args.work / f"{args.model}-merged"
    if not merged.exists():
        print(f"merged {merge_journals([Path(p) for p in args.journals.split(',')], merged)} plans into {merged}")
    print("| model | search | evaluations (by phase) | k / N | bound 2k+2⌈log₂N⌉+4 | within | proven | value |")
    print("|---|---|---|---|---|---|---|---|")
    for search in args.searches.split(","):
        row = replay(args.model, args.data, merged, search, args.work)
        phases = ", ".join(f"{phase} {n}" for phase, n in row["phases"].items())
        print(f"| {row['model']} | {search} | {row['evaluations']} ({phases}) | {row['k']} / {row['N']} | "
              f"{row['bound']} | {'yes' if row['evaluations'] <= row['bound'] else 'no'} | "
              f"{'yes' if row['proven'] else 'no'} | {row['value']:.4g} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
