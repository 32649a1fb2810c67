"""Robust image decoding and preprocessing.

Every image comes back as a fully decoded 8-bit ``RGB`` :class:`PIL.Image.Image`, whatever its
mode (16-bit, float, palette, alpha, CMYK, bilevel...), with its EXIF orientation applied; every
failure is a one-line :class:`~camscope.io.inputs.InputError`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import stat
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageMode, UnidentifiedImageError

from camscope.io.files import escape_name
from camscope.io.inputs import InputError, _short

__all__ = [
    "FORMAT_EXTRA_BYTES",
    "DEFAULT_MAX_PIXELS",
    "LoadedImage",
    "bytes_per_pixel",
    "decode_budget",
    "iter_images",
    "load_image",
    "preprocess",
    "resize_rgb",
    "to_tensor",
]


#: Largest accepted image, in pixels (width * height): 178,956,970 pixels (about 179 MP, some
#: 0.5 GiB as 8-bit RGB). This is Pillow's own default hard limit: ``PIL.Image.open`` raises
#: ``DecompressionBombError`` above ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (``MAX_IMAGE_PIXELS``
#: defaults to ``1024 * 1024 * 1024 // 4 // 3`` = 89,478,485, the threshold of its
#: ``DecompressionBombWarning``, which :func:`load_image` keeps quiet). :func:`load_image`
#: checks ``width * height`` from the header against this limit before decoding anything, and
#: the decode cost against the byte budget it implies (:func:`decode_budget`: 8 bytes per
#: pixel, 1.33 GiB; WebP and AVIF images cost more per pixel, so fewer of their pixels fit).
DEFAULT_MAX_PIXELS = 178_956_970

#: Extra peak bytes per pixel of decoders that hold a full-size buffer of their own on top of
#: Pillow's image (JPEG, PNG, TIFF and GIF have none; the measurements behind these numbers:
#: BENCHMARKS.md, "Memory per decoded image").
FORMAT_EXTRA_BYTES: dict[str, int] = {"WEBP": 8, "AVIF": 2}

# Pixels per band of the band-wise conversions (:func:`_map_tiles`).
_TILE_PIXELS = 1 << 18

# One decode at a time in the process: the warning filters a decode adds are process-wide, and
# one decode at a time keeps memory within one budget whatever the number of decoding threads
# (re-entrant: iter_images holds it across decode + resize).
_DECODE_LOCK = threading.RLock()

_PIL_DIR = os.path.dirname(os.path.abspath(Image.__file__)) + os.sep
_log = logging.getLogger("camscope")


class LoadedImage(NamedTuple):
    """One item yielded by :func:`iter_images` (unpacks as ``path, rgb, tensor, error``)."""

    path: Path
    rgb: np.ndarray | None
    """Resized image, uint8 (H, W, 3); ``None`` when decoding failed."""
    tensor: torch.Tensor | None
    """Normalised float32 (3, H, W) tensor; ``None`` when decoding failed."""
    error: InputError | None
    """Why the image could not be used; ``None`` on success."""


def _os_cause(exc: OSError) -> str:
    """Human cause for an OS-level failure to open a file."""
    import errno

    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
        return "no such file or directory"
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if isinstance(exc, IsADirectoryError) or exc.errno == errno.EISDIR:
        return "is a directory, not an image file"
    if exc.strerror:
        return f"cannot read file ({exc.strerror.lower()})"
    return f"cannot read file ({_short(exc)})"


def _megapixels(pixels: int, *, floor: bool = False) -> str:
    """Format a pixel count as megapixels with one decimal (``floor`` rounds down)."""
    value = pixels / 1e6
    if floor:
        value = math.floor(value * 10) / 10
    return f"{value:.1f} MP"


def _limit_text(limit: int) -> str:
    """Describe a pixel limit; small limits (tests, tiny caps) are given in pixels."""
    if limit >= 100_000:
        return f"{_megapixels(limit, floor=True)} limit"
    return f"{limit}-pixel limit"


def _size_text(width: int, height: int) -> str:
    pixels = width * height
    if pixels >= 100_000:
        return f"{width}x{height} ({_megapixels(pixels)})"
    return f"{width}x{height} ({pixels} pixels)"


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _open_binary(path: Path) -> IO[bytes]:
    """Open *path* for reading (a seam so tests can simulate OS errors)."""
    return open(path, "rb")  # noqa: SIM115 - closed by the caller


def _probe_size(fh: IO[bytes]) -> tuple[int, int] | None:
    """Read the image size from the header without Pillow's decompression-bomb check.

    Only used to word the error for images beyond Pillow's hard limit (``2 *
    Image.MAX_IMAGE_PIXELS``), for which :func:`PIL.Image.open` refuses to return an image.
    Best effort: returns ``None`` when the size cannot be found.
    """
    try:
        Image.init()
        fh.seek(0)
        prefix = fh.read(16)
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            if accept is not None:
                verdict = accept(prefix)
                if isinstance(verdict, str) or not verdict:
                    continue
            try:
                fh.seek(0)
                im = factory(fh, "")
            except Exception:  # noqa: BLE001 - try the next plugin
                continue
            return int(im.size[0]), int(im.size[1])
    except Exception:  # noqa: BLE001 - purely cosmetic, never fail here
        return None
    return None


def _open_image(fh: IO[bytes], display: str, max_pixels: int | None) -> Image.Image:
    """``Image.open`` that reports every failure as :class:`InputError`.

    Pillow's decompression-bomb *warning* is silenced (the caller checks the size against
    ``max_pixels``); its hard *error* becomes an InputError worded like the caller's check.
    """
    try:
        return Image.open(fh)
    except UnidentifiedImageError:
        raise InputError(display, "not a recognised image format") from None
    except Image.DecompressionBombError:
        raise InputError(display, _bomb_cause(fh, max_pixels)) from None
    except MemoryError:
        raise InputError(display, "not enough memory to read the image header") from None
    except Exception as exc:  # noqa: BLE001 - plugins raise OSError, ValueError, EOFError...
        if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
            raise InputError(display, "truncated or corrupt image data") from None
        raise InputError(display, f"corrupt or unsupported image ({_short(exc)})") from None


def _bomb_cause(fh: IO[bytes], max_pixels: int | None) -> str:
    """Cause for an image that Pillow refused as a decompression bomb."""
    pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    size = _probe_size(fh)
    if size is None:
        limit = pillow_limit if max_pixels is None else min(max_pixels, pillow_limit)
        return f"image is above the {_limit_text(limit)}"
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        return f"image is {_size_text(width, height)}, above the {_limit_text(max_pixels)}"
    return (
        f"image is {_size_text(width, height)}, above Pillow's {_limit_text(pillow_limit)} "
        "(raise PIL.Image.MAX_IMAGE_PIXELS to allow it)"
    )


def _decode_cause(exc: BaseException) -> str:
    """Human cause for an exception raised while decoding pixel data."""
    msg = str(exc)
    if isinstance(exc, MemoryError):
        return "not enough memory to decode the image"
    if "not available" in msg or "not supported" in msg:
        return f"cannot decode this image ({_short(msg)})"
    return "truncated or corrupt image data"


def _tiles(image: Image.Image) -> Iterator[tuple[tuple[int, int, int, int], Image.Image]]:
    """Bands of whole rows of about ``_TILE_PIXELS`` pixels: ``(box, cropped image)``."""
    width, height = image.size
    rows = max(1, _TILE_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        box = (0, top, width, min(top + rows, height))
        yield box, image.crop(box)


def _map_tiles(image: Image.Image, convert: Callable[[Image.Image], np.ndarray]) -> Image.Image:
    """8-bit RGB image built band by band from ``convert(band) -> uint8 (h, w, 3)``.

    Peak memory: the source, the RGB result (4 bytes/pixel) and one band's temporaries, instead
    of full-size float copies.
    """
    out = Image.new("RGB", image.size)
    for box, tile in _tiles(image):
        out.paste(Image.fromarray(np.ascontiguousarray(convert(tile), dtype=np.uint8)), box[:2])
    return out


def _white_composite_tile(tile: Image.Image) -> np.ndarray:
    """One band flattened over white: ``rgb * a + 255 * (1 - a)``, rounded (float32)."""
    rgba = np.asarray(tile.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3:4] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _grey16_tile(tile: Image.Image) -> np.ndarray:
    """16/32-bit integer band -> 8-bit grey RGB: ``round(clip(v, 0, 65535) * 255 / 65535)``."""
    data = np.asarray(tile).astype(np.float64)
    grey = np.rint(np.clip(data, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _float_tile(tile: Image.Image) -> np.ndarray:
    """Float band -> 8-bit grey RGB: clipped to [0, 255], rounded, NaN -> 0."""
    data = np.nan_to_num(np.asarray(tile, dtype=np.float64), nan=0.0)
    grey = np.rint(np.clip(data, 0, 255)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB (the same object when already RGB).

    * 16/32-bit integer modes (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, ``I``) are treated as
      16-bit data: clipped to 0..65535 and scaled to 0..255 (``round(v * 255 / 65535)``), not
      clipped at 255 as ``Image.convert`` does.
    * ``F`` (float) is clipped to [0, 255] and rounded (NaN -> 0).
    * Modes with an alpha channel (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``) and images with a
      ``transparency`` entry (palette / grey / RGB with tRNS) are composited over **white**.
    * ``LAB`` goes through a LittleCMS Lab -> sRGB transform.
    * Everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``HSV``, ``RGBX``...) uses
      ``Image.convert("RGB")``.

    The numeric conversions run band by band (:func:`_map_tiles`), so they hold no full-size
    temporaries: peak memory per mode is :func:`bytes_per_pixel`.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode == "I" or mode.startswith("I;16"):
        return _map_tiles(image, _grey16_tile)
    if mode == "F":
        return _map_tiles(image, _float_tile)
    if "A" in mode or "a" in mode or "transparency" in image.info:
        return _map_tiles(image, _white_composite_tile)
    if mode == "LAB":  # Image.convert would copy the channels without a colour transform
        from PIL import ImageCms

        transform = ImageCms.buildTransformFromOpenProfiles(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        return ImageCms.applyTransform(image, transform)
    return image.convert("RGB")


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) of *image*; 1 when absent or unreadable."""
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - broken EXIF: keep the stored orientation
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _orient(rgb: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation to an RGB image (the same table as ``ImageOps.exif_transpose``)."""
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return rgb if method is None else rgb.transpose(method)


def bytes_per_pixel(mode: str, format: str | None = None) -> int:  # noqa: A002 - Pillow's name
    """Peak bytes per pixel that :func:`load_image` holds to decode an image of *mode*/*format*.

    Decoding holds Pillow's image (its storage: 1 byte/pixel for ``1``/``L``/``P``, 2 for
    ``I;16``, 4 for ``I``/``F`` and every multi-band mode) and then the 8-bit RGB result (4,
    Pillow pads RGB to 4 bytes), or the RGB result and its EXIF-rotated copy (4 + 4): so
    ``max(storage + 4, 8)``, which is 8 for every mode Pillow has. The band-wise conversions
    (:func:`_to_rgb`) keep float temporaries to one band (about 20 MiB, whatever the size).
    Decoders with full-size buffers of their own add :data:`FORMAT_EXTRA_BYTES`. Measured per
    mode and format with ``benchmarks/bench_decode_memory.py`` (BENCHMARKS.md).

    Example:
        >>> bytes_per_pixel("RGB"), bytes_per_pixel("RGBA"), bytes_per_pixel("RGB", "WEBP")
        (8, 8, 16)
    """
    try:
        info = ImageMode.getmode(mode)
        item = int(info.typestr[-1])
        storage = 4 if len(info.bands) > 1 and item == 1 else item * len(info.bands)
    except (KeyError, ValueError):  # a mode this Pillow does not describe: assume the widest
        storage = 8
    return max(storage + 4, 8) + FORMAT_EXTRA_BYTES.get(format or "", 0)


def decode_budget(max_pixels: int) -> int:
    """Bytes that decoding may hold at once: ``max_pixels * bytes_per_pixel("RGB")``.

    ``max_pixels`` is the largest 8-bit RGB image accepted; an image of another mode is accepted
    when ``width * height * bytes_per_pixel(mode)`` fits the same budget (and ``width * height <=
    max_pixels``): with today's decoders only WebP and AVIF images get fewer pixels. The default,
    178,956,970 pixels, is a budget of 1.33 GiB; decoding holds at most that (plus the
    decoders' fixed buffers, BENCHMARKS.md) at once in the process, whatever the number of
    decoding threads.

    Raises:
        ValueError: ``max_pixels`` is not a positive integer (a usage error).

    Example:
        >>> decode_budget(1_000_000)
        8000000
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels!r}")
    return max_pixels * bytes_per_pixel("RGB")


def _check_size(image: Image.Image, display: str, max_pixels: int | None) -> None:
    """Refuse, before decoding, an image whose size or decode cost is above the limit."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InputError(display, f"image has an invalid size {width}x{height}")
    if max_pixels is None:
        return
    if width * height > max_pixels:
        cause = f"image is {_size_text(width, height)}, above the {_limit_text(max_pixels)}"
        raise InputError(display, cause)
    per_pixel = bytes_per_pixel(image.mode, image.format)
    need, budget = width * height * per_pixel, decode_budget(max_pixels)
    if need > budget:
        kind = f"{image.format} {image.mode}" if image.format else image.mode
        raise InputError(
            display,
            f"{kind} image of {_size_text(width, height)} needs "
            f"{_bytes_text(need)} to decode ({per_pixel} bytes/pixel), above the "
            f"{_bytes_text(budget)} budget of the {_limit_text(max_pixels)}",
        )


def _bytes_text(n: int) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n} bytes"


def _load_pixels(image: Image.Image, display: str) -> None:
    """``image.load()`` with every failure as :class:`InputError`."""
    try:
        image.load()
    except Image.DecompressionBombError:
        width, height = image.size
        cause = f"image is {_size_text(width, height)}, above Pillow's limit"
        raise InputError(display, cause) from None
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError...
        raise InputError(display, _decode_cause(exc)) from None


def _decoded_rgb(image: Image.Image, display: str) -> Image.Image:
    """Decode *image* (opened, size checked) into oriented 8-bit RGB; frees the source."""
    _load_pixels(image, display)
    orientation = _orientation(image)
    try:
        rgb = _to_rgb(image)
    except MemoryError as exc:
        raise InputError(display, _decode_cause(exc)) from None
    except Exception as exc:  # noqa: BLE001
        raise InputError(display, f"unsupported image mode {image.mode} ({_short(exc)})") from None
    if rgb is not image:
        image.close()  # free the source before the orientation copy
    try:
        return _orient(rgb, orientation)
    except MemoryError as exc:
        raise InputError(display, _decode_cause(exc)) from None


# Warnings shown by the thread that is decoding go to its list (see _install_warning_hook).
_CAPTURE = threading.local()
_HOOK_LOCK = threading.Lock()
# While a decode runs: Pillow's bomb warning ignored (camscope checks its own limit), every other
# Pillow warning shown each time (not once per place), whatever the process's filters say.
_DECODE_FILTERS = (
    ("ignore", None, Image.DecompressionBombWarning, None, 0),
    ("always", None, Warning, re.compile(r"PIL(\.|$)"), 0),
)


def _install_warning_hook() -> None:
    """Wrap ``warnings._showwarnmsg`` once so a decoding thread's warnings reach its own list.

    Other threads are untouched (the wrapper passes their warnings on), and nothing here is
    saved and restored, so other code's ``warnings.catch_warnings`` in other threads cannot
    interleave with a decode and leave the process's warning state changed.
    """
    with _HOOK_LOCK:
        current = getattr(warnings, "_showwarnmsg", None)
        if current is None or getattr(current, "camscope_decode_hook", False):
            return

        def hook(msg: warnings.WarningMessage, _next: Callable = current) -> None:
            sink = getattr(_CAPTURE, "sink", None)
            if sink is not None and os.path.abspath(msg.filename).startswith(_PIL_DIR):
                sink.append(msg)
            else:
                _next(msg)

        hook.camscope_decode_hook = True  # type: ignore[attr-defined]
        warnings._showwarnmsg = hook  # type: ignore[attr-defined]


def _filters_changed() -> None:
    """Invalidate the once-per-place registries, as ``warnings.filterwarnings`` does."""
    bump = getattr(warnings, "_filters_mutated", None)
    if bump is not None:
        bump()


@contextlib.contextmanager
def _pillow_warnings(display: str) -> Iterator[None]:
    """Turn Pillow's warnings into one ``camscope`` log line each, naming the file.

    Runs under :data:`_DECODE_LOCK`. Two filters are put in front of the process's filters for
    the duration (removed by identity afterwards, from the list they were put in) and Pillow's
    warnings shown in this thread are collected (:func:`_install_warning_hook`); they are
    logged only when the image decodes (a failure is its own one line).
    """
    _install_warning_hook()
    active = warnings.filters
    for entry in reversed(_DECODE_FILTERS):
        active.insert(0, entry)
    _filters_changed()
    _CAPTURE.sink = caught = []
    ok = False
    try:
        yield
        ok = True
    finally:
        _CAPTURE.sink = None
        for entry in _DECODE_FILTERS:
            with contextlib.suppress(ValueError):
                active.remove(entry)
        _filters_changed()
        for item in caught if ok else []:
            _log.warning("%s: Pillow warns: %s", escape_name(display), _short(item.message))


def load_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode one image file into a fully loaded 8-bit ``RGB`` :class:`PIL.Image.Image`.

    * The size and the decode cost are checked from the header before any pixel data is
      decoded: ``width * height <= max_pixels`` and ``width * height * bytes_per_pixel(mode)
      <= decode_budget(max_pixels)`` (so an RGBA or 16-bit image gets the same memory budget
      as an 8-bit RGB image of ``max_pixels`` pixels).
    * The EXIF orientation tag is applied; unreadable EXIF data is ignored rather than treated as
      an error.
    * Multi-frame files (animated GIF/WebP, multi-page TIFF): the first frame is used.
    * Transparency is composited over a white background; 16-bit data is scaled to 8 bits;
      see :func:`_to_rgb` for the per-mode rules.
    * Truncated files are errors: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is not touched.
    * Pillow's warnings (corrupt EXIF, ...) become one ``camscope`` log warning naming the file.
    * Decodes run one at a time in the process (a lock), so memory is bounded by one budget.

    Args:
        path: the image file.
        max_pixels: largest accepted 8-bit RGB image, in pixels (``None``: no limit of our own;
            Pillow's hard decompression-bomb limit, ``2 * PIL.Image.MAX_IMAGE_PIXELS``, still
            applies).

    Raises:
        InputError: for every failure (missing, empty, directory, unreadable, not an image,
            corrupt or truncated, over the limit, unsupported mode).
        ValueError: ``max_pixels`` is not positive (a usage error, not a bad input).

    Example:
        >>> rgb = load_image("photo.jpg", max_pixels=50_000_000)  # doctest: +SKIP
    """
    if max_pixels is not None:
        decode_budget(max_pixels)
    path = Path(path)
    display = os.fspath(path)
    _check_file(path, display)
    try:
        fh = _open_binary(path)
    except OSError as exc:
        raise InputError(display, _os_cause(exc)) from None
    with fh, _DECODE_LOCK, _pillow_warnings(display):
        image = _open_image(fh, display, max_pixels)
        try:
            _check_size(image, display, max_pixels)
            return _decoded_rgb(image, display)
        except BaseException:
            image.close()
            raise


def _check_file(path: Path, display: str) -> None:
    """Refuse what is not a non-empty regular file, before opening it."""
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(display, _os_cause(exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(display, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(display, "not a regular file")
    if st.st_size == 0:
        raise InputError(display, "empty file (0 bytes)")


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


def resize_rgb(image: Image.Image | np.ndarray, size: tuple[int, int] = (224, 224)) -> np.ndarray:
    """Resize to ``size = (height, width)`` with PIL bilinear filtering.

    Returns:
        A new C-contiguous, writable uint8 array of shape (height, width, 3).
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if image.mode != "RGB":
        image = image.convert("RGB")
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.array(image, dtype=np.uint8)


def to_tensor(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalise a uint8 (H, W, 3) image into a float32 (3, H, W) tensor.

    Computes ``((rgb / 255) - mean) / std`` per channel.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {rgb.dtype}")
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
    std_arr = np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
    if np.any(std_arr == 0):
        raise ValueError("std must not contain zeros")
    data = (rgb.astype(np.float32) / np.float32(255.0) - mean_arr) / std_arr
    return torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))


def preprocess(
    image: Image.Image,
    *,
    size: tuple[int, int] = (224, 224),
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[np.ndarray, torch.Tensor]:
    """Resize and normalise: ``(resize_rgb(image, size), to_tensor(that, mean, std))``."""
    rgb = resize_rgb(image, size)
    return rgb, to_tensor(rgb, mean, std)


def _load_one(
    path: Path,
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    max_pixels: int | None,
) -> LoadedImage:
    try:
        with _DECODE_LOCK:  # the full-size image is freed before the next decode starts
            image = load_image(path, max_pixels=max_pixels)
            rgb, tensor = preprocess(image, size=size, mean=mean, std=std)
            image.close()
    except InputError as exc:
        return LoadedImage(path, None, None, exc)
    except MemoryError:
        return LoadedImage(path, None, None, InputError(path, "not enough memory to decode"))
    return LoadedImage(path, rgb, tensor, None)


def iter_images(
    paths: Iterable[str | Path],
    *,
    size: tuple[int, int] = (224, 224),
    mean: Sequence[float],
    std: Sequence[float],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int = 2,
    prefetch: int = 8,
) -> Iterator[LoadedImage]:
    """Decode and preprocess images in background threads, yielding them in input order.

    Decoding overlaps with whatever the consumer does with the previous images (model
    compute). One image is decoded at a time (:func:`load_image`'s lock, held until it is
    resized), so full-size decoding never holds more than ``decode_budget(max_pixels)`` bytes
    whatever ``workers`` is; at most ``prefetch`` resized images wait for the consumer.

    Raises:
        ValueError: ``workers < 1`` or ``max_pixels <= 0``, before any image is read.

    Yields:
        :class:`LoadedImage` tuples ``(path, rgb, tensor, error)``: on success ``rgb`` is uint8
        (H, W, 3), ``tensor`` float32 (3, H, W) and ``error`` is ``None``; on failure ``rgb``
        and ``tensor`` are ``None`` and ``error`` is the :class:`InputError` (not raised).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_pixels is not None:
        decode_budget(max_pixels)  # ValueError now, not once per image
    size = (int(size[0]), int(size[1]))
    options = (size, tuple(float(m) for m in mean), tuple(float(s) for s in std), max_pixels)
    return _decode_ahead(iter(Path(p) for p in paths), options, workers, max(int(prefetch), 1))


def _decode_ahead(
    source: Iterator[Path], options: tuple, workers: int, window: int
) -> Iterator[LoadedImage]:
    """Generator behind :func:`iter_images`: ``window`` futures in flight, yielded in order."""
    pending: deque[Future[LoadedImage]] = deque()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="camscope-decode")
    try:

        def fill() -> None:
            while len(pending) < window:
                try:
                    path = next(source)
                except StopIteration:
                    return
                pending.append(executor.submit(_load_one, path, *options))

        fill()
        while pending:
            item = pending.popleft().result()
            fill()
            yield item
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
