"""Per-channel analysis of saved evaluations: outputs whose channels differ in scale by orders of magnitude.

A detector's output can mix pixel boxes (hundreds) with class scores (0..1) in one tensor. Whole-tensor metrics
are then dominated by the large channels: YOLOv8n in INT8 keeps a whole-output cosine near 1 while every score
is zero. Channels are grouped by the decade of their FP32 RMS; a group whose own rel-l2 is large while the
whole output looks fine is a *collapse*. Groups: channels sorted by FP32 RMS, split wherever two neighbours differ
by :data:`GROUP_GAP_DECADES` decades or more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from precision_lab.console import fmt_value

from precision_lab.results import Evaluation

__all__ = [
    "ChannelGroup",
    "channel_groups",
    "collapses",
    "channel_warnings",
    "SPREAD_FOR_BREAKDOWN",
    "COLLAPSE_REL_L2",
    "FINE_COSINE",
]

SPREAD_FOR_BREAKDOWN = 100.0  # max/min channel RMS ratio that earns a breakdown
GROUP_GAP_DECADES = 1.0  # channels sorted by RMS split into groups where consecutive RMS differ by 10x or more
COLLAPSE_REL_L2 = 0.5  # a group whose rel-l2 reaches this has lost most of its signal
FINE_COSINE = 0.99  # a whole output at or above this cosine "looks fine"


@dataclass(frozen=True)
class ChannelGroup:
    """Channels of one output of similar FP32 RMS (no decade gap between them), and their error in one evaluation."""

    output: str
    channels: tuple[int, ...]
    rms_low: float
    rms_high: float
    rel_l2: float

    @property
    def label(self) -> str:
        return _ranges(self.channels)


def _ranges(channels: Sequence[int]) -> str:
    runs, start = [], None
    for i, channel in enumerate(channels):
        if start is None:
            start = channel
        if i + 1 == len(channels) or channels[i + 1] != channel + 1:
            runs.append(f"{start}" if start == channel else f"{start}-{channel}")
            start = None
    return ", ".join(runs)


def channel_groups(record: Evaluation, output: str) -> list[ChannelGroup]:
    """Scale groups of ``output``'s channels with their rel-l2 in ``record``, largest scale first; empty when the
    channels do not differ in scale by at least :data:`SPREAD_FOR_BREAKDOWN`."""
    stats = record.channels.get(output)
    if not stats:
        return []
    err = np.asarray(stats["sum_sq_err"], dtype=np.float64)
    ref = np.asarray(stats["sum_sq_ref"], dtype=np.float64)
    rms = np.sqrt(ref / max(stats.get("count", 1), 1))
    positive = rms[rms > 0]
    if positive.size < 2 or positive.max() / positive.min() < SPREAD_FOR_BREAKDOWN:
        return []
    order = np.argsort(np.log10(np.where(rms > 0, rms, positive.min())))
    logs = np.log10(np.where(rms > 0, rms, positive.min()))[order]
    cuts = np.flatnonzero(np.diff(logs) >= GROUP_GAP_DECADES) + 1
    groups = []
    for members in reversed(np.split(order, cuts)):  # largest scale first
        members = np.sort(members)
        ref_sum = ref[members].sum()
        rel = math.sqrt(err[members].sum() / ref_sum) if ref_sum > 0 else 0.0
        groups.append(
            ChannelGroup(output, tuple(int(c) for c in members), float(rms[members].min()), float(rms[members].max()), rel)
        )
    return groups


def collapses(record: Evaluation) -> list[tuple[ChannelGroup, float]]:
    """Groups that collapse (rel-l2 >= :data:`COLLAPSE_REL_L2`) while their whole output looks fine (cosine >=
    :data:`FINE_COSINE`), with that output's cosine."""
    found = []
    for output, values in record.outputs.items():
        cosine = values.get("cosine", math.nan)
        if not cosine >= FINE_COSINE:
            continue
        for group in channel_groups(record, output):
            if group.rel_l2 >= COLLAPSE_REL_L2:
                found.append((group, cosine))
    return found


def _rms_text(low: float, high: float) -> str:
    low_text, high_text = fmt_value(low), fmt_value(high)
    return f"FP32 RMS {low_text}" if low_text == high_text else f"FP32 RMS {low_text}-{high_text}"


def _channels_text(channels: Sequence[int], plural: str = "", singular: str = "") -> str:
    """"channel 5" or "channels 4, 6-21", followed by the verb in the matching number."""
    verb = (plural if len(channels) > 1 else singular) if plural else ""
    return f"channel{'s' if len(channels) > 1 else ''} {_ranges(channels)}" + (f" {verb}" if verb else "")


