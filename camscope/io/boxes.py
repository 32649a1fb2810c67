"""Ground-truth boxes for the localisation metrics: CSV, Pascal VOC XML, COCO JSON.

`load_boxes(path)` reads one of:

- a CSV file with a header naming ``file, x0, y0, x1, y1`` and optionally ``class`` (one row per
  box; pixel coordinates of the original image, x to the right, y down, ``x1``/``y1`` the far
  edges, so a box over the whole W x H image is ``0, 0, W, H``);
- a Pascal VOC annotation ``.xml`` file or a folder of them (``<filename>``, ``<size>``,
  ``<object><name>`` and ``<bndbox>`` with 1-based inclusive ``xmin..xmax``, turned into edges
  ``xmin - 1 .. xmax``);
- a COCO ``.json`` (``images[].file_name/width/height`` and ``annotations[].bbox = [x, y, w, h]``
  with ``category_id`` named through ``categories``).

It returns ``{file name: ImageBoxes}``. `find_boxes` matches an input path to an entry (the path as
given, then its name, then its stem). `box_masks` maps boxes through the plain resize of
`camscope.io.decode.resize_rgb` (x scaled by ``out_w / W``, y by ``out_h / H``) and rasterises
them: a pixel is inside when its centre is, or when it holds the box's centre (so a box smaller
than a pixel still marks one).
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["BoxError", "ImageBoxes", "box_masks", "find_boxes", "load_boxes"]


class BoxError(ValueError):
    """A boxes file that cannot be read (one line naming the file and the cause)."""


@dataclass
class ImageBoxes:
    """The boxes of one image: ``boxes`` (K, 4) x0, y0, x1, y1 in original pixels."""

    file: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: list[str | None] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (width, height) when the file says

    def add(self, box: Sequence[float], label: str | None) -> None:
        """Append one box."""
        self.boxes = np.vstack([self.boxes, np.asarray(box, dtype=np.float64).reshape(1, 4)])
        self.labels.append(label)


def _entry(out: dict[str, ImageBoxes], name: str) -> ImageBoxes:
    if name not in out:
        out[name] = ImageBoxes(name)
    return out[name]


def _check_box(path: Path, where: str, box: Sequence[float]) -> None:
    x0, y0, x1, y1 = box
    if not all(np.isfinite(box)) or x1 <= x0 or y1 <= y0:
        raise BoxError(f"{path}: {where}: box {tuple(box)} is not x0 < x1, y0 < y1")


def _load_csv(path: Path) -> dict[str, ImageBoxes]:
    out: dict[str, ImageBoxes] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"file", "x0", "y0", "x1", "y1"}
        if reader.fieldnames is None or not need <= {f.strip() for f in reader.fieldnames}:
            raise BoxError(
                f"{path}: a CSV of boxes needs the columns file, x0, y0, x1, y1[, class]"
            )
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            try:
                box = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
            except ValueError as exc:
                raise BoxError(f"{path}: line {line}: {exc}") from None
            _check_box(path, f"line {line}", box)
            _entry(out, row["file"]).add(box, row.get("class") or None)
    return out


def _load_voc_file(path: Path, out: dict[str, ImageBoxes]) -> None:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise BoxError(f"{path}: not a Pascal VOC XML file ({exc})") from None
    name = root.findtext("filename") or path.stem
    entry = _entry(out, name.strip())
    width, height = root.findtext("size/width"), root.findtext("size/height")
    if width and height and float(width) > 0 and float(height) > 0:
        entry.size = (int(float(width)), int(float(height)))
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        try:
            xmin, ymin, xmax, ymax = (
                float(bb.findtext(k) or "") for k in ("xmin", "ymin", "xmax", "ymax")
            )
        except ValueError:
            raise BoxError(f"{path}: an <object> has a bndbox without numbers") from None
        box = [xmin - 1, ymin - 1, xmax, ymax]
        _check_box(path, "bndbox", box)
        entry.add(box, (obj.findtext("name") or "").strip() or None)


def _load_coco(path: Path) -> dict[str, ImageBoxes]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        images = {im["id"]: im for im in data["images"]}
        names = {c["id"]: c.get("name") for c in data.get("categories", [])}
        annotations = data.get("annotations", [])
    except (ValueError, KeyError, TypeError) as exc:
        raise BoxError(f"{path}: not a COCO JSON file ({type(exc).__name__}: {exc})") from None
    out: dict[str, ImageBoxes] = {}
    for im in images.values():
        entry = _entry(out, str(im["file_name"]))
        if im.get("width") and im.get("height"):
            entry.size = (int(im["width"]), int(im["height"]))
    for i, ann in enumerate(annotations):
        im = images.get(ann.get("image_id"))
        if im is None or "bbox" not in ann:
            raise BoxError(f"{path}: annotation {i} has no bbox or an unknown image_id")
        x, y, w, h = (float(v) for v in ann["bbox"])
        _check_box(path, f"annotation {i}", [x, y, x + w, y + h])
        label = names.get(ann.get("category_id"))
        out[str(im["file_name"])].add([x, y, x + w, y + h], label)
    return out


def load_boxes(path: str | Path) -> dict[str, ImageBoxes]:
    """Boxes per image file name: a CSV, a VOC ``.xml`` (or a folder of them), a COCO ``.json``."""
    path = Path(path)
    if path.is_dir():
        out: dict[str, ImageBoxes] = {}
        files = sorted(path.glob("*.xml"))
        if not files:
            raise BoxError(f"{path}: a folder of boxes must hold Pascal VOC .xml files")
        for f in files:
            _load_voc_file(f, out)
        return out
    if not path.is_file():
        raise BoxError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _load_csv(path)
    if suffix == ".json":
        return _load_coco(path)
    if suffix == ".xml":
        out = {}
        _load_voc_file(path, out)
        return out
    raise BoxError(f"{path}: boxes must be a .csv, a .json (COCO), a .xml or a folder of .xml")


def find_boxes(boxes: Mapping[str, ImageBoxes], path: str | Path) -> ImageBoxes | None:
    """The entry of an input file: by the path as given, then its name, then its stem."""
    p = Path(path)
    for key in (str(path), p.name):
        if key in boxes:
            return boxes[key]
    stems = {Path(k).stem: v for k, v in boxes.items()}
    return stems.get(p.stem)


def box_masks(
    boxes: Sequence[np.ndarray | None],
    sizes: Sequence[tuple[int, int]],
    out_size: tuple[int, int] = (224, 224),
) -> np.ndarray:
    """(N, H, W) bool masks of each image's boxes after the plain resize to ``out_size``.

    ``boxes[i]``: (K, 4) x0, y0, x1, y1 in the original image of ``sizes[i] = (width, height)``
    (None or K = 0: an all-False mask, i.e. no ground truth). ``out_size = (height, width)``.
    """
    h, w = out_size
    out = np.zeros((len(boxes), h, w), dtype=bool)
    cy, cx = np.arange(h) + 0.5, np.arange(w) + 0.5
    for i, (b, (width, height)) in enumerate(zip(boxes, sizes, strict=True)):
        if b is None or len(b) == 0:
            continue
        s = np.asarray(b, dtype=np.float64) * [w / width, h / height, w / width, h / height]
        inside_x = (cx[None] >= s[:, :1]) & (cx[None] <= s[:, 2:3])  # (K, W)
        inside_y = (cy[None] >= s[:, 1:2]) & (cy[None] <= s[:, 3:4])  # (K, H)
        out[i] = (inside_y[:, :, None] & inside_x[:, None, :]).any(axis=0)
        mid_x = np.clip(((s[:, 0] + s[:, 2]) / 2).astype(int), 0, w - 1)
        mid_y = np.clip(((s[:, 1] + s[:, 3]) / 2).astype(int), 0, h - 1)
        out[i, mid_y, mid_x] = True
    return out
