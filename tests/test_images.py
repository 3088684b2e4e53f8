"""Images -> .npz feeds (precision_lab.images), on crops and flips of a real photograph matplotlib ships."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from precision_lab import images
from precision_lab.errors import InputError

from conftest import SAMPLES


@pytest.fixture(scope="module")
def photo():
    import matplotlib
    from PIL import Image

    with Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg") as image:
        return image.convert("RGB")  # 600 wide x 512 high


@pytest.fixture
def photo_dir(tmp_path, photo):
    """Six images: crops, a flip, a grayscale and an RGBA png, in jpg and png; plus a non-image file."""
    from PIL import ImageOps

    folder = tmp_path / "photos"
    folder.mkdir()
    photo.crop((0, 0, 300, 200)).save(folder / "a_wide.png")  # exact pixels (png) for value checks
    photo.crop((100, 50, 300, 450)).save(folder / "b_tall.jpg", quality=92)
    ImageOps.mirror(photo).save(folder / "c_mirror.JPEG")
    photo.convert("L").resize((120, 100)).save(folder / "d_gray.png")
    rgba = photo.resize((64, 64)).convert("RGBA")
    rgba.save(folder / "e_rgba.png")
    photo.resize((50, 40)).save(folder / "f_small.bmp")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _load(path: Path, name: str = "x") -> np.ndarray:
    with np.load(path) as archive:
        assert archive.files == [name]
        return archive[name]


def test_writes_one_feed_per_image_sorted_with_the_right_shape(photo_dir, tmp_path):
    out = tmp_path / "feeds"
    written = images.images_to_feeds(photo_dir, out, input_name="x", size=(64, 96))
    assert [p.name for p in written] == [
        "a_wide.npz", "b_tall.npz", "c_mirror.npz", "d_gray.npz", "e_rgba.npz", "f_small.npz"
    ]
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in written]  # no temp files left
    for path in written:
        array = _load(path)
        assert array.shape == (1, 3, 64, 96) and array.dtype == np.float32
        assert 0.0 <= array.min() and array.max() <= 1.0
    gray = _load(out / "d_gray.npz")
    assert np.array_equal(gray[0, 0], gray[0, 1]) and np.array_equal(gray[0, 1], gray[0, 2])


def test_stretch_values_match_a_direct_pil_numpy_computation_rgb_and_bgr_nchw_and_nhwc(photo_dir, tmp_path):
    from PIL import Image

    with Image.open(photo_dir / "a_wide.png") as image:
        direct = np.asarray(image.convert("RGB").resize((40, 30), Image.BILINEAR), dtype=np.float64) / 255  # HWC RGB
    common = dict(input_name="x", size="30x40", resize="stretch")
    rgb_nchw = _load(images.images_to_feeds(photo_dir, tmp_path / "a", **common)[0])
    bgr_nchw = _load(images.images_to_feeds(photo_dir, tmp_path / "b", channels="bgr", **common)[0])
    rgb_nhwc = _load(images.images_to_feeds(photo_dir, tmp_path / "c", layout="nhwc", **common)[0])
    bgr_nhwc = _load(images.images_to_feeds(photo_dir, tmp_path / "d", layout="nhwc", channels="bgr", **common)[0])
    assert rgb_nchw.shape == bgr_nchw.shape == (1, 3, 30, 40)
    assert rgb_nhwc.shape == bgr_nhwc.shape == (1, 30, 40, 3)
    np.testing.assert_allclose(rgb_nchw[0], direct.transpose(2, 0, 1), atol=1e-6)
    np.testing.assert_allclose(bgr_nchw[0], direct[:, :, ::-1].transpose(2, 0, 1), atol=1e-6)
    np.testing.assert_allclose(rgb_nhwc[0], direct, atol=1e-6)
    np.testing.assert_allclose(bgr_nhwc[0], direct[:, :, ::-1], atol=1e-6)
    # the photo is not gray: the channel order matters
    assert np.abs(rgb_nchw[0, 0] - rgb_nchw[0, 2]).mean() > 0.01


def test_mean_std_and_scale_are_applied_per_channel_in_output_order(photo_dir, tmp_path):
    common = dict(input_name="x", size=(32, 32), resize="stretch", channels="bgr")
    plain = _load(images.images_to_feeds(photo_dir, tmp_path / "plain", scale=1.0, **common)[0])  # 0..255
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    norm = _load(images.images_to_feeds(photo_dir, tmp_path / "norm", mean=mean, std=std, **common)[0])
    expected = (plain[0] / 255 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(norm[0], expected, rtol=1e-5, atol=1e-5)
    half = _load(images.images_to_feeds(photo_dir, tmp_path / "half", mean="0.5", std="0.5", **common)[0])
    np.testing.assert_allclose(half[0], plain[0] / 255 * 2 - 1, atol=1e-5)
    assert -1.0 <= half.min() and half.max() <= 1.0
    f16 = _load(images.images_to_feeds(photo_dir, tmp_path / "f16", dtype="float16", **common)[0])
    assert f16.dtype == np.float16


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_gray_114(photo_dir, tmp_path):
    from PIL import Image

    common = dict(input_name="x", size=(100, 100), scale=1.0)
    letter = _load(images.images_to_feeds(photo_dir, tmp_path / "l", **common)[0])[0]  # a_wide: 300x200
    stretch = _load(images.images_to_feeds(photo_dir, tmp_path / "s", resize="stretch", **common)[0])[0]
    # 300x200 into 100x100: content 100 wide x 67 high, centred, rows above/below are gray 114
    assert np.all(letter[:, :16] == 114) and np.all(letter[:, -16:] == 114)
    content = letter[:, 17:83]
    assert not np.all(content == 114)
    with Image.open(photo_dir / "a_wide.png") as image:
        resized = np.asarray(image.convert("RGB").resize((100, 67), Image.BILINEAR), dtype=np.float32)
    np.testing.assert_allclose(letter[:, 16:83].transpose(1, 2, 0), resized, atol=1e-4)
    assert not np.any(np.all(stretch == 114, axis=(0, 2)))  # no padding rows when stretched
    # a tall image is padded left and right
    tall = _load(images.images_to_feeds(photo_dir, tmp_path / "l", **common)[1])[0]  # b_tall: 200x400
    assert np.all(tall[:, :, :20] == 114) and np.all(tall[:, :, -20:] == 114)


def test_feeds_overwrite_atomically_and_keep_other_files(photo_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    images.images_to_feeds(photo_dir, out, input_name="x", size="16x16")
    images.images_to_feeds(photo_dir, out, input_name="x", size="16x16")  # again: replaced, not duplicated
    assert (out / "keep.txt").read_text() == "mine"
    assert len(list(out.glob("*.npz"))) == 6 and not list(out.glob(".*"))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(size="224"), None),  # square shorthand is accepted
        (dict(size="224x"), "bad image size"),
        (dict(size="ax224"), "bad image size"),
        (dict(size="0x224"), "bad image size"),
        (dict(size=(1, 2, 3)), "bad image size"),
        (dict(size="8x8", mean="0.1,0.2"), "--mean has 2 values"),
        (dict(size="8x8", std=(1, 2, 3, 4)), "--std has 4 values"),
        (dict(size="8x8", mean="a,b,c"), "bad --mean"),
        (dict(size="8x8", std="0.5,0,0.5"), "contains 0"),
        (dict(size="8x8", std=0), "contains 0"),
        (dict(size="8x8", layout="chw"), "layout"),
        (dict(size="8x8", input_name=""), "input name"),
    ],
)
def test_bad_arguments_raise_input_error(photo_dir, tmp_path, kwargs, pattern):
    kwargs = {"input_name": "x", **kwargs}
    if pattern is None:
        assert _load(images.images_to_feeds(photo_dir, tmp_path / "o", **kwargs)[0]).shape == (1, 3, 224, 224)
        return
    with pytest.raises(InputError, match=pattern):
        images.images_to_feeds(photo_dir, tmp_path / "o", **kwargs)
    assert not (tmp_path / "o").exists()  # checked before writing anything


def test_folder_errors(tmp_path, photo):
    with pytest.raises(InputError, match="image folder not found"):
        images.images_to_feeds(tmp_path / "missing", tmp_path / "o", input_name="x", size="8x8")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is empty"):
        images.images_to_feeds(tmp_path / "empty", tmp_path / "o", input_name="x", size="8x8")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no images in"):
        images.images_to_feeds(tmp_path / "text", tmp_path / "o", input_name="x", size="8x8")
    photo.save(tmp_path / "file.jpg")
    with pytest.raises(InputError, match="expected a folder"):
        images.images_to_feeds(tmp_path / "file.jpg", tmp_path / "o", input_name="x", size="8x8")


def test_unreadable_and_truncated_images_are_named(tmp_path, photo):
    import io

    folder = tmp_path / "imgs"
    folder.mkdir()
    photo.save(folder / "a_ok.jpg")
    (folder / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(InputError, match=r"cannot read image .*b_broken\.png"):
        images.images_to_feeds(folder, tmp_path / "o", input_name="x", size="8x8")
    (folder / "b_broken.png").unlink()
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG")
    (folder / "c_truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    with pytest.raises(InputError, match=r"c_truncated\.jpg"):
        images.images_to_feeds(folder, tmp_path / "o", input_name="x", size="8x8")


def test_two_images_with_the_same_stem_are_refused(tmp_path, photo):
    folder = tmp_path / "imgs"
    folder.mkdir()
    photo.save(folder / "same.jpg")
    photo.save(folder / "same.png")
    with pytest.raises(InputError, match="same.npz"):
        images.images_to_feeds(folder, tmp_path / "o", input_name="x", size="8x8")


def _parser():
    """The CLI's parser class with the ``data`` subcommand added, as cli._build_parser will do."""
    from precision_lab.cli import _ArgumentParser

    parser = _ArgumentParser(prog="precision-lab")
    sub = parser.add_subparsers(dest="command", parser_class=_ArgumentParser)
    images.add_parser(sub)
    return parser


