"""Dataset-level statistics of per-image metrics that stay inside what the numbers support.

- Means of bounded per-image values (Average Drop in [0, 1], AUCs in [0, 1], Pearson r in
  [-1, 1]): `bootstrap_interval`, the percentile bootstrap of the mean (Efron & Tibshirani,
  "An Introduction to the Bootstrap", 1993, ch. 13). The interval of a resampled mean lies between
  the smallest and the largest value, so it never leaves the metric's range.
- Proportions (Increase in Confidence, a 0/1 outcome per image): `wilson_interval`, the Wilson
  score interval (Wilson, JASA 1927), always inside [0, 1] and sensible at 0 or n successes.
- Paired differences between two methods on the same images: `paired_difference`, the percentile
  bootstrap of the mean difference; it is significant when its interval excludes 0.
- The k(k-1)/2 paired differences of k methods on one metric: `compare_methods`, simultaneous
  bootstrap intervals (max-|t| bootstrap-t: Westfall & Young, "Resampling-Based Multiple
  Testing", 1993, ch. 2; Hothorn, Bretz & Westfall, Biometrical Journal 2008). Images are
  resampled together for every pair; each interval is ``d +- c se`` with ``c`` the `CONFIDENCE`
  quantile of the largest studentised deviation over all pairs, so that all intervals cover
  together (family-wise error controlled).
- Rankings: `rank_methods` reports ties (means equal within a stated tolerance) as ties and names a
  best method only when it is significantly ahead of every other one after that correction.
- Agreement between metrics' rankings: `ranking_agreement`, Kendall's tau-b between two metrics'
  orders of the methods with a percentile-bootstrap interval over images.
- Below `MIN_N` images an interval is still computed but flagged not meaningful
  (``Interval.meaningful``), and no difference is called significant.

`mean_ci` (Student t) is kept for callers that want it; it is unbounded and not used by the report.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
import torch

#: Two-sided confidence level of every interval.
CONFIDENCE = 0.95
#: Bootstrap resamples; the Monte Carlo error of a 2.5% percentile at 10,000 is ~0.16 percentile
#: points.
RESAMPLES = 10_000
#: Below this many images an interval is flagged not meaningful and nothing is significant.
MIN_N = 10
#: Seed of every bootstrap (the same data give the same interval).
SEED = 0
#: Resampled values held at once by `bootstrap_means` (2**22: 16 MiB of indices + 32 MiB values).
_CHUNK_VALUES = 2**22
#: At most this many distinct values: resample counts per value (multinomial) instead of indices.
_FEW_VALUES = 32
#: How `compare_methods` (and so every ranking) corrects for the number of comparisons.
CORRECTION = "simultaneous bootstrap-t intervals (max-|t|)"
#: A resample's standard error in the bootstrap-t is floored at this share of the observed one:
#: a resample that happens to hold (nearly) equal differences would otherwise give an unbounded
#: t and, through the maximum, widen every interval of the metric (sparse metrics, small n).
SE_FLOOR = 0.5


def _as_array(values: object) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64).ravel()


def mean_ci(values: object, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval ``mean +- t_{(1+c)/2, n-1} s / sqrt(n)``.

    ``values``: tensor, array or sequence; NaNs are dropped (n counts the rest). n = 0 ->
    (nan, nan, nan); n = 1 -> (mean, nan, nan); zero spread -> (mean, mean, mean). Matches
    ``scipy.stats.t.interval(c, n - 1, loc=mean, scale=sem)``.
    """
    from scipy import stats

    arr = _as_array(values)
    arr = arr[~np.isnan(arr)]
    n = arr.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(arr.mean())
    if n < 2:
        return (mean, math.nan, math.nan)
    sem = float(arr.std(ddof=1) / math.sqrt(n))
    if sem == 0:
        return (mean, mean, mean)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sem
    return (mean, mean - half, mean + half)


class Interval(NamedTuple):
    """A mean (or proportion) with its interval.

    method: how the interval was made ("bootstrap percentile", "Wilson score", or "none" when
    n < 2). meaningful: n >= the minimum n it was computed with (`MIN_N` by default).
    """

    mean: float
    low: float
    high: float
    n: int
    method: str
    meaningful: bool


