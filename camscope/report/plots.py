"""Figures of a report: mean deletion/insertion/ROAD curves (streamed sums), distributions.

Figures use the matplotlib ``Figure`` API (Agg), never pyplot. `curve_sums` reads the curve
columns one part file at a time and keeps only per-method sums, so memory does not grow with n.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.figure import Figure

from camscope.metrics import ROAD_FRACTIONS
from camscope.report.data import METRICS, Scalars, Summary
from camscope.report.source import RunTable
from camscope.report.text import label

log = logging.getLogger("camscope")

__all__ = ["CURVES", "CurveSums", "curve_sums", "plot_curves", "plot_distributions"]

#: Up to this many images per method the distribution plot also shows every image as a point.
POINTS_UP_TO = 200

#: Panels of the distribution plot per row (more metrics wrap onto further rows).
PANELS_PER_ROW = 5

#: Up to this many methods each curve panel has its own legend (with the curve's AUC or mean);
#: more methods share one legend of names under the panels (the values are in the summary).
LEGEND_IN_PANEL_UP_TO = 8

_LINESTYLES = ("-", "--", ":", "-.")

#: method -> kind ("deletion" | "insertion") -> (sum over images (S+1,), number of images)
CurveSums = dict[str, dict[str, tuple[np.ndarray, int]]]


def _rows(column: pa.ChunkedArray) -> dict[int, np.ndarray]:
    """A list<float> column as {length: (rows, length) float64} of its non-null, finite rows."""
    arr = column.combine_chunks()
    if pa.types.is_null(arr.type) or len(arr) == 0:
        return {}
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    out = {}
    for length in np.unique(lengths[lengths > 0]):
        sel = np.flatnonzero(lengths == length)
        flat = pc.list_flatten(arr.take(pa.array(sel)))
        rows = pc.fill_null(flat, np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
        rows = rows.reshape(len(sel), int(length))
        out[int(length)] = rows[np.isfinite(rows).all(axis=1)]
    return out


#: The curves of the results table (``<kind>_curve``) the report plots, with their panels:
#: (kind, title, x label, statistic of the mean curve in the legend); a panel other than
#: deletion's and insertion's only when measured.
CURVES = (
    ("deletion", "Deletion (lower AUC is better)", "share of pixels deleted", "AUC"),
    ("insertion", "Insertion (higher AUC is better)", "share of pixels inserted", "AUC"),
    ("deletion_blur", "Deletion, blurred (lower AUC is better)", "share of pixels deleted", "AUC"),
    ("road_morf", "ROAD MoRF (lower is better)", "share removed, most relevant first", "mean"),
    ("road_lerf", "ROAD LeRF (higher is better)", "share removed, least relevant first", "mean"),
)


def curve_sums(table: RunTable, methods: Sequence[str]) -> CurveSums:
    """Per-method sums of the curves of `CURVES` (deletion, insertion, ROAD), streamed.

    Curves of another length than the most common one (runs with other ``--steps`` merged)
    are left out with a warning.
    """
    acc: dict[tuple[str, str, int], tuple[np.ndarray, int]] = {}
    kinds = tuple(c[0] for c in CURVES)
    for batch in table.batches(["status", "method", *(f"{k}_curve" for k in kinds)]):
        ok = pc.fill_null(pc.equal(batch["status"], "ok"), False)
        batch = batch.filter(ok)
        method = np.array(batch["method"].to_pylist(), dtype=object)
        for m in methods:
            sub = batch.filter(pa.array(method == m))
            for kind in kinds:
                for length, rows in _rows(sub[f"{kind}_curve"]).items():
                    s, c = acc.get((m, kind, length), (np.zeros(length), 0))
                    acc[(m, kind, length)] = (s + rows.sum(axis=0), c + len(rows))
    out: CurveSums = {}
    for m in methods:
        for kind in kinds:
            found = {ln: v for (mm, k, ln), v in acc.items() if mm == m and k == kind}
            if not found:
                continue
            length = max(found, key=lambda ln: found[ln][1])
            if len(found) > 1:
                log.warning("%s %s curves of several lengths; plotting the %d-point ones",
                            m, kind, length)  # fmt: skip
            out.setdefault(m, {})[kind] = found[length]
    return out


def _x(kind: str, points: int) -> np.ndarray:
    """Where a curve's points lie: [0, 1] for deletion/insertion, ROAD's removed fractions."""
    if not kind.startswith("road"):
        return np.linspace(0.0, 1.0, points)
    if points == len(ROAD_FRACTIONS):
        return np.asarray(ROAD_FRACTIONS, dtype=np.float64)
    return np.arange(1, points + 1) / (points + 1)


def _style(k: int) -> dict[str, object]:
    """Colour and line style of the k-th method: 10 colours x 4 styles stay distinguishable."""
    return {"color": f"C{k % 10}", "linestyle": _LINESTYLES[(k // 10) % len(_LINESTYLES)]}


def plot_curves(sums: CurveSums) -> Figure:
    """Mean curves per method: deletion, insertion, and ROAD MoRF / LeRF when measured.

    Legend: the AUC (deletion, insertion) or the mean (ROAD) of the mean curve, and n, in each
    panel for up to `LEGEND_IN_PANEL_UP_TO` methods; more methods share one legend of names
    under the panels (a method keeps its colour and line style in every panel). The trapezoid
    AUC of the mean curve equals the mean of the per-image AUCs; the mean of the mean ROAD
    curve equals the mean of the per-image ROAD values.
    """
    shown = [c for c in CURVES if c[0] in ("deletion", "insertion")
             or any(c[0] in kinds for kinds in sums.values())]  # fmt: skip
    in_panel = len(sums) <= LEGEND_IN_PANEL_UP_TO
    legend_rows = 0 if in_panel else -(-len(sums) // 4)
    fig = Figure(figsize=(5 * len(shown), 4 + 0.22 * legend_rows), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(shown), sharey=True))
    handles: dict[str, object] = {}
    for ax, (kind, title, xlabel, stat) in zip(axes, shown, strict=True):
        for k, (m, kinds) in enumerate(sums.items()):
            if kind not in kinds or kinds[kind][1] == 0:
                continue
            total, count = kinds[kind]
            mean = total / count
            if stat == "AUC":
                value = float(((mean[:-1] + mean[1:]) / 2).sum() / (len(mean) - 1))
            else:
                value = float(mean.mean())
            text = f"{label(m)} ({stat} {value:.3f}, n={count:,})" if in_panel else label(m)
            (line,) = ax.plot(_x(kind, len(mean)), mean, marker="." if stat == "mean" else None,
                              label=text, **_style(k))  # fmt: skip
            handles.setdefault(label(m), line)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        if in_panel and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if handles and not in_panel:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=4,
                   fontsize=8)  # fmt: skip
    axes[0].set_ylabel("target-class probability (mean over images)")
    return fig


def plot_distributions(s: Scalars, summary: Summary, seed: int = 0) -> Figure:
    """Per-metric distributions per method.

    One panel per measured metric of `METRICS`, `PANELS_PER_ROW` a row: box plots (quartiles,
    median, whiskers at 1.5 IQR), with every image as a jittered point up to `POINTS_UP_TO`
    images; a yes/no metric (Wilson interval, e.g. Increase in Confidence): the % of images with
    its interval.
    """
    labels = [label(m) for m in s.methods]
    shown = summary.measured or list(METRICS)
    cols = min(len(shown), PANELS_PER_ROW)
    rows = -(-len(shown) // cols)
    many = len(s.methods) > 6  # labels stand upright and each panel widens with the methods
    panel_w = max(3.0, 0.16 * len(s.methods)) if many else 3.0
    label_h = 0.075 * max(len(t) for t in labels) if many else 0.0
    fig = Figure(figsize=(panel_w * max(cols, 4), (3.8 + label_h) * rows), dpi=100,
                 layout="constrained")  # fmt: skip
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    rng = np.random.default_rng(seed)
    pos = np.arange(len(s.methods))
    for ax, spec in zip(axes, shown, strict=False):
        data = [s.values[m][spec.key] * spec.scale for m in s.methods]
        data = [d[np.isfinite(d)] for d in data]
        if spec.interval == "wilson":
            ivs = [summary.intervals[m][spec.key] for m in s.methods]
            means = np.array([iv.mean for iv in ivs]) * spec.scale
            lo = np.array([iv.low for iv in ivs]) * spec.scale
            hi = np.array([iv.high for iv in ivs]) * spec.scale
            err = np.nan_to_num(np.vstack([means - lo, hi - means]))
            ax.bar(pos, np.nan_to_num(means), yerr=err, capsize=4, color="#7aa6d6")
            ax.set_ylim(0, 100 * spec.scale / 100)
        else:
            ax.boxplot([d if len(d) else [np.nan] for d in data], positions=pos, widths=0.5,
                       showfliers=len(max(data, key=len)) > POINTS_UP_TO)  # fmt: skip
            for k, d in enumerate(data):
                if 0 < len(d) <= POINTS_UP_TO:
                    ax.scatter(k + rng.uniform(-0.15, 0.15, len(d)), d, s=8, alpha=0.5, zorder=3)
        ax.set_xticks(pos, labels, rotation=90 if many else 20, fontsize=7 if many else None)
        ax.set_title(f"{spec.label}\n({spec.direction})", fontsize=10)
        ax.set_ylabel(spec.label + (f" ({spec.unit})" if spec.unit else ""))
        ax.grid(axis="y", alpha=0.3)
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
