"""Batching: several evaluation feeds in one inference, where the model allows it.

The prepared model has its input shapes fixed from the data (batch 1). :func:`batchable` gives a copy whose
inputs and outputs have a symbolic first dimension and no intermediate shapes, so ONNX Runtime accepts
``batch`` feeds concatenated on axis 0. Whether that computes each feed as if it ran alone is not something the
graph says (a ``Reshape`` to a literal ``[1, ...]`` silently mixes samples), so :func:`probe` runs the FP32
model both ways on the first feeds and allows batching only when every output splits back into the single-feed
outputs to 1e-6. Per-tensor Q/DQ and per-channel weight DQ act on each sample alike, so a plan's Q/DQ model
batches when its FP32 model does.

Off by default (``batch=1``): on the 2-core CPU this was written on, batching YOLOv8n by 4, 8 or 16 feeds was
not faster; and batched kernels are not bit-identical to single-feed ones, so a last-bit difference can flip one
int8 rounding downstream. On the sample models, plans were identical, every part's metric values agreed to 1e-6
and each feed's own values to 1e-5 (``tests/test_fast_evaluation.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

__all__ = ["PROBE_TOLERANCE", "batch_feeds", "batchable", "probe", "split_outputs"]

#: how closely batched outputs must match single-feed outputs (relative to the output's largest magnitude)
PROBE_TOLERANCE = 1e-6


def batchable(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with a symbolic first dimension on every graph input and output of rank >= 1, and no
    intermediate shape annotations."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    initializers = {t.name for t in copy.graph.initializer}
    for value in (*copy.graph.input, *copy.graph.output):
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        shape = value.type.tensor_type.shape
        if len(shape.dim):
            shape.dim[0].Clear()
            shape.dim[0].dim_param = "precision_lab_batch"
    del copy.graph.value_info[:]
    return copy


def batch_feeds(feeds: Sequence[Mapping[str, np.ndarray]], batch: int) -> list[dict[str, np.ndarray]]:
    """``feeds`` concatenated on axis 0, ``batch`` at a time (the last group may be smaller)."""
    groups = []
    for start in range(0, len(feeds), batch):
        chunk = [feeds[i] for i in range(start, min(start + batch, len(feeds)))]
        groups.append({name: np.concatenate([np.asarray(f[name]) for f in chunk]) for name in chunk[0]})
    return groups


def split_outputs(outputs: Mapping[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
    """The outputs of ``count`` concatenated feeds, split back into one dict per feed (axis 0)."""
    return [{name: part for name, part in zip(outputs, parts)}
            for parts in zip(*(np.split(np.asarray(v), count) for v in outputs.values()))]


def probe(
    run: Callable[[bytes, Sequence[Mapping[str, np.ndarray]], Callable], object],
    model: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    batch: int,
) -> bool:
    """Whether ``model`` computes the first ``batch`` feeds (at least 2) batched as it does one at a time:
    ``run(model_bytes, feeds, on_output)`` runs a model (see :meth:`Backend.run`)."""
    feeds = list(feeds)[: max(2, batch)]
    if len(feeds) < 2 or any(np.asarray(v).ndim == 0 or np.asarray(v).shape[0] != 1 for f in feeds for v in f.values()):
        return False
    single: list[dict[str, np.ndarray]] = []
    batched: list[dict[str, np.ndarray]] = []
    try:
        run(model.SerializeToString(), feeds, lambda i, out: single.append(dict(out)))
        run(batchable(model).SerializeToString(), batch_feeds(feeds, len(feeds)), lambda i, out: batched.append(dict(out)))
        parts = split_outputs(batched[0], len(feeds))
    except Exception:  # noqa: BLE001 - a model that cannot batch, whatever ONNX Runtime says about it
        return False
    for alone, together in zip(single, parts):
        for name, value in alone.items():
            other = together.get(name)
            if other is None or other.shape != value.shape:
                return False
            scale = max(1.0, float(np.max(np.abs(value))) if value.size else 1.0)
            if value.size and not np.allclose(other, value, rtol=0, atol=PROBE_TOLERANCE * scale, equal_nan=True):
                return False
    return True
