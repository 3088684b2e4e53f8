"""List, node input by node input, where a user's Q/DQ model (ModelOpt, ONNX Runtime ``quantize_static``, a QAT
export) quantizes its FP32 model, as JSON; optionally measure its all-INT8 rel-l2 against the FP32 model.

Used to compare ModelOpt's INT8 placement with precision-lab's recipes (issue 14, docs/modelopt.md). It needs
only onnx, numpy and onnxruntime, so it runs in precision-lab's venv or in a ModelOpt venv; when ModelOpt is
importable (``/opt/modelopt-venv/bin/python``) it also names the ModelOpt rule that skipped each unquantized
Conv/Gemm/MatMul (``modelopt.onnx.quantization.graph_utils.find_nodes_from_convs_to_exclude``).

    python benchmarks/modelopt_placement.py FP32.onnx QDQ.onnx [--data X.npy|X.npz] [--out listing.json]

``--data``: a .npy array stacked on axis 0 for a single-input model, or a .npz keyed by input name (ModelOpt's
``--calibration_data_path`` format); every ``batch`` rows are one run. Both models run in ONNX Runtime on the CPU
with graph optimizations disabled; rel-l2 = ||y - r||_2 / ||r||_2 over all rows, per output (pairs by name),
and ``worst`` is the largest. Measure FP16 Q/DQ models (ModelOpt's default ``--high_precision_dtype fp16``)
with onnxruntime >= 1.32 (precision-lab's venv): onnxruntime 1.24.4, which ``nvidia-modelopt[onnx]`` installs as
onnxruntime-gpu, truncates instead of rounding in a FLOAT16 QuantizeLinear on the CPU (docs/modelopt.md).

One JSON row per quantized node input (``inputs``):
  tensor            the FP32 tensor (or initializer) that is quantized
  consumer          consumer node name; op_type; index (input index of that consumer)
  kind              "weight" (source is an initializer), "bias" (an initializer at input 2 of Conv/ConvTranspose/
                    Gemm: ``quantize_static`` quantizes biases to int32) or "activation"
  storage           weights: "float_init+Q+DQ" (FP32 initializer -> QuantizeLinear -> DequantizeLinear) or
                    "int8_init+DQ" (pre-quantized initializer -> DequantizeLinear); activations: "Q+DQ"
  axis              per-channel axis (a 1-D scale, or a DQ with an explicit axis), or null for per-tensor
  scale_dtype, scale_shape, zero_point_dtype, zero_point_all_zero, zero_point_values (up to 8)
  scale             per-tensor scale value (activations; amax = scale * 127 for symmetric int8)
  q_node, dq_node   names of the Q and DQ nodes; dq_consumers: how many nodes read that DQ output (> 1: a
                    Q/DQ shared by several consumers, which ModelOpt and ``quantize_static`` produce by default)
  via_cast          true if a Cast sits between the DQ and the consumer (FP16 conversion)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
BIASED = {"Conv", "ConvTranspose", "Gemm"}


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            a = node.attribute[0]
            if a.name == "value":
                values[node.output[0]] = numpy_helper.to_array(a.t)
    return values


def _dtype_name(array: np.ndarray | None) -> str | None:
    return None if array is None else str(array.dtype)


def list_placement(fp32: onnx.ModelProto, qdq: onnx.ModelProto) -> dict:
    """The placement listing (see module docstring) of ``qdq`` against its FP32 model ``fp32``."""
    consts = _constants(qdq)
    fp32_inits = {i.name for i in fp32.graph.initializer}
    producer = {out: n for n in qdq.graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in qdq.graph.node:
        for name in n.input:
            consumers[name].append(n)
    fp32_nodes = {n.name: n for n in fp32.graph.node}

    rows = []
    for node in qdq.graph.node:
        if node.op_type in QDQ_OPS or node.op_type == "Cast":
            continue
        for index, name in enumerate(node.input):
            via_cast = False
            src = producer.get(name)
            if src is not None and src.op_type == "Cast":
                inner = producer.get(src.input[0])
                if inner is not None and inner.op_type == "DequantizeLinear":
                    src, via_cast = inner, True
            if src is None or src.op_type != "DequantizeLinear":
                continue
            dq = src
            q = producer.get(dq.input[0])
            scale = consts.get(dq.input[1])
            zp = consts.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
            if q is not None and q.op_type == "QuantizeLinear":
                tensor = q.input[0]
                # a Cast between the FP32 tensor and Q (FP16 conversion) hides the FP32 name
                p = producer.get(tensor)
                if p is not None and p.op_type == "Cast" and tensor not in fp32_inits:
                    tensor = p.input[0]
                is_weight = tensor in consts or tensor in fp32_inits
                storage = "float_init+Q+DQ" if is_weight else "Q+DQ"
            else:
                tensor = dq.input[0]
                is_weight = True
                storage = "int8_init+DQ"
            axis = None
            explicit_axis = _attr(dq, "axis", None)
            if scale is not None and scale.ndim == 1 and (scale.size > 1 or explicit_axis is not None):
                axis = int(explicit_axis if explicit_axis is not None else 1)
            block = _attr(dq, "block_size", 0)
            row = {
                "tensor": tensor,
                "consumer": node.name,
                "op_type": node.op_type,
                "index": index,
                "kind": ("bias" if is_weight and index == 2 and node.op_type in BIASED else "weight")
                if is_weight
                else "activation",
                "storage": storage,
                "axis": axis,
                "block_size": int(block) if block else None,
                "scale_dtype": _dtype_name(scale),
                "scale_shape": None if scale is None else list(scale.shape),
                "zero_point_dtype": _dtype_name(zp),
                "zero_point_all_zero": None if zp is None else bool(np.all(zp == 0)),
                "zero_point_values": None if zp is None else [int(v) for v in zp.reshape(-1)[:8]],
                "scale": float(scale.reshape(-1)[0]) if scale is not None and scale.size == 1 else None,
                "q_node": q.name if q is not None and q.op_type == "QuantizeLinear" else None,
                "dq_node": dq.name,
                "dq_consumers": len(consumers[dq.output[0]]),
                "via_cast": via_cast,
                "in_fp32_model": node.name in fp32_nodes,
            }
            rows.append(row)

    quantized_nodes: dict[str, str] = {}
    for r in rows:
        quantized_nodes[r["consumer"]] = r["op_type"]
    act_by_op = Counter(r["op_type"] for r in rows if r["kind"] == "activation")
    weight_by_op = Counter(r["op_type"] for r in rows if r["kind"] == "weight")
    bias_by_op = Counter(r["op_type"] for r in rows if r["kind"] == "bias")
    nodes_by_op = Counter(quantized_nodes.values())
    unquantized_weighted = [
        {"name": n.name, "op_type": n.op_type}
        for n in fp32.graph.node
        if n.op_type in WEIGHTED and n.name not in quantized_nodes
    ]
    qdq_only = Counter(n.op_type for n in qdq.graph.node)
    fp32_ops = Counter(n.op_type for n in fp32.graph.node)
    extra_ops = {k: v - fp32_ops.get(k, 0) for k, v in qdq_only.items() if v != fp32_ops.get(k, 0)}
    missing = sorted(set(fp32_nodes) - {n.name for n in qdq.graph.node})
    return {
        "summary": {
            "quantized_nodes_by_op_type": dict(sorted(nodes_by_op.items())),
            "activation_inputs_by_op_type": dict(sorted(act_by_op.items())),
            "weight_inputs_by_op_type": dict(sorted(weight_by_op.items())),
            "bias_inputs_by_op_type": dict(sorted(bias_by_op.items())),
            "fp32_weighted_nodes_by_op_type": dict(
                sorted(Counter(n.op_type for n in fp32.graph.node if n.op_type in WEIGHTED).items())
            ),
            "unquantized_weighted_nodes": unquantized_weighted,
            "op_count_difference_qdq_minus_fp32": dict(sorted(extra_ops.items())),
            "fp32_nodes_missing_in_qdq_model": missing,
            "shared_dq_outputs": sum(
                1 for n in qdq.graph.node if n.op_type == "DequantizeLinear" and len(consumers[n.output[0]]) > 1
            ),
            "opset": [(o.domain or "ai.onnx", o.version) for o in qdq.opset_import],
            "qdq_input_dtypes": sorted(
                {str(onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)) for i in qdq.graph.input}
            ),
        },
        "inputs": rows,
    }


def modelopt_skip_reasons(fp32_path: str, unquantized: list[dict]) -> dict[str, str]:
    """Reason ModelOpt's rules give for each unquantized weighted node, when ModelOpt is importable."""
    try:
        import onnx_graphsurgeon as gs
        from modelopt.onnx.quantization.graph_utils import find_nodes_from_convs_to_exclude
    except ImportError:  # ModelOpt not installed in this interpreter
        return {}
    import logging

    from modelopt.onnx.logging_config import logger as modelopt_logger

    modelopt_logger.setLevel(logging.ERROR)  # its INFO lines go to stdout, where the JSON goes
    graph = gs.import_onnx(onnx.load(fp32_path))
    small = set(find_nodes_from_convs_to_exclude(graph, quantize_mode="int8"))
    nodes = {n.name: n for n in graph.nodes}
    reasons = {}
    for item in unquantized:
        name = item["name"]
        node = nodes.get(name)
        if name in small:
            w = node.inputs[1]
            reasons[name] = (
                f"find_nodes_from_convs_to_exclude: weight {list(w.shape) if w.shape else None}, "
                f"group={node.attrs.get('group', 1)}, kernel_shape={node.attrs.get('kernel_shape')}: "
                "IC or OC < 16 and not an allowed small-channel INT8 config"
            )
        elif node is not None and node.op in ("Gemm", "MatMul"):
            reasons[name] = (
                "find_nodes_from_matmul_to_exclude (GEMV m or n == 1, or K/N < 16) or MHA rules; not re-derived here"
            )
        else:
            reasons[name] = "not derived (user exclusion, partition rule or input not reached)"
    return reasons


