"""Exporter quirks that preparation must absorb (docs/design.md, "Prepared model"), on small models built here.

- an opset 7 / IR 3 export (initializers listed as graph inputs, BatchNormalization with opset 7 attributes);
- shapes that ONNX shape inference cannot resolve (a ShuffleNet-style channel shuffle whose Reshape shapes
  are computed by ``Shape -> Gather -> Div -> Concat``), filled by symbolic inference or a probe run;
- weights in an external data file, and models written with external data past the protobuf limit.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import precision_lab
from precision_lab import model as model_module
from precision_lab.errors import InputError
from precision_lab.model import MIN_OPSET, list_candidates, prepare_model
from precision_lab.onnx_io import model_size_bytes, needs_external_data, save_model
from precision_lab.qdq import RECIPES

TRT = RECIPES["trt"]
RNG = np.random.default_rng(7)


def _f32(*shape, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _i64(value, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, np.int64), name)


def _run(model: onnx.ModelProto | str | os.PathLike, feed: dict) -> list[np.ndarray]:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(None, feed)


def _assert_same(expected: list[np.ndarray], got: list[np.ndarray], tol: float = 1e-5) -> None:
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol)


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _small_sweep(model_path, out, **kwargs):
    return precision_lab.sweep(
        str(model_path), out_dir=str(out), progress=False, calib_samples=4, eval_samples=2, **kwargs
    )


# ---------------------------------------------------------------------------------------------------------
# opset 7, IR 3
# ---------------------------------------------------------------------------------------------------------


def _opset7_model() -> onnx.ModelProto:
    """An old PyTorch-style export (opset 7, IR 3: every initializer is also a graph input)::

        x [1,3,8,8] -> Conv(W, B) -> BatchNormalization(spatial=1, epsilon=1e-3, momentum=0.9) -> Relu
                    -> Reshape(shape=[1, -1]) -> Gemm(transB=1) -> y [1,5]
    """
    initializers = [
        numpy_helper.from_array(_f32(4, 3, 3, 3, scale=0.5), "W"),
        numpy_helper.from_array(_f32(4), "B"),
        numpy_helper.from_array(RNG.uniform(0.5, 1.5, 4).astype(np.float32), "bn_scale"),
        numpy_helper.from_array(_f32(4), "bn_bias"),
        numpy_helper.from_array(_f32(4), "bn_mean"),
        numpy_helper.from_array(RNG.uniform(0.5, 1.5, 4).astype(np.float32), "bn_var"),
        _i64([1, -1], "flat_shape"),
        numpy_helper.from_array(_f32(5, 4 * 8 * 8, scale=0.1), "G"),
        numpy_helper.from_array(_f32(5), "G_bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"], name="bn",
            epsilon=1e-3, momentum=0.9, spatial=1,
        ),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "flat_shape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "G", "G_bias"], ["y"], name="fc", transB=1, alpha=1.0, beta=1.0),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])] + [
        helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)) for init in initializers
    ]
    graph = helper.make_graph(
        nodes, "opset7", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], initializers
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    onnx.checker.check_model(model)
    return model


def test_opset7_ir3_export_is_raised_and_keeps_its_outputs(tmp_path):
    path = tmp_path / "opset7.onnx"
    onnx.save(_opset7_model(), str(path))
    prepared = prepare_model(path)

    assert prepared.original_opset == 7
    assert _opset(prepared.model) >= MIN_OPSET
    assert prepared.model.ir_version >= 7  # what opset 13 needs
    assert [n.op_type for n in prepared.model.graph.node] == ["Conv", "Relu", "Reshape", "Gemm"]
    assert prepared.folded_batchnorms == ("bn",)
    assert [s.name for s in prepared.inputs] == ["x"]  # the weights are constants, not inputs
    assert [i.name for i in prepared.model.graph.input] == ["x"]
    onnx.checker.check_model(prepared.model)

    candidates = {c.name: c for c in list_candidates(prepared, op_types=TRT)}
    assert list(candidates) == ["conv", "fc"]
    assert candidates["conv"].output_shapes == ((1, 4, 8, 8),)
    assert candidates["fc"].input_shapes[0] == (1, 256)  # the Reshape's shape is known as a constant

    feed = {"x": RNG.random((1, 3, 8, 8), dtype=np.float32)}
    _assert_same(_run(path, feed), _run(prepared.model, feed))

    result = _small_sweep(path, tmp_path / "out")
    assert set(result.layers["name"]) == {"conv", "fc"}
    plan = onnx.load(str(tmp_path / "out" / "plan.onnx"))
    assert _run(plan, feed)[0].shape == (1, 5)


# ---------------------------------------------------------------------------------------------------------
# shape inference gaps
# ---------------------------------------------------------------------------------------------------------


def _channel_shuffle(src: str, prefix: str) -> tuple[list[onnx.NodeProto], str]:
    """PyTorch's ``x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, -1, h, w)`` as exported."""

    def n(suffix: str) -> str:
        return f"{prefix}/{suffix}"

    nodes = [helper.make_node("Shape", [src], [n("shape")], name=n("Shape"))]
    for index, dim in enumerate("bchw"):
        nodes.append(helper.make_node("Gather", [n("shape"), f"idx{index}"], [n(dim)], name=n(f"Gather_{dim}"), axis=0))
        nodes.append(helper.make_node("Unsqueeze", [n(dim), "axes0"], [n(f"{dim}_1d")], name=n(f"Unsqueeze_{dim}")))
    nodes += [
        helper.make_node("Div", [n("c"), "two"], [n("c_half")], name=n("Div")),
        helper.make_node("Unsqueeze", [n("c_half"), "axes0"], [n("c_half_1d")], name=n("Unsqueeze_c_half")),
        helper.make_node(
            "Concat", [n("b_1d"), "two_1d", n("c_half_1d"), n("h_1d"), n("w_1d")], [n("split_shape")],
            name=n("Concat_split"), axis=0,
        ),
        helper.make_node("Reshape", [src, n("split_shape")], [n("split")], name=n("Reshape_split")),
        helper.make_node("Transpose", [n("split")], [n("swapped")], name=n("Transpose"), perm=[0, 2, 1, 3, 4]),
        helper.make_node(
            "Concat", [n("b_1d"), "minus_one", n("h_1d"), n("w_1d")], [n("merge_shape")], name=n("Concat_merge"), axis=0
        ),
        helper.make_node("Reshape", [n("swapped"), n("merge_shape")], [n("out")], name=n("Reshape_merge")),
    ]
    return nodes, n("out")


