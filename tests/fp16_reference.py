#!/usr/bin/env python
"""Independent reference of the FP16 emulation and the three-level (INT8 / FP16 / FP32) numerics.

Imports nothing from ``precision_lab``: numpy, onnx and onnxruntime only. Given an FP32 ONNX model, the names
of its INT8, FP16 and FP32 nodes (the rest take ``default``), and calibration ranges, it rewrites the graph so
that plain ONNX Runtime (CPU, FP32 kernels) computes what the plan computes:

* **FP16 node**: every float activation input goes through ``Cast(to=FLOAT16) -> Cast(to=FLOAT)`` (a rounding
  to float16; overflow past 65504 becomes +-inf, as on the GPU), every float constant input is replaced by
  ``np.float16(w)`` (same rounding, a per-node copy), and every float output is rounded the same way. The
  arithmetic itself stays FP32 (storage precision and range are modelled; accumulation order and the kernels
  TensorRT picks are not).
* **FP32 node**: untouched.
* **INT8 node** (Conv, ConvTranspose, Gemm, MatMul, i.e. recipe ``trt``): each activation input gets
  symmetric per-tensor QuantizeLinear/DequantizeLinear (zero point 0, scale = amax / 127 from ``amax``),
  constant weights are fake-quantized per output channel (Conv axis 0, ConvTranspose 1, Gemm 0 with transB
  else 1, MatMul last axis), biases are not quantized. With ``int8_io="fp16"`` (the three-level world: an
  INT8 layer inside an FP16 region) the scales are float16 numbers, the dequantized weights and the bias are
  rounded to float16, and the activation inputs and outputs are rounded to float16 like an FP16 node's.
  With ``int8_io="fp32"`` (today's two-level plans) the scales and everything else stay FP32.
  Residual-Add rule (as ``sample_models/check_planted.py``): an Add fed directly by an INT8 Conv gets Q/DQ on
  its other input.

Run as a script, it proves the planted properties of the FP16 sample models listed in
``sample_models/expected_plans_fp16.json``::

    python tests/fp16_reference.py                       # both models, table of rel-l2 against FP32
    python tests/fp16_reference.py fp16_overflow_cnn.onnx

Data, as ``tests/conftest.py::write_random_feeds``: 48 feeds of ``np.random.default_rng(1).random(shape)``,
drawn feed after feed. Calibration (max |x| of every tensor of the FP32 model) uses the first 32 feeds,
the metric (rel-l2 = ||y - r|| / ||r|| over the whole set, worst output) the last 16.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"

INT8_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
FP16_MAX = 65504.0


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------

def to_fp16(a: np.ndarray) -> np.ndarray:
    """Round an FP32 array to float16 and back (overflow -> +-inf), keeping dtype float32."""
    with np.errstate(over="ignore"):
        return np.asarray(a, np.float32).astype(np.float16).astype(np.float32)


def session(model: onnx.ModelProto, optimize: bool = False) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor name (graph inputs, initializers, node outputs) after shape inference."""
    m = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {i.name: i.data_type for i in m.graph.initializer}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for n in m.graph.node:
        if n.op_type == "Constant":
            types[n.output[0]] = n.attribute[0].t.data_type if n.attribute[0].type == onnx.AttributeProto.TENSOR \
                else TensorProto.FLOAT
    return types


