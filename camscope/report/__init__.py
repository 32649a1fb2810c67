"""Reports of a run: summary.csv, plots, statistics and a bounded report.html / report.md.

`build_report` reads one or more run folders' results tables (docs/DESIGN.md) and writes the
report; memory and page size stay bounded whatever the number of images. Modules:

- `camscope.report.source`: the report's access to run folders (through `camscope.run.results`).
- `camscope.report.data`: per-image scalars, metric specs, intervals, rankings, sanity verdicts.
- `camscope.report.text`: every sentence of the analysis, chosen by the numbers.
- `camscope.report.plots`: mean curves (streamed sums) and distributions.
- `camscope.report.gallery`: bounded gallery sections and their thumbnails.
- `camscope.report.html` / `camscope.report.markdown`: the two renderings.

Metrics (see `camscope.metrics`): Average Drop / Increase in Confidence (Chattopadhyay et al.,
WACV 2018, https://arxiv.org/abs/1710.11063), Deletion / Insertion (Petsiuk et al., BMVC 2018,
https://arxiv.org/abs/1806.07421), cascading randomisation (Adebayo et al., NeurIPS 2018,
https://arxiv.org/abs/1810.03292).
"""

from __future__ import annotations

from camscope.report.build import build_report, summary_csv
from camscope.report.data import METRICS, MetricSpec, Scalars, Summary, Thresholds
from camscope.report.gallery import GALLERY_CAP
from camscope.report.html import CSP, MAX_BYTES
from camscope.report.source import RunFolderError, RunTable

__all__ = [
    "CSP",
    "GALLERY_CAP",
    "MAX_BYTES",
    "METRICS",
    "MetricSpec",
    "RunFolderError",
    "RunTable",
    "Scalars",
    "Summary",
    "Thresholds",
    "build_report",
    "summary_csv",
]