def _finite(values: object) -> np.ndarray:
    arr = _as_array(values)
    return arr[np.isfinite(arr)]


def bootstrap_means(values: object, *, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples (n draws with replacement), (resamples,) float64.

    Vectorised in chunks of at most ``_CHUNK_VALUES`` drawn values, so memory stays bounded for
    any n. With at most ``_FEW_VALUES`` distinct values (0/1 outcomes, paired differences of
    them) the counts of each value are drawn from Multinomial(n, counts / n) instead, which is
    the same distribution at a cost independent of n. NaNs must already be removed.

    Example:
        >>> bootstrap_means([1.0, 1.0, 1.0], resamples=4).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    x = _as_array(values)
    n = x.size
    if n == 0:
        raise ValueError("no values to resample")
    rng = np.random.default_rng(seed)
    distinct, counts = np.unique(x, return_counts=True)
    if distinct.size <= _FEW_VALUES:
        draws = rng.multinomial(n, counts / n, size=resamples)
        return draws @ distinct / n
    out = np.empty(resamples, dtype=np.float64)
    chunk = max(1, _CHUNK_VALUES // n)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int32)  # cheaper than int64
        out[start:stop] = x[idx].mean(axis=1)
    return out


def _percentiles(means: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_interval(
    values: object,
    *,
    bounds: tuple[float, float] | None = None,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    min_n: int = MIN_N,
) -> Interval:
    """Mean with the percentile-bootstrap interval; NaNs dropped, n counts the rest.

    The interval is the ``(1 - c) / 2`` and ``(1 + c) / 2`` quantiles of `bootstrap_means`. It
    lies within [min(values), max(values)]; ``bounds`` (the metric's range) clips float rounding
    only. n = 0 -> all NaN; n = 1 -> no interval (NaN).

    Example:
        >>> iv = bootstrap_interval([0.2, 0.4, 0.6, 0.8] * 5, bounds=(0.0, 1.0))
        >>> 0.2 <= iv.low < iv.mean < iv.high <= 0.8, iv.n, iv.meaningful
        (True, 20, True)
    """
    x = _finite(values)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "none", False)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, "none", False)
    low, high = _percentiles(bootstrap_means(x, resamples=resamples, seed=seed), confidence)
    if bounds is not None:
        low, high = (float(np.clip(v, *bounds)) for v in (low, high))
        mean = float(np.clip(mean, *bounds))
    return Interval(mean, low, high, n, "bootstrap percentile", n >= min_n)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (Wilson, JASA 1927).

    ``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``z`` the
    ``(1 + c) / 2`` normal quantile; always inside [0, 1]. n = 0 -> (nan, nan).

    Example:
        >>> [round(v, 4) for v in wilson_interval(0, 10)]
        [0.0, 0.2775]
    """
    if n <= 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # the interval contains p; at k = 0 or n rounding must not put p a hair outside it
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def proportion_interval(
    values: object, *, confidence: float = CONFIDENCE, min_n: int = MIN_N
) -> Interval:
    """Share of true (non-zero) values with its `wilson_interval`; NaNs dropped.

    Example:
        >>> iv = proportion_interval([1, 1, 0] * 4)
        >>> round(iv.mean, 4), iv.n, iv.method
        (0.6667, 12, 'Wilson score')
    """
    x = _finite(values)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "none", False)
    k = int(np.count_nonzero(x))
    low, high = wilson_interval(k, n, confidence)
    return Interval(k / n, low, high, n, "Wilson score", n >= min_n)


class PairedDifference(NamedTuple):
    """Mean of ``a - b`` over paired samples with its bootstrap interval.

    significant: n >= the minimum n and the interval excludes 0. p: the bootstrap p-value, adjusted
    for the family of comparisons when the difference comes from `compare_methods` (NaN from
    `paired_difference`).
    """

    mean: float
    low: float
    high: float
    significant: bool
    n: int
    p: float = math.nan


def paired_difference(
    a: object,
    b: object,
    confidence: float = CONFIDENCE,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    min_n: int = MIN_N,
) -> PairedDifference:
    """Paired difference ``d_i = a_i - b_i``: mean and percentile-bootstrap interval of d.

    Images (pairs) are resampled together. Pairs where either value is NaN are dropped. With
    n < 2 the interval is NaN; below ``min_n`` the difference is never called significant.

    Example:
        >>> d = paired_difference([0.5, 0.6, 0.7] * 4, [0.4, 0.5, 0.6] * 4)
        >>> round(d.mean, 6), d.significant, d.n
        (0.1, True, 12)
    """
    x, y = _as_array(a), _as_array(b)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    iv = bootstrap_interval(
        x - y, confidence=confidence, resamples=resamples, seed=seed, min_n=min_n
    )
    significant = bool(iv.meaningful and (iv.low > 0 or iv.high < 0))
    return PairedDifference(iv.mean, iv.low, iv.high, significant, iv.n)


def resample_counts(n: int, resamples: int, seed: int = SEED) -> Iterator[np.ndarray]:
    """Bootstrap resamples of n images as counts: chunks of (m, n) float64, rows summing to n.

    Row r says how often each image is drawn in resample r (n draws with replacement), so a
    statistic that is a mean over images is ``counts @ values / n`` for every resample at once,
    and several statistics computed from the same chunk share the same resampled images.
    Chunks hold at most ``_CHUNK_VALUES`` counts.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_VALUES // max(n, 1))
    for start in range(0, resamples, chunk):
        m = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(m, n)) + np.arange(m)[:, None] * n
        yield np.bincount(idx.ravel(), minlength=m * n).reshape(m, n).astype(np.float64)