def make_feeds(model: onnx.ModelProto, count: int = 48, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Seeded uniform 0..1 feeds, exactly as tests/real_models.py::random_feeds writes them."""
    inits = {i.name for i in model.graph.initializer}
    specs = {}
    for v in model.graph.input:
        if v.name not in inits:
            shape = tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
            specs[v.name] = (shape, helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
    rng = np.random.default_rng(seed)
    return [{name: rng.random(s).astype(d) for name, (s, d) in specs.items()} for _ in range(count)]


def calibrate(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """max |x| of every float tensor (graph inputs and node outputs) of the FP32 model over ``feeds``."""
    types = elem_types(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for t in n.output:
            if t and t not in have and types.get(t) == TensorProto.FLOAT:
                m.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
                have.add(t)
    sess = session(m)
    names = [o.name for o in sess.get_outputs()]
    amax: dict[str, float] = {}
    for feed in feeds:
        for k, v in feed.items():
            amax[k] = max(amax.get(k, 0.0), float(np.abs(v).max()))
        for k, v in zip(names, sess.run(names, dict(feed))):
            amax[k] = max(amax.get(k, 0.0), float(np.abs(v).max()))
    return amax


def fake_quant_weight(w: np.ndarray, axis: int, fp16_scale: bool) -> np.ndarray:
    red = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    amax = np.abs(w).max(axis=red, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    if fp16_scale:
        scale = to_fp16(scale)
    q = np.clip(np.round(w / scale), -128, 127) * scale
    return (to_fp16(q) if fp16_scale else q).astype(np.float32)


def weight_axis(node: onnx.NodeProto) -> int:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "MatMul":
        return -1
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return 0 if trans_b else 1


# --------------------------------------------------------------------------------------------------------------
# the emulation
# --------------------------------------------------------------------------------------------------------------

def emulate(
    model: onnx.ModelProto,
    *,
    int8: Iterable[str] = (),
    fp16: Iterable[str] = (),
    fp32: Iterable[str] = (),
    default: str = "fp16",
    amax: Mapping[str, float] | None = None,
    int8_io: str | None = None,
) -> onnx.ModelProto:
    """A copy of ``model`` whose FP32 ONNX Runtime run computes the plan (see the module docstring).

    ``default`` ("fp16" or "fp32") is the precision of every node not named in ``int8``/``fp16``/``fp32``.
    ``int8_io`` defaults to ``default``.
    """
    int8, fp16, fp32 = set(int8), set(fp16), set(fp32)
    assert not (int8 & fp16 or int8 & fp32 or fp16 & fp32), "a node has two precisions"
    assert default in ("fp16", "fp32")
    int8_io = int8_io or default
    g = model.graph
    names = {n.name for n in g.node}
    missing = (int8 | fp16 | fp32) - names
    assert not missing, f"unknown nodes: {sorted(missing)}"
    if int8:
        assert amax is not None, "INT8 nodes need calibration ranges"
    types = elem_types(model)
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    const_outs = {n.output[0] for n in g.node if n.op_type == "Constant"}
    producer = {o: n for n in g.node for o in n.output}
    new_inits: list[onnx.TensorProto] = []
    counter = [0]

    def uid(base: str) -> str:
        counter[0] += 1
        return f"{base}__ref{counter[0]}"

    def prec(node: onnx.NodeProto) -> str:
        if node.name in int8:
            return "int8"
        if node.name in fp16:
            return "fp16"
        if node.name in fp32:
            return "fp32"
        return default

    def is_float(t: str) -> bool:
        return types.get(t) == TensorProto.FLOAT

    def is_const(t: str) -> bool:
        return t in inits or t in const_outs

    def round16(t: str) -> tuple[list[onnx.NodeProto], str]:
        base = uid(t)
        a = helper.make_node("Cast", [t], [base + "_h"], name=base + "_to16", to=TensorProto.FLOAT16)
        b = helper.make_node("Cast", [base + "_h"], [base + "_f"], name=base + "_to32", to=TensorProto.FLOAT)
        return [a, b], base + "_f"

    def const(t: str, value: np.ndarray) -> str:
        name = uid(t)
        new_inits.append(numpy_helper.from_array(np.asarray(value, inits[t].dtype), name))
        return name

    def qdq(t: str, a: float, fp16_scale: bool) -> tuple[list[onnx.NodeProto], str]:
        s = np.float32(max(a, 1e-12) / 127.0)
        if fp16_scale:
            s = np.float32(to_fp16(np.array(s)))
        base = uid(t)
        new_inits.append(numpy_helper.from_array(np.array(s, np.float32), base + "_scale"))
        new_inits.append(numpy_helper.from_array(np.array(0, np.int8), base + "_zp"))
        q = helper.make_node("QuantizeLinear", [t, base + "_scale", base + "_zp"], [base + "_q"], name=base + "_Q")
        d = helper.make_node("DequantizeLinear", [base + "_q", base + "_scale", base + "_zp"], [base + "_dq"],
                             name=base + "_DQ")
        return [q, d], base + "_dq"

    out_nodes: list[onnx.NodeProto] = []
    for n in g.node:
        p = prec(n)
        n2 = onnx.NodeProto()
        n2.CopyFrom(n)
        pre: list[onnx.NodeProto] = []
        post: list[onnx.NodeProto] = []
        round_io = p == "fp16" or (p == "int8" and int8_io == "fp16")
        if p == "int8":
            assert n.op_type in INT8_OPS, f"{n.name} ({n.op_type}) cannot run INT8 in recipe trt"
            for i, t in enumerate(n.input):
                if not t or not is_float(t):
                    continue
                if i == 1 and t in inits:                       # weights: per output channel
                    n2.input[i] = const(t, fake_quant_weight(inits[t], weight_axis(n), int8_io == "fp16"))
                elif i == 2 and is_const(t):                    # bias: not quantized
                    if round_io and t in inits:
                        n2.input[i] = const(t, to_fp16(inits[t]))
                elif is_const(t):
                    raise AssertionError(f"{n.name}: constant input {t} at position {i}")
                else:
                    nodes, cur = [], t
                    if round_io:
                        nodes, cur = round16(t)
                    more, cur = qdq(cur, amax[t], int8_io == "fp16")
                    nodes += more
                    if round_io:                                # DQ output lives in FP16
                        more, cur = round16(cur)
                        nodes += more
                    pre += nodes
                    n2.input[i] = cur
        elif p == "fp16":
            for i, t in enumerate(n.input):
                if not t or not is_float(t):
                    continue
                if t in inits:
                    n2.input[i] = const(t, to_fp16(inits[t]))
                else:
                    nodes, cur = round16(t)
                    pre += nodes
                    n2.input[i] = cur
        # residual-Add rule (precision-lab / TensorRT Conv + Add fusion): Add fed by an INT8 Conv
        if n.op_type == "Add" and p != "int8":
            from_conv = [i for i, t in enumerate(n.input)
                         if t in producer and producer[t].op_type == "Conv" and producer[t].name in int8]
            if from_conv:
                for i, t in enumerate(n.input):
                    if (i in from_conv and len(from_conv) == 1) or is_const(t) or not is_float(t):
                        continue
                    more, cur = qdq(n2.input[i], amax[t], int8_io == "fp16")
                    pre += more
                    n2.input[i] = cur
        if round_io:
            for i, t in enumerate(n.output):
                if t and is_float(t):
                    n2.output[i] = t + "__ref_pre16"
                    nodes, cur = round16(n2.output[i])
                    nodes[-1].output[0] = t
                    post += nodes
        out_nodes += pre + [n2] + post

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.node[:]
    m.graph.node.extend(out_nodes)
    m.graph.initializer.extend(new_inits)
    return m


# --------------------------------------------------------------------------------------------------------------
# metric
# --------------------------------------------------------------------------------------------------------------

def run(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], optimize: bool = False) -> dict[str, np.ndarray]:
    sess = session(model, optimize)
    names = [o.name for o in sess.get_outputs()]
    outs: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for feed in feeds:
        for k, v in zip(names, sess.run(names, dict(feed))):
            outs[k].append(np.asarray(v, np.float64).ravel())
    return {k: np.concatenate(v) for k, v in outs.items()}


def rel_l2(y: Mapping[str, np.ndarray], r: Mapping[str, np.ndarray]) -> float:
    """Worst output of ||y - r|| / ||r|| over the whole set; inf/nan when the candidate overflowed."""
    worst = 0.0
    for k, ref in r.items():
        with np.errstate(invalid="ignore", over="ignore"):
            v = float(np.linalg.norm(y[k] - ref) / max(np.linalg.norm(ref), 1e-30))
        if np.isnan(v):
            return float("nan")
        worst = max(worst, v)
    return worst


class Lab:
    """A model, its 48 feeds, the calibration ranges and the FP32 reference outputs."""

    def __init__(self, path: Path, n_feeds: int = 48, n_calib: int = 32, seed: int = 1):
        self.model = onnx.load(str(path))
        feeds = make_feeds(self.model, n_feeds, seed)
        self.calib, self.eval = feeds[:n_calib], feeds[n_calib:]
        self.amax = calibrate(self.model, self.calib)
        self.reference = run(self.model, self.eval)
        self.candidates = [n.name for n in self.model.graph.node if n.op_type in INT8_OPS]
        self.nodes = [n.name for n in self.model.graph.node]

    def value(self, optimize: bool = False, **plan) -> float:
        return rel_l2(run(emulate(self.model, amax=self.amax, **plan), self.eval, optimize), self.reference)


def planted_plan(expected: Mapping) -> tuple[set[str], set[str]]:
    prec = expected["precisions"]
    return ({k for k, v in prec.items() if v == "fp16"}, {k for k, v in prec.items() if v == "fp32"})


def prove(fname: str, expected: Mapping, verbose: bool = True, seed: int = 1) -> bool:
    """Prints rows of (label, rel-l2, expectation); returns True when every expectation holds.

    A value that must pass is OK up to half the tolerance, WEAK up to the tolerance, BAD above; a value that
    must fail is OK above 3x the tolerance (or inf/nan), WEAK above the tolerance, BAD otherwise."""
    lab = Lab(SAMPLES / fname, seed=seed)
    tol = expected["tolerance"]
    fp16_set, fp32_set = planted_plan(expected)
    cands = set(lab.candidates)
    int8_planted = cands - fp16_set - fp32_set
    rows: list[tuple[str, float, str | None]] = []

    def row(label: str, want: str | None, **plan) -> float:
        v = lab.value(**plan)
        rows.append((label, v, want))
        return v

    row("all FP32", "pass", default="fp32")
    row("all FP16", "fail", default="fp16")
    row("all FP16 except planted FP32 nodes", "pass", default="fp16", fp32=fp32_set)
    row("all INT8 (rest FP16)", "fail", default="fp16", int8=cands)
    row("all INT8 (rest FP32, two-level)", None, default="fp32", int8=cands)
    two = set(expected.get("two_level_planted", []))
    row("two-level plan: all INT8 except two_level_planted (rest FP32)", "pass", default="fp32",
        int8=cands - two)
    for node in sorted(two, key=lab.nodes.index):
        row(f"two-level plan, {node} FP32 -> INT8", "fail", default="fp32", int8=cands - two | {node})
    row("PLANTED three-level plan", "pass", default="fp16", int8=int8_planted, fp32=fp32_set)
    v_opt = lab.value(optimize=True, default="fp16", int8=int8_planted, fp32=fp32_set)
    rows.append(("  same, ORT_ENABLE_ALL (Cast pairs kept?)", v_opt, "pass"))
    for node in sorted(fp32_set, key=lab.nodes.index):
        row(f"planted, {node} FP32 -> FP16", "fail", default="fp16", int8=int8_planted, fp32=fp32_set - {node})
    for node in sorted(fp16_set, key=lab.nodes.index):
        row(f"planted, {node} FP16 -> INT8", "fail", default="fp16", int8=int8_planted | {node},
            fp32=fp32_set)
    for node in sorted(fp32_set & cands, key=lab.nodes.index):
        row(f"[info] planted, {node} FP32 -> INT8", None, default="fp16", int8=int8_planted | {node},
            fp32=fp32_set - {node})
    for node in sorted(int8_planted, key=lab.nodes.index):
        row(f"[info] planted, {node} INT8 -> FP16", None, default="fp16", int8=int8_planted - {node},
            fp32=fp32_set)
    # every non-planted candidate alone in INT8 (rest FP16 but the FP32 nodes) stays well inside
    worst_single = max(lab.value(default="fp16", int8={c}, fp32=fp32_set) for c in int8_planted)
    rows.append(("worst single INT8 candidate (planted FP32 kept)", worst_single, "pass"))
    ok = True
    if verbose:
        print(f"\n== {fname}  feeds seed {seed}  tolerance {tol} (rel-l2)  FP32: {sorted(fp32_set)}  FP16: {sorted(fp16_set)}  "
              f"INT8: {len(int8_planted)} of {len(cands)} candidates")
        print(f"   tensor amax > 65504 in the FP32 model (calibration): "
              f"{ {k: round(v) for k, v in lab.amax.items() if v > FP16_MAX} }")
    for label, v, want in rows:
        flag = ""
        if want == "pass":
            flag = "OK" if v <= 0.5 * tol else ("WEAK" if v <= tol else "BAD")
        elif want == "fail":
            flag = "OK" if (np.isnan(v) or v > 3 * tol) else ("WEAK" if v > tol else "BAD")
        ok &= flag != "BAD"
        if verbose:
            print(f"   {label:<58s} {v:12.5g}  {flag}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    expected_all = json.loads((SAMPLES / "expected_plans_fp16.json").read_text())
    ap.add_argument("models", nargs="*", default=sorted(expected_all))
    ap.add_argument("--seed", type=int, nargs="+", default=[1], help="seed(s) of the 48 feeds (default 1)")
    args = ap.parse_args(argv)
    ok = True
    for fname in args.models:
        for seed in args.seed:
            ok &= prove(Path(fname).name, expected_all[Path(fname).name], seed=seed)
    print("\nALL CHECKS OK" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
