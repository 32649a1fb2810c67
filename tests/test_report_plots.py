"""The report's figures stay legible with many methods (a 26-method family, as EVALUATION.md's)."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from camscope.methods import METHODS
from camscope.report.plots import LEGEND_IN_PANEL_UP_TO, plot_curves


def _sums(methods: list[str]) -> dict:
    rng = np.random.default_rng(0)
    return {
        m: {kind: (rng.random(33) * 5, 5) for kind in ("deletion", "insertion")} for m in methods
    }


def _overlaps(boxes: list) -> bool:
    """Whether any two of the (x0, x1) extents overlap."""
    spans = sorted((b.x0, b.x1) for b in boxes)
    return any(a[1] > b[0] + 0.5 for a, b in zip(spans, spans[1:], strict=False))


def test_many_methods_share_one_legend_under_the_panels():
    methods = list(METHODS)[:26]
    fig = plot_curves(_sums(methods))
    FigureCanvasAgg(fig).draw()  # lays the figure out (constrained layout) as savefig does
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    assert len(legend.get_texts()) == len(methods)
    styles = {(line.get_color(), line.get_linestyle()) for line in fig.axes[0].lines}
    assert len(styles) == len(methods)  # every method its own colour and line style
    renderer = fig.canvas.get_renderer()
    legend_box = legend.get_window_extent(renderer)
    for ax in fig.axes:  # the legend lies under the panels, not over them
        assert legend_box.y1 <= ax.get_tightbbox(renderer).y0 + 1


def test_few_methods_keep_their_values_in_each_panel():
    methods = list(METHODS)[:LEGEND_IN_PANEL_UP_TO]
    fig = plot_curves(_sums(methods))
    assert not fig.legends
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(texts) == len(methods) and all("AUC" in t and "n=5" in t for t in texts)


def test_distribution_labels_do_not_overlap_with_many_methods(tmp_path):
    from synthetic_runs import make_run

    from camscope.report.data import load_scalars, summarise
    from camscope.report.plots import plot_distributions
    from camscope.report.source import RunTable

    methods = tuple(list(METHODS)[:26])
    run = make_run(tmp_path / "run", 6, methods)
    s = load_scalars(RunTable([run], list(methods)), methods)
    fig = plot_distributions(s, summarise(s, resamples=50))
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        if ax.get_visible():
            labels = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
            assert len(labels) == len(methods) and not _overlaps(labels)
