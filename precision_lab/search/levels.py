"""Three-level plans (INT8 / FP16 / FP32): the existing search, run once per level.

1. **FP32 level.** From all-FP16 (every candidate FP16, every other float node FP16), :func:`minimal_plan_search`
   over the float nodes, ranked by how close their tensors come to the FP16 range (calibrated ``max |x| / 65504``,
   largest first), finds the FP32 set that repairs all-FP16: empty when all-FP16 already passes.
2. **INT8 level.** The sweep's strategy (``full``, ``fast``, ...) over the candidates not kept FP32, from the plan
   that keeps that FP32 set (candidates INT8, every other node FP16), raising layers INT8 -> FP16.
3. **Both levels again**, pruned against the final plan until neither changes: every FP16 layer returned to INT8
   fails, and every FP32 node returned to FP16 fails. Those failing plans are the evidence of 1-minimality at
   both levels, and all of them are journal records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from precision_lab.precisions import FP16, FP32, Level, PrecisionPlan
from precision_lab.search.base import Outcome, Strategy
from precision_lab.search.minimal import MinimalPlan, minimal_plan_search, prune

__all__ = ["FP16_TO_FP32", "INT8_TO_FP16", "three_level_search", "fp16_range_ranking"]

FP16_TO_FP32 = Level(FP32, FP16)
INT8_TO_FP16 = Level(FP16, "int8")


def fp16_range_ranking(
    nodes: Sequence[str], closeness: Mapping[str, float], tie_order: Sequence[str] | None = None
) -> list[str]:
    """``nodes`` ordered by ``closeness`` to the FP16 range (largest first); ties in ``tie_order`` (e.g. cheapest
    to keep FP32 first), then graph order."""
    position = {name: i for i, name in enumerate(nodes)}
    tie = {name: i for i, name in enumerate(tie_order or ())}
    return sorted(nodes, key=lambda n: (-closeness.get(n, 0.0), tie.get(n, len(tie)), position[n]))


def _fp16_base(plan: PrecisionPlan, nodes: Sequence[str], candidates: set[str]) -> PrecisionPlan:
    """``plan`` with ``nodes`` back at FP16: candidates named FP16, other nodes unnamed (their default)."""
    items = {layer: p for layer, p in plan.items() if layer not in nodes}
    items.update((n, FP16) for n in nodes if n in candidates)
    return PrecisionPlan(items)


def three_level_search(
    context,
    int8_strategy: Callable[[object], Strategy[MinimalPlan]],
    float_nodes: Sequence[str],
    closeness: Mapping[str, float],
    fp32_tie_order: Sequence[str] | None = None,
) -> Strategy[MinimalPlan]:
    """A verified plan that is 1-minimal at both levels (see the module docstring). ``context`` is the sweep's
    :class:`~precision_lab.search.strategies.SearchContext` (its ``names`` are the INT8 candidates),
    ``int8_strategy`` the strategy for the INT8 level, ``float_nodes`` every node a plan may keep FP32, in graph
    order, ``closeness`` each node's calibrated ``max |x| / 65504``, and ``fp32_tie_order`` the order that breaks
    its ties (the sweep: cheapest to keep FP32 first). The result's ``all_fp16`` is the
    all-FP16 baseline, ``fp32_first`` says whether all-FP16 failed (so the FP32 set was found first)."""
    names = list(context.names)
    candidates = set(names)
    all_fp16 = PrecisionPlan((n, FP16) for n in names)
    found32 = yield from minimal_plan_search(
        fp16_range_ranking(float_nodes, closeness, fp32_tie_order), level=FP16_TO_FP32, start=all_fp16
    )
    fp16_baseline = found32.all_int8  # the all-FP16 model: the FP32 level's base
    if found32.status == "unattainable":
        return replace(found32, all_fp16=fp16_baseline)
    fp32_nodes = list(found32.pinned)
    remaining = [n for n in names if n not in fp32_nodes]
    start8 = PrecisionPlan.fp32(fp32_nodes)
    found8 = yield from int8_strategy(replace(context, names=remaining, level=INT8_TO_FP16, start=start8))
    fp16_layers, best = list(found8.pinned), found8.outcome
    evidence16: dict[str, Outcome] = dict(found8.evidence)
    evidence32: dict[str, Outcome] = dict(found32.evidence)
    while True:
        before = (list(fp16_layers), list(fp32_nodes))
        fp32_nodes, best = yield from prune(
            fp32_nodes, best, evidence32, level=FP16_TO_FP32, start=_fp16_base(best.plan, fp32_nodes, candidates)
        )
        fp16_layers, best = yield from prune(
            fp16_layers, best, evidence16, level=INT8_TO_FP16, start=PrecisionPlan.fp32(fp32_nodes)
        )
        if (fp16_layers, fp32_nodes) == before:
            break
    pinned = tuple(fp16_layers) + tuple(fp32_nodes)
    status = "found" if pinned else "all-int8-passes"
    evidence = {n: evidence16[n] for n in fp16_layers} | {n: evidence32[n] for n in fp32_nodes}
    return MinimalPlan(
        status, pinned, best, found8.all_int8, found32.all_fp32, evidence, found8.ranking, found8.scores,
        all_fp16=fp16_baseline, fp32_first=bool(found32.pinned),
    )
