"""Input data: where feeds come from, how they are checked, and the calibration / evaluation split.

Three sources, in order of preference:

* ``--data DIR``: a folder of ``.npz`` files (one feed each: input name -> array) or of ``.npy`` files
  (single-input models), read in sorted file-name order;
* ``--data-loader-script file.py[:func]``: Polygraphy's convention, ``func`` (default ``load_data``)
  returns or yields feed dicts. **This runs the script's code** with your permissions;
* synthetic data from Polygraphy's ``DataLoader`` (uniform 0..1, fixed seed), with a loud warning: sensitivity
  measured on random inputs may not match real data.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from precision_lab.errors import InputError
from precision_lab.model import InputSpec

__all__ = [
    "Feed",
    "DataSet",
    "load_folder",
    "load_from_script",
    "synthetic_feeds",
    "validate_feeds",
    "split_feeds",
    "feeds_fingerprint",
    "shapes_from_feeds",
    "DEFAULT_CALIB_SAMPLES",
    "DEFAULT_EVAL_SAMPLES",
]

Feed = dict[str, np.ndarray]
DEFAULT_CALIB_SAMPLES = 32
DEFAULT_EVAL_SAMPLES = 16


@dataclass(frozen=True)
class DataSet:
    """Calibration and evaluation feeds (disjoint), where they came from and their fingerprints."""

    calib: tuple[Feed, ...]
    eval: tuple[Feed, ...]
    calib_labels: tuple[str, ...]
    eval_labels: tuple[str, ...]
    source: str
    synthetic: bool
    calib_fingerprint: str
    eval_fingerprint: str


def _load_npz(path: Path) -> Feed:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: np.asarray(archive[name]) for name in archive.files}
    except Exception as exc:
        raise InputError(f"cannot read {path} as an .npz feed ({exc}); write it with numpy.savez") from exc


def load_folder(folder: str | os.PathLike, specs: Sequence[InputSpec]) -> tuple[list[Feed], list[str]]:
    """Read every ``.npz`` (or, for a single-input model, ``.npy``) file of ``folder``, sorted by name.

    Returns the feeds and their file names."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"data folder not found: {folder}; check the --data path")
    if not folder.is_dir():
        raise InputError(f"--data expects a folder of .npz/.npy files, got the file {folder}")
    npz = sorted(folder.glob("*.npz"))
    npy = sorted(folder.glob("*.npy"))
    if npz and npy:
        raise InputError(f"{folder} mixes .npz and .npy files; keep one kind")
    if npz:
        return [_load_npz(path) for path in npz], [path.name for path in npz]
    if npy:
        if len(specs) != 1:
            raise InputError(
                f"{folder} holds .npy files, which only fit single-input models; this model has inputs "
                f"{[s.name for s in specs]}: save each feed as .npz (numpy.savez(path, **{{name: array}}))"
            )
        feeds = []
        for path in npy:
            try:
                feeds.append({specs[0].name: np.load(path, allow_pickle=False)})
            except Exception as exc:
                raise InputError(f"cannot read {path} as .npy ({exc}); write it with numpy.save") from exc
        return feeds, [path.name for path in npy]
    raise InputError(f"data folder {folder} is empty (no .npz or .npy files); add one file per input feed")


def load_from_script(spec: str) -> list[Feed]:
    """Call ``func`` of ``file.py[:func]`` (Polygraphy's data-loader convention; default ``load_data``).

    Runs user code. The function returns or yields feed dicts (input name -> array).
    """
    import importlib.util

    path, _, func = spec.rpartition(":") if not spec.endswith(".py") else (spec, "", "")
    func = func or "load_data"
    if not Path(path).is_file():
        raise InputError(f"data loader script not found: {path}; pass --data-loader-script file.py[:func]")
    try:
        module_spec = importlib.util.spec_from_file_location("precision_lab_data_loader", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise InputError(f"data loader script {path} failed to import ({type(exc).__name__}: {exc})") from exc
    loader = getattr(module, func, None)
    if loader is None:
        raise InputError(f"data loader script {path} has no function '{func}'; name it with {path}:FUNC")
    try:
        feeds = [dict(feed) for feed in loader()]
    except Exception as exc:
        raise InputError(
            f"data loader script {path}:{func} failed ({type(exc).__name__}: {str(exc)[:200]}); "
            "it must return or yield feed dicts (input name -> array)"
        ) from exc
    if not feeds:
        raise InputError(f"data loader script {path}:{func} produced no feeds")
    return [{name: np.asarray(value) for name, value in feed.items()} for feed in feeds]


def synthetic_feeds(specs: Sequence[InputSpec], count: int, *, seed: int = 0) -> list[Feed]:
    """``count`` random feeds from Polygraphy's ``DataLoader`` (floats uniform in 0..1). Shapes must be static."""
    from polygraphy.common import TensorMetadata
    from polygraphy.comparator import DataLoader

    metadata = TensorMetadata()
    for spec in specs:
        if not spec.is_static:
            raise InputError(
                f"input '{spec.name}' has dynamic dimensions and no data was given; pass --input-shape "
                f"{spec.name}:" + "x".join("1" if d is None else str(d) for d in spec.shape) + " or --data"
            )
        metadata.add(spec.name, dtype=spec.dtype, shape=spec.shape)
    loader = DataLoader(seed=seed, iterations=count, input_metadata=metadata)
    return [{name: np.array(value) for name, value in feed.items()} for feed in loader]


def validate_feeds(feeds: Sequence[Feed], specs: Sequence[InputSpec], *, source: str) -> None:
    """Check names, dtypes, ranks, fixed dimensions, consistent dynamic dimensions and finiteness."""
    expected = {spec.name: spec for spec in specs}
    first_shapes: dict[str, tuple[int, ...]] = {}
    for number, feed in enumerate(feeds):
        where = f"{source} feed #{number}"
        if set(feed) != set(expected):
            missing = sorted(set(expected) - set(feed))
            extra = sorted(set(feed) - set(expected))
            raise InputError(
                f"{where} has inputs {sorted(feed)} but the model expects {sorted(expected)}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unknown {extra})" if extra else "")
                + "; name the arrays after the model's inputs"
            )
        for name, array in feed.items():
            spec = expected[name]
            if array.dtype != spec.dtype:
                raise InputError(
                    f"{where}: input '{name}' is {array.dtype} but the model expects {spec.dtype}; "
                    f"convert it (array.astype(numpy.{spec.dtype}))"
                )
            if array.ndim != len(spec.shape) or any(
                d is not None and d != s for d, s in zip(spec.shape, array.shape)
            ):
                want = "x".join("?" if d is None else str(d) for d in spec.shape)
                raise InputError(
                    f"{where}: input '{name}' has shape {'x'.join(map(str, array.shape))} but the model "
                    f"expects {want}; reshape or resize the data"
                )
            shape = tuple(array.shape)
            if first_shapes.setdefault(name, shape) != shape:
                raise InputError(
                    f"{where}: input '{name}' has shape {shape} but earlier feeds have {first_shapes[name]}; "
                    "every feed must have the same shape (resize the data or fix it with --input-shape)"
                )
            if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                raise InputError(f"{where}: input '{name}' contains NaN or Inf; clean the data")


