"""report.md: the written analysis as Markdown, bounded like report.html.

Per-image prose only for the gallery images (the same bounded sections as the page); every
image's numbers are in the results table and metrics.csv.
"""

from __future__ import annotations

from camscope.report.context import ReportContext
from camscope.report.text import (
    definitions,
    image_findings,
    sanity_lines,
    statistics_statement,
    summary_rows,
)

__all__ = ["render_markdown"]

#: Failed inputs listed by name at most.
FAILURES_LISTED = 50


def _md(text: object) -> str:
    """Plain text safe in a Markdown code span or table cell."""
    return str(text).replace("`", "'").replace("\n", " ").replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_md(c) for c in header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]


def render_markdown(ctx: ReportContext) -> str:
    """The Markdown report (see the module docstring)."""
    s, summary = ctx.scalars, ctx.summary
    lines = [f"# {ctx.title}", "", *(f"- {k}: {_md(v)}" for k, v in ctx.facts)]
    lines += ["- every image's numbers: " + ", ".join(f"`{_md(h)}`" for _, h in ctx.links)]
    lines += ["", "## Summary", "", *_table(*summary_rows(s, summary)), ""]
    lines += ["## Statistics", "", *(f"- {t}" for t in statistics_statement(summary)), ""]
    lines += [*ctx.analysis, ""]
    lines += ["## Sanity check", ""]
    lines += sanity_lines(s, summary, ctx.thresholds) if summary.sanity else ["Not run."]
    lines += ["", "## Gallery", ""]
    names = s.images.column("name").to_pylist()
    for sec in ctx.sections:
        lines += [f"### {sec.title}", "", f"Rule: {sec.rule}. Showing {len(sec.images)} of "
                  f"{sec.total:,} candidate images.", ""]  # fmt: skip
        for i in sec.images:
            note = sec.notes.get(i)
            prose = " ".join(image_findings(s, i, ctx.thresholds))
            lines.append(
                f"- `{_md(names[i])}`" + (f" ({_md(note)})" if note else "") + f": {prose}"
            )
        lines.append("")
    f = s.failures
    lines += ["## Failed inputs", ""]
    if f.num_rows == 0:
        lines.append("None.")
    else:
        lines.append(f"{f.num_rows:,} inputs failed.")
        rows = f.slice(0, FAILURES_LISTED).select(["name", "error"]).to_pylist()
        lines += [f"- `{_md(r['name'])}`: {_md(r['error'])}" for r in rows]
        if f.num_rows > FAILURES_LISTED:
            lines.append(f"- … {f.num_rows - FAILURES_LISTED:,} more in the results table.")
    lines += ["", "## Definitions and thresholds", ""]
    lines += [f"- {d}" for d in definitions(ctx.steps, ctx.thresholds)]
    if ctx.notes:
        lines += ["", "## Notes", "", *(f"- {_md(n)}" for n in ctx.notes)]
    return "\n".join(lines) + "\n"
