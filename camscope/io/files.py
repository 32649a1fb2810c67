"""Atomic writes of run artefacts: PNG, NPY, CSV, JSON, text and figures.

Every output file appears atomically (temporary file in the same folder + :func:`os.replace`),
so an interrupted run never leaves a half-written PNG/CSV/JSON behind.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import secrets
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image

__all__ = [
    "TEMP_PREFIX",
    "atomic_open",
    "atomic_write_bytes",
    "escape_name",
    "save_figure",
    "save_npy",
    "save_png",
    "unescape_name",
    "write_csv",
    "write_json",
    "write_text",
]


#: Start of the name of every temporary file camscope writes (``.cs-<8 hex>.tmp``): hidden,
#: 16 bytes whatever the destination's name, removed on failure.
TEMP_PREFIX = ".cs-"

# What a literal backslash must not be followed by in escaped text, or it would read as an escape.
_ESCAPE_LIKE = re.compile(r"\\|x[89a-fA-F][0-9a-fA-F]|u[dD][89a-fA-F][0-9a-fA-F]{2}")
_ESCAPES = re.compile(r"\\(\\|x[89a-fA-F][0-9a-fA-F]|u[dD][89a-fA-F][0-9a-fA-F]{2})")


def escape_name(name: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    r"""Text for a file name that UTF-8 can hold, losslessly (inverse: :func:`unescape_name`).

    File names are bytes on POSIX; Python shows bytes that are not valid UTF-8 as lone
    surrogates (``surrogateescape``), which no UTF-8 file can hold. Each such byte is written as
    ``\xNN`` (two lower-case hex digits, ``NN`` >= 80); any other lone surrogate (possible in
    Windows names) as ``\udNNN``. A backslash in the name is doubled only where it would
    otherwise read as one of these escapes (before ``\``, ``\x8``-``\xf`` + hex or ``\ud8``-``\udf``
    + hex), so ordinary names and Windows paths come back unchanged.

    Example:
        >>> escape_name(b"caf\xe9.jpg")
        'caf\\xe9.jpg'
        >>> os.fsencode(unescape_name(escape_name(b"caf\xe9.jpg")))
        b'caf\xe9.jpg'
    """
    text = os.fspath(name)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    out: list[str] = []
    after = ""  # the start of the escaped text that follows the current character
    for ch in reversed(text):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            piece = f"\\x{code - 0xDC00:02x}"
        elif 0xD800 <= code <= 0xDFFF:
            piece = f"\\u{code:04x}"
        elif ch == "\\" and _ESCAPE_LIKE.match(after):
            piece = "\\\\"
        else:
            piece = ch
        out.append(piece)
        after = (piece + after)[:6]
    return "".join(reversed(out))


def unescape_name(text: str) -> str:
    r"""Inverse of :func:`escape_name`: the name as Python holds it (``os.fsencode`` gives bytes).

    Example:
        >>> os.fsencode(unescape_name(r"caf\xe9.jpg"))
        b'caf\xe9.jpg'
    """

    def replace(match: re.Match[str]) -> str:
        token = match.group(1)
        if token == "\\":
            return "\\"
        if token[0] in "xX":
            return chr(0xDC00 + int(token[1:], 16))
        return chr(int(token[1:], 16))

    return _ESCAPES.sub(replace, text)


def _writable(text: str) -> str:
    """*text* unchanged when UTF-8 can hold it, else :func:`escape_name` of it (never raises)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return escape_name(text)
    return text


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def _naming(exc: OSError, target: Path) -> OSError:
    """*exc* re-made to name *target* when it names the temporary file or nothing.

    Errors about a parent folder keep naming that folder (it is what is wrong).
    """
    named = exc.filename
    temporary = named is not None and os.path.basename(os.fsdecode(named)).startswith(TEMP_PREFIX)
    if exc.errno is None or (named is not None and not temporary):
        return exc
    try:
        return type(exc)(exc.errno, exc.strerror or str(exc), os.fspath(target))
    except Exception:  # noqa: BLE001 - an OSError subclass with another signature: keep it
        return exc


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file next to *path*; move it onto *path* when the block succeeds.

    The temporary file (``.cs-<8 hex>.tmp`` in the same folder, so :func:`os.replace` is
    atomic; short, so any legal destination name can be written) is removed if anything raises,
    so readers only ever see the old file or the complete new one. Parent folders are created.
    The file gets the usual permissions (``0o666`` minus the umask). No fsync is done.

    Args:
        path: the destination.
        mode: ``"wb"`` (bytes) or ``"w"`` (text).
        encoding: for text mode (defaults to UTF-8).
        newline: for text mode, as for :func:`open`.

    Raises:
        OSError: when the folder cannot be created or written (disk full, read-only, a folder
            in the way...); its ``filename`` is *path* (never the temporary name), so
            ``str(err)`` names the file the caller meant; nothing is left behind.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    try:
        with _atomic_file(target, mode, encoding, newline) as fh:
            yield fh
    except OSError as exc:
        renamed = _naming(exc, target)
        if renamed is exc:
            raise
        raise renamed from exc


