"""The report as data: sections of blocks, rendered by the templates of `camscope.report.render`.

Everything a reader sees is decided here and in `camscope.report.text` (which sentence, which
number, which colour); the templates only lay it out, so report.html and report.md say the same
things in the same order: `build_document` writes the one section list both are rendered from.
Text is held as plain strings (escaped by the renderer), never as markup to be parsed back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "Bullets",
    "Document",
    "Figure",
    "Finding",
    "Gallery",
    "GalleryCard",
    "GallerySection",
    "Matrix",
    "MatrixCell",
    "Paragraph",
    "Section",
    "Table",
]


@dataclass(frozen=True)
class Finding:
    """One sentence the report states, with the kind of claim it is (for tests and styling).

    kind: e.g. "prediction", "empty", "agreement", "spread", "off_region", "faithful",
    "ranking", "tie", "no_best", "best", "depends", "robust".
    """

    kind: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass
class Paragraph:
    """A paragraph: an optional bold ``lead``, its ``text``, then bullet ``findings``."""

    text: str
    lead: str = ""
    findings: list[Finding] = field(default_factory=list)
    kind: ClassVar[str] = "paragraph"


@dataclass
class Bullets:
    """A bullet list of plain sentences."""

    items: list[str]
    kind: ClassVar[str] = "bullets"


@dataclass
class Table:
    """A table of plain-text cells (first column left-aligned)."""

    header: list[str]
    rows: list[list[str]]
    css: str = ""
    kind: ClassVar[str] = "table"


@dataclass(frozen=True)
class MatrixCell:
    """A cell of a comparison matrix: ``text``, a longer ``title`` and its ``tone``.

    tone: "better" / "worse" (the row's method is significantly better / worse than the
    column's), "ns" (not significant), "self" (the diagonal) or "none" (no comparison).
    """

    text: str
    tone: str
    title: str = ""


@dataclass
class Matrix:
    """A methods x methods grid (row minus column): ``rows[i][j]`` compares labels i and j."""

    caption: str
    labels: list[str]
    rows: list[list[MatrixCell]]
    legend: str
    kind: ClassVar[str] = "matrix"


@dataclass
class Figure:
    """A plot: written to ``file`` beside the report, embedded in report.html."""

    key: str
    file: str
    caption: str
    png: bytes
    kind: ClassVar[str] = "figure"


@dataclass
class GalleryCard:
    """A gallery image: thumbnails (caption, JPEG or None), its numbers and findings."""

    index: int
    name: str
    file: str
    note: str
    thumbs: list[tuple[str, bytes | None]]
    table: Table | None
    findings: list[Finding]


@dataclass
class GallerySection:
    """A bounded gallery section: the rule that chose its cards, stated in ``text``."""

    key: str
    title: str
    text: str
    cards: list[GalleryCard]


@dataclass
class Gallery:
    """The gallery: report.html shows cards within its byte budget, report.md their prose."""

    sections: list[GallerySection]
    kind: ClassVar[str] = "gallery"


Block = Paragraph | Bullets | Table | Matrix | Figure | Gallery


@dataclass
class Section:
    """A titled part of the report (``key`` names it for code; ``title`` is for people)."""

    key: str
    title: str
    blocks: list[Block]


@dataclass
class Document:
    """The whole report: title, facts about the run(s), links, and the one section list."""

    title: str
    facts: list[tuple[str, str]]
    links: list[tuple[str, str]]
    sections: list[Section]

    def section(self, key: str) -> Section | None:
        """The section named ``key``, or None."""
        return next((s for s in self.sections if s.key == key), None)

    def figures(self) -> list[Figure]:
        """Every figure of the report, in order (build_report writes each to its file)."""
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]