def test_cli_parser_and_run(photo_dir, tmp_path, capsys):
    out = tmp_path / "feeds"
    args = _parser().parse_args([
        "data", "images", str(photo_dir), "-o", str(out), "--input", "images", "--size", "48x64",
        "--mean", "0.5", "--std", "0.5,0.5,0.5", "--layout", "nhwc", "--channels", "bgr", "--resize", "stretch",
    ])
    assert args.command == "data" and args.data_command == "images"
    assert images.run(args) == 0
    printed = capsys.readouterr().out
    assert "wrote 6 feeds" in printed and "1x48x64x3" in printed and "float32" in printed
    assert _load(out / "a_wide.npz", "images").shape == (1, 48, 64, 3)
    with pytest.raises(InputError, match="--size"):
        _parser().parse_args(["data", "images", str(photo_dir), "-o", str(out), "--input", "x"])
    with pytest.raises(InputError, match="invalid choice"):
        _parser().parse_args(["data", "images", str(photo_dir), "-o", str(out), "--input", "x", "--size", "8",
                              "--layout", "chw"])
    with pytest.raises(InputError, match="needs a subcommand"):
        images.run(_parser().parse_args(["data"]))


def _cli_has_data_command() -> bool:
    from precision_lab.cli import _build_parser

    try:
        _build_parser().parse_args(["data", "images", "d", "-o", "o", "--input", "x", "--size", "8"])
    except Exception:
        return False
    return True


