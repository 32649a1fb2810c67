"""ReportContext: everything the report's sections are built from (computed once)."""

from __future__ import annotations

from dataclasses import dataclass, field

from camscope.report.data import Scalars, Summary, Thresholds
from camscope.report.document import Figure
from camscope.report.gallery import Card, Section

__all__ = ["ReportContext"]


@dataclass
class ReportContext:
    """Inputs of `camscope.report.outline.build_document`.

    facts: (name, value) rows about the run(s). links: (text, relative href) to where every
    image's numbers are. figures: the plots. sections/cards: the bounded gallery (chosen images
    and their thumbnails). notes: things the reader must know (substitutions, mixed settings,
    files left out).
    """

    title: str
    facts: list[tuple[str, str]]
    links: list[tuple[str, str]]
    scalars: Scalars
    summary: Summary
    steps: int | None
    thresholds: Thresholds = field(default_factory=Thresholds)
    figures: list[Figure] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    cards: dict[int, Card] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
