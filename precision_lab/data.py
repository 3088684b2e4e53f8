"""Input data: where feeds come from, how they are checked, and the calibration / evaluation split.

Three sources, in order of preference:

* ``--data DIR``: a folder of ``.npz`` files (one feed each: input name -> array) or of ``.npy`` files
  (single-input models), read in sorted file-name order;
* ``--data-loader-script file.py[:func]``: Polygraphy's convention, ``func`` (default ``load_data``)
  returns or yields feed dicts. **This runs the script's code** with your permissions;
* synthetic data from Polygraphy's ``DataLoader`` (uniform 0..1, fixed seed), with a loud warning: sensitivity
  measured on random inputs may not match real data.

The feeds are split three ways, disjoint: calibration (ranges), evaluation (what the search sees) and
verification (held back from the search; the final plan is judged on it). Labels, for task metrics such as
``accuracy``, come from ``--labels FILE`` (keyed by data file name) or from a loader script that yields
``(feed, label)`` pairs.
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
    "load_labels",
    "DEFAULT_CALIB_SAMPLES",
    "DEFAULT_EVAL_SAMPLES",
    "DEFAULT_VERIFY_SAMPLES",
]

Feed = dict[str, np.ndarray]
DEFAULT_CALIB_SAMPLES = 16
DEFAULT_EVAL_SAMPLES = 32
DEFAULT_VERIFY_SAMPLES = 16


@dataclass(frozen=True)
class DataSet:
    """Calibration, evaluation and verification feeds (disjoint), their names (``*_labels``: data file names),
    their task labels (``*_targets``, ``None`` without labels), where they came from and their fingerprints."""

    calib: tuple[Feed, ...]
    eval: tuple[Feed, ...]
    calib_labels: tuple[str, ...]
    eval_labels: tuple[str, ...]
    source: str
    synthetic: bool
    calib_fingerprint: str
    eval_fingerprint: str
    verify: tuple[Feed, ...] = ()
    verify_labels: tuple[str, ...] = ()
    verify_fingerprint: str = ""
    eval_targets: tuple | None = None
    verify_targets: tuple | None = None
    targets_fingerprint: str = ""
    calib_targets: tuple | None = None

    @property
    def unjudged(self) -> tuple[Feed, ...]:
        """The verification feeds, then the calibration feeds: every feed the search never judged a plan on."""
        return self.verify + self.calib

    @property
    def unjudged_targets(self) -> tuple | None:
        """The task labels of :attr:`unjudged` (``None`` without labels)."""
        if self.verify_targets is None or self.calib_targets is None:
            return None
        return self.verify_targets + self.calib_targets


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


def load_from_script(spec: str) -> tuple[list[Feed], list | None]:
    """Call ``func`` of ``file.py[:func]`` (Polygraphy's data-loader convention; default ``load_data``).

    Runs user code. The function returns or yields feed dicts (input name -> array), or ``(feed, label)``
    pairs. Returns the feeds and the labels (``None`` without labels).
    """
    from precision_lab.user_code import load_function

    path, _, func = spec.rpartition(":") if not spec.endswith(".py") else (spec, "", "load_data")
    if not Path(path).is_file():
        raise InputError(f"data loader script not found: {path}; pass --data-loader-script file.py[:func]")
    loader = load_function(spec, what="data loader script", default_function="load_data")
    try:
        items = list(loader())
    except Exception as exc:
        raise InputError(
            f"data loader script {path}:{func} failed ({type(exc).__name__}: {str(exc)[:200]}); "
            "it must return or yield feed dicts (input name -> array)"
        ) from exc
    if not items:
        raise InputError(f"data loader script {path}:{func} produced no feeds")
    pairs = [isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], Mapping) for item in items]
    if any(pairs) and not all(pairs):
        raise InputError(f"data loader script {path}:{func} mixes feeds and (feed, label) pairs; yield one kind")
    feeds = [item[0] if labelled else item for item, labelled in zip(items, pairs)]
    if not all(isinstance(feed, Mapping) for feed in feeds):
        raise InputError(
            f"data loader script {path}:{func} must yield feed dicts (input name -> array) or (feed, label) pairs"
        )
    labels = [item[1] for item in items] if all(pairs) else None
    return [{name: np.asarray(value) for name, value in feed.items()} for feed in feeds], labels


def load_labels(path: str | os.PathLike, names: Sequence[str]) -> list:
    """Labels of the data files ``names`` from ``path``: JSON ``{"file.npz": label}`` or CSV lines
    ``file.npz,label`` (a header line is allowed). A label is an integer class or a list of integers (one per
    output row). Files are matched by name, or by name without extension."""
    import csv
    import json

    path = Path(path)
    if not path.is_file():
        raise InputError(f"labels file not found: {path}; pass --labels FILE (JSON or CSV keyed by data file name)")
    try:
        if path.suffix.lower() == ".json":
            table = json.loads(path.read_text())
            if not isinstance(table, dict):
                raise ValueError("expected an object {file name: label}")
        else:
            table = {}
            for row in csv.reader(path.read_text().splitlines()):
                if len(row) < 2 or not row[0].strip():
                    continue
                try:
                    table[row[0].strip()] = [int(v) for v in row[1].split()]
                except ValueError:
                    if table:  # only the first line may be a header
                        raise
    except ValueError as exc:
        raise InputError(f"cannot read labels from {path} ({exc}); write JSON {{file: label}} or CSV file,label") from exc
    labels, missing = [], []
    for name in names:
        label = table.get(name, table.get(Path(name).stem))
        if label is None:
            missing.append(name)
        labels.append(label)
    if missing:
        raise InputError(
            f"{path} has no label for {len(missing)} of {len(names)} data files (e.g. {missing[0]}); label every file"
        )
    return labels


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
    from precision_lab.console import quiet_polygraphy

    with quiet_polygraphy():  # its info lines ("Will generate inference input data ...") are not the user's
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
    feeds: Sequence[Feed],
    *,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    eval_samples: int = DEFAULT_EVAL_SAMPLES,
    verify_samples: int = DEFAULT_VERIFY_SAMPLES,
    seed: int = 0,
) -> tuple[list[int], list[int], list[int], list[str]]:
    """Deterministic, disjoint split: shuffle with ``seed``; calibration, then evaluation, then verification.

    Returns the indices of the calibration, evaluation and verification feeds, and warnings. With fewer feeds
    than asked for, the three sets shrink in proportion (calibration and evaluation at least one each;
    verification is dropped, with a warning, below three feeds). ``verify_samples=0`` turns verification off.
    """
    if calib_samples < 1 or eval_samples < 1 or verify_samples < 0:
        raise InputError("--calib-samples and --eval-samples must be at least 1, --verify-samples at least 0")
    if len(feeds) < 2:
        raise InputError(
            f"need at least 2 input feeds for disjoint calibration and evaluation sets, got {len(feeds)}; "
            "add data files"
        )
    order = np.random.default_rng(seed).permutation(len(feeds))
    warnings = []
    wanted = calib_samples + eval_samples + verify_samples
    if len(feeds) < wanted:
        counts = _proportional(len(feeds), (calib_samples, eval_samples, verify_samples))
        calib_count, eval_count, verify_count = counts
        warnings.append(
            f"only {len(feeds)} feeds for {calib_samples} calibration + {eval_samples} evaluation + "
            f"{verify_samples} verification samples; using {calib_count} + {eval_count} + {verify_count}"
        )
    else:
        calib_count, eval_count, verify_count = calib_samples, eval_samples, verify_samples
    calib = [int(i) for i in order[:calib_count]]
    evaluation = [int(i) for i in order[calib_count : calib_count + eval_count]]
    verify = [int(i) for i in order[calib_count + eval_count : calib_count + eval_count + verify_count]]
    return calib, evaluation, verify, warnings


def _proportional(total: int, wanted: tuple[int, int, int]) -> tuple[int, int, int]:
    """Split ``total`` feeds in proportion to ``wanted`` (calibration, evaluation, verification): at least one
    calibration and one evaluation feed, and one verification feed when asked for and there are three feeds."""
    calib_w, eval_w, verify_w = wanted
    verify = 0 if verify_w == 0 or total < 3 else max(1, round(total * verify_w / sum(wanted)))
    calib = max(1, round(total * calib_w / sum(wanted)))
    calib = min(calib, total - verify - 1)
    return calib, total - calib - verify, verify


def make_dataset(
    specs: Sequence[InputSpec],
    *,
    data_dir: str | os.PathLike | None = None,
    data_loader_script: str | None = None,
    calib_samples: int = DEFAULT_CALIB_SAMPLES,
    eval_samples: int = DEFAULT_EVAL_SAMPLES,
    verify_samples: int = DEFAULT_VERIFY_SAMPLES,
    seed: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    labels_file: str | os.PathLike | None = None,
) -> tuple[DataSet, list[str]]:
    """Load (or synthesize), validate and split the data. Returns the data set and warnings to show.

    Defaults: 16 calibration, 32 evaluation and 16 verification samples (in proportion when there are fewer
    feeds), seed 0, synthetic data when no source is given, labels from ``labels_file`` or the loader script.
    """
    if data_dir is not None and data_loader_script is not None:
        raise InputError("give either --data or --data-loader-script, not both")
    warnings: list[str] = []
    fixed = dict(input_shapes or {})
    specs = [
        InputSpec(s.name, s.dtype, tuple(fixed[s.name]) if s.name in fixed else s.shape) for s in specs
    ]
    targets = None
    if data_dir is not None:
        (feeds, labels), source, synthetic = load_folder(data_dir, specs), str(data_dir), False
    elif data_loader_script is not None:
        (feeds, targets), source, synthetic = load_from_script(data_loader_script), data_loader_script, False
        labels = [f"#{i}" for i in range(len(feeds))]
    else:
        if labels_file is not None:
            raise InputError("--labels needs --data (labels are keyed by data file name)")
        feeds = synthetic_feeds(specs, calib_samples + eval_samples + verify_samples, seed=seed)
        labels = [f"#{i}" for i in range(len(feeds))]
        source, synthetic = "synthetic (uniform 0..1)", True
        warnings.append(
            "NO DATA GIVEN: using synthetic random inputs (uniform 0..1). Layer sensitivity on random data "
            "can differ a lot from real data; pass --data DIR or --data-loader-script for a plan you can trust"
        )
    if labels_file is not None:
        if targets is not None:
            raise InputError("the data loader script yields labels already; drop --labels")
        targets = load_labels(labels_file, labels)
    validate_feeds(feeds, specs, source=source)
    calib_index, eval_index, verify_index, split_warnings = split_feeds(
        feeds, calib_samples=calib_samples, eval_samples=eval_samples, verify_samples=verify_samples, seed=seed
    )
    warnings.extend(split_warnings)
    calib = [feeds[i] for i in calib_index]
    evaluation = [feeds[i] for i in eval_index]
    verify = [feeds[i] for i in verify_index]
    dataset = DataSet(
        calib=tuple(calib),
        eval=tuple(evaluation),
        calib_labels=tuple(labels[i] for i in calib_index),
        eval_labels=tuple(labels[i] for i in eval_index),
        source=source,
        synthetic=synthetic,
        calib_fingerprint=feeds_fingerprint(calib),
        eval_fingerprint=feeds_fingerprint(evaluation),
        verify=tuple(verify),
        verify_labels=tuple(labels[i] for i in verify_index),
        verify_fingerprint=feeds_fingerprint(verify),
        eval_targets=None if targets is None else tuple(targets[i] for i in eval_index),
        verify_targets=None if targets is None else tuple(targets[i] for i in verify_index),
        calib_targets=None if targets is None else tuple(targets[i] for i in calib_index),
        targets_fingerprint="" if targets is None else _labels_fingerprint(targets),
    )
    return dataset, warnings


def _labels_fingerprint(targets: Sequence[object]) -> str:
    import json

    return hashlib.sha256(json.dumps([np.asarray(t).tolist() for t in targets]).encode()).hexdigest()
