"""A bounded gallery: which images a report shows, and their small JPEG thumbnails.

Each section holds at most ``cap`` images whatever the number of images in the run, chosen by a
stated rule from the per-image scalars: where the methods disagree most, the least faithful maps,
empty maps, a seeded random sample (failures are listed as text). Thumbnails are made here from the
input file and the feature-resolution map stored in the results table (no per-image PNG or .npy
is needed, so runs with ``--save-maps none`` have a gallery too); only the chosen rows' maps are
read, streamed from the table.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from camscope.io import InputError, load_image, resize_rgb, unescape_name
from camscope.methods import normalise_maps
from camscope.report.data import Scalars
from camscope.report.source import RunTable
from camscope.report.text import label
from camscope.visualize import overlay

log = logging.getLogger("camscope")

__all__ = ["GALLERY_CAP", "Card", "Section", "make_cards", "select_sections"]

#: Images per gallery section at most.
GALLERY_CAP = 24
#: Thumbnail side in pixels and JPEG quality.
THUMB = 128
JPEG_QUALITY = 70
#: Largest input (pixels) decoded for a thumbnail.
THUMB_MAX_PIXELS = 64_000_000


@dataclass
class Section:
    """A gallery section: ``images`` (indices into `Scalars.images`) with a note each."""

    key: str
    title: str
    rule: str
    images: list[int]
    notes: dict[int, str]
    total: int


@dataclass
class Card:
    """Thumbnails of one gallery image: the input and each method's overlay (JPEG bytes)."""

    index: int
    input_jpeg: bytes | None
    overlays: dict[str, bytes | None] = field(default_factory=dict)


def _take(order: np.ndarray, cap: int) -> list[int]:
    return [int(i) for i in order[:cap]]


def _disagreement(s: Scalars) -> np.ndarray:
    """Per image: the lowest Pearson r between two non-empty maps (NaN with < 2 such maps)."""
    worst = np.full(s.n, np.nan)
    for i, a in enumerate(s.methods):
        for b in s.methods[i + 1 :]:
            r = s.values[a].get(f"pearson__{b}")
            if r is None:
                r = s.values[b].get(f"pearson__{a}")
            if r is None:
                continue
            live = (s.values[a]["empty"] == 0) & (s.values[b]["empty"] == 0)
            r = np.where(live, r, np.nan)
            worst = np.fmin(worst, r)
    return worst


def select_sections(s: Scalars, cap: int = GALLERY_CAP, seed: int = 0) -> list[Section]:
    """The gallery's sections, each at most ``cap`` images, chosen by the rule it states."""
    sections = []
    worst = _disagreement(s)
    finite = np.flatnonzero(np.isfinite(worst))
    if finite.size:
        order = finite[np.argsort(worst[finite], kind="stable")]
        chosen = _take(order, cap)
        notes = {i: f"lowest Pearson r between two maps: {worst[i]:.2f}" for i in chosen}
        sections.append(Section("disagree", "Where the methods disagree most",
                                "lowest Pearson r between two non-empty maps of the image",
                                chosen, notes, int(finite.size)))  # fmt: skip
    if s.has_metrics:
        score = np.stack([s.values[m]["insertion_auc"] - s.values[m]["deletion_auc"]
                          for m in s.methods])  # fmt: skip
        flat = np.flatnonzero(np.isfinite(score.ravel()))
        order = flat[np.argsort(score.ravel()[flat], kind="stable")]
        chosen, notes = [], {}
        for k in order:
            m, i = divmod(int(k), s.n)
            if i not in notes:
                chosen.append(i)
                notes[i] = f"{label(s.methods[m])}: insertion − deletion AUC = {score[m, i]:.3f}"
            if len(chosen) == cap:
                break
        sections.append(Section("unfaithful", "Least faithful maps",
                                "lowest Insertion AUC − Deletion AUC of any map of the image",
                                chosen, notes, int(flat.size)))  # fmt: skip
    empty = np.stack([s.values[m]["empty"] > 0 for m in s.methods]) if s.methods else None
    if empty is not None and empty.any():
        any_empty = np.flatnonzero(empty.any(axis=0))
        chosen = _take(any_empty, cap)
        notes = {i: "empty: " + ", ".join(label(m) for m, e in zip(s.methods, empty[:, i],
                 strict=True) if e) for i in chosen}  # fmt: skip
        sections.append(Section("empty", "Empty maps",
                                f"images with an empty map ({int(empty.sum())} empty maps in all)",
                                chosen, notes, int(any_empty.size)))  # fmt: skip
    if s.n:
        rng = np.random.default_rng(seed)
        chosen = sorted(int(i) for i in rng.choice(s.n, size=min(cap, s.n), replace=False))
        sections.append(Section("sample", "Random sample", f"{len(chosen)} images drawn with "
                                f"seed {seed}", chosen, {}, s.n))  # fmt: skip
    return sections


def _input_path(file: str, run_dir: str) -> Path:
    path = Path(unescape_name(file))
    if not path.is_absolute() and not path.exists():
        return Path(run_dir) / path
    return path


def _jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def _input_rgb(file: str, run_dir: str) -> np.ndarray | None:
    try:
        image = load_image(_input_path(file, run_dir), max_pixels=THUMB_MAX_PIXELS)
    except (InputError, OSError, ValueError) as exc:  # the card says the input is missing
        log.info("report: no thumbnail for %s (%s)", file, str(exc).splitlines()[0][:200])
        return None
    return resize_rgb(image, (THUMB, THUMB))


def _raw_maps(table: RunTable, wanted: set[int]) -> dict[int, np.ndarray]:
    """Feature-resolution maps of the table rows at ``wanted`` positions, streamed."""
    out, offset = {}, 0
    for batch in table.batches(["raw", "raw_h", "raw_w"]):
        hits = [p for p in range(offset, offset + batch.num_rows) if p in wanted]
        for p in hits:
            row = batch.slice(p - offset, 1).to_pylist()[0]
            if row["raw"] is not None and row["raw_h"] and row["raw_w"]:
                raw = np.asarray(row["raw"], dtype=np.float32)
                if raw.size == row["raw_h"] * row["raw_w"]:
                    out[p] = raw.reshape(row["raw_h"], row["raw_w"])
        offset += batch.num_rows
    return out


def _overlay_jpeg(rgb: np.ndarray | None, raw: np.ndarray) -> bytes:
    cam, _ = normalise_maps(torch.from_numpy(raw)[None], (THUMB, THUMB))
    base = rgb if rgb is not None else np.full((THUMB, THUMB, 3), 128, np.uint8)
    return _jpeg(overlay(base, cam[0].numpy()))


def make_cards(table: RunTable, s: Scalars, sections: list[Section]) -> dict[int, Card]:
    """Thumbnails for every image shown in ``sections`` (each image made once)."""
    shown = sorted({i for sec in sections for i in sec.images})
    wanted = {int(s.rows[m][i]) for i in shown for m in s.methods if s.rows[m][i] >= 0}
    raws = _raw_maps(table, wanted)
    images = s.images.select(["file", "run_dir"]).to_pydict()
    cards = {}
    for i in shown:
        rgb = _input_rgb(images["file"][i], images["run_dir"][i])
        card = Card(i, _jpeg(rgb) if rgb is not None else None)
        for m in s.methods:
            raw = raws.get(int(s.rows[m][i]))
            card.overlays[m] = _overlay_jpeg(rgb, raw) if raw is not None else None
        cards[i] = card
    return cards