def test_images_feed_a_sweep_of_plain_cnn(photo_dir, tmp_path, capsys):
    """images -> feeds (1x3x32x32 'input') -> precision-lab sweep: the folder is accepted as --data."""
    from precision_lab.cli import main

    data = tmp_path / "feeds"
    if _cli_has_data_command():
        assert main(["data", "images", str(photo_dir), "-o", str(data), "--input", "input", "--size", "32x32"]) == 0
    else:  # not wired into the CLI yet: same thing through the library
        images.images_to_feeds(photo_dir, data, input_name="input", size=(32, 32))
    # twelve feeds: the six photos plus their flips
    from PIL import Image, ImageOps

    more = tmp_path / "more"
    more.mkdir()
    for path in sorted(photo_dir.glob("*.*")):
        if path.suffix != ".txt":
            with Image.open(path) as image:
                ImageOps.flip(image.convert("RGB")).save(more / f"{path.stem}_flipped.png")
    images.images_to_feeds(more, data, input_name="input", size=(32, 32))
    assert len(list(data.glob("*.npz"))) == 12
    out = tmp_path / "out"
    code = main([
        "sweep", str(SAMPLES / "plain_cnn.onnx"), "--data", str(data), "--calib-samples", "8",
        "--eval-samples", "4", "--verify-samples", "0", "--out", str(out), "--quiet",
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "NO DATA GIVEN" not in captured.err
    plan = json.loads((out / "plan.json").read_text())
    assert plan["data"]["source"] == str(data)
    assert len(plan["data"]["eval_feeds"]) == 4 and all(f.endswith(".npz") for f in plan["data"]["eval_feeds"])
    assert plan["achieved"]["passed"]
