"""The plan in NVIDIA Model Optimizer's vocabulary: the ``python -m modelopt.onnx.quantization`` command that
rebuilds it from the FP32 model (docs/modelopt.md, sections 2 and 6).

ModelOpt reads each ``--nodes_to_exclude`` entry as a Python regex applied with ``re.match`` (a prefix match), so
every pinned node is written as ``^<re.escape(name)>$`` and shell-quoted. ``--high_precision_dtype fp32`` keeps
the excluded nodes FP32 (ModelOpt's default, fp16, converts the whole model to FP16). The calibration feeds a
sweep used are written as one ``.npz`` (one stacked array per input name), ModelOpt's
``--calibration_data_path`` layout.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "CALIBRATION_FILE",
    "CALIBRATION_METHODS",
    "MODELOPT_FLAGS",
    "exclusion_patterns",
    "modelopt_command",
    "modelopt_node_names",
    "write_calibration_data",
]

#: every flag the exported command uses; each is a flag of ModelOpt 0.47's ``get_parser()`` (docs/modelopt.md §2)
MODELOPT_FLAGS = (
    "--onnx_path",
    "--quantize_mode",
    "--calibration_method",
    "--calibration_data_path",
    "--calibration_eps",
    "--high_precision_dtype",
    "--nodes_to_exclude",
    "--output_path",
)
CALIBRATION_FILE = "modelopt_calibration.npz"
#: precision-lab's calibration method -> ModelOpt's (ModelOpt has no percentile; its closest is max)
CALIBRATION_METHODS = {"max": "max", "entropy": "entropy", "percentile": "max"}


def exclusion_patterns(names: Iterable[str]) -> list[str]:
    """One anchored regex per node name, ``^<re.escape(name)>$``, so ``conv1`` never also excludes ``conv10``."""
    return [f"^{re.escape(name)}$" for name in names]


def modelopt_node_names(model: str | Path) -> dict[str, str]:
    """precision-lab's name of each unnamed node of ``model`` -> the name ModelOpt gives it.

    precision-lab names an unnamed node ``<OpType>_<position>`` (``model._name_nodes``); ModelOpt 0.47
    (``modelopt.onnx.utils.name_onnx_nodes``) names it ``<OpType>_<k>``, where ``k`` starts at the number of
    distinct names in the graph (the empty name counts) and only grows on a collision. Named nodes keep their
    names on both sides (duplicate names, which precision-lab renames and ModelOpt does not, are left out)."""
    import onnx

    nodes = onnx.load(str(model), load_external_data=False).graph.node
    names = {node.name for node in nodes}
    taken = {node.name for node in nodes if node.name}
    start = len(names)
    mapping: dict[str, str] = {}
    for position, node in enumerate(nodes):
        if node.name:
            continue
        ours = f"{node.op_type}_{position}"
        theirs = f"{node.op_type}_{start}"
        while theirs in names:
            start += 1
            theirs = f"{node.op_type}_{start}"
        names.add(theirs)
        if ours not in taken:  # precision-lab adds a suffix on a collision; not translated
            mapping[ours] = theirs
    return mapping


def modelopt_command(
    model: str | Path,
    excluded: Sequence[str],
    *,
    calibration_method: str = "max",
    calibration_data: str | Path | None = None,
    output: str | Path | None = None,
) -> str:
    """The ModelOpt INT8 command that quantizes ``model`` with the nodes ``excluded`` left out of INT8.

    Defaults: ``max`` calibration, no data (ModelOpt then uses one random input), output beside the model
    (``<stem>.quant.onnx``). Names precision-lab gave unnamed nodes are written as ModelOpt names them
    (:func:`modelopt_node_names`)."""
    q = shlex.quote
    model = Path(model)
    if model.exists():
        renamed = modelopt_node_names(model)
        excluded = [renamed.get(name, name) for name in excluded]
    output = Path(output) if output is not None else model.with_name(f"{model.stem}.quant.onnx")
    parts = [
        "python -m modelopt.onnx.quantization",
        f"--onnx_path {q(str(model))}",
        "--quantize_mode int8",
        f"--calibration_method {CALIBRATION_METHODS.get(calibration_method, 'max')}",
    ]
    if calibration_data is not None:
        parts.append(f"--calibration_data_path {q(str(calibration_data))}")
    parts += ["--calibration_eps cpu", "--high_precision_dtype fp32"]
    if excluded:
        parts.append("--nodes_to_exclude " + " ".join(q(p) for p in exclusion_patterns(excluded)))
    parts.append(f"--output_path {q(str(output))}")
    return " ".join(parts)


def write_calibration_data(feeds: Sequence[Mapping[str, np.ndarray]], out: Path) -> Path | None:
    """Write ``feeds`` stacked on axis 0 as ``out/modelopt_calibration.npz``; ``None`` (and no file) when there are
    none or an input is a scalar, which ModelOpt's batch-split layout cannot hold (section 5.1 of docs/modelopt.md)."""
    path = Path(out) / CALIBRATION_FILE
    if not feeds or any(np.ndim(value) == 0 for value in feeds[0].values()):
        path.unlink(missing_ok=True)
        return None
    arrays = {name: np.concatenate([np.asarray(feed[name]) for feed in feeds], axis=0) for name in feeds[0]}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path