def _shuffle_model() -> onnx.ModelProto:
    """Two ShuffleNet blocks with a dynamic batch; ONNX's data propagation stops at the ``Div``::

        x [batch,8,4,4] -> conv1 -> shuffle -> conv2 -> shuffle -> conv3 -> Reshape [0,-1] -> MatMul fc -> y

    ONNX shape inference leaves block1's output, conv2's output, block2 and conv3 untyped even with the batch
    fixed, and constant folding cannot fold block2's shape chain (it takes the Shape of an untyped tensor).
    """
    initializers = [_i64(i, f"idx{i}") for i in range(4)] + [
        _i64([0], "axes0"), _i64(2, "two"), _i64([2], "two_1d"), _i64([-1], "minus_one"), _i64([0, -1], "flat"),
        numpy_helper.from_array(_f32(8, 8, 3, 3, scale=0.2), "W1"),
        numpy_helper.from_array(_f32(8, 8, 3, 3, scale=0.2), "W2"),
        numpy_helper.from_array(_f32(8, 8, 3, 3, scale=0.2), "W3"),
        numpy_helper.from_array(_f32(128, 5, scale=0.1), "M"),
    ]
    nodes = [helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1] * 4)]
    block, out = _channel_shuffle("c1", "block1")
    nodes += block + [helper.make_node("Conv", [out, "W2"], ["c2"], name="conv2", pads=[1] * 4)]
    block, out = _channel_shuffle("c2", "block2")
    nodes += block + [
        helper.make_node("Conv", [out, "W3"], ["c3"], name="conv3", pads=[1] * 4),
        helper.make_node("Reshape", ["c3", "flat"], ["flat_out"], name="flatten"),
        helper.make_node("MatMul", ["flat_out", "M"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "shuffle",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


EXPECTED_SHUFFLE_SHAPES = {
    "conv1": (((2, 8, 4, 4), (8, 8, 3, 3)), ((2, 8, 4, 4),)),
    "conv2": (((2, 8, 4, 4), (8, 8, 3, 3)), ((2, 8, 4, 4),)),
    "conv3": (((2, 8, 4, 4), (8, 8, 3, 3)), ((2, 8, 4, 4),)),
    "fc": (((2, 128), (128, 5)), ((2, 5),)),
}


def _check_shuffle(prepared, path) -> None:
    candidates = list_candidates(prepared, op_types=TRT)
    assert {c.name: (c.input_shapes, c.output_shapes) for c in candidates} == EXPECTED_SHUFFLE_SHAPES
    assert model_module._shape_gaps(prepared.model) == []
    feed = {"x": RNG.random((2, 8, 4, 4), dtype=np.float32)}
    # the original through onnx.load: ONNX Runtime cannot read shape constants kept in external data itself
    _assert_same(_run(onnx.load(str(path)), feed), _run(prepared.model, feed))


def test_onnx_shape_inference_alone_leaves_the_shuffle_untyped(tmp_path):
    """The premise of the fallbacks: without them, conv3 and the MatMul's input have no static shape."""
    model = _shuffle_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    gaps = model_module._shape_gaps(inferred)
    assert "c3" in gaps and "flat_out" in gaps and "block1/out" in gaps


def test_shape_gaps_are_filled_and_the_sweep_runs(tmp_path):
    path = tmp_path / "shuffle.onnx"
    onnx.save(_shuffle_model(), str(path))
    prepared = prepare_model(path, input_shapes={"x": (2, 8, 4, 4)})
    _check_shuffle(prepared, path)
    # with every shape known, constant folding removed both shape chains
    assert "Shape" not in {n.op_type for n in prepared.model.graph.node}
    assert prepared.model.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 2

    result = _small_sweep(path, tmp_path / "out", input_shapes={"x": (2, 8, 4, 4)})
    assert set(result.layers["name"]) == {"conv1", "conv2", "conv3", "fc"}
    assert (tmp_path / "out" / "plan.onnx").exists()


def test_probe_run_fills_the_gaps_without_symbolic_inference(tmp_path, monkeypatch):
    monkeypatch.setattr(model_module, "_symbolic_shapes", lambda model, gaps: {})
    path = tmp_path / "shuffle.onnx"
    onnx.save(_shuffle_model(), str(path))
    _check_shuffle(prepare_model(path, input_shapes={"x": (2, 8, 4, 4)}), path)


def test_symbolic_inference_fills_the_gaps_without_a_probe_run(tmp_path, monkeypatch):
    pytest.importorskip("sympy", reason="ONNX Runtime's symbolic shape inference needs sympy")

    def no_run(model, gaps):
        raise AssertionError("symbolic shape inference should have typed everything")

    monkeypatch.setattr(model_module, "_run_shapes", no_run)
    path = tmp_path / "shuffle.onnx"
    onnx.save(_shuffle_model(), str(path))
    _check_shuffle(prepare_model(path, input_shapes={"x": (2, 8, 4, 4)}), path)


def test_probe_run_keeps_data_dependent_dims_symbolic():
    """``NonZero`` of zeros has 0 columns, of random inputs 16: that dimension stays symbolic."""
    graph = helper.make_graph(
        [
            helper.make_node("NonZero", ["x"], ["nz"], name="nonzero"),
            helper.make_node("Transpose", ["nz"], ["t"], name="transpose"),
            helper.make_node("Cast", ["t"], ["y"], name="cast", to=TensorProto.FLOAT),
        ],
        "nonzero",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    found = model_module._run_shapes(model, ["nz", "t"])
    dims = [[d.dim_value if d.HasField("dim_value") else d.dim_param for d in found[n].tensor_type.shape.dim] for n in ("nz", "t")]
    assert dims[0][0] == 2 and isinstance(dims[0][1], str)
    assert isinstance(dims[1][0], str) and dims[1][1] == 2
    assert found["nz"].tensor_type.elem_type == TensorProto.INT64


# ---------------------------------------------------------------------------------------------------------
# external data
# ---------------------------------------------------------------------------------------------------------


def _save_external(model: onnx.ModelProto, path) -> None:
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)


def test_model_with_external_data_loads_prepares_and_sweeps(tmp_path, monkeypatch):
    folder = tmp_path / "exported"
    folder.mkdir()
    path = folder / "shuffle.onnx"
    _save_external(_shuffle_model(), path)
    assert (folder / "weights.bin").exists() and path.stat().st_size < 4096
    monkeypatch.chdir(tmp_path)  # external data is found beside the model, not in the working directory

    prepared = prepare_model(path, input_shapes={"x": (2, 8, 4, 4)})
    _check_shuffle(prepared, path)
    assert all(init.data_location != TensorProto.EXTERNAL for init in prepared.model.graph.initializer)
    result = _small_sweep(path, tmp_path / "out", input_shapes={"x": (2, 8, 4, 4)})
    assert len(result.layers) == 4


def test_missing_external_data_names_the_file(tmp_path):
    path = tmp_path / "shuffle.onnx"
    _save_external(_shuffle_model(), path)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(InputError, match=r"weights\.bin.*beside the model"):
        prepare_model(path, input_shapes={"x": (2, 8, 4, 4)})


def test_preparation_through_files_past_the_protobuf_limit(tmp_path, monkeypatch):
    """With the in-memory limit lowered to 1 byte, checking and shape inference go through files (the path a
    model larger than 2 GB takes) and give the same prepared model."""
    path = tmp_path / "shuffle.onnx"
    onnx.save(_shuffle_model(), str(path))
    inline = prepare_model(path, input_shapes={"x": (2, 8, 4, 4)})
    monkeypatch.setattr(model_module, "_INLINE_LIMIT", 1)
    through_files = prepare_model(path, input_shapes={"x": (2, 8, 4, 4)})
    assert through_files.prepared_sha256 == inline.prepared_sha256
    _check_shuffle(through_files, path)


def test_save_model_uses_external_data_past_the_threshold(tmp_path):
    prepared = prepare_model(_write(tmp_path / "src.onnx", _shuffle_model()), input_shapes={"x": (2, 8, 4, 4)})
    model = prepared.model
    before = model.SerializeToString()
    assert model_size_bytes(model) > 1024 and not needs_external_data(model)
    feed = {"x": RNG.random((2, 8, 4, 4), dtype=np.float32)}
    expected = _run(model, feed)

    target = tmp_path / "out" / "plan.onnx"
    written = save_model(model, target, external_threshold_bytes=1024)
    data = tmp_path / "out" / "plan.onnx.data"
    assert written == [target, data]
    assert data.stat().st_size > 0 and target.stat().st_size < model_size_bytes(model)
    assert model.SerializeToString() == before  # the caller's model keeps its tensors
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["plan.onnx", "plan.onnx.data"]  # no temp left
    loaded = onnx.load(str(target))
    _assert_same(expected, _run(loaded, feed), tol=0)
    _assert_same(expected, _run(target, feed), tol=0)  # ONNX Runtime finds the data beside the file

    # a later, small write is one file again and removes the stale data file
    assert save_model(model, target) == [target]
    assert not data.exists()
    _assert_same(expected, _run(target, feed), tol=0)


def _write(path, model: onnx.ModelProto):
    onnx.save(model, str(path))
    return path


def test_weights_behind_identity_chains_are_quantized_per_channel(tmp_path):
    """
    W (initializer) -> Identity -> Identity -> Conv.W     (exporters emit such chains for tied/shared weights)
    x ---------------------------------------> Conv -> y

    Without folding the chain the weight is not a constant: it would be quantized per tensor as an activation,
    and no per-channel weight Q/DQ would exist.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from precision_lab.calibration import Ranges
    from precision_lab.model import list_candidates, prepare_model
    from precision_lab.qdq import QdqBuilder

    weight = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["W"], ["W1"], name="id1"),
            helper.make_node("Identity", ["W1"], ["W2"], name="id2"),
            helper.make_node("Conv", ["x", "W2"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(weight, "W")],
    )
    path = tmp_path / "identity_weights.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    prepared = prepare_model(path)
    assert not [n for n in prepared.model.graph.node if n.op_type == "Identity"]
    candidates = list_candidates(prepared, op_types=["Conv"])
    model = QdqBuilder(prepared, candidates, Ranges("max", "k", {"x": 1.0}, 1)).build([])
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute)]
    assert len(weight_dq) == 1 and weight_dq[0].output[0] in next(n for n in model.graph.node if n.name == "conv").input
