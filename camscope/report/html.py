"""report.html: one self-contained page of bounded size, whatever the number of images.

Inline CSS, images as base64 ``data:`` URIs (plots as PNG, gallery thumbnails as small JPEGs), no
script, no external URL, all text HTML-escaped; the only links are relative ones to the run
folders' metrics.csv and results table, where every image's numbers are. The gallery stops adding
cards when it reaches `GALLERY_BYTES`, so the page stays under `MAX_BYTES` (the page says so).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence

from camscope.report.context import ReportContext
from camscope.report.data import METRICS
from camscope.report.gallery import Card
from camscope.report.text import (
    definitions,
    image_findings,
    label,
    sanity_lines,
    statistics_statement,
    summary_rows,
)

__all__ = ["CSP", "GALLERY_BYTES", "MAX_BYTES", "render_html"]

#: The page may load nothing but its own inline style and data: images.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
#: The page's size limit and the share of it the gallery may use.
MAX_BYTES = 20_000_000
GALLERY_BYTES = 12_000_000
#: Failed inputs listed by name in the page at most (all are in the results table).
FAILURES_SHOWN = 50

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.facts td{text-align:left}.plot{max-width:100%;height:auto}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em;margin:.8em 0}
.row{display:flex;flex-wrap:wrap;gap:.5em}.row figure{margin:0;text-align:center}
.row img{width:128px;height:128px;display:block}.na{width:128px;height:128px;background:#eee;
display:flex;align-items:center;justify-content:center;font-size:.8em;color:#777}
figcaption{font-size:.8em;color:#555}.note{color:#555;font-size:.9em}
.findings{margin:.4em 0 0 1.2em;padding:0;font-size:.9em}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def lines_html(lines: Sequence[str]) -> list[str]:
    """Analysis lines (``- `` bullets, ``**bold**`` lead) to escaped HTML."""
    out: list[str] = []
    bullets: list[str] = []
    for line in [*lines, ""]:
        if line.startswith("- "):
            bullets.append(_e(line[2:]))
            continue
        if bullets:
            out.append("<ul>" + "".join(f"<li>{b}</li>" for b in bullets) + "</ul>")
            bullets = []
        if line:
            text = _e(line)
            if text.startswith("**") and "**" in text[2:]:
                head, _, tail = text[2:].partition("**")
                text = f"<strong>{head}</strong>{tail}"
            out.append(f"<p>{text}</p>")
    return out


def _figure(jpeg: bytes | None, caption: str) -> str:
    img = (
        f'<img src="{_uri(jpeg, "image/jpeg")}" alt="{_e(caption)}">'
        if jpeg is not None
        else '<div class="na">not available</div>'
    )
    return f"<figure>{img}<figcaption>{_e(caption)}</figcaption></figure>"


def _card(ctx: ReportContext, i: int, card: Card, note: str) -> str:
    s = ctx.scalars
    img = s.images.slice(i, 1).to_pylist()[0]
    figures = [_figure(card.input_jpeg, "input")]
    figures += [_figure(card.overlays.get(m), label(m)) for m in s.methods]
    header = ["method", *(f"{m.label}{f' ({m.unit})' if m.unit else ''}" for m in METRICS)]
    header += ["empty"]
    rows = []
    for m in s.methods:
        if s.rows[m][i] < 0:
            continue
        v = s.values[m]
        cells = [spec.fmt(v[spec.key][i]) for spec in METRICS]
        if math.isfinite(v["increase"][i]):
            cells[1] = "yes" if v["increase"][i] > 0 else "no"
        rows.append([label(m), *cells, "yes" if v["empty"][i] > 0 else "no"])
    findings = "".join(f"<li>{_e(t)}</li>" for t in image_findings(s, i, ctx.thresholds))
    return (
        f'<div class="card"><h4>{_e(img["name"])}</h4>'
        f'<p class="note">{_e(note)}{"<br>" if note else ""}file: {_e(img["file"])}</p>'
        f'<div class="row">{"".join(figures)}</div>'
        + (_table(header, rows) if ctx.scalars.has_metrics else "")
        + f'<ul class="findings">{findings}</ul></div>'
    )


def _gallery(ctx: ReportContext) -> list[str]:
    parts, used, dropped = [], 0, 0
    for sec in ctx.sections:
        parts.append(f"<h3>{_e(sec.title)}</h3>")
        parts.append(
            f'<p class="note">Rule: {_e(sec.rule)}. Showing {len(sec.images)} of {sec.total:,} '
            "candidate images.</p>"
        )
        for i in sec.images:
            card = _card(ctx, i, ctx.cards[i], sec.notes.get(i, ""))
            if used + len(card) > GALLERY_BYTES:
                dropped += 1
                continue
            used += len(card)
            parts.append(card)
    if dropped:
        parts.append(
            f"<p><strong>{dropped} gallery cards left out to keep this page under "
            f"{MAX_BYTES // 1_000_000} MB</strong>; their numbers are in the results table.</p>"
        )
    return parts


def _failures(ctx: ReportContext) -> list[str]:
    f = ctx.scalars.failures
    if f.num_rows == 0:
        return ["<p>None.</p>"]
    rows = f.slice(0, FAILURES_SHOWN).select(["name", "file", "error"]).to_pylist()
    out = [f"<p>{f.num_rows:,} inputs failed.</p>"]
    out.append(
        _table(["name", "file", "cause"], [[r["name"], r["file"], r["error"]] for r in rows])
    )
    if f.num_rows > FAILURES_SHOWN:
        out.append(f"<p>{f.num_rows - FAILURES_SHOWN:,} more in the results table.</p>")
    return out


def render_html(ctx: ReportContext) -> str:
    """The whole page (see the module docstring)."""
    s, summary = ctx.scalars, ctx.summary
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{_e(ctx.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(ctx.title)}</h1>",
        '<table class="facts">',
        *(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in ctx.facts),
        "</table>",
        "<p>Every image's numbers: "
        + ", ".join(f'<a href="{_e(href)}">{_e(text)}</a>' for text, href in ctx.links)
        + ".</p>",
        "<h2>Summary</h2>",
        _table(*summary_rows(s, summary)),
        "<h2>Statistics</h2>",
        *lines_html([f"- {t}" for t in statistics_statement(summary)]),
        *lines_html(ctx.analysis),
        "<h2>Sanity check</h2>",
        *lines_html(sanity_lines(s, summary, ctx.thresholds) if summary.sanity else ["Not run."]),
    ]
    if ctx.plots:
        parts.append("<h2>Plots</h2>")
        for caption, png in ctx.plots.items():
            parts.append(
                f'<figure><img class="plot" src="{_uri(png, "image/png")}" alt="{_e(caption)}">'
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
    parts += ["<h2>Gallery</h2>", *_gallery(ctx), "<h2>Failed inputs</h2>", *_failures(ctx)]
    parts += ["<h2>Definitions and thresholds</h2>"]
    parts += lines_html([f"- {d}" for d in definitions(ctx.steps, ctx.thresholds)])
    if ctx.notes:
        parts += ["<h2>Notes</h2>", *lines_html([f"- {n}" for n in ctx.notes])]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
