"""Ground truth: labels files, ImageNet wnids in file names (`camscope.classes`), accuracy."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import torch

from camscope.classes import imagenet_index, wnid_class


def accuracy(pred: object, truth: object) -> float:
    """Share of predictions equal to the truth, over the images whose truth is known.

    ``truth`` entries that are None or negative are unknown and skipped; returns NaN when no
    truth is known.
    """
    if isinstance(pred, torch.Tensor):
        pred = pred.tolist()
    if isinstance(truth, torch.Tensor):
        truth = truth.tolist()
    pairs = [(p, t) for p, t in zip(pred, truth, strict=True) if t is not None and t >= 0]
    if not pairs:
        return math.nan
    return sum(int(p) == int(t) for p, t in pairs) / len(pairs)


def truth_from_filename(name: str) -> int | None:
    """ImageNet-1k class index of the first wnid (``n`` + 8 digits) in a file name, or None.

    E.g. ``"n01440764_tench.JPEG"`` -> 0, ``"ILSVRC2012_val_00000001_n01751748.png"`` -> 65.
    Reads the one ImageNet table (`camscope.classes`). A wnid outside ImageNet-1k -> None.
    """
    return wnid_class(name)


_KEY_COLUMNS = ("file", "name", "filename", "image")
_CLASS_COLUMNS = ("class_index", "class", "label", "index", "target", "wnid", "category")


def load_labels(path: str | Path) -> dict[str, int]:
    """Read ground-truth labels from a CSV: file name -> ImageNet class index.

    The key column is ``file`` (or ``name``, ``filename``, ``image``); the class column is the
    first present of ``class_index``, ``class``, ``label``, ``index``, ``target``, ``wnid``,
    ``category``, holding an index, a wnid or an (unambiguous) ImageNet class name. Headers are
    case-insensitive. ``shared/imagenet-samples/labels.csv`` (``file,class_index,wnid,category``)
    works as is. Raises ValueError naming the line on a bad row.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = {h.strip().lower(): h for h in reader.fieldnames or []}
        key_col = next((header[c] for c in _KEY_COLUMNS if c in header), None)
        cls_col = next((header[c] for c in _CLASS_COLUMNS if c in header), None)
        if key_col is None or cls_col is None:
            raise ValueError(
                f"{path}: need a file/name column and a class column "
                f"({', '.join(_CLASS_COLUMNS)}); found {list(header.values())}"
            )
        labels: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            key, value = (row.get(key_col) or "").strip(), (row.get(cls_col) or "").strip()
            if not key:
                continue
            try:
                labels[key] = imagenet_index(value)
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from None
    return labels


def lookup_label(labels: Mapping[str, int], *keys: str) -> int | None:
    """The label of the first key found as given, as a base name, or as a stem; else None."""
    for key in keys:
        if not key:
            continue
        p = Path(key)
        for candidate in (key, p.name, p.stem):
            if candidate in labels:
                return labels[candidate]
    stems = {Path(k).stem: v for k, v in labels.items()}
    for key in keys:
        if key and Path(key).stem in stems:
            return stems[Path(key).stem]
    return None
