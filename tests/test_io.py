"""Tests for camscope.io: inputs, robust decoding, preprocessing, atomic writes."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageFile

from camscope import io as imageio
from camscope.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    InputError,
    atomic_open,
    atomic_write_bytes,
    collect_inputs,
    iter_images,
    load_image,
    preprocess,
    resize_rgb,
    save_figure,
    save_npy,
    save_png,
    to_tensor,
    unique_names,
    write_csv,
    write_json,
    write_text,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- helpers


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height but holds (almost) no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )
    path.write_bytes(data)
    return path


def _assert_one_line_error(err: InputError, path: Path | str) -> None:
    text = str(err)
    assert "\n" not in text and "\r" not in text
    assert text.startswith(f"{os.fspath(path)}: ")
    assert err.path == os.fspath(path)
    assert text == f"{err.path}: {err.cause}"
    assert "Traceback" not in text


def _load_error(path: Path, **kwargs: object) -> InputError:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warning may leak
        with pytest.raises(InputError) as info:
            load_image(path, **kwargs)
    _assert_one_line_error(info.value, path)
    return info.value


def _files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- InputError


def test_input_error_is_one_line_and_picklable() -> None:
    err = InputError(Path("some/dir/x.jpg"), "truncated or corrupt\nimage data")
    assert str(err) == "some/dir/x.jpg: truncated or corrupt image data"
    assert err.path == "some/dir/x.jpg"
    assert err.cause == "truncated or corrupt image data"
    clone = pickle.loads(pickle.dumps(err))
    assert str(clone) == str(err) and clone.path == err.path and clone.cause == err.cause
    odd = InputError("odd\nname.png", "not a recognised image format")
    assert str(odd) == "odd\\nname.png: not a recognised image format"
    assert odd.path == "odd\nname.png"


def test_constants() -> None:
    assert DEFAULT_MAX_PIXELS == 178_956_970
    assert DEFAULT_MAX_PIXELS == 2 * 89_478_485  # Pillow's default hard limit
    expected = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
    assert expected | {".pgm", ".pbm", ".jfif"} <= set(IMAGE_EXTENSIONS)  # + all Pillow decodes
    assert all(ext == ext.lower() for ext in IMAGE_EXTENSIONS)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ----------------------------------------------------------------------------- collect_inputs


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "empty").mkdir()
    for rel in ["b.png", "a.JPG", "sub/c.jpeg", "sub/deeper/d.webp", ".hidden/e.png", ".f.png"]:
        (root / rel).write_bytes(b"x")
    (root / "notes.txt").write_text("not an image")
    return root


def test_collect_folder_recursive_sorted_hidden_skipped(tree: Path) -> None:
    files, errors = collect_inputs([tree])
    assert errors == []
    rel = [p.relative_to(tree).as_posix() for p in files]
    assert rel == ["a.JPG", "b.png", "sub/c.jpeg", "sub/deeper/d.webp"]


def test_collect_file_taken_whatever_extension(tree: Path) -> None:
    files, errors = collect_inputs([str(tree / "notes.txt")])
    assert errors == [] and files == [tree / "notes.txt"]


def test_collect_glob_recursive(tree: Path) -> None:
    files, errors = collect_inputs([str(tree / "**" / "*.png"), str(tree / "sub" / "*")])
    assert errors == []
    rel = [p.relative_to(tree).as_posix() for p in files]
    assert rel == ["b.png", "sub/c.jpeg"]  # folders and hidden files not matched


def test_collect_errors(tree: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jpg"
    pattern = str(tmp_path / "nothing" / "*.png")
    only_text = str(tree / "*.txt")
    files, errors = collect_inputs([missing, pattern, tree / "empty", only_text, tree / "b.png"])
    assert files == [tree / "b.png"]
    assert [e.cause for e in errors] == [
        "no such file or directory",
        "no files match this pattern",
        "folder contains no images",
        "pattern matches no image files",
    ]
    for err, given in zip(errors, [missing, pattern, tree / "empty", only_text], strict=True):
        _assert_one_line_error(err, given)


def test_collect_deduplicates_keeping_order(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    files, errors = collect_inputs(
        ["sub/c.jpeg", tree, str(tree / "sub" / ".." / "b.png"), "b.png", "./sub/c.jpeg"]
    )
    assert errors == []
    resolved = [p.resolve() for p in files]
    assert resolved == [
        (tree / "sub/c.jpeg").resolve(),
        (tree / "a.JPG").resolve(),
        (tree / "b.png").resolve(),
        (tree / "sub/deeper/d.webp").resolve(),
    ]


# ----------------------------------------------------------------------------- load_image: bad


def test_load_zero_byte(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert _load_error(path).cause == "empty file (0 bytes)"


def test_load_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, I am not a picture\n" * 20)
    assert _load_error(path).cause == "not a recognised image format"


def test_load_corrupt_data(tmp_path: Path) -> None:
    good = _save(_noise(32, 32), tmp_path / "good.png")
    data = bytearray(good.read_bytes())
    data[60:-20] = bytes(len(data) - 80)  # wipe the compressed pixel data
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(bytes(data))
    assert "corrupt" in _load_error(bad).cause


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_load_truncated(tmp_path: Path, fmt: str) -> None:
    good = _save(_noise(64, 48), tmp_path / f"good.{fmt.lower()}", format=fmt)
    load_image(good)  # the intact file is fine
    data = good.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: len(data) // 2])
    assert _load_error(cut).cause == "truncated or corrupt image data"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_load_directory(tmp_path: Path) -> None:
    assert _load_error(tmp_path).cause == "is a directory, not an image file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_load_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert _load_error(fifo).cause == "not a regular file"


def test_load_missing(tmp_path: Path) -> None:
    assert _load_error(tmp_path / "nope.jpg").cause == "no such file or directory"


def test_load_permission_denied_chmod(tmp_path: Path) -> None:
    path = _save(_noise(4, 4), tmp_path / "secret.png")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that ignore file permissions")
        assert _load_error(path).cause == "permission denied"
    finally:
        path.chmod(0o644)


def test_load_permission_denied_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(_noise(4, 4), tmp_path / "secret.png")

    def deny(_: Path) -> io.BufferedReader:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(imageio.decode, "_open_binary", deny)
    assert _load_error(path).cause == "permission denied"


def test_load_pixel_limit_small(tmp_path: Path) -> None:
    path = _save(_noise(30, 20), tmp_path / "small.png")
    err = _load_error(path, max_pixels=100)
    assert err.cause == "image is 30x20 (600 pixels), above the 100-pixel limit"
    assert load_image(path, max_pixels=600).size == (30, 20)
    assert load_image(path, max_pixels=None).size == (30, 20)


def test_load_pixel_limit_checked_before_decoding(tmp_path: Path) -> None:
    # 20000x20000 would need 1.2 GB to decode; the header alone must be enough to refuse it,
    # even though Pillow itself refuses it with DecompressionBombError.
    path = _png_header_only(tmp_path / "huge.png", 20000, 20000)
    err = _load_error(path)
    assert err.cause == "image is 20000x20000 (400.0 MP), above the 178.9 MP limit"
    # Between Pillow's warning threshold (89.5 MP) and our limit: our own message, no warning.
    big = _png_header_only(tmp_path / "big.png", 10000, 10000)
    err = _load_error(big, max_pixels=50_000_000)
    assert err.cause == "image is 10000x10000 (100.0 MP), above the 50.0 MP limit"


def test_load_no_bomb_warning_below_limit(tmp_path: Path) -> None:
    # 100 MP passes the default limit (Pillow would warn here); the header-only file then
    # fails to decode, which must be an InputError and never a DecompressionBombWarning.
    path = _png_header_only(tmp_path / "big.png", 10000, 10000)
    assert _load_error(path).cause == "truncated or corrupt image data"


# ----------------------------------------------------------------------------- load_image: modes


def _check_rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert image.size == size
    return np.asarray(image)


def test_load_rgb_roundtrip(tmp_path: Path) -> None:
    src = _noise(7, 5)
    arr = _check_rgb(load_image(_save(src, tmp_path / "x.png")), (7, 5))
    np.testing.assert_array_equal(arr, np.asarray(src))


def test_load_one_by_one(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (1, 1), (10, 20, 30)), tmp_path / "dot.png")
    arr = _check_rgb(load_image(path), (1, 1))
    assert arr[0, 0].tolist() == [10, 20, 30]


def test_load_grey_l(tmp_path: Path) -> None:
    grey = Image.fromarray(np.array([[0, 128, 255]], dtype=np.uint8), "L")
    arr = _check_rgb(load_image(_save(grey, tmp_path / "g.png")), (3, 1))
    assert arr[0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]


def test_load_la_composited_on_white(tmp_path: Path) -> None:
    data = np.array([[[0, 255], [0, 0], [100, 128]]], dtype=np.uint8)
    arr = _check_rgb(load_image(_save(Image.fromarray(data, "LA"), tmp_path / "la.png")), (3, 1))
    assert arr[0, 0].tolist() == [0, 0, 0]
    assert arr[0, 1].tolist() == [255, 255, 255]
    expected = round(100 * 128 / 255 + 255 * (1 - 128 / 255))
    assert arr[0, 2].tolist() == [expected] * 3


def test_load_rgba_transparent_is_white(tmp_path: Path) -> None:
    data = np.array(
        [[[10, 20, 30, 255], [10, 20, 30, 0], [0, 0, 0, 128]]],
        dtype=np.uint8,
    )
    path = _save(Image.fromarray(data, "RGBA"), tmp_path / "rgba.png")
    arr = _check_rgb(load_image(path), (3, 1))
    assert arr[0, 0].tolist() == [10, 20, 30]
    assert arr[0, 1].tolist() == [255, 255, 255]
    assert arr[0, 2].tolist() == [round(255 * (1 - 128 / 255))] * 3


def test_load_palette(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putdata([0, 1])
    arr = _check_rgb(load_image(_save(pal, tmp_path / "p.png")), (2, 1))
    assert arr[0].tolist() == [[255, 0, 0], [0, 0, 255]]


def test_load_palette_with_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putdata([0, 1])
    path = _save(pal, tmp_path / "pt.png", transparency=1)
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" in check.info
    arr = _check_rgb(load_image(path), (2, 1))
    assert arr[0].tolist() == [[255, 0, 0], [255, 255, 255]]


def test_load_gif_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 255, 0, 9, 9, 9] + [0] * 762)
    pal.putdata([0, 1])
    arr = _check_rgb(load_image(_save(pal, tmp_path / "t.gif", transparency=1)), (2, 1))
    assert arr[0].tolist() == [[0, 255, 0], [255, 255, 255]]


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_load_cmyk(tmp_path: Path, fmt: str) -> None:
    cmyk = Image.new("CMYK", (6, 4), (0, 0, 0, 0))  # no ink = white
    arr = _check_rgb(load_image(_save(cmyk, tmp_path / f"c.{fmt.lower()}", format=fmt)), (6, 4))
    assert arr.min() >= 250


@pytest.mark.parametrize(
    ("dtype", "fmt"),
    [(np.uint16, "PNG"), (np.dtype(">u2"), "TIFF"), (np.uint16, "TIFF"), (np.int32, "TIFF")],
)
def test_load_16_bit_scaled_not_clipped(tmp_path: Path, dtype: object, fmt: str) -> None:
    data = np.array([[0, 257, 32768, 65535]]).astype(dtype)
    image = Image.fromarray(data)
    path = _save(image, tmp_path / f"deep.{fmt.lower()}", format=fmt)
    with Image.open(path) as check:
        assert check.mode in {"I;16", "I;16B", "I"}
    arr = _check_rgb(load_image(path), (4, 1))
    assert arr[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_load_float_clipped(tmp_path: Path) -> None:
    data = np.array([[-5.0, 0.4, 127.6, 300.0]], dtype=np.float32)
    path = _save(Image.fromarray(data, "F"), tmp_path / "f.tiff")
    arr = _check_rgb(load_image(path), (4, 1))
    assert arr[0, :, 0].tolist() == [0, 0, 128, 255]


def test_load_lab(tmp_path: Path) -> None:
    lab = Image.new("LAB", (2, 2), (128, 128, 128))  # L=50%, neutral
    arr = _check_rgb(load_image(_save(lab, tmp_path / "lab.tiff")), (2, 2))
    assert abs(int(arr[0, 0, 0]) - 119) <= 3
    assert int(arr[0, 0].max()) - int(arr[0, 0].min()) <= 2  # grey


def test_load_bilevel(tmp_path: Path) -> None:
    bw = Image.new("1", (2, 1))
    bw.putpixel((1, 0), 1)
    arr = _check_rgb(load_image(_save(bw, tmp_path / "bw.png")), (2, 1))
    assert arr[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_load_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 6), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 2
    arr = _check_rgb(load_image(path), (8, 6))
    assert arr[0, 0].tolist() == [255, 0, 0]


def test_load_multipage_tiff_first_page(tmp_path: Path) -> None:
    pages = [Image.new("RGB", (5, 5), (0, 200, 0)), Image.new("RGB", (9, 9), (200, 0, 0))]
    path = tmp_path / "pages.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    arr = _check_rgb(load_image(path), (5, 5))
    assert arr[2, 2].tolist() == [0, 200, 0]


def test_load_exif_orientation(tmp_path: Path) -> None:
    src = np.zeros((20, 30, 3), dtype=np.uint8)  # 30 wide, 20 high
    src[:, :15] = (255, 0, 0)  # left half red
    src[:, 15:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(Image.fromarray(src), tmp_path / "rot.jpg", exif=exif, quality=95)
    arr = _check_rgb(load_image(path), (20, 30))
    top, bottom = arr[2, 10].astype(int), arr[-3, 10].astype(int)
    assert top[0] > 200 and top[2] < 60  # left (red) became the top
    assert bottom[2] > 200 and bottom[0] < 60


def test_load_image_is_detached_from_file(tmp_path: Path) -> None:
    path = _save(_noise(8, 8), tmp_path / "x.png")
    image = load_image(path)
    path.unlink()
    assert np.asarray(image).shape == (8, 8, 3)


# ----------------------------------------------------------------------------- preprocessing


def test_resize_rgb_height_width_order() -> None:
    out = resize_rgb(_noise(40, 30), size=(12, 20))
    assert out.shape == (12, 20, 3) and out.dtype == np.uint8
    assert out.flags.writeable and out.flags.c_contiguous
    flat = resize_rgb(Image.new("RGB", (50, 50), (1, 2, 3)))
    assert flat.shape == (224, 224, 3)
    assert (flat == np.array([1, 2, 3], dtype=np.uint8)).all()


def test_to_tensor_values() -> None:
    rgb = np.array([[[0, 255, 51]]], dtype=np.uint8)
    tensor = to_tensor(rgb, MEAN, STD)
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (3, 1, 1)
    expected = [(0 - MEAN[0]) / STD[0], (1 - MEAN[1]) / STD[1], (0.2 - MEAN[2]) / STD[2]]
    np.testing.assert_allclose(tensor[:, 0, 0].numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError):
        to_tensor(rgb.astype(np.float32), MEAN, STD)
    with pytest.raises(ValueError):
        to_tensor(rgb[..., :2], MEAN, STD)


def test_preprocess_matches_parts() -> None:
    image = _noise(31, 17)
    rgb, tensor = preprocess(image, size=(16, 8), mean=MEAN, std=STD)
    assert rgb.shape == (16, 8, 3) and tuple(tensor.shape) == (3, 16, 8)
    np.testing.assert_array_equal(rgb, resize_rgb(image, (16, 8)))
    assert torch.equal(tensor, to_tensor(rgb, MEAN, STD))


# ----------------------------------------------------------------------------- unique_names


def test_unique_names_plain_and_sanitised(tmp_path: Path) -> None:
    names = unique_names([tmp_path / "cat.jpg", tmp_path / "my dog (1).png", tmp_path / ".x.png"])
    assert names == ["cat", "my_dog__1_", "x"]


def test_unique_names_prefix_parent(tmp_path: Path) -> None:
    paths = [tmp_path / "a" / "cat.jpg", tmp_path / "b" / "cat.png", tmp_path / "dog.png"]
    assert unique_names(paths) == ["a_cat", "b_cat", "dog"]


def test_unique_names_deeper_parents(tmp_path: Path) -> None:
    paths = [tmp_path / "a" / "x" / "cat.jpg", tmp_path / "b" / "x" / "cat.jpg"]
    assert unique_names(paths) == ["a_x_cat", "b_x_cat"]


def test_unique_names_prefix_then_number(tmp_path: Path) -> None:
    paths = [tmp_path / "a" / "cat.jpg", tmp_path / "b" / "cat.jpg", tmp_path / "b" / "cat.png"]
    assert unique_names(paths) == ["a_cat", "b_cat", "b_cat-2"]


def test_unique_names_prefix_collides_with_other_name(tmp_path: Path) -> None:
    paths = [tmp_path / "a_cat.jpg", tmp_path / "a" / "cat.jpg", tmp_path / "b" / "cat.jpg"]
    names = unique_names(paths)
    assert len({n.lower() for n in names}) == 3
    assert names[2] == "b_cat"


def test_unique_names_case_insensitive_and_numbered(tmp_path: Path) -> None:
    paths = [tmp_path / "Cat.jpg", tmp_path / "cat.png", tmp_path / "CAT.gif", tmp_path / "cat.png"]
    names = unique_names(paths)
    assert names == ["Cat", "cat-2", "CAT-3", "cat-4"]
    assert len({n.lower() for n in names}) == len(names)
    # Deterministic.
    assert unique_names(paths) == names


def test_unique_names_never_duplicates(tmp_path: Path) -> None:
    paths = [tmp_path / "cat-2.png", tmp_path / "cat.png", tmp_path / "cat.jpg"]
    names = unique_names(paths)
    assert len({n.lower() for n in names}) == 3
    assert names[0] == "cat-2" and names[1] == "cat"


# ----------------------------------------------------------------------------- atomic writes


def test_writers_roundtrip(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "er"
    atomic_write_bytes(out / "b.bin", b"\x00\x01")
    write_text(out / "t.txt", "héllo\n")
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    save_png(out / "i.png", rgb)
    save_png(out / "j.png", Image.fromarray(rgb))
    save_npy(out / "m.npy", np.eye(2, dtype=np.float32))
    write_csv(out / "c.csv", ["name", "p"], [("a,b", 0.5), ("c", 1)])
    write_json(out / "r.json", {"x": float("nan"), "y": np.float32(1.5), "z": (1, 2), "p": out})

    assert (out / "b.bin").read_bytes() == b"\x00\x01"
    assert (out / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    with Image.open(out / "i.png") as im:
        np.testing.assert_array_equal(np.asarray(im), rgb)
    with Image.open(out / "j.png") as im:
        np.testing.assert_array_equal(np.asarray(im), rgb)
    np.testing.assert_array_equal(np.load(out / "m.npy"), np.eye(2, dtype=np.float32))
    assert (out / "c.csv").read_text() == 'name,p\n"a,b",0.5\nc,1\n'
    assert json.loads((out / "r.json").read_text()) == {
        "x": None,
        "y": 1.5,
        "z": [1, 2],
        "p": str(out),
    }
    assert _files_in(out) == ["b.bin", "c.csv", "i.png", "j.png", "m.npy", "r.json", "t.txt"]


def test_atomic_write_replaces_existing(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    write_text(target, "new")
    assert target.read_text() == "new"
    assert _files_in(tmp_path) == ["f.txt"]


def test_atomic_exception_mid_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as fh:
        fh.write("partial")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _files_in(tmp_path) == ["f.txt"]


def test_save_figure_bad_format_leaves_nothing(tmp_path: Path) -> None:
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    with pytest.raises(ValueError):
        save_figure(tmp_path / "plot.notaformat", fig)
    assert _files_in(tmp_path) == []
    fig2 = Figure(figsize=(1, 1))
    save_figure(tmp_path / "plot.png", fig2, dpi=20)
    with Image.open(tmp_path / "plot.png") as im:
        assert im.size == (20, 20)
    assert _files_in(tmp_path) == ["plot.png"]


def test_write_into_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running with privileges that ignore folder permissions")
        with pytest.raises(OSError):
            write_text(folder / "x.txt", "data")
        assert _files_in(folder) == []
    finally:
        folder.chmod(0o755)


def test_write_denied_by_os_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulates a read-only folder where chmod cannot (root): creating the temp file fails.
    folder = tmp_path / "ro"
    folder.mkdir()
    real_open = os.open

    def deny(path: str | os.PathLike[str], *args: object, **kwargs: object) -> int:
        if Path(path).parent == folder:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(PermissionError):
        write_csv(folder / "x.csv", ["a"], [[1]])
    assert _files_in(folder) == []


def test_failed_rename_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        save_png(tmp_path / "x.png", np.zeros((2, 2, 3), np.uint8))
    assert _files_in(tmp_path) == []


def test_write_under_a_file_fails_cleanly(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("I am a file")
    with pytest.raises(OSError):
        save_npy(blocker / "x.npy", np.zeros(2))
    with pytest.raises(OSError):
        write_json(blocker / "sub" / "x.json", {})
    assert _files_in(tmp_path) == ["blocker"]


def test_write_onto_a_directory_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "taken", b"data")
    assert _files_in(tmp_path) == ["taken"]


def test_write_json_rejects_unknown_types(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_json(tmp_path / "x.json", {"x": object()})
    assert _files_in(tmp_path) == []


def test_atomic_file_permissions_follow_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "x.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------- iter_images


def test_iter_images_order_and_errors(tmp_path: Path) -> None:
    paths = []
    for i in range(6):
        paths.append(_save(_noise(20 + i, 10, seed=i), tmp_path / f"img{i}.png"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    paths.insert(2, bad)
    paths.append(tmp_path / "missing.png")

    results = list(iter_images(paths, size=(8, 8), mean=MEAN, std=STD, workers=2, prefetch=3))
    assert [r.path for r in results] == paths
    for item in results:
        path, rgb, tensor, error = item
        if path in (bad, tmp_path / "missing.png"):
            assert rgb is None and tensor is None and isinstance(error, InputError)
            _assert_one_line_error(error, path)
        else:
            assert error is None and rgb is not None and tensor is not None
            assert rgb.shape == (8, 8, 3) and tuple(tensor.shape) == (3, 8, 8)
            expected, _ = preprocess(load_image(path), size=(8, 8), mean=MEAN, std=STD)
            np.testing.assert_array_equal(rgb, expected)


def test_iter_images_bounded_prefetch(tmp_path: Path) -> None:
    path = _save(_noise(4, 4), tmp_path / "x.png")
    pulled = 0
    lock = threading.Lock()

    def source():
        nonlocal pulled
        for _ in range(50):
            with lock:
                pulled += 1
            yield path

    gen = iter_images(source(), size=(4, 4), mean=MEAN, std=STD, workers=2, prefetch=4)
    first = next(gen)
    assert first.error is None
    assert pulled <= 5  # never reads far ahead of the consumer
    gen.close()  # stopping early must not hang
    assert pulled <= 5