def _resampled_moments(
    values: np.ndarray, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per resample, each column's mean and standard error over its finite rows: two (R, p).

    The standard error is ``sd / sqrt(m)`` of the resampled rows (sd with ddof 1, m the rows
    drawn); NaN where a resample holds no finite row of the column (se: fewer than 2).
    """
    finite = np.isfinite(values)
    zeroed = np.where(finite, values, 0.0)
    weights = finite.astype(np.float64)
    means, errors = [], []
    for counts in resample_counts(values.shape[0], resamples, seed):
        number = counts @ weights
        safe = np.where(number > 0, number, 1)
        mean = counts @ zeroed / safe
        second = counts @ (zeroed * zeroed) / safe
        var = np.maximum(second - mean * mean, 0.0) * number / np.where(number > 1, number - 1, 1)
        means.append(np.where(number > 0, mean, np.nan))
        errors.append(np.where(number > 1, np.sqrt(var / safe), np.nan))
    if not means:
        empty = np.empty((0, values.shape[1]))
        return empty, empty
    return np.concatenate(means), np.concatenate(errors)


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of each column of ``values`` (n, p) over its finite rows, per resample: (R, p)."""
    return _resampled_moments(values, resamples, seed)[0]


@dataclass(frozen=True)
class Comparisons:
    """Every paired difference of k methods on one metric, corrected for the k(k-1)/2 tests.

    methods: in the order given. pairs: (a, b) with a before b -> `PairedDifference` of a - b with
    its simultaneous interval and adjusted p (see `compare_methods`). uncorrected: the same pairs
    with per-pair percentile intervals and unadjusted p-values, from the same resamples (kept for
    the data files; the report calls nothing significant from them). critical: the multiplier c.
    """

    methods: list[str]
    pairs: dict[tuple[str, str], PairedDifference]
    uncorrected: dict[tuple[str, str], PairedDifference]
    critical: float
    confidence: float
    resamples: int
    correction: str = CORRECTION

    def difference(self, a: str, b: str) -> PairedDifference:
        """The corrected difference ``a - b`` in either order (negated when stored as b - a)."""
        if (a, b) in self.pairs:
            return self.pairs[(a, b)]
        d = self.pairs[(b, a)]
        return PairedDifference(-d.mean, -d.high, -d.low, d.significant, d.n, d.p)


def _two_sided_p(boot: np.ndarray) -> float:
    """Percentile-bootstrap p-value of "mean difference = 0": twice the smaller tail share."""
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return math.nan
    return float(min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean())))


