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
import secrets
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "save_figure",
    "save_npy",
    "save_png",
    "write_csv",
    "write_json",
    "write_text",
]


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file next to *path*; move it onto *path* when the block succeeds.

    The temporary file (``.<name>.<random>.tmp`` in the same folder, so :func:`os.replace` is
    atomic) is removed if anything raises, so readers only ever see the old file or the
    complete new one. Parent folders are created. The file gets the usual permissions
    (``0o666`` minus the umask). No fsync is done.

    Args:
        path: the destination.
        mode: ``"wb"`` (bytes) or ``"w"`` (text).
        encoding, newline: for text mode (``encoding`` defaults to UTF-8).

    Raises:
        OSError: when the folder cannot be created or written; nothing is left behind.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
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


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV file atomically with the :mod:`csv` module (UTF-8, ``\\n`` line ends)."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(list(header))
        for row in rows:
            writer.writerow(list(row))


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
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [_jsonable(v) for v in items]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json(path: str | Path, obj: Any) -> None:
    """Write *obj* as JSON (indent 2, UTF-8, trailing newline) atomically.

    NaN and infinite floats are written as ``null`` (strict JSON has no such values); numpy
    scalars/arrays, tensors and paths are converted to plain JSON values; tuples and sets
    become lists. Other types raise :class:`TypeError`.
    """
    text = json.dumps(_jsonable(obj), indent=2, allow_nan=False, ensure_ascii=False)
    write_text(path, text + "\n")