def shapes_from_feeds(feeds: Sequence[Feed]) -> dict[str, tuple[int, ...]]:
    """Input shapes of the first feed (all feeds share them after :func:`validate_feeds`)."""
    return {name: tuple(int(d) for d in array.shape) for name, array in feeds[0].items()} if feeds else {}


def feeds_fingerprint(feeds: Iterable[Feed]) -> str:
    """A sha256 over names, dtypes, shapes and bytes of the feeds, in order."""
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            array = np.ascontiguousarray(feed[name])
            digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def split_feeds(
    feeds: Sequence[Feed], *, calib_samples: int, eval_samples: int, seed: int = 0
) -> tuple[list[int], list[int], list[str]]:
    """Deterministic, disjoint split: shuffle with ``seed``, calibration first, then evaluation.

    Returns the indices of the calibration and evaluation feeds, and warnings. With fewer feeds than
    asked for, both sets shrink in proportion (at least one each). Needs at least two feeds.
    """
    if calib_samples < 1 or eval_samples < 1:
        raise InputError("--calib-samples and --eval-samples must be at least 1")
    if len(feeds) < 2:
        raise InputError(
            f"need at least 2 input feeds for disjoint calibration and evaluation sets, got {len(feeds)}; "
            "add data files"
        )
    order = np.random.default_rng(seed).permutation(len(feeds))
    warnings = []
    wanted = calib_samples + eval_samples
    if len(feeds) < wanted:
        eval_count = max(1, round(len(feeds) * eval_samples / wanted))
        calib_count = len(feeds) - eval_count
        warnings.append(
            f"only {len(feeds)} feeds for {calib_samples} calibration + {eval_samples} evaluation samples; "
            f"using {calib_count} + {eval_count}"
        )
    else:
        calib_count, eval_count = calib_samples, eval_samples
    calib = [int(i) for i in order[:calib_count]]
    evaluation = [int(i) for i in order[calib_count : calib_count + eval_count]]
    return calib, evaluation, warnings


def make_dataset(
    specs: Sequence[InputSpec],
    *,
    data_dir: str | os.PathLike | None = None,
    data_loader_script: str | None = None,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    eval_samples: int = DEFAULT_EVAL_SAMPLES,
    seed: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[DataSet, list[str]]:
    """Load (or synthesize), validate and split the data. Returns the data set and warnings to show.

    Defaults: 32 calibration and 16 evaluation samples, seed 0, synthetic data when no source is given.
    """
    if data_dir is not None and data_loader_script is not None:
        raise InputError("give either --data or --data-loader-script, not both")
    warnings: list[str] = []
    fixed = dict(input_shapes or {})
    specs = [
        InputSpec(s.name, s.dtype, tuple(fixed[s.name]) if s.name in fixed else s.shape) for s in specs
    ]
    if data_dir is not None:
        (feeds, labels), source, synthetic = load_folder(data_dir, specs), str(data_dir), False
    elif data_loader_script is not None:
        feeds, source, synthetic = load_from_script(data_loader_script), data_loader_script, False
        labels = [f"#{i}" for i in range(len(feeds))]
    else:
        feeds = synthetic_feeds(specs, calib_samples + eval_samples, seed=seed)
        labels = [f"#{i}" for i in range(len(feeds))]
        source, synthetic = "synthetic (uniform 0..1)", True
        warnings.append(
            "NO DATA GIVEN: using synthetic random inputs (uniform 0..1). Layer sensitivity on random data "
            "can differ a lot from real data; pass --data DIR or --data-loader-script for a plan you can trust"
        )
    validate_feeds(feeds, specs, source=source)
    calib_index, eval_index, split_warnings = split_feeds(
        feeds, calib_samples=calib_samples, eval_samples=eval_samples, seed=seed
    )
    warnings.extend(split_warnings)
    calib = [feeds[i] for i in calib_index]
    evaluation = [feeds[i] for i in eval_index]
    dataset = DataSet(
        calib=tuple(calib),
        eval=tuple(evaluation),
        calib_labels=tuple(labels[i] for i in calib_index),
        eval_labels=tuple(labels[i] for i in eval_index),
        source=source,
        synthetic=synthetic,
        calib_fingerprint=feeds_fingerprint(calib),
        eval_fingerprint=feeds_fingerprint(evaluation),
    )
    return dataset, warnings
