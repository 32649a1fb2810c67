"""Plots, summary table and the written analysis (report.md, report.html) of an evaluated run.

Everything said in the reports is generated from the measured numbers in a `ReportData`: each
claim sentence is a template filled from, and chosen by, a computed value compared with a
threshold defined once in `Thresholds` (and stated in the report). Nothing is written about an
image or a method that no number supports.

Metrics (see `camscope.metrics` for the exact definitions and papers):

- Average Drop % (lower is better) and Increase in Confidence % (higher is better):
  Chattopadhyay et al., Grad-CAM++, WACV 2018, https://arxiv.org/abs/1710.11063
- Deletion AUC (lower is better) and Insertion AUC (higher is better): Petsiuk et al., RISE,
  BMVC 2018, https://arxiv.org/abs/1806.07421
- Cascading model-parameter randomisation: Adebayo et al., NeurIPS 2018,
  https://arxiv.org/abs/1810.03292

Dataset-level rankings use per-method means with 95% Student-t intervals; an order between two
methods is called significant only when the 95% interval of their paired per-image difference
excludes 0 (`camscope.metrics.paired_difference`).

The HTML page is self-contained: inline CSS, every image a base64 ``data:`` URI, no script, no
external URL, all text HTML-escaped. Figures use the matplotlib ``Figure`` API (Agg), never
pyplot.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from camscope.io import write_text
from camscope.metrics import PairedDifference, SanityStep, mean_ci, paired_difference, passes_sanity
from camscope.visualize import method_label

__all__ = [
    "METRICS",
    "ImageEntry",
    "MetricSpec",
    "ReportData",
    "Thresholds",
    "image_findings",
    "plot_curves",
    "plot_distributions",
    "render_html",
    "render_markdown",
    "summary_table",
    "write_html",
    "write_markdown",
]


@dataclass(frozen=True)
class Thresholds:
    """Every threshold the written analysis uses, in one place (each is stated in the report).

    strong_agreement / weak_agreement: Pearson r >= 0.7 is "strong", <= 0.3 is "weak",
        in between "moderate".
    spread_factor / spread_min_excess: a map is "spread" when its share of pixels above 0.5 is
        at least ``spread_factor`` times, and ``spread_min_excess`` (absolute) more than, the
        largest share among the other non-empty maps of the image.
    off_region_iou / shared_region_iou: a map is "off the shared region" when its top-20% IoU
        with every other non-empty map is below ``off_region_iou`` while those others reach at
        least ``shared_region_iou`` with each other (needs two or more others).
    sanity_threshold: a method passes the randomisation check when the mean |Spearman| after
        the final cascade step is below it (`camscope.metrics.passes_sanity`).
    auc_margin: per image, a map is called the most faithful by deletion/insertion only when
        its AUC beats every other map's by at least this much (AUCs are in [0, 1]; 0.01 is about
        twice the 95th percentile of the change from DEFAULT_STEPS to 224-pixel steps).
    """

    strong_agreement: float = 0.7
    weak_agreement: float = 0.3
    spread_factor: float = 2.0
    spread_min_excess: float = 0.10
    off_region_iou: float = 0.2
    shared_region_iou: float = 0.5
    sanity_threshold: float = 0.5
    auc_margin: float = 0.01


@dataclass(frozen=True)
class MetricSpec:
    """A per-image faithfulness metric: key in `ReportData.values`, how to show and rank it."""

    key: str
    label: str
    unit: str
    scale: float
    higher_is_better: bool
    digits: int

    def fmt(self, value: float) -> str:
        """Value in display units (``scale`` applied), ``digits`` decimals and the unit."""
        return _num(value * self.scale, self.digits) + self.unit

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


#: The four faithfulness metrics, in report order.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("average_drop", "Average Drop", "%", 100.0, False, 1),
    MetricSpec("increase", "Increase in Confidence", "%", 100.0, True, 1),
    MetricSpec("deletion_auc", "Deletion AUC", "", 1.0, False, 3),
    MetricSpec("insertion_auc", "Insertion AUC", "", 1.0, True, 3),
)


@dataclass
class ImageEntry:
    """One evaluated image: what the model said and where its pictures are.

    rgb: the resized (H, W, 3) uint8 input shown in the HTML page (None: not shown).
    overlays: method -> the run's ``<method>/<name>.png`` overlay.
    """

    name: str
    file: str
    target_index: int
    target_name: str
    top1_index: int
    top1_name: str
    top1_prob: float
    truth_index: int | None = None
    truth_name: str | None = None
    rgb: np.ndarray | None = None
    overlays: dict[str, Path] = field(default_factory=dict)

    @property
    def correct(self) -> bool | None:
        """Top-1 prediction == truth, or None when the truth is unknown."""
        return None if self.truth_index is None else self.top1_index == self.truth_index


@dataclass
class ReportData:
    """Everything the reports are generated from.

    values: method -> key -> (N,) float64 per image (NaN where the method has no map), keys:
        ``average_drop`` (fraction), ``increase`` (0/1), ``deletion_auc``, ``insertion_auc``,
        ``empty`` (0/1) and ``share_above_half`` (share of pixels with map > 0.5).
    agreement: (method_a, method_b) -> {"pearson": (N,), "top20_iou": (N,)}.
    curves: method -> (deletion (N, S+1), insertion (N, S+1)), for `plot_curves`.
    sanity: method -> cascade steps on the first ``sanity_images`` images.
    plots: caption -> PNG file to inline in the HTML page.
    """

    title: str
    run: Mapping[str, object]
    methods: list[str]
    images: list[ImageEntry]
    values: dict[str, dict[str, np.ndarray]]
    agreement: dict[tuple[str, str], dict[str, np.ndarray]]
    steps: int
    sanity: dict[str, list[SanityStep]] = field(default_factory=dict)
    sanity_images: int = 0
    sanity_notes: list[str] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)


# --------------------------------------------------------------------------------------------
# numbers -> text


def _num(value: float, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _label(method: str) -> str:
    return method_label(method)


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _pair_values(data: ReportData, a: str, b: str, key: str) -> np.ndarray:
    """Agreement values of a pair in either order."""
    if (a, b) in data.agreement:
        return data.agreement[(a, b)][key]
    return data.agreement[(b, a)][key]


def _agreement_word(r: float, t: Thresholds) -> str:
    if r >= t.strong_agreement:
        return "agree strongly"
    if r <= t.weak_agreement:
        return "agree weakly"
    return "agree moderately"


def image_findings(data: ReportData, i: int) -> list[str]:
    """The analysis sentences for image ``i``, each derived from computed values.

    Covers: prediction vs truth, empty maps, pairwise agreement (Pearson with the thresholds of
    `Thresholds`), spread maps, maps off the region the others share, and the most faithful
    map by deletion (lowest AUC) and by insertion (highest AUC). Empty maps are left out of the
    agreement, spread, region and faithfulness comparisons (their values are not meaningful
    there) and said to be so.
    """
    t = data.thresholds
    img = data.images[i]
    out: list[str] = []
    pred = f"The model predicts {img.top1_name} (p = {_num(img.top1_prob, 3)})"
    if img.correct is None:
        out.append(pred + "; the ground truth is unknown.")
    elif img.correct:
        out.append(pred + ", which is correct.")
    else:
        out.append(pred + f", which is wrong: the ground truth is {img.truth_name}.")
    if img.target_index != img.top1_index:
        out.append(f"The maps explain class {img.target_name}, not the top-1 prediction.")

    present = [m for m in data.methods if math.isfinite(data.values[m]["deletion_auc"][i])]
    missing = [m for m in data.methods if m not in present]
    if missing:
        out.append(f"No map was evaluated for {_join([_label(m) for m in missing])}.")
    empty = [m for m in present if data.values[m]["empty"][i] > 0]
    if empty:
        verb = "is" if len(empty) == 1 else "are"
        out.append(
            f"The map of {_join([_label(m) for m in empty])} {verb} empty (all zero), so it is "
            "left out of the comparisons below."
        )
    live = [m for m in present if m not in empty]

    for a, b in itertools.combinations(live, 2):
        r = float(_pair_values(data, a, b, "pearson")[i])
        iou = float(_pair_values(data, a, b, "top20_iou")[i])
        out.append(
            f"{_label(a)} and {_label(b)} {_agreement_word(r, t)} "
            f"(Pearson r = {_num(r, 2)}, top-20% IoU = {_num(iou, 2)})."
        )

    share = {m: float(data.values[m]["share_above_half"][i]) for m in live}
    for m in live:
        others = [share[o] for o in live if o != m]
        if not others:
            continue
        top = max(others)
        if share[m] >= t.spread_factor * top and share[m] - top >= t.spread_min_excess:
            out.append(
                f"The map of {_label(m)} is spread: {_num(100 * share[m], 0)}% of its pixels are "
                f"above 0.5, against at most {_num(100 * top, 0)}% for the others."
            )

    for m in live:
        others = [o for o in live if o != m]
        if len(others) < 2:
            continue
        own = [float(_pair_values(data, m, o, "top20_iou")[i]) for o in others]
        shared = [
            float(_pair_values(data, a, b, "top20_iou")[i])
            for a, b in itertools.combinations(others, 2)
        ]
        if max(own) < t.off_region_iou and min(shared) >= t.shared_region_iou:
            out.append(
                f"The top-20% region of {_label(m)} is off the region the others share: its IoU "
                f"with them is at most {_num(max(own), 2)}, while they reach at least "
                f"{_num(min(shared), 2)} with each other."
            )

    if len(live) >= 2:
        for key, word, best_fn in (
            ("deletion_auc", "deletion (lowest AUC)", min),
            ("insertion_auc", "insertion (highest AUC)", max),
        ):
            vals = {m: float(data.values[m][key][i]) for m in live}
            best = best_fn(vals.values())
            close = [m for m in live if abs(vals[m] - best) < t.auc_margin]
            rest = [f"{_label(m)} {_num(vals[m], 3)}" for m in live if m not in close]
            if len(close) == 1:
                out.append(
                    f"Most faithful by {word}: {_label(close[0])} with {_num(best, 3)}, against "
                    f"{', '.join(rest)}."
                )
                continue
            tied = _join([f"{_label(m)} ({_num(vals[m], 3)})" for m in close])
            trail = f"; {', '.join(rest)}" if rest else ""
            out.append(
                f"By {word} no single map is clearly most faithful: {tied} lie within "
                f"{t.auc_margin} of the best{trail}."
            )
    return out


@dataclass
class _Summary:
    method: str
    n: int
    stats: dict[str, tuple[float, float, float]]
    empty_share: float
    sanity_final: float
    sanity_pass: bool | None


def _summaries(data: ReportData) -> list[_Summary]:
    out = []
    for m in data.methods:
        v = data.values[m]
        stats = {spec.key: mean_ci(v[spec.key]) for spec in METRICS}
        n = int(np.isfinite(v["deletion_auc"]).sum())
        empty = v["empty"][np.isfinite(v["empty"])]
        steps = data.sanity.get(m)
        out.append(
            _Summary(
                method=m,
                n=n,
                stats=stats,
                empty_share=float(empty.mean()) if empty.size else math.nan,
                sanity_final=steps[-1].mean_abs if steps else math.nan,
                sanity_pass=passes_sanity(steps, data.thresholds.sanity_threshold)
                if steps
                else None,
            )
        )
    return out


def summary_table(data: ReportData) -> tuple[list[str], list[list[object]]]:
    """Header and rows of summary.csv: one row per method.

    Columns: method, n, then ``<metric>_mean, <metric>_ci_low, <metric>_ci_high`` for each of
    `METRICS` in display units (Average Drop and Increase in %, AUCs in [0, 1]), empty_maps_pct,
    sanity_images, sanity_final_abs_spearman (mean |Spearman| after the last cascade step),
    sanity_pass.
    """
    header = ["method", "n"]
    for spec in METRICS:
        suffix = "_pct" if spec.unit == "%" else ""
        header += [f"{spec.key}{suffix}_mean", f"{spec.key}{suffix}_ci_low"]
        header += [f"{spec.key}{suffix}_ci_high"]
    header += ["empty_maps_pct", "sanity_images", "sanity_final_abs_spearman", "sanity_pass"]
    rows: list[list[object]] = []
    for s in _summaries(data):
        row: list[object] = [s.method, s.n]
        for spec in METRICS:
            row += [_csv_float(x * spec.scale) for x in s.stats[spec.key]]
        row += [
            _csv_float(100 * s.empty_share),
            data.sanity_images if s.sanity_pass is not None else 0,
            _csv_float(s.sanity_final),
            "" if s.sanity_pass is None else ("pass" if s.sanity_pass else "fail"),
        ]
        rows.append(row)
    return header, rows


def _display_summary(data: ReportData) -> tuple[list[str], list[list[str]]]:
    """The summary for reading: one row per method, "mean [95% CI low, high]" cells."""
    header = ["Method", "n"]
    header += [f"{s.label}{f' ({s.unit})' if s.unit else ''}, {s.direction}" for s in METRICS]
    header += ["Empty maps", "Sanity: final mean |Spearman|"]
    rows = []
    for s in _summaries(data):
        row = [_label(s.method), str(s.n)]
        for spec in METRICS:
            mean, low, high = (x * spec.scale for x in s.stats[spec.key])
            ci = (
                f" [{_num(low, spec.digits)}, {_num(high, spec.digits)}]"
                if math.isfinite(low)
                else ""
            )
            row.append(_num(mean, spec.digits) + ci)
        row.append(_num(100 * s.empty_share, 0) + "%")
        if s.sanity_pass is None:
            row.append("not run")
        else:
            row.append(f"{_num(s.sanity_final, 2)} ({'pass' if s.sanity_pass else 'fail'})")
        rows.append(row)
    return header, rows


def _csv_float(x: float) -> str:
    return "" if not math.isfinite(x) else f"{x:.6g}"


@dataclass
class _Ranking:
    spec: MetricSpec
    order: list[str]
    stats: dict[str, tuple[float, float, float]]
    pairs: dict[tuple[str, str], PairedDifference]


def _rankings(data: ReportData) -> list[_Ranking]:
    """Per metric: methods by mean (best first) and paired differences for every pair."""
    out = []
    for spec in METRICS:
        stats = {m: mean_ci(data.values[m][spec.key]) for m in data.methods}
        ranked = [m for m in data.methods if math.isfinite(stats[m][0])]
        sign = -1.0 if spec.higher_is_better else 1.0
        ranked.sort(key=lambda m: sign * stats[m][0])
        pairs = {
            (a, b): paired_difference(
                data.values[a][spec.key] * spec.scale, data.values[b][spec.key] * spec.scale
            )
            for a, b in itertools.combinations(ranked, 2)
        }
        out.append(_Ranking(spec, ranked, stats, pairs))
    return out


def _ci_text(spec: MetricSpec, stats: tuple[float, float, float]) -> str:
    mean, low, high = stats
    if not math.isfinite(low):
        return f"{spec.fmt(mean)} (no interval: fewer than 2 images)"
    return f"{spec.fmt(mean)} [95% CI {spec.fmt(low)}, {spec.fmt(high)}]"


def _ranking_lines(rk: _Ranking) -> list[str]:
    spec = rk.spec
    lines = [
        f"**{spec.label}** ({spec.direction}): "
        + "; ".join(
            f"{k}. {_label(m)} {_ci_text(spec, rk.stats[m])}" for k, m in enumerate(rk.order, 1)
        )
        + "."
    ]
    for (a, b), d in rk.pairs.items():
        diff = (
            f"{_label(a)} − {_label(b)} = {_num(d.mean, spec.digits)}{spec.unit} "
            f"[{_num(d.low, spec.digits)}, {_num(d.high, spec.digits)}], n = {d.n}"
        )
        if not math.isfinite(d.low):
            verdict = "no interval (fewer than 2 paired images), order not established"
        elif d.significant:
            verdict = "significant"
        else:
            verdict = "not significant: the interval contains 0, order not established"
        lines.append(f"- {diff}: {verdict}.")
    if len(rk.order) >= 2:
        best = rk.order[0]
        beaten = [rk.pairs[(best, o)] for o in rk.order[1:]]
        if all(d.significant for d in beaten):
            lines.append(
                f"- {_label(best)} is best on {spec.label}, significantly ahead of every other "
                "method."
            )
        else:
            close = [
                _label(o) for o, d in zip(rk.order[1:], beaten, strict=True) if not d.significant
            ]
            lines.append(
                f"- {_label(best)} has the best mean on {spec.label}, but its lead over "
                f"{_join(close)} is not significant."
            )
    return lines


def _sanity_lines(data: ReportData) -> list[str]:
    t = data.thresholds
    lines = []
    for m in data.methods:
        steps = data.sanity.get(m)
        if not steps:
            lines.append(f"- {_label(m)}: not run.")
            continue
        final = steps[-1]
        verdict = passes_sanity(steps, t.sanity_threshold)
        first = steps[0]
        text = (
            f"- {_label(m)}: after randomising only {first.block}, mean Spearman = "
            f"{_num(first.mean, 2)} (|·| {_num(first.mean_abs, 2)}); after all {len(steps)} blocks "
            f"down to {final.block}, mean Spearman = {_num(final.mean, 2)}, mean |Spearman| = "
            f"{_num(final.mean_abs, 2)} (max {_num(final.max_abs, 2)}) "
        )
        if verdict:
            text += f"< {t.sanity_threshold}: passes — its maps change when the weights do."
        else:
            text += (
                f"≥ {t.sanity_threshold}: fails — its maps stay rank-correlated with the trained "
                "model's maps when every listed block is random."
            )
        lines.append(text)
    return lines


def _conclusion(data: ReportData) -> list[str]:
    lines: list[str] = []
    rankings = _rankings(data)
    for rk in rankings:
        lines += _ranking_lines(rk)
        lines.append("")
    leads = {
        m: [
            rk.spec.label
            for rk in rankings
            if len(rk.order) >= 2
            and rk.order[0] == m
            and all(rk.pairs[(m, o)].significant for o in rk.order[1:])
        ]
        for m in data.methods
    }
    winners = [f"{_label(m)} on {_join(v)}" for m, v in leads.items() if v]
    if winners:
        lines.append(
            "Significant first places (best mean and every paired difference significant): "
            + "; ".join(winners)
            + "."
        )
    else:
        lines.append("No method is significantly ahead of all others on any metric.")
    no_lead = [
        rk.spec.label for rk in rankings if not any(rk.spec.label in v for v in leads.values())
    ]
    if no_lead and winners:
        lines.append(f"No method leads significantly on {_join(no_lead)}.")
    for s in _summaries(data):
        if s.n and s.empty_share > 0:
            k = round(s.empty_share * s.n)
            lines.append(
                f"{_label(s.method)} produced an empty map for {k} of {s.n} images "
                f"({_num(100 * s.empty_share, 0)}%); those images are included in its means."
            )
    for (a, b), v in data.agreement.items():
        mean, low, high = mean_ci(v["pearson"])
        if math.isfinite(mean):
            lines.append(
                f"Mean Pearson r between {_label(a)} and {_label(b)}: {_num(mean, 2)}"
                + (f" [95% CI {_num(low, 2)}, {_num(high, 2)}]" if math.isfinite(low) else "")
                + f" (they {_agreement_word(mean, data.thresholds)} on average)."
            )
    return lines


# --------------------------------------------------------------------------------------------
# plots


def plot_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Mean deletion and insertion curves per method, mean AUC in the legend.

    ``curves``: method -> (deletion (N, S+1), insertion (N, S+1)) target-class probabilities.
    x = share of pixels deleted / inserted. The legend's AUC is the mean per-image AUC (which
    is the trapezoid AUC of the mean curve).
    """
    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    titles = ("Deletion (lower AUC is better)", "Insertion (higher AUC is better)")
    for k, (ax, title) in enumerate(zip(axes, titles, strict=True)):
        for method, pair in curves.items():
            c = np.asarray(pair[k], dtype=np.float64)
            c = c[np.isfinite(c).all(axis=1)]
            if not len(c):
                continue
            mean = c.mean(axis=0)
            x = np.linspace(0.0, 1.0, len(mean))
            area = float(((mean[:-1] + mean[1:]) / 2).sum() / (len(mean) - 1))
            ax.plot(x, mean, label=f"{_label(method)} (AUC {area:.3f}, n={len(c)})")
        ax.set_title(title)
        ax.set_xlabel("share of pixels " + ("deleted" if k == 0 else "inserted"))
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("target-class probability (mean over images)")
    return fig


