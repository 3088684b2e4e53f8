"""Why the adaptive search misses the count bound on some models: the order, not the pruning (issue 15).

Three measurements from sweeps already made of one model (recipe ``trt``), no new evaluation:

1. **Order quality.** Spearman correlation of the one-pass signal (``sensitivity.csv`` of a sweep that used it:
   ``adaptive``, ``fast`` or a ``replay_counts.py`` experiment) with the measured ``isolate`` values (a ``full``
   sweep's ``sensitivity.csv``), and of the signal corrected by depth (``signal * (1.05 - position)**a``).
2. **Additivity.** How well the ``isolate`` values predict every other evaluated plan of a journal (``--journal``,
   e.g. the merged journal of ``replay_counts.py``): a plan's harm, ``value**p - fp32**p``, against the sum of
   its INT8 layers' isolate harms, for p = 1 and p = 2 (errors adding in quadrature).
3. **Counts against an additive truth.** A fake evaluator whose plan value is
   ``sqrt(fp32**2 + sum of the INT8 layers' isolate harms)`` (tolerance 0.05), driving the library's searches:
   the full mode's bisection and pruning on the isolate order (its N isolate evaluations not counted),
   ``adaptive`` on the signal order, and ``guided``, an experiment of the fifth session kept here (shares
   fitted to every evaluated plan's value, a pick of the fewest layers whose remaining shares fit, then the full
   mode's pruning).

    python benchmarks/order_quality.py --name ppocr_det --full SWEEPS/ppocr_det-full \\
        --signal SWEEPS/ppocr_det-signal-group --journal SWEEPS/ppocr_det-merged
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from precision_lab.compare import get_metric  # noqa: E402
from precision_lab.criterion import Criterion  # noqa: E402
from precision_lab.precisions import BINARY, PrecisionPlan  # noqa: E402
from precision_lab.results import Evaluation  # noqa: E402
from precision_lab.search.adaptive import adaptive_plan_search  # noqa: E402
from precision_lab.search.base import Outcome, drive  # noqa: E402
from precision_lab.search.minimal import MinimalPlan, baseline_step, minimal_plan_search, prune  # noqa: E402

TOLERANCE = 0.05


def _column(folder: Path, column: str) -> dict[str, float]:
    with open(folder / "sensitivity.csv", newline="") as handle:
        return {row["name"]: float(row[column]) for row in csv.DictReader(handle) if row[column] != ""}


def _positions(folder: Path) -> dict[str, int]:
    with open(folder / "sensitivity.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: int(row["index"]))
    return {row["name"]: i for i, row in enumerate(rows)}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    ranks = lambda x: np.argsort(np.argsort(np.asarray(x)))  # noqa: E731
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def additivity(journal: Path, isolate: Mapping[str, float], metric: str, criterion: str) -> list[str]:
    """Log-correlation and pass/fail agreement of predicted against measured values of the journal's plans."""
    metric_obj, criterion_obj = get_metric(metric), Criterion.parse(criterion)
    names = set(isolate)
    records = [Evaluation.from_json(json.loads(line)) for line in journal.read_text().splitlines()]
    records = [r for r in records if r.complete and r.phase != "verification"]
    fp32 = min(r.value(metric_obj, criterion_obj) for r in records if set(r.fp32_layers) >= names)
    plans = [(names - set(r.fp32_layers), r.value(metric_obj, criterion_obj)) for r in records]
    plans = [(int8, value) for int8, value in plans if len(int8) > 1]
    lines = []
    for power in (1, 2):
        harms = {n: max(v**power - fp32**power, 0.0) for n, v in isolate.items()}
        predicted = np.array([(fp32**power + sum(harms[n] for n in int8)) ** (1 / power) for int8, _ in plans])
        measured = np.array([value for _, value in plans])
        corr = np.corrcoef(np.log(predicted), np.log(measured))[0, 1]
        agree = np.mean((predicted <= TOLERANCE) == (measured <= TOLERANCE))
        lines.append(f"p={power}: {len(plans)} plans, log-correlation {corr:.3f}, pass/fail agreement {agree:.3f}, "
                     f"median measured/predicted {np.median(measured / predicted):.3f}")
    return lines


def _additive_evaluator(isolate: Mapping[str, float], asked: set, fp32: float = 1e-4):
    names = list(isolate)
    harm = {n: max(v * v - fp32 * fp32, 0.0) for n, v in isolate.items()}

    def evaluate(plans: Sequence[PrecisionPlan]) -> list[Outcome]:
        outcomes = []
        for plan in plans:
            asked.add(plan.fp32_layers)
            value = math.sqrt(fp32 * fp32 + sum(harm[n] for n in names if n not in plan.fp32_layers))
            outcomes.append(Outcome(plan, value, value <= TOLERANCE, ""))
        return outcomes

    return evaluate


# --- the guided experiment (fifth session): shares fitted to values, a pick, then pruning --------------------


