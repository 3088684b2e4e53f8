"""Writing ONNX models of any size, atomically.

A protobuf message cannot exceed 2 GB, so a model whose serialized size comes near that limit is written
with its tensors in an external data file ``<name>.data`` beside it (``onnx.load`` finds it there). Smaller
models are written as one self-contained file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import onnx

from precision_lab.io import write_bytes_atomic

__all__ = [
    "PROTOBUF_LIMIT",
    "DEFAULT_EXTERNAL_THRESHOLD",
    "model_size_bytes",
    "needs_external_data",
    "external_data_name",
    "save_model",
    "model_digest",
]

PROTOBUF_LIMIT = 2**31
DEFAULT_EXTERNAL_THRESHOLD = 2**31 - 2**24  # 16 MB below the limit: headroom for what is added later


def model_size_bytes(model: onnx.ModelProto) -> int:
    """Serialized size of ``model`` in bytes (without serializing it)."""
    return model.ByteSize()


def needs_external_data(model: onnx.ModelProto, threshold: int = DEFAULT_EXTERNAL_THRESHOLD) -> bool:
    """Whether ``model`` must be written with external data (its serialized size exceeds ``threshold``)."""
    return model_size_bytes(model) > threshold


def external_data_name(path: str | os.PathLike) -> str:
    """File name of the external data written for the model at ``path``: ``<name>.data``."""
    return f"{Path(path).name}.data"


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def save_model(
    model: onnx.ModelProto, path: str | os.PathLike, *, external_threshold_bytes: int = DEFAULT_EXTERNAL_THRESHOLD
) -> list[Path]:
    """Write ``model`` to ``path`` atomically; return the files written.

    A model whose serialized size exceeds ``external_threshold_bytes`` is written with all its tensors in one
    external file ``<name>.data`` beside ``path`` (saved in a temporary folder beside ``path``, then both
    files are moved into place, the data first). ``model`` is left as it was (its tensors keep their data).
    A stale ``<name>.data`` from an earlier, larger write is removed when the model fits in one file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data_path = path.parent / external_data_name(path)
    if not needs_external_data(model, external_threshold_bytes):
        write_bytes_atomic(path, model.SerializeToString())
        data_path.unlink(missing_ok=True)
        return [path]
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp_model = tmp_dir / path.name
        had_location = [tensor.HasField("data_location") for tensor in model.graph.initializer]
        try:
            onnx.save_model(
                model,
                str(tmp_model),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_path.name,
                size_threshold=1024,
            )
        finally:
            # onnx.save_model moved the tensors' bytes out of ``model``: read them back so it is unchanged
            onnx.load_external_data_for_model(model, str(tmp_dir))
            for tensor, had in zip(model.graph.initializer, had_location):
                if not had and tensor.data_location == onnx.TensorProto.DEFAULT:
                    tensor.ClearField("data_location")
        tmp_data = tmp_dir / data_path.name
        written = [path]
        if tmp_data.exists():
            _fsync(tmp_data)
            os.replace(tmp_data, data_path)
            written.append(data_path)
        else:
            data_path.unlink(missing_ok=True)
        _fsync(tmp_model)
        os.replace(tmp_model, path)
        return written
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def model_digest(model: onnx.ModelProto) -> str:
    """sha256 of the model's deterministic serialization; for a model past the protobuf limit (which cannot
    be serialized in one piece), part by part (opsets, inputs, outputs, value_info, nodes, initializers)."""
    if model_size_bytes(model) < PROTOBUF_LIMIT:
        return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
    digest = hashlib.sha256(b"precision-lab large model\0")
    digest.update(f"{model.ir_version} {model.domain} {model.model_version}".encode())
    graph = model.graph
    for part in (model.opset_import, graph.input, graph.output, graph.value_info, graph.node, graph.initializer):
        digest.update(b"\0")
        for message in part:
            digest.update(message.SerializeToString(deterministic=True))
    return digest.hexdigest()
