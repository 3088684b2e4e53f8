"""PP-OCR models from rapidocr-onnxruntime==1.4.4 (docs/design.md, "Real models"), swept on text rendered with Pillow.

The three models are Paddle exports (paddle2onnx, opset 12/11) with ``Constant`` weights, unfused
``BatchNormalization`` and dynamic dimensions: the sweep must prepare them (opset 13, constant folding, BN
folding, ``--input-shape``) without help from the test.

Preprocessing replicates the shipping package's own code (``rapidocr_onnxruntime/ch_ppocr_*/``; see
docs/real_models.md): images are loaded as BGR (``LoadImage`` converts PIL's RGB with ``COLOR_RGB2BGR``) and
every model takes ``(pixel / 255 - 0.5) / 0.5`` (det: ``config.yaml`` mean/std 0.5; rec/cls: hard-coded).

* det: resized so both sides are multiples of 32 (the package scales the short side to 736 first; the CI
  sweep uses 160x320 canvases to stay fast), output: text probability map ``1x1xHxW``;
* rec: 3x48x320, the line resized to height 48 keeping its aspect ratio (width capped at 320), zero-padded
  on the right (after normalization), output: softmax ``1x40x6625`` (one row per 8 pixels of width) over
  the character set + CTC blank;
* cls: 3x48x192, same resize/pad, output: softmax ``1x2`` over {0, 180} degrees.

Every sweep is checked independently: ``plan.onnx`` and the original model are run in plain ONNX Runtime
(graph optimizations off) on the evaluation feeds, and the metric is recomputed with numpy.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from real_models import fetch_wheel_member

pytestmark = pytest.mark.real

PACKAGE, VERSION = "rapidocr-onnxruntime", "1.4.4"
MODELS = "rapidocr_onnxruntime/models/"
DET = MODELS + "ch_PP-OCRv4_det_infer.onnx"
REC = MODELS + "ch_PP-OCRv4_rec_infer.onnx"
CLS = MODELS + "ch_ppocr_mobile_v2.0_cls_infer.onnx"

WORDS = (
    "precision quantize layer tensor calibration INT8 FP32 invoice total amount 2024 receipt order "
    "number date street avenue OCR model sweep plan Station Express Coffee Tea Milk 42.50 USD EUR "
    "Hello World Open Close Exit Entrance Floor 3 Room 101 Parking Monday Friday Sale 50% OFF"
).split()
BACKGROUNDS = [(255, 255, 255), (250, 246, 230), (225, 235, 250), (240, 220, 220), (40, 40, 60), (20, 70, 40)]


def _fonts(size: int):
    import matplotlib
    from PIL import ImageFont

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf"]
    return [ImageFont.truetype(str(ttf / name), size) for name in names]


def _colors(rng, index: int):
    background = BACKGROUNDS[index % len(BACKGROUNDS)]
    dark = sum(background) < 384
    base = 235 if dark else 20
    ink = tuple(int(np.clip(base + rng.integers(-20, 21), 0, 255)) for _ in range(3))
    return background, ink


def _line(rng, words: int) -> str:
    return " ".join(str(w) for w in rng.choice(WORDS, size=words))


def text_line_images(count: int, seed: int, *, rotate_every: int = 0):
    """``count`` RGB images of one line of text each (tight crop with a small margin, like a detector box).

    With ``rotate_every`` N, every Nth image is turned 180 degrees (what the direction classifier detects)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    result = []
    for i in range(count):
        font = _fonts(int(rng.integers(22, 34)))[i % 4]
        background, ink = _colors(rng, i)
        text = _line(rng, int(rng.integers(1, 5)))
        left, top, right, bottom = font.getbbox(text)
        margin = int(rng.integers(3, 9))
        image = Image.new("RGB", (right - left + 2 * margin, bottom - top + 2 * margin), background)
        ImageDraw.Draw(image).text((margin - left, margin - top), text, font=font, fill=ink)
        if rotate_every and i % rotate_every == rotate_every - 1:
            image = image.rotate(180)
        result.append(image)
    return result


def text_page_images(count: int, seed: int, size: tuple[int, int]):
    """``count`` RGB "pages" of ``size`` (W, H) with 2..5 lines of text at random places, sizes and colors."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    result = []
    for i in range(count):
        background, ink = _colors(rng, i)
        image = Image.new("RGB", size, background)
        draw = ImageDraw.Draw(image)
        y = int(rng.integers(4, 20))
        for _ in range(int(rng.integers(2, 6))):
            font = _fonts(int(rng.integers(14, 26)))[int(rng.integers(0, 4))]
            text = _line(rng, int(rng.integers(1, 4)))
            x = int(rng.integers(4, max(5, width // 3)))
            draw.text((x, y), text, font=font, fill=ink)
            y += font.size + int(rng.integers(6, 20))
            if y > height - 20:
                break
        result.append(image)
    return result


def ppocr_line_tensor(image, shape: tuple[int, int, int]) -> np.ndarray:
    """rapidocr's ``resize_norm_img`` of TextRecognizer / TextClassifier (BGR, (x/255-0.5)/0.5, right pad 0)."""
    from PIL import Image

    channels, height, width = shape
    bgr = np.asarray(image.convert("RGB"))[:, :, ::-1]
    ratio = bgr.shape[1] / float(bgr.shape[0])
    resized_w = width if math.ceil(height * ratio) > width else int(math.ceil(height * ratio))
    resized = Image.fromarray(np.ascontiguousarray(bgr)).resize((resized_w, height), Image.BILINEAR)
    values = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255
    values = (values - 0.5) / 0.5
    padded = np.zeros((channels, height, width), dtype=np.float32)
    padded[:, :, :resized_w] = values
    return padded[None]


