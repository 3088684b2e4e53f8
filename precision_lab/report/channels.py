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

from precision_lab.results import Evaluation

__all__ = ["ChannelGroup", "channel_groups", "collapses", "SPREAD_FOR_BREAKDOWN", "COLLAPSE_REL_L2", "FINE_COSINE"]

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