def _max_t(diff: np.ndarray, resamples: int, seed: int, confidence: float) -> dict:
    """The studentised bootstrap of every column of ``diff`` (n, p) and the max-|t| quantile."""
    finite = np.isfinite(diff)
    n = finite.sum(axis=0)
    zeroed = np.where(finite, diff, 0.0)
    mean = np.where(n > 0, zeroed.sum(0) / np.maximum(n, 1), np.nan)
    sq = np.where(finite, (diff - mean) ** 2, 0.0).sum(0)
    se = np.where(n > 1, np.sqrt(sq / np.maximum(n - 1, 1) / np.maximum(n, 1)), np.nan)
    boot, boot_se = _resampled_moments(diff, resamples, seed)
    tiny = 1e-12 * np.maximum(np.abs(np.nan_to_num(mean)), 1.0)  # float noise of a constant
    varies = (n > 1) & (se > tiny)
    boot_se = np.maximum(np.where(boot_se > tiny, boot_se, 0.0), SE_FLOOR * se)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.abs(boot[:, varies] - mean[varies]) / boot_se[:, varies]
        t_obs = np.abs(mean) / se
    t = np.nan_to_num(t, nan=0.0, posinf=np.inf)
    t_max = t.max(axis=1) if varies.any() else np.empty(0)
    critical = float(np.quantile(t_max, confidence, method="higher")) if t_max.size else math.nan
    return {"n": n, "mean": mean, "se": se, "boot": boot, "varies": varies, "t_obs": t_obs,
            "t_max": t_max, "critical": critical}  # fmt: skip


def compare_methods(
    samples: Mapping[str, object],
    confidence: float = CONFIDENCE,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    min_n: int = MIN_N,
    bounds: tuple[float, float] | None = None,
) -> Comparisons:
    """All paired differences of the methods in ``samples`` with simultaneous intervals.

    ``samples``: method -> per-image values aligned over the same images (NaN = no value; a pair
    uses the images both have). For pair p: d_p the mean difference, se_p = sd / sqrt(n). The
    images are resampled together ``resamples`` times (the same images for every pair);
    ``T* = max_p |d*_p - d_p| / se*_p`` (each resample's own standard error: the bootstrap-t,
    floored at `SE_FLOOR` x se_p) and c is its ``confidence`` quantile. The interval is
    ``d_p +- c se_p`` and the adjusted p the share of resamples with ``T* >= |d_p| / se_p``, so
    all intervals cover their true differences together with probability ``confidence``
    (asymptotically; checked by simulation in the tests). A pair is significant when its
    interval excludes 0 and it has at least
    ``min_n`` images; a pair whose differences are all equal has the point interval [d, d].
    ``bounds``: the range of the per-image values; corrected intervals are clipped to the range
    of a difference, ``+-(high - low)`` (which never changes whether one excludes 0).

    Example:
        >>> c = compare_methods({"a": [0.5, 0.6, 0.7] * 4, "b": [0.4, 0.5, 0.6] * 4})
        >>> d = c.pairs[("a", "b")]
        >>> round(d.mean, 6), d.significant, d.n
        (0.1, True, 12)
    """
    methods = list(samples)
    arrays = {m: _as_array(samples[m]) for m in methods}
    if len({a.size for a in arrays.values()}) > 1:
        raise ValueError(f"samples differ in length: {sorted({a.size for a in arrays.values()})}")
    keys = list(itertools.combinations(methods, 2))
    if not keys:
        return Comparisons(methods, {}, {}, math.nan, confidence, resamples)
    diff = np.stack([arrays[a] - arrays[b] for a, b in keys], axis=1)
    f = _max_t(diff, resamples, seed, confidence)
    alpha = (1 - confidence) / 2
    pairs, uncorrected = {}, {}
    for p, key in enumerate(keys):
        m, k, c = float(f["mean"][p]), int(f["n"][p]), f["critical"]
        low = high = p_adj = p_raw = raw_low = raw_high = math.nan
        if k > 1:
            raw = np.nanquantile(f["boot"][:, p], [alpha, 1 - alpha])
            raw_low, raw_high = float(raw[0]), float(raw[1])
            low = high = m
            p_adj = p_raw = float(m == 0)
        if f["varies"][p]:
            low, high = m - c * f["se"][p], m + c * f["se"][p]
            if bounds is not None:
                width = bounds[1] - bounds[0]
                low, high = max(low, -width), min(high, width)
            p_adj = float((1 + np.sum(f["t_max"] >= f["t_obs"][p])) / (1 + f["t_max"].size))
            p_raw = _two_sided_p(f["boot"][:, p])
        sig = bool(k >= min_n and (low > 0 or high < 0))
        raw_sig = bool(k >= min_n and (raw_low > 0 or raw_high < 0))
        pairs[key] = PairedDifference(m, float(low), float(high), sig, k, p_adj)
        uncorrected[key] = PairedDifference(m, raw_low, raw_high, raw_sig, k, p_raw)
    return Comparisons(methods, pairs, uncorrected, f["critical"], confidence, resamples)


