"""Write the calibration data used to build the user-Q/DQ sample models in this folder.

32 inputs of seeded uniform 0..1 noise for ``sample_models/residual_branches.onnx`` (input ``input``,
``[1,3,32,32]``), stacked on axis 0 into one float32 array ``[32,3,32,32]``: the ``.npy`` layout that ModelOpt's
``--calibration_data_path`` expects for a single-input model (ModelOpt splits it into 32 runs of the model's batch
size 1). The same array calibrates ``make_ort_qdq.py``. It is the first 32 draws of ``np.random.default_rng(0)``,
as in ``sample_models/check_planted.py``; ``--eval`` writes the next 16 draws of that generator instead (the
evaluation inputs for the rel-l2 figures in README.md, disjoint from the calibration inputs).

    python sample_models/modelopt/make_calibration.py [--out PATH]   # default: residual_branches.calib.npy here
    python sample_models/modelopt/make_calibration.py --eval [--out PATH]   # default: residual_branches.eval.npy

Needs only numpy. The file is not committed (384 KiB); README.md gives its sha256.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHAPE = (1, 3, 32, 32)
COUNT = 32
EVAL_COUNT = 16
SEED = 0


def calibration_array(count: int = COUNT, seed: int = SEED) -> np.ndarray:
    """``count`` inputs of U(0,1) noise, float32, stacked on axis 0."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(SHAPE, dtype=np.float32) for _ in range(count)], axis=0)


def evaluation_array(count: int = EVAL_COUNT, seed: int = SEED) -> np.ndarray:
    """The ``count`` inputs that the same generator draws after the calibration inputs."""
    rng = np.random.default_rng(seed)
    draws = [rng.random(SHAPE, dtype=np.float32) for _ in range(COUNT + count)]
    return np.concatenate(draws[COUNT:], axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", action="store_true", help="write the 16 evaluation inputs instead")
    parser.add_argument("--out", type=Path, help="default: residual_branches.calib.npy (or .eval.npy) here")
    args = parser.parse_args(argv)
    array = evaluation_array() if args.eval else calibration_array()
    if args.out is None:
        args.out = HERE / ("residual_branches.eval.npy" if args.eval else "residual_branches.calib.npy")
    np.save(args.out, array)
    print(f"wrote {args.out} {array.shape} {array.dtype}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
