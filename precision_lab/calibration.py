"""Activation ranges, computed once with ONNX Runtime's calibrators and cached on disk.

Every Q/DQ model of a sweep takes its scales from these ranges: no evaluation recalibrates. The cache key
is the prepared model's hash, the calibration data's fingerprint, the method and the tensors asked for.
Ranges are symmetric (``amax`` = largest magnitude), as TensorRT's explicit quantization needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from precision_lab.data import Feed
from precision_lab.errors import InputError
from precision_lab.io import write_text_atomic
from precision_lab.model import PreparedModel
from precision_lab.onnx_io import needs_external_data, save_model

__all__ = ["CALIBRATION_METHODS", "Ranges", "calibrate", "check_calibration", "DEFAULT_PERCENTILE"]

CALIBRATION_METHODS = ("max", "percentile", "entropy")
DEFAULT_PERCENTILE = 99.999
_CHUNK = 8  # feeds per collect_data call: bounds the memory of histogram calibrators


def check_calibration(method: str, percentile: float) -> None:
    """Raise a one-line :class:`InputError` for an unknown ``method`` or a percentile outside (0, 100]."""
    if method not in CALIBRATION_METHODS:
        raise InputError(f"unknown --calibration '{method}'; choose one of {', '.join(CALIBRATION_METHODS)}")
    if not 0 < percentile <= 100:
        raise InputError(f"--percentile must be in (0, 100], got {percentile}")


@dataclass(frozen=True)
class Ranges:
    """Symmetric activation ranges: tensor name -> amax (largest magnitude kept)."""

    method: str
    key: str
    amax: dict[str, float]
    samples: int

    def get(self, tensor: str) -> float:
        try:
            return self.amax[tensor]
        except KeyError:
            raise InputError(
                f"no calibration range for tensor '{tensor}' (shape inference could not type it); "
                "re-export the model with shapes or pass --input-shape"
            ) from None

    def to_json(self) -> dict:
        return {"method": self.method, "key": self.key, "samples": self.samples, "amax": self.amax}

    @classmethod
    def from_json(cls, data: dict) -> Ranges:
        return cls(data["method"], data["key"], {k: float(v) for k, v in data["amax"].items()}, data["samples"])


class _FeedReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list of feeds."""

    def __init__(self, feeds: Iterable[Feed]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> Feed | None:
        return next(self._feeds, None)


def _ensure_float_types(model: onnx.ModelProto, tensors: Iterable[str]) -> None:
    """Give tensors that shape inference left untyped a float value_info, so the calibrator sees them."""
    typed = {vi.name for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    for name in tensors:
        if name not in typed:
            model.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))


def _cache_key(prepared: PreparedModel, fingerprint: str, method: str, tensors: Sequence[str], percentile: float) -> str:
    text = json.dumps([prepared.prepared_sha256, fingerprint, method, percentile, sorted(tensors)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def calibrate(
    prepared: PreparedModel,
    feeds: Sequence[Feed],
    *,
    tensors: Sequence[str],
    fingerprint: str,
    method: str = "max",
    percentile: float = DEFAULT_PERCENTILE,
    cache_dir: str | os.PathLike | None = None,
) -> Ranges:
    """Ranges of ``tensors`` over ``feeds`` by ``method`` (``max`` default, ``percentile``, ``entropy``).

    ``fingerprint`` identifies the feeds (see :func:`precision_lab.data.feeds_fingerprint`). With
    ``cache_dir``, a cached result with the same key is returned without running anything.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    check_calibration(method, percentile)
    tensors = sorted(set(tensors))
    key = _cache_key(prepared, fingerprint, method, tensors, percentile)
    cache_file = Path(cache_dir) / f"ranges-{key}.json" if cache_dir is not None else None
    if cache_file is not None and cache_file.exists():
        return Ranges.from_json(json.loads(cache_file.read_text()))

    model = onnx.ModelProto()
    model.CopyFrom(prepared.model)
    _ensure_float_types(model, tensors)
    wanted = set(tensors)
    op_types = sorted({node.op_type for node in model.graph.node if wanted & (set(node.input) | set(node.output))})
    ort_method = {
        "max": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    with tempfile.TemporaryDirectory(prefix="precision-lab-calib-") as tmp:
        model_path = Path(tmp) / "model.onnx"
        save_model(model, model_path)
        calibrator = create_calibrator(
            model_path,
            op_types,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=ort_method,
            use_external_data_format=needs_external_data(model),
            extra_options={"symmetric": True, "percentile": percentile},
        )
        for start in range(0, len(feeds), _CHUNK):
            calibrator.collect_data(_FeedReader(feeds[start : start + _CHUNK]))
        computed = calibrator.compute_data()
    amax: dict[str, float] = {}
    for name in tensors:
        if name in computed:
            low, high = computed[name].range_value
            amax[name] = float(np.max(np.abs(np.concatenate([np.ravel(low), np.ravel(high)]))))
    ranges = Ranges(method=method, key=key, amax=amax, samples=len(feeds))
    if cache_file is not None:
        write_text_atomic(cache_file, json.dumps(ranges.to_json(), sort_keys=True))
    return ranges