def _load_data(path: str, model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    loaded = np.load(path)
    data = {inputs[0].name: loaded} if isinstance(loaded, np.ndarray) else {k: loaded[k] for k in loaded.files}
    first = inputs[0]
    batch = first.type.tensor_type.shape.dim[0].dim_value or 1
    n = data[first.name].shape[0] // batch
    return [{k: v[i * batch : (i + 1) * batch] for k, v in data.items()} for i in range(n)]


def rel_l2(fp32_path: str, qdq_path: str, feeds: list[dict[str, np.ndarray]]) -> dict:
    """rel-l2 per output of the Q/DQ model against the FP32 model (ONNX Runtime CPU, optimizations off)."""
    import onnxruntime as ort

    def session(path):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    ref, test = session(fp32_path), session(qdq_path)
    names = [o.name for o in ref.get_outputs()]
    qdq_inputs = {i.name: i.type for i in test.get_inputs()}
    err = dict.fromkeys(names, 0.0)
    norm = dict.fromkeys(names, 0.0)
    for feed in feeds:
        r = dict(zip(names, ref.run(names, feed)))
        tfeed = {k: (v.astype(np.float16) if qdq_inputs.get(k) == "tensor(float16)" else v) for k, v in feed.items()}
        y = dict(zip(names, test.run(names, tfeed)))
        for k in names:
            rr, yy = r[k].astype(np.float64), y[k].astype(np.float64)
            err[k] += float(np.sum((yy - rr) ** 2))
            norm[k] += float(np.sum(rr**2))
    per_output = {k: (err[k] ** 0.5) / max(norm[k] ** 0.5, 1e-30) for k in names}
    return {
        "per_output": per_output,
        "worst": max(per_output.values()),
        "runs": len(feeds),
        "onnxruntime": ort.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fp32_model")
    parser.add_argument("qdq_model")
    parser.add_argument("--data", help=".npy (single input, stacked on axis 0) or .npz keyed by input name")
    parser.add_argument("--out", help="write the JSON here (default: stdout)")
    parser.add_argument("--command", help="the command that made QDQ_MODEL, recorded in the JSON")
    args = parser.parse_args(argv)

    fp32 = onnx.load(args.fp32_model)
    qdq = onnx.load(args.qdq_model)
    listing = {
        "fp32_model": str(Path(args.fp32_model)),
        "qdq_model": str(Path(args.qdq_model)),
        "command": args.command,
    }
    try:
        import modelopt

        listing["modelopt_version"] = getattr(modelopt, "__version__", None)
    except ImportError:
        listing["modelopt_version"] = None
    listing.update(list_placement(fp32, qdq))
    reasons = modelopt_skip_reasons(args.fp32_model, listing["summary"]["unquantized_weighted_nodes"])
    for item in listing["summary"]["unquantized_weighted_nodes"]:
        item["modelopt_reason"] = reasons.get(item["name"])
    if args.data:
        listing["rel_l2"] = rel_l2(args.fp32_model, args.qdq_model, _load_data(args.data, fp32))
    text = json.dumps(listing, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
