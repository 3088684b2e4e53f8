"""Images to ``--data`` feeds: ``precision-lab data images SRC_DIR -o DATA_DIR --input NAME --size HxW``.

Each image of ``SRC_DIR`` (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``, ``.webp``, sorted by name, not recursive)
becomes ``DATA_DIR/<stem>.npz`` holding ``{input_name: array}`` of shape ``1x3xHxW`` (``nchw``) or
``1xHxWx3`` (``nhwc``), ready for ``precision-lab sweep MODEL --data DATA_DIR``. Per pixel and channel::

    value = (pixel * scale - mean[c]) / std[c]        pixel in 0..255, channels in RGB or BGR order

``mean`` and ``std`` are given in the output's channel order (as most preprocessing code writes them).
Resizing is ``letterbox`` (keep the aspect ratio, pad with gray 114 centred, as YOLO does) or ``stretch``
(resize to exactly HxW). Pillow does the decoding and the bilinear resizing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from precision_lab.errors import InputError
from precision_lab.io import write_bytes_atomic

__all__ = [
    "IMAGE_SUFFIXES",
    "LETTERBOX_FILL",
    "images_to_feeds",
    "image_to_array",
    "list_images",
    "parse_size",
    "parse_floats",
    "add_parser",
    "run",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LETTERBOX_FILL = 114
_LAYOUTS = ("nchw", "nhwc")
_CHANNELS = ("rgb", "bgr")
_RESIZES = ("letterbox", "stretch")


def parse_size(text: str | Sequence[int]) -> tuple[int, int]:
    """``"224x224"`` / ``"320"`` (square) / ``(H, W)`` -> ``(H, W)``; raises :class:`InputError` otherwise."""
    if isinstance(text, str):
        parts = text.lower().replace("*", "x").split("x")
        try:
            values = [int(p.strip()) for p in parts]
        except ValueError:
            values = []
        if len(values) == 1:
            values = values * 2
    else:
        try:
            values = [int(v) for v in text]
        except (TypeError, ValueError):
            values = []
    if len(values) != 2 or min(values) < 1:
        raise InputError(f"bad image size {text!r}: give HEIGHTxWIDTH with positive integers, e.g. --size 224x224")
    return values[0], values[1]


def parse_floats(text: str | float | Sequence[float] | None, what: str) -> tuple[float, ...] | None:
    """``"0.485,0.456,0.406"`` / ``0.5`` / a sequence -> a tuple of 1 or 3 floats (``None`` stays ``None``)."""
    if text is None:
        return None
    try:
        if isinstance(text, str):
            values = tuple(float(v) for v in text.replace(" ", "").split(",") if v != "")
        elif isinstance(text, (int, float)):
            values = (float(text),)
        else:
            values = tuple(float(v) for v in text)
    except (TypeError, ValueError):
        raise InputError(f"bad --{what} {text!r}: give 1 or 3 comma-separated numbers, e.g. 0.5 or 0.485,0.456,0.406") from None
    if len(values) not in (1, 3):
        raise InputError(
            f"--{what} has {len(values)} values ({text!r}); give 1 (all channels) or 3 (one per channel)"
        )
    if not all(np.isfinite(values)):
        raise InputError(f"--{what} {text!r} contains NaN or Inf")
    return values


def list_images(src_dir: str | os.PathLike) -> list[Path]:
    """The image files of ``src_dir`` (by suffix, case-insensitive), sorted by name."""
    src = Path(src_dir)
    if not src.exists():
        raise InputError(f"image folder not found: {src}")
    if not src.is_dir():
        raise InputError(f"expected a folder of images, got the file {src}")
    entries = sorted(src.iterdir())
    if not entries:
        raise InputError(f"image folder {src} is empty; add .jpg/.jpeg/.png/.bmp/.webp files")
    images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise InputError(
            f"no images in {src} (looked for {', '.join(IMAGE_SUFFIXES)}; found {len(entries)} other entries)"
        )
    return images


def _resize(image, size: tuple[int, int], mode: str):
    from PIL import Image

    height, width = size
    if mode == "stretch":
        return image.resize((width, height), Image.BILINEAR)
    ratio = min(width / image.width, height / image.height)
    new_w = max(1, min(width, round(image.width * ratio)))
    new_h = max(1, min(height, round(image.height * ratio)))
    canvas = Image.new("RGB", (width, height), (LETTERBOX_FILL,) * 3)
    canvas.paste(image.resize((new_w, new_h), Image.BILINEAR), ((width - new_w) // 2, (height - new_h) // 2))
    return canvas


def image_to_array(
    image,
    *,
    size: tuple[int, int] | str,
    scale: float = 1 / 255,
    mean: Sequence[float] | str | None = None,
    std: Sequence[float] | str | None = None,
    layout: str = "nchw",
    channels: str = "rgb",
    resize: str = "letterbox",
    dtype: str | np.dtype = "float32",
) -> np.ndarray:
    """One PIL image (any mode) -> the preprocessed array with a batch dimension of 1."""
    size = parse_size(size)
    mean_values = parse_floats(mean, "mean") or (0.0,)
    std_values = parse_floats(std, "std") or (1.0,)
    if any(v == 0 for v in std_values):
        raise InputError(f"--std {','.join(f'{v:g}' for v in std_values)} contains 0; every std must be nonzero")
    if layout not in _LAYOUTS:
        raise InputError(f"bad layout {layout!r}; choose one of {', '.join(_LAYOUTS)}")
    if channels not in _CHANNELS:
        raise InputError(f"bad channel order {channels!r}; choose one of {', '.join(_CHANNELS)}")
    if resize not in _RESIZES:
        raise InputError(f"bad resize mode {resize!r}; choose one of {', '.join(_RESIZES)}")
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise InputError(f"bad dtype {dtype!r}") from None
    pixels = np.asarray(_resize(image.convert("RGB"), size, resize), dtype=np.float64)  # H, W, RGB
    if channels == "bgr":
        pixels = pixels[:, :, ::-1]
    values = (pixels * float(scale) - np.asarray(mean_values)) / np.asarray(std_values)
    if layout == "nchw":
        values = values.transpose(2, 0, 1)
    return np.ascontiguousarray(values[None]).astype(np_dtype)


def images_to_feeds(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    input_name: str,
    size: tuple[int, int] | str,
    scale: float = 1 / 255,
    mean: Sequence[float] | str | None = None,
    std: Sequence[float] | str | None = None,
    layout: str = "nchw",
    channels: str = "rgb",
    resize: str = "letterbox",
    dtype: str | np.dtype = "float32",
) -> list[Path]:
    """Write one ``<stem>.npz`` feed ({input_name: array}) per image of ``src_dir`` into ``out_dir``.

    Returns the written paths, in the sorted order of the images. Every argument is checked before any file
    is written; an image Pillow cannot decode raises :class:`InputError` naming it (files written before it
    stay, each complete).
    """
    if not input_name:
        raise InputError("give the model's input name (--input NAME), e.g. the name in onnx.load(MODEL).graph.input")
    size = parse_size(size)
    mean_t, std_t = parse_floats(mean, "mean"), parse_floats(std, "std")
    if std_t is not None and any(v == 0 for v in std_t):
        raise InputError(f"--std {','.join(f'{v:g}' for v in std_t)} contains 0; every std must be nonzero")
    if not np.isfinite(scale):
        raise InputError(f"bad --scale {scale!r}")
    if layout not in _LAYOUTS or channels not in _CHANNELS or resize not in _RESIZES:
        raise InputError(
            f"bad option: layout {layout!r} (nchw|nhwc), channels {channels!r} (rgb|bgr), resize {resize!r} "
            "(letterbox|stretch)"
        )
    images = list_images(src_dir)
    stems: dict[str, Path] = {}
    for path in images:
        if path.stem in stems:
            raise InputError(
                f"{stems[path.stem].name} and {path.name} would both be written as {path.stem}.npz; rename one"
            )
        stems[path.stem] = path
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is a file; give a folder with -o")

    from PIL import Image, UnidentifiedImageError

    written = []
    for path in images:
        try:
            with Image.open(path) as image:
                image.load()
                array = image_to_array(
                    image, size=size, scale=scale, mean=mean_t, std=std_t, layout=layout,
                    channels=channels, resize=resize, dtype=dtype,
                )
        except InputError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise InputError(
                f"cannot read image {path} ({type(exc).__name__}: {str(exc)[:160]}); fix or remove it"
            ) from exc
        buffer = io.BytesIO()
        np.savez(buffer, **{input_name: array})
        target = out / f"{path.stem}.npz"
        write_bytes_atomic(target, buffer.getvalue())
        written.append(target)
    return written


def add_parser(subparsers, parser_class=None):
    """Add ``data images ...`` to the CLI's subparsers (``sub`` of ``_build_parser``). Returns the ``data`` parser.

    The nested ``images`` parser is of ``parser_class`` (default: the class of the ``data`` parser, i.e. the
    ``parser_class`` that ``subparsers`` was created with), so its usage errors raise ``InputError`` too.
    Parsed args carry ``command == "data"``, ``data_command == "images"`` (``None`` if missing), ``quiet`` and
    ``verbose``.
    """
    data = subparsers.add_parser("data", help="make --data folders (data images: images -> .npz feeds)")
    data.set_defaults(quiet=False, verbose=False, data_command=None)
    nested_kwargs = {"dest": "data_command"}
    if parser_class is not None:
        nested_kwargs["parser_class"] = parser_class
    data_sub = data.add_subparsers(**nested_kwargs)
    images = data_sub.add_parser(
        "images",
        help="preprocess a folder of images into .npz feeds for --data",
        description="Write one .npz feed per image (jpg/jpeg/png/bmp/webp, sorted): "
        "value = (pixel*scale - mean)/std per channel, batch dimension 1.",
    )
    images.add_argument("src_dir", help="folder of images")
    images.add_argument("--output", "-o", required=True, help="folder to write the .npz feeds to (the sweep's --data)")
    images.add_argument("--input", required=True, dest="input_name", metavar="NAME", help="the model's input name")
    images.add_argument("--size", required=True, metavar="HxW", help="network input height x width, e.g. 224x224")
    images.add_argument("--scale", type=float, default=1 / 255, help="pixel multiplier before mean/std (default 1/255)")
    images.add_argument("--mean", metavar="M or M1,M2,M3", help="subtracted after scaling, in output channel order (default 0)")
    images.add_argument("--std", metavar="S or S1,S2,S3", help="divisor after the mean, in output channel order (default 1)")
    images.add_argument("--layout", default="nchw", choices=_LAYOUTS, help="default nchw (1x3xHxW)")
    images.add_argument("--channels", default="rgb", choices=_CHANNELS, help="channel order (default rgb)")
    images.add_argument(
        "--resize", default="letterbox", choices=_RESIZES,
        help="letterbox (keep aspect, pad gray 114; default) or stretch",
    )
    images.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="default float32")
    images.add_argument("--quiet", "-q", action="store_true", help="only errors")
    images.add_argument("--verbose", "-v", action="store_true", help="full tracebacks")
    return data


def run(args) -> int:
    """Run ``data images`` from parsed ``args``; prints the number of feeds and the array shape. Returns 0."""
    if getattr(args, "data_command", None) != "images":
        raise InputError("`precision-lab data` needs a subcommand: images (see precision-lab data --help)")
    written = images_to_feeds(
        args.src_dir,
        args.output,
        input_name=args.input_name,
        size=args.size,
        scale=args.scale,
        mean=args.mean,
        std=args.std,
        layout=args.layout,
        channels=args.channels,
        resize=args.resize,
        dtype=args.dtype,
    )
    with np.load(written[0]) as first:
        array = first[args.input_name]
        shape, dtype = "x".join(map(str, array.shape)), array.dtype
    if not getattr(args, "quiet", False):
        print(
            f"wrote {len(written)} feed{'s' if len(written) != 1 else ''} to {args.output}/ "
            f"('{args.input_name}': {shape} {dtype}); sweep with --data {args.output}"
        )
    return 0