def _slice_options(output: str, channels: Sequence[int]) -> str:
    """``--output-slice`` options that judge exactly ``channels`` (one per contiguous run)."""
    runs, start = [], None
    for i, channel in enumerate(channels):
        start = channel if start is None else start
        if i + 1 == len(channels) or channels[i + 1] != channel + 1:
            runs.append(f"--output-slice {output}:1:{start}:{channel + 1}")
            start = None
    return " ".join(runs)


def _declared(result) -> list:
    """The sweep's ``--output-slice`` parts on axis 1, as :class:`~precision_lab.compare.OutputSlice` objects."""
    from precision_lab.compare import OutputSlice

    found = []
    for label in result.output_slices:  # "NAME[axis A: START:STOP]"
        name, _, rest = label.rpartition("[axis ")
        try:
            axis, span = rest.rstrip("]").split(": ")
            start, stop = span.split(":")
            found.append(OutputSlice(name, int(axis), int(start), int(stop)))
        except ValueError:
            continue
    return [s for s in found if s.axis == 1]


def _collapse_notes(result, label: str, record: Evaluation) -> list[str]:
    declared = _declared(result)
    notes = []
    for group, cosine in collapses(record):
        covering = [s for s in declared if s.output == group.output and s.start <= min(group.channels) and max(group.channels) < s.stop]
        if covering:
            judged = ", ".join(f"{s.output}:1:{s.start}:{s.stop}" for s in covering)
            advice = f"it is judged through your --output-slice {judged}"
        else:
            advice = f"judge them with {_slice_options(group.output, group.channels)}"
        notes.append(
            f"Channel collapse in {label}: output '{group.output}' {_channels_text(group.channels)} "
            f"({_rms_text(group.rms_low, group.rms_high)}) {'have' if len(group.channels) > 1 else 'has'} rel-l2 "
            f"{fmt_value(group.rel_l2)} while the whole output's cosine is {fmt_value(cosine, FINE_COSINE)}. The "
            f"aggregate looks fine, but {'this channel group is' if len(group.channels) > 1 else 'this channel is'} "
            f"lost: {advice}."
        )
    return notes


def _hidden_in_slices(result, record: Evaluation) -> list[str]:
    """Declared slices that look fine in ``record`` while some of their channels collapse, hidden by others
    that dominate the slice's norm (YOLOv8n: channel 5 hides channels 4 and 6-21)."""
    notes = []
    for part in _declared(result):
        stats = record.channels.get(part.output)
        value = record.parts.get(part.label, {}).get("rel-l2")
        if not stats or value is None or not value < COLLAPSE_REL_L2:
            continue
        err = np.asarray(stats["sum_sq_err"], dtype=np.float64)[part.start : part.stop]
        ref = np.asarray(stats["sum_sq_ref"], dtype=np.float64)[part.start : part.stop]
        rel = np.sqrt(np.divide(err, ref, out=np.zeros_like(err), where=ref > 0))
        lost = np.flatnonzero(rel >= COLLAPSE_REL_L2)
        if not lost.size:
            continue
        kept = [part.start + int(c) for c in np.flatnonzero(rel < COLLAPSE_REL_L2)]
        lost_channels = [part.start + int(c) for c in lost]
        lost_rel = math.sqrt(err[lost].sum() / ref[lost].sum()) if ref[lost].sum() > 0 else math.inf
        notes.append(
            f"The plan's {part.output}:1:{part.start}:{part.stop} slice has rel-l2 {fmt_value(value)}, but its "
            f"{_channels_text(lost_channels, 'are', 'is')} at rel-l2 {fmt_value(lost_rel)}: "
            f"{_channels_text(kept, 'dominate', 'dominates')} the slice's norm and hide"
            f"{'' if len(kept) > 1 else 's'} the rest. Judge {'them' if len(lost_channels) > 1 else 'it'} on "
            f"{'their' if len(lost_channels) > 1 else 'its'} own with {_slice_options(part.output, lost_channels)}."
        )
    return notes


def channel_warnings(result) -> list[str]:
    """Plain-text warnings about channels of a saved sweep: groups that collapse while their output looks fine
    (without suggesting an ``--output-slice`` the sweep already has), and collapsed channels that a passing
    slice hides."""
    notes = []
    int8, plan = result.all_int8_record, result.plan_record
    for label, record in (("all INT8", int8), ("the plan", plan)):
        if record is not None and not (label == "the plan" and int8 is not None and record.key == int8.key):
            notes.extend(_collapse_notes(result, label, record))
    if result.plan_record is not None:
        notes.extend(_hidden_in_slices(result, result.plan_record))
    return notes
