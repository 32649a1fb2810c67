"""Reliability of decoding: memory budget per mode, usage errors, Pillow warnings (issue 10)."""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps, features

from camscope.io import (
    DEFAULT_MAX_PIXELS,
    InputError,
    bytes_per_pixel,
    decode_budget,
    iter_images,
    load_image,
)
from camscope.io import decode as decode_module

ROOT = Path(__file__).resolve().parents[1]


def _rgba(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8))


def _strict_load(path: Path, **kwargs: object) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Python warning may leak
        return load_image(path, **kwargs)


def _strict_error(path: Path, **kwargs: object) -> InputError:
    with pytest.raises(InputError) as info:
        _strict_load(path, **kwargs)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{path}: ")
    return info.value


# ----------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("bad", [0, -1, -(10**9), 1.5, True, "100"])
def test_max_pixels_must_be_positive(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "x.png"
    _rgba(2, 2).save(path)
    with pytest.raises(ValueError, match="max_pixels must be a positive number of pixels"):
        decode_budget(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        load_image(path, max_pixels=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # before any image is read, not once per image
        iter_images([tmp_path / "missing.png"], mean=(0, 0, 0), std=(1, 1, 1), max_pixels=bad)


def test_budget_numbers() -> None:
    assert decode_budget(1) == 8 and decode_budget(1_000_000) == 8_000_000
    assert decode_budget(DEFAULT_MAX_PIXELS) == DEFAULT_MAX_PIXELS * 8  # 1.33 GiB
    for mode in ["1", "L", "P", "LA", "PA", "RGB", "RGBA", "CMYK", "LAB", "I", "F", "I;16"]:
        assert bytes_per_pixel(mode) == 8, mode
    assert bytes_per_pixel("RGB", "WEBP") == 16 and bytes_per_pixel("RGBA", "AVIF") == 10
    assert bytes_per_pixel("no such mode") == 12  # unknown: assume the widest


# ----------------------------------------------------------------------------- byte budget


def test_rgba_png_just_below_and_above_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    _rgba(20, 10).save(path)  # 200 pixels, 8 bytes/pixel
    assert _strict_load(path, max_pixels=200).size == (20, 10)
    err = _strict_error(path, max_pixels=199)
    assert err.cause == "image is 20x10 (200 pixels), above the 199-pixel limit"


@pytest.mark.skipif(not features.check("webp"), reason="Pillow without WebP")
def test_webp_byte_budget_below_and_above(tmp_path: Path) -> None:
    """WebP costs 16 bytes/pixel: refused for memory while within the pixel limit."""
    path = tmp_path / "x.webp"
    _rgba(10, 10).save(path, lossless=True)  # 100 pixels -> 1600 bytes to decode
    assert _strict_load(path, max_pixels=200).size == (10, 10)  # budget 1600: fits exactly
    err = _strict_error(path, max_pixels=199)  # budget 1592 bytes, 100 <= 199 pixels
    assert err.cause == (
        "WEBP RGBA image of 10x10 (100 pixels) needs 1600 bytes to decode (16 bytes/pixel), "
        "above the 1592 bytes budget of the 199-pixel limit"
    )


def test_budget_is_checked_before_decoding(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "x.png"
    _rgba(30, 30).save(path)

    def never(*_: object) -> None:
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(decode_module, "_load_pixels", never)
    monkeypatch.setitem(decode_module.FORMAT_EXTRA_BYTES, "PNG", 100)
    err = _strict_error(path, max_pixels=1000)
    assert "needs 97.7 KiB" not in err.cause and "108 bytes/pixel" in err.cause


_CHILD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from camscope.io import load_image, preprocess

    def hwm():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

    load_image(sys.argv[1])  # the corrupt-EXIF JPEG: its warning goes to stderr
    peaks = {}
    for path in sys.argv[2:]:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak RSS to the current RSS
        before = hwm()
        rgb = load_image(path)
        preprocess(rgb, size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3)
        peaks[path] = hwm() - before
        del rgb
    print(json.dumps(peaks))
    """
)
_SIDE = 2828  # 8.0 MP


def _big(mode: str, folder: Path) -> Path:
    ramp = np.linspace(0, 255, _SIDE, dtype=np.float32)
    base = (ramp[None, :] + ramp[:, None]) % 256
    if mode == "RGBA":
        image = Image.fromarray(np.stack([base, base, 255 - base, base], axis=2).astype(np.uint8))
    elif mode == "I;16":
        image = Image.fromarray((base * 257).astype(np.uint16))
    else:
        image = Image.fromarray(base)
    assert image.mode == mode
    path = folder / f"big-{mode.replace(';', '')}.{'tiff' if mode == 'F' else 'png'}"
    image.save(path, **({} if mode == "F" else {"compress_level": 1}))
    return path


@pytest.fixture(scope="module")
def child(tmp_path_factory) -> tuple[dict[str, int], str, dict[str, Path]]:
    """One subprocess: loads a corrupt-EXIF JPEG, then measures peak RSS per big image."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs /proc/self/clear_refs (Linux)")
    folder = tmp_path_factory.mktemp("big")
    bad = _jpeg_with_corrupt_exif(folder / "bad-exif.jpg")
    big = {mode: _big(mode, folder) for mode in ["RGBA", "I;16", "F"]}
    out = subprocess.run(
        [sys.executable, "-W", "default", "-c", _CHILD_SCRIPT, str(bad)]
        + [str(p) for p in big.values()],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    peaks = json.loads(out.stdout)
    return {mode: peaks[str(path)] for mode, path in big.items()}, out.stderr, {"bad": bad}


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "F"])
def test_decode_peak_memory_within_the_budget(child, mode: str) -> None:
    """Real peak RSS of decoding an 8 MP image stays within bytes_per_pixel (+ one band)."""
    peak = child[0][mode]
    pixels = _SIDE * _SIDE
    assert peak <= pixels * bytes_per_pixel(mode) + 32 * 2**20, peak / pixels
    assert peak <= pixels * 13  # the full-image float conversions took 28-64 bytes/pixel


# ----------------------------------------------------------------------------- band-wise


def _reference_rgb(image: Image.Image) -> np.ndarray:
    """Slow float64 reference of the documented per-mode rules (whole image at once)."""
    mode = image.mode
    if mode == "I" or mode.startswith("I;16"):
        grey = np.rint(np.clip(np.asarray(image).astype(np.float64), 0, 65535) * 255 / 65535)
        return np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    if mode == "F":
        grey = np.rint(np.clip(np.nan_to_num(np.asarray(image, dtype=np.float64)), 0, 255))
        return np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    rgba = np.asarray(image.convert("RGBA")).astype(np.float64)
    alpha = rgba[..., 3:] / 255
    return np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


def _modes_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(3)
    pal = Image.fromarray(rng.integers(0, 256, (23, 17), dtype=np.uint8)).convert("P")
    pal.info["transparency"] = 5
    return {
        "RGBA": _rgba(17, 23),
        "LA": _rgba(17, 23).convert("LA"),
        "P+tRNS": pal,
        "I;16": Image.fromarray(rng.integers(0, 65536, (23, 17), dtype=np.uint16)),
        "I": Image.fromarray(rng.integers(-9, 70000, (23, 17), dtype=np.int32)),
        "F": Image.fromarray(rng.normal(100, 120, (23, 17)).astype(np.float32)),
    }


@pytest.mark.parametrize("name", list(_modes_images()))
def test_bandwise_conversion_matches_whole_image_reference(name: str, monkeypatch) -> None:
    image = _modes_images()[name]
    expected = _reference_rgb(image)
    monkeypatch.setattr(decode_module, "_TILE_PIXELS", 17 * 4)  # 4 rows a band, last one 3
    banded = np.asarray(decode_module._to_rgb(image))
    monkeypatch.setattr(decode_module, "_TILE_PIXELS", 10**9)
    whole = np.asarray(decode_module._to_rgb(image))
    np.testing.assert_array_equal(banded, whole)  # banding changes nothing
    assert np.abs(banded.astype(int) - expected).max() <= (1 if name in {"RGBA", "LA"} else 0)
    assert (banded == expected).mean() > 0.99


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_after_conversion_matches_exif_transpose(tmp_path: Path, orientation):
    image = _rgba(7, 4, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    image.save(path, exif=exif.tobytes())
    with Image.open(path) as im:
        reference = decode_module._to_rgb(ImageOps.exif_transpose(im.convert("RGBA")))
    np.testing.assert_array_equal(np.asarray(_strict_load(path)), np.asarray(reference))


# ----------------------------------------------------------------------------- warnings


def _jpeg_with_corrupt_exif(path: Path) -> Path:
    # One ASCII tag whose data lies far beyond the EXIF block: Pillow warns and skips it.
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x010E, 2, 100, 0x1000) + b"\0" * 4
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(buffer, "JPEG", exif=exif)
    path.write_bytes(buffer.getvalue())
    return path


def test_pillow_warning_becomes_one_camscope_line(tmp_path: Path, caplog) -> None:
    path = _jpeg_with_corrupt_exif(tmp_path / "bad-exif.jpg")
    with caplog.at_level(logging.WARNING, logger="camscope"):
        image = _strict_load(path)  # raises if any Python warning escaped
    assert image.size == (8, 6)
    (record,) = [r for r in caplog.records if r.name == "camscope"]
    message = record.getMessage()
    assert message.startswith(f"{path}: Pillow warns: ") and "\n" not in message
    assert "Skipping tag" in message


def test_pillow_warning_on_stderr_is_one_line(child) -> None:
    """Without any logging set up (Python's last-resort handler), stderr gets one line."""
    stderr, path = child[1], child[2]["bad"]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: Pillow warns: ")
    assert "warnings.warn" not in stderr and ".py:" not in stderr


def test_the_same_warning_is_reported_for_every_file(tmp_path: Path, caplog) -> None:
    paths = [_jpeg_with_corrupt_exif(tmp_path / f"bad-{i}.jpg") for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="camscope"):
        for path in paths:
            load_image(path)
    lines = [r.getMessage() for r in caplog.records if r.name == "camscope"]
    assert [line.split(": ")[0] for line in lines] == [str(p) for p in paths]


@pytest.mark.parametrize("order", ["ours-first", "theirs-first"])
def test_decode_warning_state_survives_other_catch_warnings(order: str) -> None:
    """Another thread's catch_warnings interleaving with a decode leaves no state changed."""
    filters, show, impl = list(warnings.filters), warnings.showwarning, warnings._showwarnmsg_impl
    ours, theirs = decode_module._pillow_warnings("x.png"), warnings.catch_warnings(record=True)
    if order == "ours-first":
        ours.__enter__()
        theirs.__enter__()
        ours.__exit__(None, None, None)
        theirs.__exit__(None, None, None)
    else:
        theirs.__enter__()
        ours.__enter__()
        theirs.__exit__(None, None, None)
        ours.__exit__(None, None, None)
    assert warnings.filters == filters
    assert warnings.showwarning is show and warnings._showwarnmsg_impl is impl
    with pytest.warns(UserWarning, match="still shown"):
        warnings.warn("still shown", UserWarning, stacklevel=1)


def test_other_warnings_are_passed_on(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "x.png"
    _rgba(3, 3).save(path)
    real = decode_module._orientation

    def noisy(image: Image.Image) -> int:
        warnings.warn("not from Pillow", UserWarning, stacklevel=1)  # e.g. another thread
        return real(image)

    monkeypatch.setattr(decode_module, "_orientation", noisy)
    with pytest.warns(UserWarning, match="not from Pillow"):
        load_image(path)


# ----------------------------------------------------------------------------- one at a time


def test_decodes_run_one_at_a_time(tmp_path: Path, monkeypatch) -> None:
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        _rgba(9, 9, seed=i).save(paths[-1])
    active, most = 0, 0
    lock = threading.Lock()
    real = decode_module._decoded_rgb

    def slow(image: Image.Image, display: str) -> Image.Image:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.02)
        try:
            return real(image, display)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(decode_module, "_decoded_rgb", slow)
    items = list(iter_images(paths, size=(4, 4), mean=(0, 0, 0), std=(1, 1, 1), workers=3))
    assert [i.error for i in items] == [None] * 6 and most == 1