@contextlib.contextmanager
def _atomic_file(
    target: Path, mode: str, encoding: str | None, newline: str | None
) -> Iterator[IO[Any]]:
    """The temporary file of :func:`atomic_open`, removed on failure, renamed on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = target.parent / f"{TEMP_PREFIX}{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        if mode == "wb":
            fh: IO[Any] = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=newline)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        with fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write *data* to *path* atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    """Write *text* to *path* atomically (UTF-8, newlines written as given)."""
    with atomic_open(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)


def save_png(path: str | Path, rgb: np.ndarray | Image.Image) -> None:
    """Save an image as PNG atomically.

    Args:
        path: the destination (written through `atomic_open`).
        rgb: uint8 array (H, W, 3), (H, W, 4) or (H, W), or a PIL image.
    """
    if isinstance(rgb, np.ndarray):
        if rgb.dtype != np.uint8:
            raise ValueError(f"expected a uint8 array, got dtype {rgb.dtype}")
        if rgb.ndim not in (2, 3) or (rgb.ndim == 3 and rgb.shape[2] not in (3, 4)):
            raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) array, got {rgb.shape}")
        image = Image.fromarray(np.ascontiguousarray(rgb))
    else:
        image = rgb
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save *array* in ``.npy`` format atomically (no pickling; *path* is used as given)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def _cell(value: Any) -> Any:
    """A CSV/JSON value UTF-8 can hold: paths and bytes via :func:`escape_name`, text checked."""
    if isinstance(value, (bytes, os.PathLike)):
        return escape_name(value)
    if isinstance(value, str):
        return _writable(value)
    return value


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    r"""Write a CSV file atomically with the :mod:`csv` module (UTF-8, ``\n`` line ends).

    Never fails on text UTF-8 cannot hold: ``Path`` and ``bytes`` cells are written with
    :func:`escape_name`, and so is any string holding lone surrogates (undecodable file-name
    bytes). For a column that must round-trip exactly, pass ``escape_name(path)`` for every row
    and read it back with :func:`unescape_name`.
    """
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([_cell(v) for v in header])
        for row in rows:
            writer.writerow([_cell(v) for v in row])


def save_figure(path: str | Path, fig: Any, **savefig_kwargs: Any) -> None:
    """Save a matplotlib figure atomically, then close it.

    The format comes from the suffix of *path* unless ``format=`` is given. The figure is
    closed afterwards (also on error): released from pyplot if pyplot manages it.
    """
    target = Path(path)
    fmt = savefig_kwargs.pop("format", None) or target.suffix.lstrip(".").lower() or None
    try:
        with atomic_open(target, "wb") as fh:
            fig.savefig(fh, format=fmt, **savefig_kwargs)
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)


def _jsonable(obj: Any) -> Any:
    """Convert *obj* to plain JSON types; non-finite floats (NaN, +-inf) become ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, bytes, os.PathLike)):
        return _cell(obj)
    if obj is None or isinstance(obj, (bool, int)):
        return obj
    if isinstance(obj, dict):
        return {_cell(k if isinstance(k, str) else str(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [_jsonable(v) for v in items]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().tolist())
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json(path: str | Path, obj: Any) -> None:
    """Write *obj* as JSON (indent 2, UTF-8, trailing newline) atomically.

    NaN and infinite floats are written as ``null`` (strict JSON has no such values); numpy
    scalars/arrays, tensors and paths are converted to plain JSON values; tuples and sets
    become lists. Paths and ``bytes`` are written with :func:`escape_name`, and so is any string
    UTF-8 cannot hold (lone surrogates from undecodable file names), so this never raises
    ``UnicodeEncodeError``. Other types raise :class:`TypeError`.
    """
    text = json.dumps(_jsonable(obj), indent=2, allow_nan=False, ensure_ascii=False)
    write_text(path, text + "\n")
