"""The one section list of the report: what it says, in which order, for both renderings.

`SECTIONS` names each section once with the function that builds its blocks from the
`ReportContext`; `build_document` returns the `Document` that report.html and report.md are both
rendered from (`camscope.report.render`). A section whose builder returns no block is left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from camscope.report.context import ReportContext
from camscope.report.data import MetricSpec
from camscope.report.document import (
    Block,
    Bullets,
    Document,
    Gallery,
    GalleryCard,
    GallerySection,
    Paragraph,
    Section,
    Table,
)
from camscope.report.text import (
    comparison_matrix,
    definitions,
    image_findings,
    interval_text,
    kind_blocks,
    label,
    ranking_paragraph,
    robustness,
    sanity_lines,
    statistics_statement,
    summary_table,
)

__all__ = ["FAILURES_SHOWN", "SECTIONS", "build_document"]

#: Failed inputs listed by name at most (all are in the results table).
FAILURES_SHOWN = 50


def _summary(ctx: ReportContext) -> list[Block]:
    blocks: list[Block] = [summary_table(ctx.scalars, ctx.summary)]
    for kind in ("localisation", "complexity"):
        blocks += kind_blocks(ctx.scalars, ctx.summary, kind)
    return blocks


def _statistics(ctx: ReportContext) -> list[Block]:
    return [Bullets(statistics_statement(ctx.summary))]


def _rankings(ctx: ReportContext) -> list[Block]:
    blocks: list[Block] = []
    if not ctx.scalars.has_metrics:
        text = "Faithfulness was not measured (run without --metrics): no ranking by it."
        blocks.append(Paragraph(text if ctx.summary.ranked else text.replace(" by it", "")))
    for spec in ctx.summary.ranked:  # metrics that only describe maps are not ranked
        rk = ctx.summary.rankings[spec.key]
        if not rk.order:
            continue
        blocks.append(ranking_paragraph(spec, rk, ctx.summary))
        if len(rk.order) > 1:
            blocks.append(comparison_matrix(spec, rk))
    return blocks


def _robustness(ctx: ReportContext) -> list[Block]:
    if not ctx.summary.ranked:  # nothing ranked (complexity alone describes the maps)
        return []
    return list(robustness(ctx.scalars, ctx.summary))


def _agreement(ctx: ReportContext) -> list[Block]:
    items = []
    for (a, b), ivs in ctx.summary.agreement.items():
        for key, text in (("pearson", "Pearson r"), ("top20_iou", "top-20% IoU")):
            if key in ivs:
                spec = MetricSpec(key, text, "", 1.0, True, 2)
                items.append(f"Mean {text}, {label(a)} vs {label(b)}: "
                             f"{interval_text(spec, ivs[key], ctx.summary.min_n)}.")  # fmt: skip
    return [Bullets(items)] if items else []


def _sanity(ctx: ReportContext) -> list[Block]:
    if not ctx.summary.sanity:
        return [Paragraph("Not run.")]
    return [Bullets(sanity_lines(ctx.scalars, ctx.summary, ctx.thresholds))]


def _plots(ctx: ReportContext) -> list[Block]:
    return list(ctx.figures)


def _card_table(ctx: ReportContext, i: int) -> Table | None:
    s, shown = ctx.scalars, ctx.summary.measured
    if not shown:
        return None
    rows = []
    for m in s.methods:
        if s.rows[m][i] < 0:
            continue
        v = s.values[m]
        cells = [
            ("yes" if v[spec.key][i] > 0 else "no")
            if spec.interval == "wilson" and math.isfinite(v[spec.key][i])
            else spec.fmt(v[spec.key][i])
            for spec in shown
        ]
        rows.append([label(m), *cells, "yes" if v["empty"][i] > 0 else "no"])
    return Table(["method", *(spec.heading for spec in shown), "empty"], rows, css="values")


def _gallery(ctx: ReportContext) -> list[Block]:
    s = ctx.scalars
    images = s.images.select(["name", "file"]).to_pydict()
    sections = []
    for sec in ctx.sections:
        cards = []
        for i in sec.images:
            thumbs = ctx.cards[i]
            cards.append(GalleryCard(
                index=i, name=images["name"][i], file=images["file"][i],
                note=sec.notes.get(i, ""),
                thumbs=[("input", thumbs.input_jpeg),
                        *((label(m), thumbs.overlays.get(m)) for m in s.methods)],
                table=_card_table(ctx, i),
                findings=image_findings(s, i, ctx.thresholds),
            ))  # fmt: skip
        text = f"Rule: {sec.rule}. Showing {len(sec.images)} of {sec.total:,} candidate images."
        sections.append(GallerySection(sec.key, sec.title, text, cards))
    return [Gallery(sections)]


def _failures(ctx: ReportContext) -> list[Block]:
    f = ctx.scalars.failures
    if f.num_rows == 0:
        return [Paragraph("None.")]
    rows = f.slice(0, FAILURES_SHOWN).select(["name", "file", "error"]).to_pylist()
    blocks: list[Block] = [
        Paragraph(f"{f.num_rows:,} inputs failed."),
        Table(["name", "file", "cause"], [[r["name"], r["file"], r["error"]] for r in rows]),
    ]
    if f.num_rows > FAILURES_SHOWN:
        blocks.append(Paragraph(f"{f.num_rows - FAILURES_SHOWN:,} more in the results table."))
    return blocks


def _definitions(ctx: ReportContext) -> list[Block]:
    return [Bullets(definitions(ctx.steps, ctx.thresholds, ctx.summary.measured))]


def _notes(ctx: ReportContext) -> list[Block]:
    return [Bullets(list(ctx.notes))] if ctx.notes else []


#: (key, title, builder) of every section, in report order: the one list both renderings follow.
SECTIONS: tuple[tuple[str, str, Callable[[ReportContext], list[Block]]], ...] = (
    ("summary", "Summary", _summary),
    ("statistics", "Statistics", _statistics),
    ("rankings", "Rankings and paired comparisons", _rankings),
    ("robustness", "Ranking robustness across metrics", _robustness),
    ("agreement", "Agreement between methods", _agreement),
    ("sanity", "Sanity check", _sanity),
    ("plots", "Plots", _plots),
    ("gallery", "Gallery", _gallery),
    ("failures", "Failed inputs", _failures),
    ("definitions", "Definitions and thresholds", _definitions),
    ("notes", "Notes", _notes),
)


def build_document(ctx: ReportContext) -> Document:
    """The report as data: every section of `SECTIONS` that has something to say."""
    sections = []
    for key, title, build in SECTIONS:
        blocks = build(ctx)
        if blocks:
            sections.append(Section(key, title, blocks))
    return Document(ctx.title, ctx.facts, ctx.links, sections)
