"""Robust image decoding and preprocessing.

Every image comes back as a fully decoded 8-bit ``RGB`` :class:`PIL.Image.Image`, whatever its
mode (16-bit, float, palette, alpha, CMYK, bilevel...), with its EXIF orientation applied; every
failure is a one-line :class:`~camscope.io.inputs.InputError`.
"""

from __future__ import annotations

import math
import os
import stat
import threading
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from camscope.io.inputs import InputError, _short

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "LoadedImage",
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
#: checks ``width * height`` from the header against this limit before decoding anything.
DEFAULT_MAX_PIXELS = 178_956_970

# Serialises the short critical sections in which the process-wide warning filters are changed
# to keep Pillow's DecompressionBombWarning from leaking (``warnings.catch_warnings`` is not
# thread-safe; the lock covers camscope's own decoding threads, and other threads only ever see
# one extra "ignore" filter). Only header parsing (cheap) runs under it, never a normal decode.
_WARNINGS_LOCK = threading.Lock()


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
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
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


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Flatten an image with transparency over a white background (8-bit RGB result)."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3:4] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    gray8 = np.ascontiguousarray(gray, dtype=np.uint8)
    return Image.fromarray(np.repeat(gray8[..., None], 3, axis=2), "RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB.

    * 16/32-bit integer modes (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, ``I``) are treated as
      16-bit data: clipped to 0..65535 and scaled to 0..255 (``round(v * 255 / 65535)``), not
      clipped at 255 as ``Image.convert`` does.
    * ``F`` (float) is clipped to [0, 255] and rounded (NaN -> 0).
    * Modes with an alpha channel (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``) and images with a
      ``transparency`` entry (palette / grey / RGB with tRNS) are composited over **white**.
    * ``LAB`` goes through a LittleCMS Lab -> sRGB transform.
    * Everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``HSV``, ``RGBX``...) uses
      ``Image.convert("RGB")``.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode == "I" or mode.startswith("I;16"):
        data = np.asarray(image).astype(np.float64)
        scaled = np.rint(np.clip(data, 0, 65535) * (255.0 / 65535.0))
        return _gray_to_rgb(scaled)
    if mode == "F":
        data = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        return _gray_to_rgb(np.rint(np.clip(data, 0, 255)))
    if "A" in mode or "a" in mode or "transparency" in image.info:
        return _composite_on_white(image)
    if mode == "LAB":  # Image.convert would copy the channels without a colour transform
        from PIL import ImageCms

        transform = ImageCms.buildTransformFromOpenProfiles(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        return ImageCms.applyTransform(image, transform)
    return image.convert("RGB")


def load_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode one image file into a fully loaded 8-bit ``RGB`` :class:`PIL.Image.Image`.

    * The EXIF orientation tag is applied (``ImageOps.exif_transpose``); unreadable EXIF data is
      ignored rather than treated as an error.
    * Multi-frame files (animated GIF/WebP, multi-page TIFF): the first frame is used.
    * Transparency is composited over a white background; 16-bit data is scaled to 8 bits;
      see :func:`_to_rgb` for the per-mode rules.
    * Truncated files are errors: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is not touched.

    Args:
        path: the image file.
        max_pixels: largest accepted ``width * height``, checked from the header before any
            pixel data is decoded (``None``: no limit of our own). Pillow's hard
            decompression-bomb limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``) still applies.

    Raises:
        InputError: for every failure (missing, empty, directory, unreadable, not an image,
            corrupt or truncated, over the pixel limit, unsupported mode).
    """
    path = Path(path)
    display = os.fspath(path)
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

    try:
        fh = _open_binary(path)
    except OSError as exc:
        raise InputError(display, _os_cause(exc)) from None
    with fh:
        image = _open_image(fh, display, max_pixels)
        with image:
            width, height = image.size
            if width <= 0 or height <= 0:
                raise InputError(display, f"image has an invalid size {width}x{height}")
            if max_pixels is not None and width * height > max_pixels:
                raise InputError(
                    display,
                    f"image is {_size_text(width, height)}, above the {_limit_text(max_pixels)}",
                )
            pillow_limit = Image.MAX_IMAGE_PIXELS
            try:
                if pillow_limit is not None and width * height > pillow_limit:
                    # Large (but accepted) image: keep Pillow's per-frame bomb warning
                    # (GIF/TIFF check again while decoding) quiet here too.
                    with _WARNINGS_LOCK, warnings.catch_warnings():
                        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                        image.load()
                else:
                    image.load()
            except Image.DecompressionBombError:
                raise InputError(
                    display, f"image is {_size_text(width, height)}, above Pillow's limit"
                ) from None
            except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError...
                raise InputError(display, _decode_cause(exc)) from None

            try:
                oriented = ImageOps.exif_transpose(image)
            except Exception:  # noqa: BLE001 - broken EXIF: keep the stored orientation
                oriented = image
            try:
                rgb = _to_rgb(oriented)
            except MemoryError as exc:
                raise InputError(display, _decode_cause(exc)) from None
            except Exception as exc:  # noqa: BLE001
                raise InputError(
                    display, f"unsupported image mode {image.mode} ({_short(exc)})"
                ) from None
            if rgb is image:
                rgb = image.copy()  # detach from the file before it is closed
    return rgb


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
        image = load_image(path, max_pixels=max_pixels)
        rgb, tensor = preprocess(image, size=size, mean=mean, std=std)
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

    Decoding (Pillow releases the GIL) overlaps with whatever the consumer does with the
    previous images (model compute). At most ``prefetch`` images are decoded ahead of the
    consumer, so memory stays bounded for long input lists.

    Yields:
        :class:`LoadedImage` tuples ``(path, rgb, tensor, error)``: on success ``rgb`` is uint8
        (H, W, 3), ``tensor`` float32 (3, H, W) and ``error`` is ``None``; on failure ``rgb``
        and ``tensor`` are ``None`` and ``error`` is the :class:`InputError` (not raised).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    window = max(int(prefetch), 1)
    size = (int(size[0]), int(size[1]))
    mean = tuple(float(m) for m in mean)
    std = tuple(float(s) for s in std)
    source = iter(Path(p) for p in paths)
    pending: deque[Future[LoadedImage]] = deque()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="camscope-decode")
    try:

        def fill() -> None:
            while len(pending) < window:
                try:
                    path = next(source)
                except StopIteration:
                    return
                pending.append(executor.submit(_load_one, path, size, mean, std, max_pixels))

        fill()
        while pending:
            item = pending.popleft().result()
            fill()
            yield item
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