def kendall_tau_b(
    x: np.ndarray, y: np.ndarray, tolerance_x: float = 0.0, tolerance_y: float = 0.0
) -> np.ndarray:
    """Kendall's tau-b between the last axes of ``x`` and ``y`` (..., k) -> (...).

    Two values within ``tolerance`` count as tied (the report's ties). NaN where either side is
    all tied or k < 2.
    """
    i, j = np.triu_indices(x.shape[-1], k=1)
    dx, dy = x[..., i] - x[..., j], y[..., i] - y[..., j]
    sx = np.where(np.abs(dx) <= tolerance_x, 0.0, np.sign(dx))
    sy = np.where(np.abs(dy) <= tolerance_y, 0.0, np.sign(dy))
    denom = np.sqrt((sx * sx).sum(-1) * (sy * sy).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (sx * sy).sum(-1) / np.where(denom > 0, denom, 1), np.nan)


def _column_means(values: np.ndarray, resamples: int, seed: int) -> tuple:
    """Each column's mean over its finite rows, its count, and the resampled means (R, p)."""
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    with np.errstate(invalid="ignore"):
        point = np.where(count > 0, np.where(finite, values, 0).sum(0) / np.maximum(count, 1),
                         np.nan)  # fmt: skip
    n = values.shape[0]
    boot = _resampled_means(values, resamples, seed) if n else np.empty((0, values.shape[1]))
    return point, count, boot


def ranking_agreement(
    samples: Mapping[str, Mapping[str, object]],
    higher_is_better: Mapping[str, bool],
    *,
    tolerance: Mapping[str, float] | None = None,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    min_n: int = MIN_N,
) -> dict[tuple[str, str], Interval]:
    """Kendall tau-b between every two metrics' orders of the methods, with bootstrap intervals.

    ``samples``: metric -> method -> per-image values, aligned over the same images (NaN = no
    value). A metric's order is that of the methods' means (better first, ties within
    ``tolerance[metric]``). For each pair of metrics, only the methods with a mean on both count,
    and each method's two means are taken over the same images: those where it has a value of
    both metrics (a metric measured on some images only, e.g. localisation where there are
    boxes, is compared with another on those images). Images are resampled together (the same
    resampled images for every metric, method and pair) and the interval is the percentile
    interval of the resampled taus. tau = 1: the two metrics order the methods alike; 0:
    unrelated; -1: reversed. Meaningful when every image count is at least ``min_n``.
    """
    metrics = list(samples)
    tolerance = tolerance or {}
    methods = list(dict.fromkeys(m for k in metrics for m in samples[k]))
    n_images = {_as_array(v).size for k in metrics for v in samples[k].values()}
    if len(n_images) > 1:
        raise ValueError(f"samples differ in length: {sorted(n_images)}")
    n = n_images.pop() if n_images else 0
    k = len(methods)
    cols = []
    for metric in metrics:
        sign = 1.0 if higher_is_better[metric] else -1.0
        for m in methods:
            v = samples[metric].get(m)
            cols.append(sign * _as_array(v) if v is not None else np.full(n, np.nan))
    values = np.stack(cols, axis=1) if cols else np.empty((n, 0))
    finite = np.isfinite(values)
    joint = _column_means(values, resamples, seed)
    masked: dict[bytes, tuple] = {}  # every metric restricted to one (image, method) mask
    out = {}
    alpha = (1 - confidence) / 2
    for a, b in itertools.combinations(range(len(metrics)), 2):
        sa, sb = slice(a * k, (a + 1) * k), slice(b * k, (b + 1) * k)
        common = finite[:, sa] & finite[:, sb]
        means = joint
        if not ((common == finite[:, sa]).all() and (common == finite[:, sb]).all()):
            key = common.tobytes()  # the pair on the images both metrics have, per method
            if key not in masked:
                restricted = np.where(np.tile(common, len(metrics)), values, np.nan)
                masked[key] = _column_means(restricted, resamples, seed)
            means = masked[key]
        point, count, boot = (x[..., np.r_[sa, sb]] for x in means)
        pa_, pb_ = point[:k], point[k:]
        both = np.isfinite(pa_) & np.isfinite(pb_)
        ta, tb = tolerance.get(metrics[a], 0.0), tolerance.get(metrics[b], 0.0)
        tau = float(kendall_tau_b(pa_[both], pb_[both], ta, tb))
        taus = kendall_tau_b(boot[:, :k][:, both], boot[:, k:][:, both], ta, tb)
        taus = taus[np.isfinite(taus)]
        low, high = (math.nan, math.nan)
        if taus.size and math.isfinite(tau):
            low, high = (float(v) for v in np.quantile(taus, [alpha, 1 - alpha]))
        images = int(min(count[:k][both].min(initial=n), count[k:][both].min(initial=n)))
        meaningful = bool(both.sum() >= 2 and images >= min_n and math.isfinite(low))
        out[(metrics[a], metrics[b])] = Interval(
            tau, low, high, images, "bootstrap percentile", meaningful
        )
    return out


