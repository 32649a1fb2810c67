"""report.html and report.md: the `Document` laid out by Jinja2 templates (package data).

report.html is one self-contained page of bounded size, whatever the number of images: inline
CSS, images as base64 ``data:`` URIs (plots as PNG, gallery thumbnails as small JPEGs), no script,
no external URL, every text autoescaped by Jinja2; the only links are relative ones to the run
folders' metrics.csv and results table, where every image's numbers are. The gallery stops adding
cards when they reach `GALLERY_BYTES`, so the page stays under `MAX_BYTES` (the page says so).
report.md has the same sections from the same `Document`, gallery images as prose, plots as
links to their PNG files.
"""

from __future__ import annotations

import base64
import re
from functools import cache

import jinja2

from camscope.report.document import Document, Gallery

__all__ = ["CSP", "GALLERY_BYTES", "MAX_BYTES", "render_html", "render_markdown"]

#: The page may load nothing but its own inline style and data: images.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
#: The page's size limit and the share of it the gallery may use.
MAX_BYTES = 20_000_000
GALLERY_BYTES = 12_000_000


def _datauri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _md(text: object) -> str:
    """Plain text safe in Markdown prose and code spans: one line, no backtick."""
    return str(text).replace("`", "'").replace("\n", " ")


def _cell(text: object) -> str:
    """Plain text safe in a Markdown table cell (`_md`, pipes escaped)."""
    return _md(text).replace("|", "\\|")


@cache
def environment() -> jinja2.Environment:
    """The templates of ``camscope/report/templates``; autoescaping for ``.html`` templates."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("camscope.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["datauri"] = _datauri
    env.filters["md"] = _md
    env.filters["cell"] = _cell
    return env


def _gallery_cards(doc: Document) -> tuple[dict[int, list[str]], int]:
    """Each gallery card rendered once, in order, until `GALLERY_BYTES`; the count left out.

    The cards are the autoescaping macro's output (markup-safe strings), placed as they are.
    """
    card = environment().get_template("_blocks.html").module.card  # type: ignore[attr-defined]
    kept: dict[int, list[str]] = {}
    used = dropped = 0
    for section in doc.sections:
        for block in section.blocks:
            if not isinstance(block, Gallery):
                continue
            for sec in block.sections:
                out = kept.setdefault(id(sec), [])
                for c in sec.cards:
                    markup = card(c)
                    size = len(str(markup).encode("utf-8"))
                    if used + size > GALLERY_BYTES:
                        dropped += 1
                        continue
                    used += size
                    out.append(markup)
    return kept, dropped


def render_html(doc: Document) -> str:
    """The whole page (see the module docstring)."""
    kept, dropped = _gallery_cards(doc)
    return environment().get_template("report.html").render(
        doc=doc, csp=CSP, cards=kept, dropped=dropped, max_mb=MAX_BYTES // 1_000_000,
        card_id=id,
    )  # fmt: skip


def render_markdown(doc: Document) -> str:
    """The Markdown report (see the module docstring)."""
    text = environment().get_template("report.md").render(doc=doc)
    return re.sub(r"\n{3,}", "\n\n", text)  # blank lines between blocks: one, whatever the blocks
