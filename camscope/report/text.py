"""The written analysis: every sentence is a template chosen by, and filled from, a number.

Claims about the order of methods follow `camscope.metrics.rank_methods`: a tie is written as a
tie, a lead only when every paired difference is significant after the multiple-comparison
correction, and below the minimum n no interval is called meaningful and no order is claimed.
Across metrics (`robustness`), a method is called ahead on every metric only when it is
significantly best on each; where two metrics order two methods oppositely, the report says the
ranking depends on the metric. Sentences come back as `Finding`s and blocks of
`camscope.report.document`, never as markup.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Sequence

import numpy as np

from camscope.metrics import CONFIDENCE, CORRECTION, Interval, Ranking, SanityVerdict
from camscope.report.data import (
    METRICS,
    MetricSpec,
    Scalars,
    SettingCheck,
    Summary,
    Thresholds,
)
from camscope.report.document import Finding, Matrix, MatrixCell, Paragraph, Table
from camscope.visualize import method_label

__all__ = [
    "comparison_matrix",
    "definitions",
    "image_findings",
    "interval_text",
    "kind_blocks",
    "label",
    "num",
    "ranking_paragraph",
    "robustness",
    "sanity_lines",
    "settings_blocks",
    "statistics_statement",
    "summary_table",
]

_PCT = f"{100 * CONFIDENCE:g}%"


def num(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, "n/a" when missing or not finite."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.0"


def label(method: str) -> str:
    """Display name of a method (from the method's own label)."""
    return method_label(method)


def join(items: Sequence[str]) -> str:
    """Join items as English: "a", "a and b", "a, b and c"."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def interval_text(spec: MetricSpec, iv: Interval, min_n: int) -> str:
    """Format a mean with its interval: "42.1% [95% CI 38.0%, 46.3%]".

    Without a meaningful interval: the mean and why there is none.
    """
    if iv.n == 0:
        return "n/a"
    if not math.isfinite(iv.low):
        return f"{spec.fmt(iv.mean)} (n = {iv.n}: no interval)"
    text = f"{spec.fmt(iv.mean)} [{_PCT} CI {spec.fmt(iv.low)}, {spec.fmt(iv.high)}]"
    if not iv.meaningful:
        text += f" (n = {iv.n} < {min_n}: interval not meaningful)"
    return text


def statistics_statement(summary: Summary) -> list[str]:
    """How intervals, significance and ties are computed (said once in every report)."""
    shown = summary.measured or list(METRICS)
    boot = [m.label for m in shown if m.interval == "bootstrap"] + ["Pearson r", "top-20% IoU"]
    wilson = [m.label for m in shown if m.interval == "wilson"]
    lines = [
        f"Means of {join(boot)}: {_PCT} percentile bootstrap intervals "
        f"({summary.resamples:,} resamples, seeded), which stay inside the metric's range.",
    ]
    if wilson:
        lines.append(
            f"{join(wilson)} (a yes/no outcome per image): {_PCT} Wilson score interval of the "
            "proportion, always inside 0–100%."
        )
    lines += [
        f"Differences between two methods: mean per-image difference on the images both "
        f"explain, with {_PCT} {CORRECTION} over all k(k−1)/2 pairs of a metric (images "
        "resampled together), so that the intervals of a metric hold together; significant when "
        "the interval excludes 0. The uncorrected percentile intervals are kept in "
        "comparisons.csv, not used for any claim.",
        "Ties: means that agree to the shown precision (within half a unit of the last digit "
        "shown: 0.05 points for %, 0.0005 for AUCs) are reported as tied, and no method is called "
        "best then.",
        f"With fewer than {summary.min_n} images an interval is shown but not meaningful and no "
        "difference is called significant.",
        *_kind_statements(summary),
    ]
    if len(summary.ranked) > 1:
        lines.append(
            "Ranking robustness: Kendall's τ-b between two metrics' orders of the methods (ties "
            f"as above), with a {_PCT} percentile bootstrap interval over images."
        )
    if summary.settings:
        lines.append(
            "Settings of a metric: the same τ-b between the order under the run's setting and "
            "under a setting derived from the stored curves; a derived setting's paired "
            "differences are corrected as any metric's."
        )
    return lines


def _kind_statements(summary: Summary) -> list[str]:
    """How metrics measured on some images only, and descriptive ones, enter the statistics."""
    lines = []
    if summary.of_kind("localisation"):
        lines.append(
            "Localisation metrics: means over the images with boxes; a difference between two "
            "methods uses the images both have a value for (its n is given), and their Kendall "
            "τ-b with another metric compares each method's two means over the same images."
        )
    descriptive = [m.label for m in summary.measured if not m.ranked]
    if descriptive:
        lines.append(
            f"{join(descriptive)} describe the maps: summarised with intervals and compared in "
            "comparisons.csv, but not ranked and not part of the ranking robustness."
        )
    return lines


def _verdict(spec: MetricSpec, rk: Ranking, summary: Summary) -> Finding:
    if not rk.meaningful:
        return Finding("few", f"Fewer than {summary.min_n} images for some method: no order is "
                       "claimed and no method is significantly best.")  # fmt: skip
    if len(rk.tied_best) > 1:
        return Finding("tie", f"{join([label(m) for m in rk.tied_best])} tie on the best mean "
                       f"({spec.fmt(rk.means[rk.tied_best[0]])}): no method is significantly "
                       "best.")  # fmt: skip
    if rk.best is not None:
        return Finding("best", f"{label(rk.best)} is best, significantly ahead of every other "
                       "method (corrected for the number of comparisons).")  # fmt: skip
    close = [o for o in rk.order[1:] if not rk.pairs[(rk.order[0], o)].significant]
    return Finding("no_best", f"No method is significantly best: the lead of "
                   f"{label(rk.order[0])} over {join([label(m) for m in close])} is within the "
                   "noise.")  # fmt: skip


def ranking_paragraph(spec: MetricSpec, rk: Ranking, summary: Summary) -> Paragraph:
    """The ranking of one metric (means with intervals) and what the data support about it."""
    ivs = {m: summary.intervals[m][spec.key] for m in rk.order}
    text = f"({spec.direction}): " + "; ".join(
        f"{label(m)} {interval_text(spec, ivs[m], summary.min_n)}" for m in rk.order
    )
    findings = [_verdict(spec, rk, summary)] if len(rk.order) > 1 else []
    return Paragraph(text + ".", lead=spec.label, findings=findings)


def _cell(spec: MetricSpec, a: str, b: str, rk: Ranking) -> MatrixCell:
    if a == b:
        return MatrixCell("—", "self")
    d = rk.comparisons.difference(a, b) if rk.comparisons else None
    if d is None or not math.isfinite(d.mean):
        return MatrixCell("n/a", "none")
    values = [v * spec.scale for v in (d.mean, d.low, d.high)]
    digits = spec.digits
    while digits < spec.digits + 4 and any(
        v != 0 and float(num(v, digits)) == 0 for v in values if math.isfinite(v)
    ):
        digits += 1  # a small difference is shown, never "0.000" beside a colour
    text = f"{num(values[0], digits)} [{num(values[1], digits)}, {num(values[2], digits)}]"
    if not d.significant:
        tone = "ns"
    else:
        tone = "better" if (d.mean > 0) == spec.higher_is_better else "worse"
    word = {"better": "significantly better", "worse": "significantly worse",
            "ns": "not significantly different"}[tone]  # fmt: skip
    title = f"{label(a)} − {label(b)}: {word} (n = {d.n}, adjusted p = {num(d.p, 4)})"
    return MatrixCell(text, tone, title)


def comparison_matrix(spec: MetricSpec, rk: Ranking) -> Matrix:
    """One metric's paired differences as a grid: cell (row a, column b) = a − b."""
    rows = [[_cell(spec, a, b, rk) for b in rk.order] for a in rk.order]
    unit = f" ({spec.unit})" if spec.unit else ""
    ns = sorted({d.n for d in rk.pairs.values()}) or [0]
    images = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return Matrix(
        caption=f"{spec.label}{unit}: row − column, mean difference [{_PCT} simultaneous "
        f"interval], n = {images} images per pair",
        labels=[label(m) for m in rk.order],
        rows=rows,
        legend=f"better / worse: the row's method is significantly better / worse than the "
        f"column's ({spec.direction}; {CORRECTION}); n.s.: the interval contains 0.",
    )


def _tau_table(summary: Summary, ranked: list[MetricSpec]) -> Table:
    header = ["Kendall τ-b [95% CI]", *(m.label for m in ranked)]
    rows = []
    for a in ranked:
        row = [a.label]
        for b in ranked:
            iv = summary.metric_agreement.get((a.key, b.key))
            iv = iv or summary.metric_agreement.get((b.key, a.key))
            if a.key == b.key:
                row.append("—")
            elif iv is None or not math.isfinite(iv.mean):
                row.append("n/a (all tied)" if iv is not None else "n/a")
            else:
                row.append(f"{num(iv.mean, 2)} [{num(iv.low, 2)}, {num(iv.high, 2)}]")
        rows.append(row)
    return Table(header, rows, css="tau")


def _overall(summary: Summary, ranked: list[MetricSpec]) -> Finding:
    bests = {spec.key: summary.rankings[spec.key].best for spec in ranked}
    winners = set(bests.values())
    if len(winners) == 1 and None not in winners:
        (best,) = winners
        return Finding("robust", f"{label(best)} is significantly ahead of every other method on "
                       f"every metric ({join([m.label for m in ranked])}).")  # fmt: skip
    parts = [f"{m.label}: {label(bests[m.key]) if bests[m.key] else 'none'}" for m in ranked]
    return Finding("no_winner", "No method is significantly ahead on every metric; the "
                   f"significantly best method per metric is {'; '.join(parts)}.")  # fmt: skip


def _ahead(x: str, y: str, orders: list[tuple[str, Ranking]], higher: dict[str, bool]) -> dict:
    """Method -> the names of the orders (metrics or settings) that put it significantly ahead."""
    ahead: dict[str, list[str]] = {x: [], y: []}
    for name, rk in orders:
        c = rk.comparisons
        if c is None or x not in c.methods or y not in c.methods:
            continue
        d = c.difference(x, y)
        if d.significant:
            ahead[x if (d.mean > 0) == higher[name] else y].append(name)
    return ahead


#: Two methods two orders rank significantly oppositely: (x, y, orders with x ahead, with y).
Reversal = tuple[str, str, tuple[str, ...], tuple[str, ...]]


def _merged(reversals: list[Reversal], methods: Sequence[str]) -> list[tuple]:
    """Reversals merged around the method in most of them, losing nothing.

    Repeatedly, the method in the most reversals left (ties: the earlier method) is the hub:
    its reversals whose orders agree on each side become one entry ``(hub, partners, orders
    with the hub ahead, orders with each partner ahead)``; a reversal merged with no other
    stays as it was, ``(x, (y,), ...)``.
    """
    left, out = list(reversals), []
    while left:
        count = collections.Counter(m for r in left for m in r[:2])
        hub = min(count, key=lambda m: (-count[m], methods.index(m)))
        groups: dict[tuple, list[Reversal]] = {}
        for r in (r for r in left if hub in r[:2]):
            key = (r[2], r[3]) if r[0] == hub else (r[3], r[2])
            groups.setdefault(key, []).append(r)
        for (on_hub, on_other), rs in groups.items():
            partners = tuple(r[1] if r[0] == hub else r[0] for r in rs)
            x, y, ox, oy = rs[0]
            out.append((x, (y,), ox, oy) if len(rs) == 1 else (hub, partners, on_hub, on_other))
        left = [r for r in left if hub not in r[:2]]
    return out


def _reversal_findings(kind: str, reversals: list[Reversal], methods: Sequence[str],
                       template: str) -> list[Finding]:  # fmt: skip
    """One `Finding` per `_merged` reversal: ``template`` filled from it.

    Fields: ``x``, ``y`` (the names in "the ranking of x and y"), ``sx``, ``sy`` (the same as
    subjects) and the orders ``ox``, ``oy`` that put each ahead.
    """
    out = []
    for x, ys, ox, oy in _merged(reversals, methods):
        many = [label(m) for m in ys]
        names = (label(x), many[0]) if len(many) == 1 else (label(x), f"each of {join(many)}")
        subjects = names if len(many) == 1 else (label(x), "each of them")
        text = template.format(x=names[0], y=names[1], sx=subjects[0], sy=subjects[1],
                               ox=join(ox), oy=join(oy))  # fmt: skip
        out.append(Finding(kind, text))
    return out


def _depends(s: Scalars, summary: Summary, ranked: list[MetricSpec]) -> list[Finding]:
    """Sentences naming every two methods that two metrics order significantly oppositely.

    Two metrics of one family (settings of one metric, e.g. deletion with the mean-colour and
    with the blurred baseline) that do so get sentences of their own, saying the setting
    decides; the sentence across metrics is said when metrics of two families do. Reversals
    that share a method and the orders on each side share a sentence (`_merged`).
    """
    within: list[Reversal] = []
    across: list[Reversal] = []
    orders = [(spec.label, summary.rankings[spec.key]) for spec in ranked]
    higher = {spec.label: spec.higher_is_better for spec in ranked}
    group = {spec.label: spec.group for spec in ranked}
    for x, y in itertools.combinations(s.methods, 2):
        ahead = _ahead(x, y, orders, higher)
        for family in dict.fromkeys(group[name] for name in ahead[x]):
            on_x = tuple(n for n in ahead[x] if group[n] == family)
            on_y = tuple(n for n in ahead[y] if group[n] == family)
            if on_y:
                within.append((x, y, on_x, on_y))
        if ahead[x] and ahead[y] and len({group[n] for n in ahead[x] + ahead[y]}) > 1:
            across.append((x, y, tuple(ahead[x]), tuple(ahead[y])))
    head = "On these images the ranking of {x} and {y} depends on the"
    return [
        *_reversal_findings("depends_setting", within, s.methods,
                            head + " setting of one metric: {sx} is ahead on {ox}, {sy} on {oy}."),
        *_reversal_findings("depends", across, s.methods,
                            head + " metric: {sx} is ahead on {ox}, {sy} on {oy}."),
    ]  # fmt: skip


def _tau_sentence(taus: list[Interval], what: str, min_n: int) -> str:
    means = np.array([iv.mean for iv in taus])
    above = sum(iv.low > 0 for iv in taus if math.isfinite(iv.low))
    below = sum(iv.high < 0 for iv in taus if math.isfinite(iv.high))
    pairs = f"{len(taus)} pair{'s' if len(taus) != 1 else ''}"
    text = (f"Kendall τ-b between the orders of the methods by two {what}: from "
            f"{num(means.min(), 2)} to {num(means.max(), 2)} (median "
            f"{num(float(np.median(means)), 2)}) over {pairs}; {above} with an interval "
            f"above 0 (the orders agree beyond chance), {below} below 0 (reversed), "
            f"{len(taus) - above - below} undecided.")  # fmt: skip
    if not all(iv.meaningful for iv in taus):
        text += f" With fewer than {min_n} images these intervals are not meaningful."
    return text


def _tau_summary(summary: Summary, ranked: list[MetricSpec]) -> list[Finding]:
    """One sentence over pairs of metrics, one over pairs of settings of the same metric."""
    group = {m.key: m.group for m in ranked}
    taus = {k: iv for k, iv in summary.metric_agreement.items() if math.isfinite(iv.mean)}
    across = [iv for (a, b), iv in taus.items() if group.get(a) != group.get(b)]
    within = [iv for (a, b), iv in taus.items() if group.get(a) == group.get(b)]
    out = []
    if across:
        out.append(Finding("tau", _tau_sentence(across, "metrics", summary.min_n)))
    if within:
        out.append(Finding("tau_settings", _tau_sentence(within, "settings of one metric",
                                                         summary.min_n)))  # fmt: skip
    return out


def robustness(s: Scalars, summary: Summary) -> list[Paragraph | Table]:
    """How much the ranking of the methods depends on the metric and on the metric's settings.

    Across metrics (every ranked metric): one verdict over all metrics (a method called ahead
    everywhere only when it is significantly best on each), a sentence for every two methods
    that two metrics order significantly oppositely, and the Kendall τ-b table; variants of a
    metric declared in `METRICS` (other settings) count as metrics here. Across settings
    (`settings_blocks`): the variants derived from the stored curves.
    """
    ranked = summary.ranked
    if len(ranked) < 2 or len(s.methods) < 2:
        return [Paragraph("Needs two or more methods ranked by two or more metrics."),
                *settings_blocks(s, summary)]  # fmt: skip
    findings = [_overall(summary, ranked), *_depends(s, summary, ranked)]
    if len(findings) == 1:
        findings.append(Finding("consistent", "No two metrics order any two methods "
                                "significantly oppositely."))  # fmt: skip
    findings += _tau_summary(summary, ranked)
    text = f"Across {len(ranked)} metrics and {len(s.methods)} methods:"
    blocks: list[Paragraph | Table] = [Paragraph(text, findings=findings)]
    return [*blocks, _tau_table(summary, ranked), *settings_blocks(s, summary)]


_SETTINGS_TEXT = (
    "Across settings of a metric, derived from the run's stored curves (no new forward pass: "
    "a coarser step count takes every 2nd or 4th point of the deletion and insertion curves, "
    "which is exactly the curve it measures; ROAD takes the mean over part of its removed "
    "fractions), {checks} other setting{s} of {metrics} metric{ms}:"
)


def _setting_depends(s: Scalars, checks: list[SettingCheck], summary: Summary) -> list[Finding]:
    """Two methods that two settings of one metric order significantly oppositely."""
    out = []
    for key in dict.fromkeys(c.base.key for c in checks):
        mine = [c for c in checks if c.base.key == key]
        spec, varies = mine[0].base, mine[0].setting.spec.derive.varies  # type: ignore[union-attr]
        orders = [(mine[0].setting.run, summary.rankings[key])]
        orders += [(c.setting.other, c.ranking) for c in mine]
        higher = dict.fromkeys((name for name, _ in orders), spec.higher_is_better)
        reversals = []
        for x, y in itertools.combinations(s.methods, 2):
            ahead = _ahead(x, y, orders, higher)
            if ahead[x] and ahead[y]:
                reversals.append((x, y, tuple(ahead[x]), tuple(ahead[y])))
        template = (f"On these images the ranking of {{x}} and {{y}} depends on the {varies} of "
                    f"{spec.label}: {{sx}} is ahead with {{ox}}, {{sy}} with {{oy}}.")  # fmt: skip
        out += _reversal_findings("depends_setting", reversals, s.methods, template)
    return out


def _tau_cell(iv: Interval) -> str:
    if not math.isfinite(iv.mean):
        return "n/a (all tied)"
    return f"{num(iv.mean, 2)} [{num(iv.low, 2)}, {num(iv.high, 2)}]"


def settings_blocks(s: Scalars, summary: Summary) -> list[Paragraph | Table]:
    """Per ranked metric, its ranking under each derived setting against the run's setting.

    A sentence for every two methods that two settings of one metric order significantly
    oppositely (else one that none do), one over the τ-b values, and a table: metric, the run's
    setting, the other setting, Kendall τ-b with its interval, images. Nothing when no setting
    was derived (a run without --metrics, or whose curves cannot give another setting exactly).
    """
    checks = [c for c in summary.settings if c.base.key in summary.rankings]
    if not checks or len(s.methods) < 2:
        return []
    findings = _setting_depends(s, checks, summary)
    if not findings:
        findings.append(Finding("settings_consistent", "No two settings of a metric order any "
                                "two methods significantly oppositely."))  # fmt: skip
    taus = [c.tau for c in checks if math.isfinite(c.tau.mean)]
    if taus:
        findings.append(
            Finding(
                "tau_derived",
                _tau_sentence(
                    taus, "settings of one metric (the run's and a derived one)", summary.min_n
                ),
            )
        )
    metrics = len({c.base.key for c in checks})
    text = _SETTINGS_TEXT.format(checks=len(checks), s="s" if len(checks) != 1 else "",
                                 metrics=metrics, ms="s" if metrics != 1 else "")  # fmt: skip
    header = ["Metric", "Run's setting", "Other setting", f"Kendall τ-b [{_PCT} CI]", "n"]
    rows = [[c.base.label, c.setting.run, c.setting.other, _tau_cell(c.tau), str(c.tau.n)]
            for c in checks]  # fmt: skip
    return [Paragraph(text, findings=findings), Table(header, rows, css="tau")]


def sanity_lines(s: Scalars, summary: Summary, t: Thresholds) -> list[str]:
    """One line per method: verdict, final mean |Spearman| and the empty randomised maps."""
    lines = []
    for m in s.methods:
        v = summary.sanity.get(m)
        if v is None:
            lines.append(f"{label(m)}: not run.")
            continue
        step, block = summary.sanity_steps[m]
        text = (
            f"{label(m)}: after randomising {step} blocks down to {block}, mean |Spearman| = "
            f"{num(v.mean_abs, 2)}{_rho_interval(v)} over the {v.n - v.n_empty} non-empty "
            f"randomised maps of {v.n} images (threshold {t.sanity_threshold})"
        )
        if v.outcome == "empty":
            text += (
                f"; {v.n_empty} of {v.n} randomised maps empty — counted apart, not as "
                "Spearman 0: fail (a map that vanishes is no evidence the method depends on "
                "the weights)."
            )
        elif v.outcome == "undecided":
            text += (
                ": undecided — the interval contains the threshold; more images "
                "(--sanity-images) would decide."
            )
        elif v.passed:
            text += ": pass — its maps change when the weights do."
        else:
            text += ": fail — its maps stay rank-correlated with the trained model's maps."
        lines.append(text)
    return lines


def _rho_interval(v: SanityVerdict) -> str:
    """A verdict's mean |Spearman| interval as ' [95% CI low, high]', or '' without one."""
    if not (math.isfinite(v.low) and math.isfinite(v.high)):
        return ""
    return f" [{_PCT} CI {num(v.low, 2)}, {num(v.high, 2)}]"


def summary_table(s: Scalars, summary: Summary) -> Table:
    """The summary for reading: one row per method, "mean [CI]" per faithfulness metric measured.

    Localisation and complexity have tables of their own (`kind_blocks`): other images, other
    meaning.
    """
    shown = summary.of_kind("faithfulness")
    header = ["Method", "n", *(f"{m.heading}, {m.direction}" for m in shown)]
    header += ["Empty maps", "Sanity check"]
    rows = []
    for m in s.methods:
        n = summary.n[m]
        row = [label(m), str(n)]
        for spec in shown:
            row.append(interval_text(spec, summary.intervals[m][spec.key], summary.min_n))
        share = 100 * summary.empty[m] / n if n else math.nan
        row.append(f"{summary.empty[m]} ({num(share, 1)}%)")
        v = summary.sanity.get(m)
        row.append("not run" if v is None else f"{v.describe()} (|ρ| {num(v.mean_abs, 2)})")
        rows.append(row)
    return Table(header, rows)


_KIND_TEXT = {
    "localisation": "Localisation against the ground-truth boxes (--boxes): {covered} of {n} "
    "images had boxes; the others are left out of these metrics and of their comparisons "
    "(n: the method's images with boxes).",
    "complexity": "Complexity of the maps, in every run: descriptive, never ranked (a sparser "
    "or lower-entropy map is not thereby a more faithful one).",
}


def kind_blocks(s: Scalars, summary: Summary, kind: str) -> list[Paragraph | Table]:
    """The summary of one kind of metric ("localisation", "complexity"): a sentence and a table.

    Nothing when no metric of the kind was measured (a run without --boxes has no empty table).
    """
    shown = summary.of_kind(kind)
    if not shown:
        return []
    text = _KIND_TEXT.get(kind, kind).format(covered=summary.coverage.get(kind, 0), n=s.n)
    header = ["Method", "n", *(f"{m.heading}, {m.direction}" for m in shown)]
    rows = []
    for m in s.methods:
        has = np.zeros(s.n, dtype=bool)
        for spec in shown:
            has |= np.isfinite(s.values[m][spec.key])
        cells = [interval_text(spec, summary.intervals[m][spec.key], summary.min_n)
                 for spec in shown]  # fmt: skip
        rows.append([label(m), str(int(has.sum())), *cells])
    return [Paragraph(text), Table(header, rows)]


def definitions(
    steps: int | None, t: Thresholds, measured: Sequence[MetricSpec] | None = None
) -> list[str]:
    """Metric definitions (declared with each metric) and every threshold the analysis uses.

    ``measured``: define only these metrics (a report defines what it shows); None: all.
    """
    keys = {m.key for m in (METRICS if measured is None else measured)}
    metrics = [m.definition.replace("{steps}", str(steps or "?")) for m in METRICS
               if m.definition and m.key in keys]  # fmt: skip
    return [
        *metrics,
        f"Agreement: Pearson r ≥ {t.strong_agreement} is strong, ≤ {t.weak_agreement} weak; "
        "top-20% IoU compares the 20% most salient pixels of two maps.",
        f"Spread: a map's share of pixels above 0.5 is ≥ {t.spread_factor}× and at least "
        f"{num(100 * t.spread_min_excess, 0)} points more than every other non-empty map's.",
        f"Off the shared region: top-20% IoU < {t.off_region_iou} with every other non-empty "
        f"map while those reach ≥ {t.shared_region_iou} with each other.",
        f"Most faithful per image: named only when its AUC beats every other map's by at least "
        f"{t.auc_margin}.",
        "Sanity check (Adebayo et al., NeurIPS 2018, arXiv:1810.03292): blocks re-initialised "
        "cumulatively from the output side; Spearman rank correlation between the trained and "
        f"the randomised model's map; pass = mean |Spearman| after the last step < "
        f"{t.sanity_threshold} and no randomised map empty; undecided = the {_PCT} bootstrap "
        "interval of that mean over images contains the threshold.",
    ]


def _agreement_word(r: float, t: Thresholds) -> str:
    if r >= t.strong_agreement:
        return "agree strongly"
    return "agree weakly" if r <= t.weak_agreement else "agree moderately"


def _pair(s: Scalars, a: str, b: str, key: str, i: int) -> float:
    v = s.values[a].get(f"{key}__{b}")
    if v is None:
        v = s.values[b].get(f"{key}__{a}")
    return math.nan if v is None else float(v[i])


def _prediction(img: dict) -> list[Finding]:
    text = f"The model predicts {img['top1_name']} (p = {num(img['top1_prob'], 3)})"
    truth = img.get("truth_index")
    if truth is None:
        text += "; the ground truth is unknown."
    elif truth == img["top1_index"]:
        text += ", which is correct."
    else:
        text += f", which is wrong (truth: class index {truth})."
    out = [Finding("prediction", text)]
    if img["target_index"] != img["top1_index"]:
        out.append(Finding("target", f"The maps explain class {img['target_name']}, not the "
                           "top-1 prediction."))  # fmt: skip
    return out


def _shape_findings(s: Scalars, i: int, live: list[str], t: Thresholds) -> list[Finding]:
    """Spread maps and maps off the region the others share (see `Thresholds`)."""
    out = []
    share = {m: float(s.values[m]["share_above_half"][i]) for m in live}
    for m in live:
        others = [share[o] for o in live if o != m]
        top = max(others, default=math.nan)
        if others and share[m] >= t.spread_factor * top and share[m] - top >= t.spread_min_excess:
            out.append(Finding("spread",
                f"The map of {label(m)} is spread: {num(100 * share[m], 0)}% of its pixels are "
                f"above 0.5, against at most {num(100 * top, 0)}% for the others."
            ))  # fmt: skip
    for m in live:
        others = [o for o in live if o != m]
        if len(others) < 2:
            continue
        own = [_pair(s, m, o, "top20_iou", i) for o in others]
        shared = [_pair(s, a, b, "top20_iou", i) for a, b in itertools.combinations(others, 2)]
        if max(own) < t.off_region_iou and min(shared) >= t.shared_region_iou:
            out.append(Finding("off_region",
                f"The top-20% region of {label(m)} is off the region the others share: its IoU "
                f"with them is at most {num(max(own), 2)}, while they reach at least "
                f"{num(min(shared), 2)} with each other."
            ))  # fmt: skip
    return out


def _faithful_findings(s: Scalars, i: int, live: list[str], t: Thresholds) -> list[Finding]:
    out = []
    for key, word, pick in (
        ("deletion_auc", "deletion (lowest AUC)", np.argmin),
        ("insertion_auc", "insertion (highest AUC)", np.argmax),
    ):
        vals = np.array([s.values[m][key][i] for m in live])
        if len(live) < 2 or not np.isfinite(vals).all():
            continue
        best = int(pick(vals))
        margin = np.abs(np.delete(vals, best) - vals[best]).min()
        if margin >= t.auc_margin:
            text = f"Most faithful by {word}: {label(live[best])} ({num(vals[best], 3)})."
        else:
            text = f"By {word} no map is clearly most faithful (within {t.auc_margin})."
        out.append(Finding("faithful", text))
    return out


def image_findings(s: Scalars, i: int, t: Thresholds) -> list[Finding]:
    """Sentences about image ``i``.

    Prediction, empty maps, agreement, spread and off-region maps, most faithful map. Empty
    maps are left out of the comparisons and said to be.
    """
    out = _prediction(s.images.slice(i, 1).to_pylist()[0])
    present = [m for m in s.methods if s.rows[m][i] >= 0]
    empty = [m for m in present if s.values[m]["empty"][i] > 0]
    if empty:
        out.append(Finding("empty", "Empty map (no spatial variation), left out of the "
                           f"comparisons: {join([label(m) for m in empty])}."))  # fmt: skip
    live = [m for m in present if m not in empty]
    for a, b in itertools.combinations(live, 2):
        r, iou = _pair(s, a, b, "pearson", i), _pair(s, a, b, "top20_iou", i)
        if math.isfinite(r):
            out.append(Finding("agreement",
                f"{label(a)} and {label(b)} {_agreement_word(r, t)} (Pearson r = {num(r, 2)}, "
                f"top-20% IoU = {num(iou, 2)})."
            ))  # fmt: skip
    return out + _shape_findings(s, i, live, t) + _faithful_findings(s, i, live, t)
