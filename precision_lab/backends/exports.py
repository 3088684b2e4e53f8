"""Command lines that build a plan with TensorRT's and ONNX Runtime's own tools.

``explicit`` (TensorRT >= 10, the only mode of TensorRT 11): ``plan.onnx`` built as a strongly typed network, so
its Q/DQ nodes alone decide which layers run INT8. ``implicit`` (TensorRT 10 only): the FP32 model built with
``--int8``, a calibration cache and per-layer FP32 precisions. ``onnxruntime``: ``plan.onnx`` opened with graph
optimizations off, the setting that reproduces precision-lab's numbers.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from precision_lab.errors import InputError

__all__ = [
    "MODES",
    "explicit_commands",
    "export_commands",
    "three_level_commands",
    "onnxruntime_snippet",
    "trtexec_layer_spec_problem",
]

MODES = ("explicit", "implicit")


def onnxruntime_snippet(plan_onnx: str | Path, *, one_line: bool = True) -> str:
    """Python that opens ``plan_onnx`` in ONNX Runtime the way precision-lab measured it (optimizations off):
    a ``python -c`` command line, or (``one_line=False``) a short script."""
    path = Path(plan_onnx).as_posix()
    if one_line:
        return (
            "python -c \"import onnxruntime as ort; o = ort.SessionOptions(); "
            "o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL; "
            f"s = ort.InferenceSession('{path}', o); print([i.name for i in s.get_inputs()])\""
        )
    return (
        "import onnxruntime as ort\noptions = ort.SessionOptions()\n"
        "options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # exact Q/DQ arithmetic\n"
        f"session = ort.InferenceSession({str(path)!r}, options)"
    )


def explicit_commands(plan_onnx: str | Path) -> dict[str, str]:
    """``trtexec``, ``polygraphy`` (build), ``polygraphy_compare`` (TensorRT vs ONNX Runtime) for the Q/DQ model
    ``plan_onnx`` built strongly typed, and the ``onnxruntime`` command line."""
    commands = export_commands(plan_onnx, mode="explicit")
    commands["onnxruntime"] = onnxruntime_snippet(plan_onnx)
    return commands


def trtexec_layer_spec_problem(name: str) -> str | None:
    """Why ``name`` cannot be written in trtexec's ``--layerPrecisions``/``--layerOutputTypes`` spec, if it cannot.

    trtexec splits the spec on ``,`` (no escaping), strips every ``'`` from layer names and treats ``*`` as
    "all other layers"; it splits name from precision at the *last* ``:``, so colons, ``/`` and spaces are fine.
    """
    if "," in name:
        return "contains ','"
    if "'" in name:
        return "contains a single quote"
    if name == "*":
        return "is '*' (trtexec's wildcard)"
    if not name:
        return "is empty"
    return None


def export_commands(
    plan_onnx: str | Path,
    *,
    mode: str = "explicit",
    fp32_layers: Sequence[str] = (),
    model_onnx: str | Path | None = None,
    calibration_cache: str | Path | None = None,
) -> dict[str, str]:
    """Shell command lines that build (and compare) the plan with TensorRT's own tools.

    ``explicit`` (TensorRT >= 10): ``plan_onnx`` (the Q/DQ model) built strongly typed; ``fp32_layers`` is not
    needed (the Q/DQ nodes carry the plan). ``implicit`` (TensorRT 10 only): ``model_onnx`` (the FP32 model)
    built with ``--int8``, the ``calibration_cache`` a TensorRT implicit sweep wrote, precision constraints
    obeyed and ``fp32_layers`` pinned to FP32. ``fp32_layers`` are TensorRT *layer* names
    (:meth:`TensorRTBackend.pinned_layer_names`); ONNX node names work for nodes TensorRT builds as one layer
    named after the node (Conv, Gemm, MatMul usually are). The engine is written next to ``plan_onnx``
    (``.engine``). Keys: ``trtexec``, ``polygraphy`` (build), ``polygraphy_compare`` (TensorRT vs ONNX
    Runtime). Polygraphy has no per-layer *output type* option, so its implicit commands pin layer precisions
    only. When a layer name cannot be written in trtexec's spec syntax, the ``trtexec`` entry is a shell
    comment saying which name and why.
    """
    if mode not in MODES:
        raise InputError(f"unknown TensorRT mode '{mode}'; choose one of {', '.join(MODES)}")
    q = shlex.quote
    plan_path = Path(plan_onnx)
    engine = str(plan_path.with_suffix(".engine"))
    if mode == "explicit":
        onnx_path = str(plan_path)
        return {
            "trtexec": f"trtexec {q('--onnx=' + onnx_path)} --stronglyTyped --noTF32 {q('--saveEngine=' + engine)}",
            "polygraphy": f"polygraphy convert {q(onnx_path)} --strongly-typed -o {q(engine)}",
            "polygraphy_compare": f"polygraphy run {q(onnx_path)} --trt --strongly-typed --onnxrt",
        }

    if model_onnx is None:
        raise InputError("implicit-mode export commands need model_onnx (the FP32 model TensorRT calibrates)")
    if calibration_cache is None:
        raise InputError(
            "implicit-mode export commands need calibration_cache (the calibration-*.cache file a TensorRT "
            "implicit sweep writes in <out>/cache/tensorrt/)"
        )
    model, cache = str(model_onnx), str(calibration_cache)
    names = list(dict.fromkeys(fp32_layers))

    problems = [(n, p) for n in names if (p := trtexec_layer_spec_problem(n)) is not None]
    if problems:
        listed = "; ".join(f"{n!r} {p}" for n, p in problems[:5])
        trtexec = f"# trtexec cannot pin these layers (its --layerPrecisions spec cannot express them): {listed}"
    else:
        parts = ["trtexec", q(f"--onnx={model}"), "--int8", q(f"--calib={cache}"), "--precisionConstraints=obey"]
        if names:
            parts.append(q("--layerPrecisions=" + ",".join(f"{n}:fp32" for n in names)))
            parts.append(q("--layerOutputTypes=" + ",".join(f"{n}:fp32" for n in names)))
        parts.append(q(f"--saveEngine={engine}"))
        trtexec = " ".join(parts)

    common = ["--int8", "--calibration-cache", q(cache), "--precision-constraints", "obey"]
    if names:
        common += ["--layer-precisions", *(q(f"{n}:float32") for n in names)]
    return {
        "trtexec": trtexec,
        "polygraphy": " ".join(["polygraphy", "convert", q(model), *common, "-o", q(engine)]),
        "polygraphy_compare": " ".join(["polygraphy", "run", q(model), "--trt", *common, "--onnxrt"]),
    }


def three_level_commands(
    plan_onnx: str | Path, qdq_fp32_onnx: str | Path, *, fp16_layers: Sequence[str], fp32_layers: Sequence[str]
) -> dict[str, str]:
    """Command lines that build a three-level (INT8 / FP16 / FP32) plan.

    ``trtexec``, ``polygraphy``, ``polygraphy_compare``: ``plan_onnx`` (the FP16 graph with FP32 islands and Q/DQ)
    built strongly typed, TensorRT 10 and 11 (11 ignores ``--stronglyTyped``: strongly typed is its only mode).
    ``trtexec_implicit``, ``polygraphy_implicit`` (TensorRT 10 only): ``qdq_fp32_onnx`` (the plan's Q/DQ model in
    FP32) with ``--int8 --fp16``, precision constraints obeyed, ``fp16_layers`` pinned FP16 and ``fp32_layers``
    FP32 (ONNX node names; TensorRT layer names can differ after fusion). Every trtexec line has ``--noTF32``:
    precision-lab's FP32 is true FP32 (Polygraphy builds without TF32 unless ``--tf32`` is given)."""
    q = shlex.quote
    plan_path, qdq_path = str(plan_onnx), str(qdq_fp32_onnx)
    engine = str(Path(plan_onnx).with_suffix(".engine"))
    commands = {
        "trtexec": f"trtexec {q('--onnx=' + plan_path)} --stronglyTyped --noTF32 {q('--saveEngine=' + engine)}",
        "polygraphy": f"polygraphy convert {q(plan_path)} --strongly-typed -o {q(engine)}",
        "polygraphy_compare": f"polygraphy run {q(plan_path)} --trt --strongly-typed --onnxrt",
        "onnxruntime": onnxruntime_snippet(plan_path),
    }
    pinned = [(n, "fp16") for n in dict.fromkeys(fp16_layers)] + [(n, "fp32") for n in dict.fromkeys(fp32_layers)]
    problems = [(n, p) for n, _ in pinned if (p := trtexec_layer_spec_problem(n)) is not None]
    if problems:
        listed = "; ".join(f"{n!r} {p}" for n, p in problems[:5])
        commands["trtexec_implicit"] = f"# trtexec cannot pin these layers (--layerPrecisions cannot express them): {listed}"
    else:
        parts = ["trtexec", q(f"--onnx={qdq_path}"), "--int8", "--fp16", "--precisionConstraints=obey"]
        if pinned:
            parts.append(q("--layerPrecisions=" + ",".join(f"{n}:{p}" for n, p in pinned)))
        parts += ["--noTF32", q(f"--saveEngine={engine}")]
        commands["trtexec_implicit"] = " ".join(parts)
    dtype = {"fp16": "float16", "fp32": "float32"}
    poly = ["polygraphy", "convert", q(qdq_path), "--int8", "--fp16", "--precision-constraints", "obey"]
    if pinned:
        poly += ["--layer-precisions", *(q(f"{n}:{dtype[p]}") for n, p in pinned)]
    commands["polygraphy_implicit"] = " ".join([*poly, "-o", q(engine)])
    return commands
