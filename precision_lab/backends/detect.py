"""Is TensorRT usable here? Used by ``--backend auto`` and to fail ``--backend tensorrt`` in one line.

TensorRT counts as usable only when a ``tensorrt.Builder`` can really be created and can create a network,
and a CUDA device is present. ``import tensorrt`` alone proves nothing: PyPI's ``tensorrt`` metapackage (and
other stubs) import fine without the library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.util
from dataclasses import dataclass

from precision_lab.errors import MissingDependencyError

__all__ = ["INSTALL_HINT", "TensorRTStatus", "tensorrt_status", "require_tensorrt", "detect_backend", "cuda_devices"]

INSTALL_HINT = "install it with: pip install 'precision-lab[tensorrt]' (needs an NVIDIA driver and a CUDA GPU)"


@dataclass(frozen=True)
class TensorRTStatus:
    """``usable`` and, when it is not, ``reason`` (one line saying what is missing and how to install)."""

    usable: bool
    reason: str
    version: str | None = None
    device: str | None = None


def cuda_devices() -> tuple[list[str], str | None]:
    """Names of the CUDA devices seen by the NVIDIA driver, and why there are none (``None`` if there are)."""
    names = ["libcuda.so.1", "libcuda.so", "nvcuda.dll", ctypes.util.find_library("cuda")]
    lib = None
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return [], "no NVIDIA driver (libcuda not found)"
    try:
        status = lib.cuInit(0)
        if status != 0:
            return [], f"the NVIDIA driver found no usable CUDA GPU (cuInit error {status})"
        count = ctypes.c_int(0)
        status = lib.cuDeviceGetCount(ctypes.byref(count))
        if status != 0 or count.value == 0:
            return [], "no CUDA GPU (the NVIDIA driver reports 0 devices)"
        devices = []
        for index in range(count.value):
            device = ctypes.c_int(0)
            buffer = ctypes.create_string_buffer(256)
            if lib.cuDeviceGet(ctypes.byref(device), index) == 0 and lib.cuDeviceGetName(buffer, 256, device) == 0:
                devices.append(buffer.value.decode(errors="replace"))
            else:
                devices.append(f"cuda:{index}")
        return devices, None
    except (AttributeError, OSError) as exc:  # a libcuda without the driver API: treat as no driver
        return [], f"no usable NVIDIA driver ({exc})"


def tensorrt_status() -> TensorRTStatus:
    """Whether TensorRT can build engines here, checked step by step; never raises."""
    if importlib.util.find_spec("tensorrt") is None:
        return TensorRTStatus(False, f"TensorRT is not installed (no 'tensorrt' Python package); {INSTALL_HINT}")
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, OSError from a missing libnvinfer, ...
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return TensorRTStatus(
            False, f"the 'tensorrt' package is installed but does not import ({first}); reinstall it: {INSTALL_HINT}"
        )
    version = getattr(trt, "__version__", None)
    if not hasattr(trt, "Builder") or not hasattr(trt, "Logger"):
        where = getattr(trt, "__file__", None) or "namespace package"
        return TensorRTStatus(
            False,
            f"the installed 'tensorrt' package ({where}) is a stub without tensorrt.Builder, not the TensorRT "
            f"library; {INSTALL_HINT}",
            version,
        )
    devices, why_not = cuda_devices()
    if not devices:
        return TensorRTStatus(
            False, f"TensorRT {version} is installed but there is {why_not}; TensorRT needs a CUDA GPU", version
        )
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        if builder is None:
            raise RuntimeError("tensorrt.Builder() returned None")
        network = builder.create_network(0)
        if network is None:
            raise RuntimeError("Builder.create_network() returned None")
        _ = builder.num_DLA_cores  # touches the builder's device query
        del network, builder
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return TensorRTStatus(
            False, f"TensorRT {version} is installed but could not create a builder on {devices[0]} ({first})", version
        )
    try:
        from polygraphy import cuda

        cuda.wrapper()  # TrtRunner needs the CUDA runtime (libcudart)
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return TensorRTStatus(
            False,
            f"TensorRT {version} works but Polygraphy cannot load the CUDA runtime library ({first}); "
            "pip install nvidia-cuda-runtime-cu12 (or the CUDA toolkit)",
            version,
        )
    return TensorRTStatus(True, f"TensorRT {version} with a working builder on {devices[0]}", version, devices[0])


def require_tensorrt() -> TensorRTStatus:
    """The status of a usable TensorRT, or :class:`MissingDependencyError` with the one-line reason."""
    status = tensorrt_status()
    if not status.usable:
        raise MissingDependencyError(f"--backend tensorrt cannot run: {status.reason}")
    return status


def detect_backend() -> tuple[str, str]:
    """``("tensorrt", why)`` when TensorRT is usable, else ``("onnxrt", why not)``: for ``--backend auto``."""
    status = tensorrt_status()
    if status.usable:
        return "tensorrt", f"using TensorRT: {status.reason}"
    return "onnxrt", f"using ONNX Runtime: {status.reason}"