def write_line_feeds(folder: Path, shape, count: int, seed: int, *, rotate_every: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(text_line_images(count, seed, rotate_every=rotate_every)):
        np.savez(folder / f"line_{i:03d}.npz", x=ppocr_line_tensor(image, shape))
    return folder


def write_page_feeds(tmp_path: Path, size_hw: tuple[int, int], count: int, seed: int) -> Path:
    """Pages rendered to PNG, then ``precision_lab.images.images_to_feeds`` with the det preprocessing."""
    from precision_lab.images import images_to_feeds

    pages = tmp_path / "pages"
    pages.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(text_page_images(count, seed, (size_hw[1], size_hw[0]))):
        image.save(pages / f"page_{i:03d}.png")
    feeds = tmp_path / "page_feeds"
    images_to_feeds(
        pages, feeds, input_name="x", size=size_hw, mean=0.5, std=0.5, channels="bgr", resize="stretch"
    )
    return feeds


# ------------------------------------------------------------------------------------------------------------
# independent check: plain onnxruntime + numpy, nothing from precision_lab


def _run(model_path: Path, feeds: list[dict]) -> list[dict]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(None, feed))) for feed in feeds]


def _metric(name: str, outputs: list[dict], reference: list[dict]) -> float:
    values = []
    for key in reference[0]:
        y = [o[key].astype(np.float64) for o in outputs]
        r = [o[key].astype(np.float64) for o in reference]
        if name == "rel-l2":
            yy, rr = np.concatenate([a.ravel() for a in y]), np.concatenate([a.ravel() for a in r])
            values.append(float(np.linalg.norm(yy - rr) / np.linalg.norm(rr)))
        elif name == "cosine":
            cos = [float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(y, r)]
            values.append(float(np.mean(cos)))
        elif name == "top1":
            yy = np.concatenate([a.reshape(-1, a.shape[-1]) for a in y])
            rr = np.concatenate([a.reshape(-1, a.shape[-1]) for a in r])
            values.append(float(np.mean(yy.argmax(-1) == rr.argmax(-1))))
        else:
            raise AssertionError(name)
    return max(values) if name == "rel-l2" else min(values)


def _sweep_and_check(
    label: str, model: Path, data: Path, out: Path, metric: str, tolerance: float, shape: str, log=print
):
    started = time.perf_counter()
    proc = run_cli(
        "sweep", str(model), "--data", str(data), "--input-shape", f"x:{shape}",
        "--calib-samples", "6", "--eval-samples", "3", "--sensitivity", "isolate",
        # preparation and reproduction of plan.onnx: the value recomputed below is the aggregate one
        "--verify-samples", "0", "--criterion", "aggregate",
        "--metric", metric, "--tolerance", str(tolerance), "--out", str(out), "--quiet", timeout=1800,
    )
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    plan = json.loads((out / "plan.json").read_text())
    candidates = len((out / "sensitivity.csv").read_text().splitlines()) - 1
    size_mb = (out / "plan.onnx").stat().st_size / 1e6
    log(
        f"{label}: {candidates} candidates, {plan['evaluations']} evaluations, {seconds:.0f} s, "
        f"{metric} all-INT8 {plan['baselines']['all_int8']:.4g}, plan {plan['achieved']['value']:.4g} "
        f"with {len(plan['fp32_layers'])} FP32 layers {plan['fp32_layers']}, plan.onnx {size_mb:.2f} MB"
    )
    assert plan["achieved"]["passed"]
    assert plan["evaluations"] > 0

    feeds = [dict(np.load(data / name)) for name in plan["data"]["eval_feeds"]]
    reference = _run(model, feeds)  # the original Paddle export, prepared by nothing
    outputs = _run(out / "plan.onnx", feeds)
    value = _metric(metric, outputs, reference)
    assert value == pytest.approx(plan["achieved"]["value"], rel=1e-5, abs=1e-9)
    return plan, seconds


def test_ppocrv4_det_on_rendered_pages(tmp_path, real_model_log):
    model = fetch_wheel_member(PACKAGE, VERSION, DET)
    data = write_page_feeds(tmp_path, (160, 320), 9, seed=1)
    plan, _ = _sweep_and_check("PP-OCRv4 det", model, data, tmp_path / "out", "rel-l2", 0.05, "1x3x160x320", real_model_log)
    # all-FP32 is the prepared model (2 Conv->BN folded, constants folded) against the original export:
    # float rounding only (measured 2.5e-6)
    assert plan["baselines"]["all_fp32"] < 1e-4


def test_ppocrv4_rec_on_rendered_lines(tmp_path, real_model_log):
    model = fetch_wheel_member(PACKAGE, VERSION, REC)
    data = write_line_feeds(tmp_path / "lines", (3, 48, 320), 9, seed=2)
    _sweep_and_check("PP-OCRv4 rec", model, data, tmp_path / "out", "top1", 0.99, "1x3x48x320", real_model_log)


def test_ppocr_mobile_cls_on_rendered_lines(tmp_path, real_model_log):
    model = fetch_wheel_member(PACKAGE, VERSION, CLS)
    data = write_line_feeds(tmp_path / "lines", (3, 48, 192), 9, seed=3, rotate_every=2)
    _sweep_and_check("PP-OCR mobile v2.0 cls", model, data, tmp_path / "out", "rel-l2", 0.05, "1x3x48x192", real_model_log)
