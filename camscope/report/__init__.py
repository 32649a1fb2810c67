"""Reports of a run: summary.csv, plots, statistics and a bounded report.html / report.md.

`build_report` reads one or more run folders' results tables (docs/DESIGN.md) and writes the
report; memory and page size stay bounded whatever the number of images. Modules:

- `camscope.report.source`: the report's access to run folders (through `camscope.io.runfolder`).
- `camscope.report.data`: per-image scalars, the metric table `METRICS` (one declaration per
  metric), intervals, corrected rankings, ranking agreement between metrics, sanity verdicts.
- `camscope.report.variants`: other settings of a metric (`VARIANTS`: deletion / insertion at
  fewer steps, ROAD over part of its fractions) derived from the stored curves, for the
  ranking robustness.
- `camscope.report.text`: every sentence of the analysis, chosen by the numbers (as `Finding`s
  and blocks).
- `camscope.report.plots`: mean curves (streamed sums) and distributions.
- `camscope.report.gallery`: bounded gallery sections and their thumbnails.
- `camscope.report.document`: the report as data (sections of blocks: paragraphs, tables,
  comparison matrices, figures, the gallery).
- `camscope.report.outline`: `SECTIONS`, the one section list, and `build_document`.
- `camscope.report.render`: report.html / report.md from the `Document` by Jinja2 templates
  (``camscope/report/templates``, package data; autoescaped HTML).

Metrics (see `camscope.metrics`): Average Drop / Increase in Confidence (Chattopadhyay et al.,
WACV 2018, https://arxiv.org/abs/1710.11063), Deletion / Insertion (Petsiuk et al., BMVC 2018,
https://arxiv.org/abs/1806.07421), ROAD (Rong et al., ICML 2022, https://arxiv.org/abs/2202.00449),
localisation with --boxes (pointing game, energy game, relevance mass / rank), complexity
(sparseness, entropy; descriptive, not ranked), cascading randomisation (Adebayo et al.,
NeurIPS 2018, https://arxiv.org/abs/1810.03292).
"""

from __future__ import annotations

from camscope.report.build import build_report, comparisons_csv, summary_csv
from camscope.report.data import METRICS, MetricSpec, Scalars, Summary, Thresholds
from camscope.report.document import Document, Finding
from camscope.report.gallery import GALLERY_CAP
from camscope.report.outline import SECTIONS, build_document
from camscope.report.render import CSP, MAX_BYTES, render_html, render_markdown
from camscope.report.source import RunFolderError, RunTable
from camscope.report.variants import VARIANTS

__all__ = [
    "CSP",
    "Document",
    "Finding",
    "GALLERY_CAP",
    "MAX_BYTES",
    "METRICS",
    "MetricSpec",
    "RunFolderError",
    "RunTable",
    "SECTIONS",
    "Scalars",
    "Summary",
    "Thresholds",
    "VARIANTS",
    "build_document",
    "build_report",
    "comparisons_csv",
    "render_html",
    "render_markdown",
    "summary_csv",
]
