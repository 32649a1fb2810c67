"""The written analysis: every sentence is a template chosen by, and filled from, a number.

Claims about the order of methods follow `camscope.metrics.rank_methods`: a tie is written as a
tie, a lead only when every paired difference is significant, and below the minimum n no
interval is called meaningful and no order is claimed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from camscope.metrics import CONFIDENCE, CORRECTION, Interval, Ranking
from camscope.report.data import METRICS, MetricSpec, Scalars, Summary, Thresholds
from camscope.visualize import method_label

__all__ = [
    "definitions",
    "image_findings",
    "interval_text",
    "label",
    "num",
    "ranking_lines",
    "sanity_lines",
    "statistics_statement",
    "summary_rows",
]

_PCT = f"{100 * CONFIDENCE:g}%"


def num(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, "n/a" when missing or not finite."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


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
    return [
        f"Means of Average Drop, Deletion AUC, Insertion AUC, Pearson r and top-20% IoU: {_PCT} "
        f"percentile bootstrap intervals ({summary.resamples:,} resamples, seeded), which stay "
        "inside the metric's range.",
        f"Increase in Confidence (a yes/no outcome per image): {_PCT} Wilson score interval of "
        "the proportion, always inside 0–100%.",
        f"Differences between two methods: mean per-image difference on the images both "
        f"explain, with {_PCT} {CORRECTION} over all k(k−1)/2 pairs of a metric (images "
        "resampled together), so that the intervals of a metric hold together; significant when "
        "the interval excludes 0. The uncorrected percentile intervals are kept in "
        "comparisons.csv, not used for any claim.",
        "Ties: means that agree to the shown precision (within 0.05 points for %, 0.0005 for "
        "AUCs) are reported as tied, and no method is called best then.",
        f"With fewer than {summary.min_n} images an interval is shown but not meaningful and no "
        "difference is called significant.",
    ]


def _pair_line(spec: MetricSpec, a: str, b: str, d) -> str:
    diff = (
        f"{label(a)} − {label(b)} = {num(d.mean * spec.scale, spec.digits)}{spec.unit} "
        f"[{num(d.low * spec.scale, spec.digits)}, {num(d.high * spec.scale, spec.digits)}], "
        f"n = {d.n}"
    )
    if not math.isfinite(d.low):
        return f"- {diff}: no interval, order not established."
    if d.significant:
        return f"- {diff}: significant."
    if d.low > 0 or d.high < 0:
        return f"- {diff}: too few images to call it significant."
    return f"- {diff}: not significant (the interval contains 0)."


def ranking_lines(spec: MetricSpec, rk: Ranking, summary: Summary) -> list[str]:
    """The ranking of one metric with what the data support about the order."""
    ivs = {m: summary.intervals[m][spec.key] for m in rk.order}
    head = f"**{spec.label}** ({spec.direction}): " + "; ".join(
        f"{label(m)} {interval_text(spec, ivs[m], summary.min_n)}" for m in rk.order
    )
    lines = [head + "."]
    if len(rk.order) < 2:
        return lines
    lines += [_pair_line(spec, a, b, d) for (a, b), d in rk.pairs.items()]
    if not rk.meaningful:
        lines.append(
            f"- Fewer than {summary.min_n} images for some method: no order is claimed and no "
            "method is significantly best."
        )
    elif len(rk.tied_best) > 1:
        lines.append(
            f"- {join([label(m) for m in rk.tied_best])} tie on the best mean "
            f"({spec.fmt(rk.means[rk.tied_best[0]])}): no method is significantly best."
        )
    elif rk.best is not None:
        lines.append(f"- {label(rk.best)} is best, significantly ahead of every other method.")
    else:
        close = [o for o in rk.order[1:] if not rk.pairs[(rk.order[0], o)].significant]
        lines.append(
            f"- No method is significantly best: the lead of {label(rk.order[0])} over "
            f"{join([label(m) for m in close])} is within the noise."
        )
    return lines


def sanity_lines(s: Scalars, summary: Summary, t: Thresholds) -> list[str]:
    """One line per method: verdict, final mean |Spearman| and the empty randomised maps."""
    lines = []
    for m in s.methods:
        v = summary.sanity.get(m)
        if v is None:
            lines.append(f"- {label(m)}: not run.")
            continue
        step, block = summary.sanity_steps[m]
        text = (
            f"- {label(m)}: after randomising {step} blocks down to {block}, mean |Spearman| = "
            f"{num(v.mean_abs, 2)} over the {v.n - v.n_empty} non-empty randomised maps of {v.n} "
            f"images (threshold {t.sanity_threshold})"
        )
        if v.outcome == "empty":
            text += (
                f"; {v.n_empty} of {v.n} randomised maps empty — counted apart, not as "
                "Spearman 0: fail (a map that vanishes is no evidence the method depends on "
                "the weights)."
            )
        elif v.passed:
            text += ": pass — its maps change when the weights do."
        else:
            text += ": fail — its maps stay rank-correlated with the trained model's maps."
        lines.append(text)
    return lines


def summary_rows(s: Scalars, summary: Summary) -> tuple[list[str], list[list[str]]]:
    """The summary for reading: one row per method, "mean [CI]" cells."""
    header = ["Method", "n"]
    header += [f"{m.label}{f' ({m.unit})' if m.unit else ''}, {m.direction}" for m in METRICS]
    header += ["Empty maps", "Sanity check"]
    rows = []
    for m in s.methods:
        n = summary.n[m]
        row = [label(m), str(n)]
        for spec in METRICS:
            row.append(interval_text(spec, summary.intervals[m][spec.key], summary.min_n))
        share = 100 * summary.empty[m] / n if n else math.nan
        row.append(f"{summary.empty[m]} ({num(share, 1)}%)")
        v = summary.sanity.get(m)
        row.append("not run" if v is None else f"{v.describe()} (|ρ| {num(v.mean_abs, 2)})")
        rows.append(row)
    return header, rows


def definitions(steps: int | None, t: Thresholds) -> list[str]:
    """Metric definitions and thresholds (each number the analysis uses)."""
    return [
        "Average Drop % = 100 × mean of max(0, Y − O) / Y and Increase in Confidence % = 100 × "
        "share of images with O > Y, where Y is the target-class probability of the image and O "
        "that of the image multiplied by the map (Chattopadhyay et al., WACV 2018, "
        "arXiv:1710.11063).",
        "Deletion / Insertion AUC: probability while the most salient pixels are replaced by "
        "the dataset mean / restored into a blurred copy, "
        f"{steps if steps else '?'} steps, trapezoid area on [0, 1] (Petsiuk et al., BMVC 2018, "
        "arXiv:1806.07421).",
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
        f"{t.sanity_threshold} and no randomised map empty.",
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


def _prediction(img: dict) -> list[str]:
    out = [f"The model predicts {img['top1_name']} (p = {num(img['top1_prob'], 3)})"]
    truth = img.get("truth_index")
    if truth is None:
        out[0] += "; the ground truth is unknown."
    elif truth == img["top1_index"]:
        out[0] += ", which is correct."
    else:
        out[0] += f", which is wrong (truth: class index {truth})."
    if img["target_index"] != img["top1_index"]:
        out.append(f"The maps explain class {img['target_name']}, not the top-1 prediction.")
    return out


def _shape_findings(s: Scalars, i: int, live: list[str], t: Thresholds) -> list[str]:
    """Spread maps and maps off the region the others share (see `Thresholds`)."""
    out = []
    share = {m: float(s.values[m]["share_above_half"][i]) for m in live}
    for m in live:
        others = [share[o] for o in live if o != m]
        top = max(others, default=math.nan)
        if others and share[m] >= t.spread_factor * top and share[m] - top >= t.spread_min_excess:
            out.append(
                f"The map of {label(m)} is spread: {num(100 * share[m], 0)}% of its pixels are "
                f"above 0.5, against at most {num(100 * top, 0)}% for the others."
            )
    for m in live:
        others = [o for o in live if o != m]
        if len(others) < 2:
            continue
        own = [_pair(s, m, o, "top20_iou", i) for o in others]
        shared = [_pair(s, a, b, "top20_iou", i) for a, b in itertools.combinations(others, 2)]
        if max(own) < t.off_region_iou and min(shared) >= t.shared_region_iou:
            out.append(
                f"The top-20% region of {label(m)} is off the region the others share: its IoU "
                f"with them is at most {num(max(own), 2)}, while they reach at least "
                f"{num(min(shared), 2)} with each other."
            )
    return out


def _faithful_findings(s: Scalars, i: int, live: list[str], t: Thresholds) -> list[str]:
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
            out.append(f"Most faithful by {word}: {label(live[best])} ({num(vals[best], 3)}).")
        else:
            out.append(f"By {word} no map is clearly most faithful (within {t.auc_margin}).")
    return out


def image_findings(s: Scalars, i: int, t: Thresholds) -> list[str]:
    """Sentences about image ``i``.

    Prediction, empty maps, agreement, spread and off-region maps, most faithful map. Empty
    maps are left out of the comparisons and said to be.
    """
    out = _prediction(s.images.slice(i, 1).to_pylist()[0])
    present = [m for m in s.methods if s.rows[m][i] >= 0]
    empty = [m for m in present if s.values[m]["empty"][i] > 0]
    if empty:
        out.append(
            f"Empty map (no spatial variation), left out of the comparisons: "
            f"{join([label(m) for m in empty])}."
        )
    live = [m for m in present if m not in empty]
    for a, b in itertools.combinations(live, 2):
        r, iou = _pair(s, a, b, "pearson", i), _pair(s, a, b, "top20_iou", i)
        if math.isfinite(r):
            out.append(
                f"{label(a)} and {label(b)} {_agreement_word(r, t)} (Pearson r = {num(r, 2)}, "
                f"top-20% IoU = {num(iou, 2)})."
            )
    return out + _shape_findings(s, i, live, t) + _faithful_findings(s, i, live, t)