def fit_shares(names: Sequence[str], prior: Mapping[str, float], observed, prior_weight: float = 0.3) -> dict[str, float]:
    """Each layer's share of the harm: least squares on relative errors over ``observed`` (INT8 layers, harm),
    pulled towards ``prior``, non-negative (active set)."""
    index = {name: i for i, name in enumerate(names)}
    scale = np.maximum(np.array([prior[n] for n in names]), 1e-30)
    rows, targets = [], []
    for layers, value in observed:
        row = np.zeros(len(names))
        row[[index[n] for n in layers]] = 1.0
        rows.append(row * scale / value)
        targets.append(1.0)
    rows.append(math.sqrt(prior_weight) * np.eye(len(names)))
    targets.extend([math.sqrt(prior_weight)] * len(names))
    matrix, target = np.vstack(rows), np.asarray(targets)
    active = np.ones(len(names), dtype=bool)
    for _ in range(len(names)):
        solution = np.zeros(len(names))
        solution[active] = np.linalg.lstsq(matrix[:, active], target, rcond=None)[0]
        if not (active & (solution < 0)).any():
            break
        active &= solution >= 0
    return {n: float(max(solution[i], 0.0) * scale[i]) for i, n in enumerate(names)}


def guided_search(order: Sequence[str], signal: Mapping[str, float], margin: float = 0.8, picks: int = 6):
    """Baselines; shares from ``signal**2`` scaled to the all-INT8 harm; up to ``picks`` picks of the fewest
    layers whose remaining shares fit ``margin`` times the tolerance's harm (refitted after each); then pruning."""
    order = list(order)
    (all_int8, all_fp32), verdict = yield from baseline_step(order, BINARY, PrecisionPlan())
    if verdict is not None:
        return verdict
    harm = lambda v: max(v - all_fp32.value, 0.0) ** 2  # noqa: E731
    everything = frozenset(order)
    total = sum(signal[n] ** 2 for n in order)
    prior = {n: signal[n] ** 2 / total * harm(all_int8.value) for n in order}
    observed = [(everything, harm(all_int8.value))]
    shares, failed, best, picked, evidence = prior, [], all_fp32, order, {}
    for _ in range(picks):
        ranked = sorted(order, key=lambda n: -shares[n])
        remaining, count = sum(shares.values()), 0
        while count < len(ranked) and remaining > margin * harm(TOLERANCE):
            remaining -= shares[ranked[count]]
            count += 1
        while count < len(ranked) and any(set(ranked[:count]) <= f for f in failed):
            count += 1
        if count == len(order):
            break
        (outcome,) = yield [BINARY.apply(PrecisionPlan(), ranked[:count])]
        observed.append((everything - set(ranked[:count]), harm(outcome.value)))
        shares = fit_shares(order, prior, observed)
        if outcome.passed:
            picked, best = ranked[:count], outcome
            break
        failed.append(frozenset(ranked[:count]))
    kept = sorted(picked, key=lambda n: -shares[n])
    kept, best = yield from prune(kept, best, evidence)
    return MinimalPlan("found", tuple(kept), best, all_int8, all_fp32, {n: evidence[n] for n in kept}, tuple(order))



def simulated_counts(isolate: Mapping[str, float], signal: Mapping[str, float]) -> list[str]:
    by_isolate = sorted(isolate, key=lambda n: -isolate[n])
    by_signal = sorted(signal, key=lambda n: -signal[n])
    runs = {
        "isolate order (full mode's search, isolate pass not counted)": partial(minimal_plan_search, by_isolate),
        "adaptive on the signal order": partial(adaptive_plan_search, by_signal),
        "guided (experiment) on the signal": partial(guided_search, by_signal, signal),
    }
    lines = []
    for label, make in runs.items():
        asked: set = set()
        found = drive(make(), _additive_evaluator(isolate, asked))
        k, n = len(found.pinned), len(isolate)
        bound = 2 * k + 2 * math.ceil(math.log2(n)) + 4
        lines.append(f"{label}: {len(asked)} evaluations, k = {k} of {n}, bound {bound}"
                     f" ({'within' if len(asked) <= bound else 'over'})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--full", type=Path, required=True, help="a full sweep's folder (isolate values)")
    parser.add_argument("--signal", type=Path, required=True, help="a sweep folder with the signal column")
    parser.add_argument("--journal", type=Path, help="a folder whose journal.jsonl holds many plans of that model")
    parser.add_argument("--metric", default="rel-l2")
    parser.add_argument("--criterion", default="p90")
    args = parser.parse_args(argv)
    isolate, signal = _column(args.full, "isolate"), _column(args.signal, "signal")
    position = _positions(args.full)
    names = sorted(isolate, key=position.get)
    iso, sig = [isolate[n] for n in names], [signal[n] for n in names]
    depth = np.arange(len(names)) / max(len(names) - 1, 1)
    print(f"## {args.name}")
    corrected = ", ".join(f"a={a}: {spearman(np.asarray(sig) * (1.05 - depth) ** a, iso):.3f}" for a in (0.5, 1, 2))
    print(f"- Spearman(signal, isolate) {spearman(sig, iso):.3f}; depth-corrected {corrected}")
    gain = np.asarray(iso) / np.maximum(np.asarray(sig), 1e-12)
    print(f"- isolate / signal: median {np.median(gain):.3g}, 10-90 % {np.quantile(gain, 0.1):.3g} to "
          f"{np.quantile(gain, 0.9):.3g}; correlation of its log with depth {np.corrcoef(np.log(gain + 1e-12), depth)[0, 1]:.2f}")
    if args.journal is not None:
        for line in additivity(args.journal / "journal.jsonl", isolate, args.metric, args.criterion):
            print(f"- additivity, {line}")
    for line in simulated_counts(isolate, signal):
        print(f"- additive truth, {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
