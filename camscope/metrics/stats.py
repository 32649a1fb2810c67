"""Dataset-level statistics of per-image metrics: means, intervals, paired differences."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch


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


class PairedDifference(NamedTuple):
    """Mean of ``a - b`` over paired samples with its t confidence interval.

    significant: the interval excludes 0 (a two-sided paired t-test at 1 - confidence).
    """

    mean: float
    low: float
    high: float
    significant: bool
    n: int


def paired_difference(a: object, b: object, confidence: float = 0.95) -> PairedDifference:
    """Paired difference ``d_i = a_i - b_i`` -> `mean_ci` of d and whether it excludes 0.

    Pairs where either value is NaN are dropped. With n < 2 the interval is NaN and the
    difference is never called significant.
    """
    x, y = _as_array(a), _as_array(b)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    d = x - y
    d = d[~np.isnan(d)]
    mean, low, high = mean_ci(d, confidence)
    significant = bool(math.isfinite(low) and (low > 0 or high < 0))
    return PairedDifference(mean, low, high, significant, int(d.size))
