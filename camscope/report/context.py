"""ReportContext: everything report.html and report.md are rendered from (computed once)."""

from __future__ import annotations

from dataclasses import dataclass, field

from camscope.report.data import Scalars, Summary, Thresholds
from camscope.report.gallery import Card, Section

__all__ = ["ReportContext"]


@dataclass
class ReportContext:
    """Inputs of the renderers.

    facts: (name, value) rows about the run(s). links: (text, relative href) to where every
    image's numbers are. analysis: ranking/agreement lines (`camscope.report.text`). plots:
    caption -> PNG bytes. sections/cards: the bounded gallery. notes: things the reader must know
    (substitutions, mixed settings, files left out).
    """

    title: str
    facts: list[tuple[str, str]]
    links: list[tuple[str, str]]
    scalars: Scalars
    summary: Summary
    analysis: list[str]
    steps: int | None
    thresholds: Thresholds = field(default_factory=Thresholds)
    plots: dict[str, bytes] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    cards: dict[int, Card] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
