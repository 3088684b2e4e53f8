"""Build ``residual_branches.ort_qdq.onnx``: ONNX Runtime's ``quantize_static`` QDQ model of
``sample_models/residual_branches.onnx``, the second user-Q/DQ format for the ``--qdq-model`` tests (issue 14).

Settings: ``QuantFormat.QDQ``, per-channel symmetric int8 weights, int8 activations with
``ActivationSymmetric=True`` (zero points 0), MinMax calibration on the 32 inputs of ``make_calibration.py``,
every op type ONNX Runtime quantizes by default. Needs only onnx, numpy and onnxruntime (precision-lab's venv):

    .venv/bin/python sample_models/modelopt/make_ort_qdq.py [--out PATH]

The FP32 model is passed as a ModelProto, so the file in sample_models/ is never touched. Deterministic: running it
twice gives byte-identical files with the same onnxruntime version (README.md gives the version used).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_calibration import calibration_array

FP32_MODEL = HERE.parent / "residual_branches.onnx"


class ArrayReader(CalibrationDataReader):
    """Feeds the rows of a stacked array one at a time as ``{input_name: row}``."""

    def __init__(self, name: str, array: np.ndarray):
        self._feeds = iter([{name: array[i : i + 1]} for i in range(array.shape[0])])

    def get_next(self):
        return next(self._feeds, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "residual_branches.ort_qdq.onnx")
    args = parser.parse_args(argv)
    model = onnx.load(str(FP32_MODEL))
    quantize_static(
        model,
        str(args.out),
        ArrayReader(model.graph.input[0].name, calibration_array()),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