@dataclass(frozen=True)
class Ranking:
    """Methods ranked by one metric, with what the data support about the order.

    order: methods with a finite mean, best mean first (equal means keep the given order).
    means: method -> mean. tied_best: the methods whose mean is within ``tolerance`` of the best
    mean (one method unless there is a tie). pairs: (a, b) with a before b in ``order`` ->
    `PairedDifference` of a - b, corrected for the number of pairs (`compare_methods`). best: the
    method whose every corrected difference is significant in its favour, else None ("no method
    is significantly best"). meaningful: every method has at least the minimum n. comparisons:
    the `Comparisons` the pairs come from (uncorrected intervals included).
    """

    order: list[str]
    means: dict[str, float]
    tied_best: list[str]
    pairs: dict[tuple[str, str], PairedDifference]
    best: str | None
    meaningful: bool
    tolerance: float
    comparisons: Comparisons | None = field(default=None, compare=False, repr=False)


def rank_methods(
    samples: Mapping[str, object],
    *,
    higher_is_better: bool,
    tolerance: float,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    min_n: int = MIN_N,
    bounds: tuple[float, float] | None = None,
) -> Ranking:
    """Rank methods by the mean of their per-image values (aligned arrays, NaN = no value).

    Ties first: methods whose means differ from the best by at most ``tolerance`` share first
    place and no best is named. Otherwise the best mean is named best only when its difference
    with every other method is significant in its favour after the multiple-comparison
    correction of `compare_methods` (``bounds``: the values' range, passed on to it).

    Example:
        >>> r = rank_methods({"a": [1, 1, 0] * 4, "b": [0, 1, 1] * 4},
        ...                  higher_is_better=True, tolerance=1e-9)
        >>> r.tied_best, r.best
        (['a', 'b'], None)
    """
    arrays = {m: _as_array(v) for m, v in samples.items()}
    means = {
        m: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for m, v in arrays.items()
    }
    sign = -1.0 if higher_is_better else 1.0
    order = sorted((m for m in arrays if math.isfinite(means[m])), key=lambda m: sign * means[m])
    tied = [m for m in order if abs(means[m] - means[order[0]]) <= tolerance] if order else []
    comparisons = compare_methods(
        {m: arrays[m] for m in order}, confidence, resamples=resamples, seed=seed, min_n=min_n,
        bounds=bounds,
    )  # fmt: skip
    pairs = comparisons.pairs
    ahead = [pairs[(order[0], o)] for o in order[1:]]
    leads = all(d.significant and (d.mean > 0) == higher_is_better for d in ahead)
    best = order[0] if ahead and len(tied) == 1 and leads else None
    meaningful = all(np.isfinite(arrays[m]).sum() >= min_n for m in order)
    return Ranking(order, means, tied, pairs, best, meaningful, tolerance, comparisons)