def plot_distributions(values: Mapping[str, Mapping[str, np.ndarray]]) -> Figure:
    """Per-metric distributions per method: box plots with the images as points.

    Average Drop (%), Deletion AUC and Insertion AUC as box (quartiles, median) plus jittered
    per-image points; Increase in Confidence, a 0/1 outcome per image, as a bar of the % of
    images with a 95% t interval.
    """
    methods = list(values)
    labels = [_label(m) for m in methods]
    fig = Figure(figsize=(12, 3.8), dpi=100, layout="constrained")
    axes = fig.subplots(1, 4)
    rng = np.random.default_rng(0)
    for ax, spec in zip(axes, METRICS, strict=True):
        data = [np.asarray(values[m][spec.key], dtype=np.float64) * spec.scale for m in methods]
        data = [d[np.isfinite(d)] for d in data]
        if spec.key == "increase":
            stats = [mean_ci(d) for d in data]
            means = [s[0] for s in stats]
            err = np.array(
                [[s[0] - s[1], s[2] - s[0]] if math.isfinite(s[1]) else [0, 0] for s in stats]
            ).T
            ax.bar(range(len(methods)), means, yerr=err, capsize=4, color="#7aa6d6")
            ax.set_ylim(0, 100)
        else:
            ax.boxplot(
                [d if len(d) else [np.nan] for d in data],
                positions=range(len(methods)),
                widths=0.5,
                showfliers=False,
            )
            for k, d in enumerate(data):
                ax.scatter(k + rng.uniform(-0.15, 0.15, len(d)), d, s=8, alpha=0.5, zorder=3)
        ax.set_xticks(range(len(methods)), labels, rotation=20)
        unit = f" ({spec.unit})" if spec.unit else ""
        ax.set_title(f"{spec.label}\n({spec.direction})", fontsize=10)
        ax.set_ylabel(spec.label + unit)
        ax.grid(axis="y", alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# markdown


def _md(text: object) -> str:
    """Plain text safe in a Markdown code span."""
    return str(text).replace("`", "'").replace("\n", " ")


def _run_facts(data: ReportData) -> list[tuple[str, str]]:
    run = data.run
    facts = [
        ("model", str(run.get("model", "?"))),
        ("weights", str(run.get("weights_source", "?"))),
        ("layer", str(run.get("layer", "?"))),
        ("methods", ", ".join(_label(m) for m in data.methods)),
        ("ScoreCAM variant", str(run.get("scorecam_variant", "?"))),
        ("images evaluated", str(len(data.images))),
        ("deletion/insertion steps", f"{data.steps} ({data.steps + 1} points per curve)"),
    ]
    known = [im for im in data.images if im.correct is not None]
    if known:
        k = sum(bool(im.correct) for im in known)
        facts.append(
            (
                "top-1 accuracy",
                f"{k}/{len(known)} = {_num(100 * k / len(known), 1)}% "
                "(images with known ground truth)",
            )
        )
    else:
        facts.append(("top-1 accuracy", "ground truth unknown for every image"))
    return facts


def _definitions(data: ReportData) -> list[str]:
    t = data.thresholds
    return [
        "- Average Drop % = 100 × mean of max(0, Y − O) / Y and Increase in Confidence % = "
        "100 × share of images with O > Y, where Y is the target-class softmax probability of "
        "the image and O that of the image multiplied by the map in pixel space "
        "(Chattopadhyay et al., WACV 2018, arXiv:1710.11063).",
        f"- Deletion / Insertion AUC: probability while the most salient pixels are replaced by "
        f"the dataset mean colour / restored into an 11×11, σ = 5 Gaussian-blurred copy, "
        f"{data.steps} steps, trapezoid area with x in [0, 1] (Petsiuk et al., BMVC 2018, "
        "arXiv:1806.07421).",
        f"- Agreement: Pearson r ≥ {t.strong_agreement} is strong, ≤ {t.weak_agreement} weak, "
        "moderate in between; top-20% IoU compares the 20% most salient pixels of two maps. "
        "An empty (all-zero) map has r = 0 by definition.",
        f"- Spread: the map's share of pixels above 0.5 is ≥ {t.spread_factor}× and at least "
        f"{_num(100 * t.spread_min_excess, 0)} points more than every other non-empty map's.",
        f"- Off the shared region: top-20% IoU < {t.off_region_iou} with every other non-empty "
        f"map while those reach ≥ {t.shared_region_iou} with each other.",
        f"- Most faithful per image: lowest deletion / highest insertion AUC, named only when it "
        f"beats every other map by at least {t.auc_margin}.",
        "- Significance: the 95% percentile-bootstrap interval of the paired per-image difference "
        "(at least 10 images) excludes 0; the per-method means still carry Student-t intervals in "
        "this page.",
        f"- Sanity check (Adebayo et al., NeurIPS 2018, arXiv:1810.03292): blocks re-initialised "
        f"cumulatively from the output side; Spearman rank correlation between the trained "
        f"model's map and the randomised model's map per image; pass = mean |Spearman| after the "
        f"last step < {t.sanity_threshold}.",
    ]


def render_markdown(data: ReportData) -> str:
    """The written analysis as Markdown (see `image_findings` and the conclusion rules)."""
    lines = [f"# {data.title}", ""]
    lines += [f"- {k}: {v}" for k, v in _run_facts(data)]
    lines += ["", "## Definitions and thresholds", "", *_definitions(data), ""]
    header, rows = _display_summary(data)
    lines += ["## Summary", "", "Means with 95% Student-t intervals.", ""]
    for k, row in enumerate([header, *rows]):
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
        if k == 0:
            lines.append("|" + "---|" * len(header))
    lines += ["", "## Images", ""]
    for i, img in enumerate(data.images):
        lines.append(f"### `{_md(img.name)}`")
        lines.append("")
        lines.append(" ".join(image_findings(data, i)))
        lines.append("")
    lines += ["## Conclusion", "", *_conclusion(data), ""]
    lines += ["## Sanity check", ""]
    if data.sanity:
        lines.append(
            f"Cascading randomisation on the first {data.sanity_images} images, blocks "
            f"re-initialised from the output side down."
        )
        lines += [*(f"- Note: {n}" for n in data.sanity_notes), *_sanity_lines(data)]
    else:
        lines.append("Not run.")
    if data.notes:
        lines += ["", "## Notes", "", *(f"- {_md(n)}" for n in data.notes)]
    return "\n".join(lines) + "\n"


def write_markdown(path: str | Path, data: ReportData) -> None:
    """Write `render_markdown` to ``path`` atomically."""
    write_text(path, render_markdown(data))


# --------------------------------------------------------------------------------------------
# html

#: The page may load nothing but its own inline style and data: images.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.facts td{text-align:left}.plot{max-width:100%;height:auto}
.card{border:1px solid #ddd;border-radius:6px;padding:.8em;margin:1em 0}
.row{display:flex;flex-wrap:wrap;gap:.6em}.row figure{margin:0;text-align:center}
.row img{width:224px;height:224px;image-rendering:auto;display:block}
figcaption{font-size:.85em;color:#555}.wrong{color:#b00020;font-weight:600}
.ok{color:#0a7d32;font-weight:600}.findings{margin:.5em 0 0 1.2em;padding:0}
.pass{color:#0a7d32}.fail{color:#b00020}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _rgb_uri(rgb: np.ndarray, quality: int = 90) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(
        buffer, format="JPEG", quality=quality
    )
    return _data_uri(buffer.getvalue(), "image/jpeg")


def _file_uri(path: Path, *, as_jpeg: bool) -> str | None:
    """A data URI of an image file; ``as_jpeg`` re-encodes (JPEG q90) to keep the page small."""
    try:
        if as_jpeg:
            with Image.open(path) as im:
                return _rgb_uri(np.asarray(im.convert("RGB")))
        return _data_uri(path.read_bytes(), "image/png")
    except (OSError, ValueError):
        return None


def _img_tag(uri: str | None, alt: str, cls: str = "") -> str:
    if uri is None:
        return f"<p>({_e(alt)}: image not available)</p>"
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} src="{uri}" alt="{_e(alt)}">'


def render_html(data: ReportData) -> str:
    """One self-contained HTML page: run facts, summary table, plots, one card per image.

    Overlays are read from ``ImageEntry.overlays`` and inlined re-encoded as JPEG (quality 90)
    so pages with hundreds of images stay manageable; plots are inlined as PNG. No script,
    no external URL, all text escaped.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(data.title)}</h1>",
        '<table class="facts">',
        *(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in _run_facts(data)),
        "</table>",
        "<h2>Summary</h2>",
    ]
    header, rows = _display_summary(data)
    parts.append("<p>Means with 95% Student-t intervals.</p>")
    parts.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        verdict = re.search(r"\((pass|fail)\)$", row[-1])
        cls = f' class="{verdict.group(1)}"' if verdict else ""
        cells = [f"<td>{_e(c)}</td>" for c in row[:-1]] + [f"<td{cls}>{_e(row[-1])}</td>"]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    parts.append("<h2>Definitions and thresholds</h2><ul>")
    parts += [f"<li>{_e(d[2:])}</li>" for d in _definitions(data)]
    parts.append("</ul>")
    if data.plots:
        parts.append("<h2>Plots</h2>")
        for caption, path in data.plots.items():
            uri = _file_uri(Path(path), as_jpeg=False)
            parts.append(f"<figure>{_img_tag(uri, caption, 'plot')}")
            parts.append(f"<figcaption>{_e(caption)}</figcaption></figure>")
    parts.append("<h2>Conclusion</h2>")
    parts += _html_lines(_conclusion(data))
    parts.append("<h2>Sanity check</h2>")
    if data.sanity:
        parts.append(
            f"<p>Cascading randomisation on the first {data.sanity_images} images, blocks "
            "re-initialised from the output side down.</p>"
        )
        parts += _html_lines([f"- Note: {n}" for n in data.sanity_notes] + _sanity_lines(data))
        parts.append(_sanity_table(data))
    else:
        parts.append("<p>Not run.</p>")
    parts.append("<h2>Images</h2>")
    for i, img in enumerate(data.images):
        parts.append(_image_card(data, i, img))
    if data.notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{_e(n)}</li>" for n in data.notes]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_lines(lines: Sequence[str]) -> list[str]:
    """Conclusion-style lines (``- `` bullets, ``**bold**`` lead) to escaped HTML."""
    out: list[str] = []
    bullets: list[str] = []

    def flush() -> None:
        if bullets:
            out.append("<ul>" + "".join(f"<li>{b}</li>" for b in bullets) + "</ul>")
            bullets.clear()

    for line in lines:
        if not line:
            flush()
            continue
        text = _e(line[2:] if line.startswith("- ") else line)
        if text.startswith("**") and "**" in text[2:]:
            head, _, tail = text[2:].partition("**")
            text = f"<strong>{head}</strong>{tail}"
        if line.startswith("- "):
            bullets.append(text)
        else:
            flush()
            out.append(f"<p>{text}</p>")
    flush()
    return out


def _sanity_table(data: ReportData) -> str:
    head = ("method", "step", "randomised block", "mean Spearman", "min", "max", "mean |Spearman|")
    rows = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for m, steps in data.sanity.items():
        for k, s in enumerate(steps, 1):
            rows.append(
                f"<tr><td>{_e(_label(m))}</td><td>{k}</td><td>{_e(s.block)}</td>"
                f"<td>{_num(s.mean, 3)}</td><td>{_num(s.min, 3)}</td><td>{_num(s.max, 3)}</td>"
                f"<td>{_num(s.mean_abs, 3)}</td></tr>"
            )
    rows.append("</table>")
    return "\n".join(rows)


def _image_card(data: ReportData, i: int, img: ImageEntry) -> str:
    if img.correct is None:
        verdict = ""
    elif img.correct:
        verdict = ' <span class="ok">correct</span>'
    else:
        verdict = f' <span class="wrong">wrong (truth: {_e(img.truth_name)})</span>'
    figures = [
        f"<figure>{_img_tag(_rgb_uri(img.rgb) if img.rgb is not None else None, 'input')}"
        "<figcaption>input</figcaption></figure>"
    ]
    for m in data.methods:
        path = img.overlays.get(m)
        uri = _file_uri(Path(path), as_jpeg=True) if path is not None else None
        figures.append(
            f"<figure>{_img_tag(uri, f'{_label(m)} overlay')}"
            f"<figcaption>{_e(_label(m))}</figcaption></figure>"
        )
    table = ["<table><tr><th>method</th>"]
    table += [
        f"<th>{_e(spec.label + (f' ({spec.unit})' if spec.unit else ''))}</th>" for spec in METRICS
    ]
    table.append("<th>empty</th><th>pixels &gt; 0.5</th></tr>")
    for m in data.methods:
        v = data.values[m]
        cells = [_num(v[spec.key][i] * spec.scale, spec.digits) for spec in METRICS]
        if math.isfinite(v["increase"][i]):
            cells[1] = "yes" if v["increase"][i] > 0 else "no"
        empty = v["empty"][i]
        cells.append("n/a" if not math.isfinite(empty) else ("yes" if empty > 0 else "no"))
        cells.append(_num(100 * v["share_above_half"][i], 1) + "%")
        table.append(
            f"<tr><td>{_e(_label(m))}</td>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>"
        )
    table.append("</table>")
    findings = "".join(f"<li>{_e(s)}</li>" for s in image_findings(data, i))
    return (
        f'<div class="card"><h3>{_e(img.name)}</h3>'
        f"<p>file: {_e(img.file)}<br>prediction: {_e(img.top1_name)} "
        f"(index {img.top1_index}, p = {_num(img.top1_prob, 3)}){verdict}"
        + (
            f"<br>truth: {_e(img.truth_name)} (index {img.truth_index})"
            if img.truth_index is not None
            else ""
        )
        + (
            f"<br>explained class: {_e(img.target_name)} (index {img.target_index})"
            if img.target_index != img.top1_index
            else ""
        )
        + "</p>"
        f'<div class="row">{"".join(figures)}</div>'
        + "".join(table)
        + f'<ul class="findings">{findings}</ul></div>'
    )


def write_html(path: str | Path, data: ReportData) -> None:
    """Write `render_html` to ``path`` atomically."""
    write_text(path, render_html(data))
