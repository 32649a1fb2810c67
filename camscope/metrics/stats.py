"""Dataset-level statistics of per-image metrics that stay inside what the numbers support.

- Means of bounded per-image values (Average Drop in [0, 1], AUCs in [0, 1], Pearson r in
  [-1, 1]): `bootstrap_interval`, the percentile bootstrap of the mean (Efron & Tibshirani,
  "An Introduction to the Bootstrap", 1993, ch. 13). The interval of a resampled mean lies between
  the smallest and the largest value, so it never leaves the metric's range.
- Proportions (Increase in Confidence, a 0/1 outcome per image): `wilson_interval`, the Wilson
  score interval (Wilson, JASA 1927), always inside [0, 1] and sensible at 0 or n successes.
- Paired differences between two methods on the same images: `paired_difference`, the percentile
  bootstrap of the mean difference; it is significant when its interval excludes 0.
- Rankings: `rank_methods` reports ties (means equal within a stated tolerance) as ties and names a
  best method only when it is significantly ahead of every other one.
- Below `MIN_N` images an interval is still computed but flagged not meaningful
  (``Interval.meaningful``), and no difference is called significant.

`mean_ci` (Student t) is kept for callers that want it; it is unbounded and not used by the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
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
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int32)  # 5x faster than int64
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
    return (max(0.0, centre - half), min(1.0, centre + half))


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
    """Mean of ``a - b`` over paired samples with its percentile-bootstrap interval.

    significant: n >= the minimum n and the interval excludes 0.
    """

    mean: float
    low: float
    high: float
    significant: bool
    n: int


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


@dataclass(frozen=True)
class Ranking:
    """Methods ranked by one metric, with what the data support about the order.

    order: methods with a finite mean, best mean first (equal means keep the given order).
    means: method -> mean. tied_best: the methods whose mean is within ``tolerance`` of the best
    mean (one method unless there is a tie). pairs: (a, b) with a before b in ``order`` ->
    `paired_difference` of a - b. best: the method whose every paired difference is significant
    in its favour, else None ("no method is significantly best"). meaningful: every method has
    at least the minimum n.
    """

    order: list[str]
    means: dict[str, float]
    tied_best: list[str]
    pairs: dict[tuple[str, str], PairedDifference]
    best: str | None
    meaningful: bool
    tolerance: float


def rank_methods(
    samples: Mapping[str, object],
    *,
    higher_is_better: bool,
    tolerance: float,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    min_n: int = MIN_N,
) -> Ranking:
    """Rank methods by the mean of their per-image values (aligned arrays, NaN = no value).

    Ties first: methods whose means differ from the best by at most ``tolerance`` share first
    place and no best is named. Otherwise the best mean is named best only when its
    `paired_difference` with every other method is significant in its favour.

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
    pairs = {
        (a, b): paired_difference(
            arrays[a], arrays[b], confidence, resamples=resamples, seed=seed, min_n=min_n
        )
        for i, a in enumerate(order)
        for b in order[i + 1 :]
    }
    ahead = [pairs[(order[0], o)] for o in order[1:]]
    leads = all(d.significant and (d.mean > 0) == higher_is_better for d in ahead)
    best = order[0] if ahead and len(tied) == 1 and leads else None
    meaningful = all(np.isfinite(arrays[m]).sum() >= min_n for m in order)
    return Ranking(order, means, tied, pairs, best, meaningful, tolerance)
