#!/usr/bin/env python
"""Independent fake-quantisation simulator used to verify the planted models.

For a model, a recipe (``trt`` or ``extended``) and a set of INT8 candidate
nodes it builds a QDQ copy of the model with onnx.helper (QuantizeLinear /
DequantizeLinear pairs on activations, fake-quantised constants) and measures
rel-l2 = ||y - r|| / ||r|| against the FP32 model over an evaluation set
(worst output decides).

Placement rules (mirroring precision_lab's):
* trt candidates: Conv, ConvTranspose, Gemm, MatMul.  INT8 => per-tensor
  symmetric int8 on each activation input (scale = amax/127, amax = max|x| over
  calibration), per-output-channel symmetric int8 on constant weights (Conv /
  ConvTranspose: axis 0 / 1, MatMul constant B: last axis, Gemm B: axis 0 if
  transB else 1).  Biases stay FP32, outputs are not quantised.
  An Add with an input produced directly by an INT8 Conv gets its other
  input(s) per-tensor quantised as well.
* extended adds Add, Mul, Concat, MaxPool, AveragePool, GlobalAveragePool,
  Resize: activation inputs and the output are per-tensor quantised, constant
  inputs of Add/Mul per-tensor; Concat uses one scale (amax of its output) for
  all inputs and the output.

Flags: a value that must pass is OK below 0.5 x tolerance, WEAK up to the
tolerance, BAD above it; a value that must fail is OK above 3 x tolerance,
WEAK above the tolerance, BAD otherwise.  Rows marked "info" are not checked.
The exit status is 1 if any row is BAD.

Usage::

    python sample_models/check_planted.py                 # all models, U(0,1) and N(0,1)
    python sample_models/check_planted.py plain_cnn.onnx --dist normal
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from generate import EXPECTED  # noqa: E402

TRT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
EXT_OPS = TRT_OPS | {"Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Resize"}


def candidates(model: onnx.ModelProto, recipe: str) -> list[str]:
    ops = TRT_OPS if recipe == "trt" else EXT_OPS
    return [n.name for n in model.graph.node if n.op_type in ops]


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def make_inputs(shape, n: int, dist: str, rng: np.random.Generator) -> list[np.ndarray]:
    if dist == "uniform":
        return [rng.random(shape).astype(np.float32) for _ in range(n)]
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def calibrate(model: onnx.ModelProto, feeds: list[np.ndarray]) -> dict[str, float]:
    """amax (max |x|) of every float tensor in the graph over the calibration set."""
    m = onnx.shape_inference.infer_shapes(model)
    float_t = {vi.name for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)
               if vi.type.tensor_type.elem_type == TensorProto.FLOAT}
    m2 = onnx.ModelProto()
    m2.CopyFrom(model)
    existing = {o.name for o in m2.graph.output}
    names = [t for n in m2.graph.node for t in n.output if t in float_t and t not in existing]
    for t in names:
        m2.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    sess = _session(m2)
    outs = [o.name for o in sess.get_outputs()]
    amax = {"input": 0.0}
    for x in feeds:
        amax["input"] = max(amax["input"], float(np.abs(x).max()))
        for name, val in zip(outs, sess.run(outs, {"input": x})):
            amax[name] = max(amax.get(name, 0.0), float(np.abs(val).max()))
    return amax


def fq_np(w: np.ndarray, axis: int | None) -> np.ndarray:
    """Symmetric int8 fake quantisation of a constant (per-tensor or per-channel)."""
    if axis is None:
        amax = np.abs(w).max()
    else:
        red = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
        amax = np.abs(w).max(axis=red, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    return (np.clip(np.round(w / scale), -128, 127) * scale).astype(w.dtype)


def quantize_model(model: onnx.ModelProto, recipe: str, int8: set[str], amax: dict[str, float]) -> onnx.ModelProto:
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    const_outs = {n.output[0] for n in g.node if n.op_type == "Constant"}
    producer = {o: n for n in g.node for o in n.output}
    new_inits: list[onnx.TensorProto] = []
    new_nodes: list[onnx.NodeProto] = []
    counter = [0]

    def uid(prefix):
        counter[0] += 1
        return f"{prefix}__fq{counter[0]}"

    def is_const(t):
        return t in inits or t in const_outs

    def qdq(t: str, a: float) -> tuple[list[onnx.NodeProto], str]:
        scale = max(a, 1e-12) / 127.0
        base = uid(t)
        s = numpy_helper.from_array(np.array(scale, np.float32), base + "_scale")
        z = numpy_helper.from_array(np.array(0, np.int8), base + "_zp")
        new_inits.extend([s, z])
        q = helper.make_node("QuantizeLinear", [t, s.name, z.name], [base + "_q"], name=base + "_Q")
        d = helper.make_node("DequantizeLinear", [base + "_q", s.name, z.name], [base + "_dq"], name=base + "_DQ")
        return [q, d], base + "_dq"

    def fq_const(t: str, axis: int | None) -> str:
        name = uid(t)
        new_inits.append(numpy_helper.from_array(fq_np(inits[t], axis), name))
        return name

    for n in g.node:
        pre: list[onnx.NodeProto] = []
        post: list[onnx.NodeProto] = []
        n2 = onnx.NodeProto()
        n2.CopyFrom(n)
        op = n.op_type
        if n.name in int8 and op in TRT_OPS:
            for i, t in enumerate(n.input):
                if not t:
                    continue
                if i == 1 and t in inits:  # weights, per output channel
                    if op == "Conv":
                        axis = 0
                    elif op == "ConvTranspose":
                        axis = 1
                    elif op == "MatMul":
                        axis = -1
                    else:  # Gemm
                        transb = next((a.i for a in n.attribute if a.name == "transB"), 0)
                        axis = 0 if transb else 1
                    n2.input[i] = fq_const(t, axis)
                elif op == "Gemm" and i == 2:
                    continue  # bias stays FP32
                elif op in ("Conv", "ConvTranspose") and i == 2:
                    continue
                elif not is_const(t):
                    nodes, out = qdq(t, amax[t])
                    pre += nodes
                    n2.input[i] = out
        elif n.name in int8 and op in EXT_OPS:  # non-weighted op in extended recipe
            if op == "Concat":
                a = amax[n.output[0]]
                for i, t in enumerate(n.input):
                    nodes, out = qdq(t, a)
                    pre += nodes
                    n2.input[i] = out
            else:
                n_act = 1 if op == "Resize" else len(n.input)
                for i, t in enumerate(n.input[:n_act]):
                    if is_const(t):
                        if t in inits and op in ("Add", "Mul"):
                            n2.input[i] = fq_const(t, None)
                        continue
                    nodes, out = qdq(t, amax[t])
                    pre += nodes
                    n2.input[i] = out
            # output quantisation
            o = n.output[0]
            n2.output[0] = o + "__prequant"
            nodes, out = qdq(n2.output[0], amax[o])
            nodes[-1].output[0] = o
            post += nodes
        elif op == "Add" and recipe == "trt":
            # residual-Add rule: other input of an Add fed by an INT8 Conv
            from_conv = [i for i, t in enumerate(n.input)
                         if t in producer and producer[t].op_type == "Conv" and producer[t].name in int8]
            if from_conv:
                for i, t in enumerate(n.input):
                    if i in from_conv and len(from_conv) == 1:
                        continue
                    if is_const(t):
                        continue
                    nodes, out = qdq(t, amax[t])
                    pre += nodes
                    n2.input[i] = out
        new_nodes += pre + [n2] + post

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.node[:]
    m.graph.node.extend(new_nodes)
    m.graph.initializer.extend(new_inits)
    return m


def rel_l2(model: onnx.ModelProto, qmodel: onnx.ModelProto, feeds: list[np.ndarray]) -> float:
    s0, s1 = _session(model), _session(qmodel)
    outs = [o.name for o in s0.get_outputs()]
    worst = 0.0
    r_all = [[] for _ in outs]
    y_all = [[] for _ in outs]
    for x in feeds:
        for k, (r, y) in enumerate(zip(s0.run(outs, {"input": x}), s1.run(outs, {"input": x}))):
            r_all[k].append(r.ravel())
            y_all[k].append(y.ravel())
    for r, y in zip(r_all, y_all):
        r, y = np.concatenate(r).astype(np.float64), np.concatenate(y).astype(np.float64)
        worst = max(worst, float(np.linalg.norm(y - r) / max(np.linalg.norm(r), 1e-30)))
    return worst


class Checker:
    def __init__(self, path: Path, recipe: str, dist: str, n_calib: int = 32, n_eval: int = 16, seed: int = 0):
        self.model = onnx.load(str(path))
        self.recipe = recipe
        shape = [d.dim_value for d in self.model.graph.input[0].type.tensor_type.shape.dim]
        rng = np.random.default_rng(seed)
        calib = make_inputs(shape, n_calib, dist, rng)
        self.eval = make_inputs(shape, n_eval, dist, rng)
        self.amax = calibrate(self.model, calib)
        self.cands = candidates(self.model, recipe)

    def err(self, int8) -> float:
        return rel_l2(self.model, quantize_model(self.model, self.recipe, set(int8), self.amax), self.eval)


def check(fname: str, dist: str, recipe: str | None = None, verbose: bool = True,
          n_calib: int = 32, n_eval: int = 16, seed: int = 0) -> bool:
    exp = EXPECTED[fname]
    recipe = recipe or exp["recipe"]
    tol, planted = exp["tolerance"], exp["planted"]
    c = Checker(HERE / fname, recipe, dist, n_calib, n_eval, seed)
    allc = set(c.cands)
    ok = True
    rows = []

    def row(label, val, want):  # want: "pass" (< 0.5 tol), "fail" (> 3 tol), None (info)
        nonlocal ok
        flag = ""
        if want == "pass":
            flag = "OK" if val < 0.5 * tol else ("WEAK" if val <= tol else "BAD")
        elif want == "fail":
            flag = "OK" if val > 3 * tol else ("WEAK" if val > tol else "BAD")
        if flag in ("BAD",):
            ok = False
        rows.append((label, val, flag))

    row("all INT8", c.err(allc), "pass" if not planted else "fail")
    row("all INT8 except planted", c.err(allc - set(planted)), "pass")
    for p in planted:
        row(f"only planted {p} INT8", c.err({p}), "fail")
        row(f"all INT8 except planted, {p} back to INT8", c.err(allc - set(planted) | {p}), "fail")
    if len(planted) > 1:
        for p in planted:
            row(f"all INT8 with only {p} pinned", c.err(allc - {p}), "fail")
    for cand in c.cands:
        if cand not in planted:
            row(f"only {cand} INT8", c.err({cand}), "pass")
    # informational: the same model under the other recipe
    other = "extended" if recipe == "trt" else "trt"
    c2 = Checker(HERE / fname, other, dist, n_calib, n_eval, seed)
    all2 = set(c2.cands)
    if recipe == "extended":
        row(f"[{other}] all INT8", c2.err(all2), "pass")
    else:
        row(f"[{other}, info] all INT8 except planted", c2.err(all2 - set(planted)), None)
    if verbose:
        print(f"\n== {fname}  recipe={recipe}  dist={dist}  tol={tol}  planted={planted}  "
              f"candidates={len(c.cands)}  n_calib={n_calib} n_eval={n_eval} seed={seed}")
        for label, val, flag in rows:
            print(f"  {label:<55s} {val:10.5f}  {flag}")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=list(EXPECTED))
    ap.add_argument("--dist", choices=["uniform", "normal", "both"], default="both")
    ap.add_argument("--recipe", choices=["trt", "extended"], default=None,
                    help="override the model's expected recipe (informational)")
    ap.add_argument("--n-calib", type=int, default=32)
    ap.add_argument("--n-eval", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="seed of the calibration/evaluation generator")
    args = ap.parse_args(argv)
    dists = ["uniform", "normal"] if args.dist == "both" else [args.dist]
    ok = True
    for fname in args.models:
        for d in dists:
            ok &= check(Path(fname).name, d, args.recipe, n_calib=args.n_calib, n_eval=args.n_eval, seed=args.seed)
    print("\nALL CHECKS OK" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
